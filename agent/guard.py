"""The server interceptor every RPC passes through.

It swaps each unary-request handler's deserializer for the identity, so the
HMAC check sees the exact bytes that arrived on the wire; only an admitted
request is parsed and handed to the servicer. It is also the one place where
errors become statuses: typed `ShakedownError`s map to their gRPC code, and
anything unexpected becomes INTERNAL with an incident id, never a crash.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from agent.auth import READ_ONLY_METHODS, Authenticator, needs_hmac
from agent.identity import CALLER, Caller
from agent.policy import check_well_known
from agent.tls import CertStore, TlsConfigError
from shakedown.errors import (
    FIELD_METADATA,
    AuthError,
    InternalError,
    InvalidArgument,
    ShakedownError,
)

log = logging.getLogger("shakedown.agent.rpc")


def _peer_names(auth: dict[str, list[bytes]]) -> list[str]:
    names = [v.decode("utf-8", "replace") for v in auth.get("x509_common_name", [])]
    for v in auth.get("x509_subject_alternative_name", []):
        name = v.decode("utf-8", "replace")
        if name not in names:
            names.append(name)
    return names


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator, certs: CertStore) -> None:
        self._auth = auth
        self._certs = certs
        # Wrapping is per method, not per call: reuse it while the servicer's
        # handler for that method stays the same object.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    # -- admission ----------------------------------------------------------------

    def _admit(self, method: str, body: bytes | None, context: grpc.aio.ServicerContext) -> Caller:
        auth_ctx = context.auth_context()
        if auth_ctx.get("transport_security_type") != [b"ssl"] or not auth_ctx.get("x509_pem_cert"):
            raise AuthError("a client certificate is required")
        try:
            if self._certs.is_revoked(auth_ctx["x509_pem_cert"][0]):
                raise AuthError("client certificate is revoked")
        except TlsConfigError as exc:  # fail closed on an unreadable CRL
            raise AuthError(f"cannot check revocation: {exc}") from None
        caller = self._auth.identify(_peer_names(auth_ctx))
        self._auth.authorize(caller, method)
        if body is not None:
            # Already (key, value) pairs (namedtuples): no copy per call.
            md = context.invocation_metadata() or ()
            caller = self._auth.verify(caller, method, body, md)
        return caller

    # -- plumbing -----------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        hmac = needs_hmac(method)
        if handler.request_streaming:
            # Client-streaming methods exist only in HMAC-exempt services
            # (reflection); they need the certificate check alone.
            return self._wrap_streaming_request(handler, method, hmac)
        deserialize = handler.request_deserializer

        # Synchronous: nothing in admission awaits, and a coroutine per call is not free.
        def admit(raw: bytes, context: grpc.aio.ServicerContext) -> tuple[Caller, Any]:
            caller = self._admit(method, raw if hmac else None, context)
            try:
                request = deserialize(raw) if deserialize else raw
            except (DecodeError, ValueError) as exc:
                raise InvalidArgument(f"malformed request message: {exc}") from None
            if isinstance(request, Message):
                # Every Timestamp/Duration of every request, before any handler sees it,
                # so none meets a ValueError from ToNanoseconds (INTERNAL).
                check_well_known(request)
            return caller, request

        if handler.response_streaming:
            inner_stream = handler.unary_stream

            async def unary_stream(
                raw: bytes, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                started = time.monotonic()
                caller: Caller | None = None
                try:
                    caller, request = admit(raw, context)
                    CALLER.set(caller)
                    result = inner_stream(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    elif inspect.isawaitable(result):
                        await result
                    else:
                        for item in result:
                            yield item
                except Exception as exc:
                    await self._fail(exc, method, caller, context, started)
                else:
                    self._audit(method, caller, grpc.StatusCode.OK, started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )

        inner = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            started = time.monotonic()
            caller: Caller | None = None
            try:
                caller, request = admit(raw, context)
                CALLER.set(caller)
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                await self._fail(exc, method, caller, context, started)
            self._audit(method, caller, grpc.StatusCode.OK, started)
            return result

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    def _wrap_streaming_request(
        self, handler: grpc.RpcMethodHandler, method: str, hmac: bool
    ) -> grpc.RpcMethodHandler:
        if hmac:

            async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, "client-streaming calls cannot be signed"
                )

            return grpc.stream_unary_rpc_method_handler(refuse)
        inner = handler.stream_stream or handler.stream_unary

        async def stream_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.monotonic()
            caller: Caller | None = None
            try:
                caller = self._admit(method, None, context)
                CALLER.set(caller)
                result = inner(request_iterator, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    yield await result
                else:
                    for item in result:
                        yield item
            except Exception as exc:
                await self._fail(exc, method, caller, context, started)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    # -- outcomes -----------------------------------------------------------------

    def _audit(
        self,
        method: str,
        caller: Caller | None,
        code: grpc.StatusCode,
        started: float,
        reason: str = "",
    ) -> None:
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            level = logging.WARNING
        elif code == grpc.StatusCode.OK and method in READ_ONLY_METHODS:
            level = logging.DEBUG  # reads are frequent; mutations and refusals are the audit trail
        else:
            level = logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = {
            "method": method,
            "principal": caller.principal if caller else "",
            "code": code.name,
            "ms": round((time.monotonic() - started) * 1000, 2),
        }
        if reason:
            fields["reason"] = reason
        log.log(level, "rpc", extra={"fields": fields})

    async def _fail(
        self,
        exc: BaseException,
        method: str,
        caller: Caller | None,
        context: grpc.aio.ServicerContext,
        started: float,
    ) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if not isinstance(exc, ShakedownError):
            incident = secrets.token_hex(4)
            log.error(
                "unexpected error",
                exc_info=exc,
                extra={"fields": {"method": method, "incident": incident}},
            )
            exc = InternalError(f"internal error in the agent (incident {incident}; see its log)")
        self._audit(method, caller, exc.code, started, str(exc))
        trailing = ((FIELD_METADATA, exc.field),) if exc.field else ()
        await context.abort(exc.code, str(exc), trailing_metadata=trailing)
