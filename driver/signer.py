"""Client interceptor that HMAC-signs every call (scheme v2, ``shakedown.signing``).

Every signature names its audience, the agent it is meant for, so the agent
refuses it if it is replayed to another one (driver/agentname.py finds the name).

The signature must cover the exact bytes on the wire, so the client builds its
multicallables without a request serializer and hands us already-serialized
``bytes``; signing a message object would sign *a* serialization, not *the* one
sent. Each attempt passes through ``intercept_*`` again, so a retry made by
the caller gets a fresh timestamp and nonce (the agent rejects a reused nonce).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from shakedown import signing


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class CallDetails(_CallDetails, grpc.ClientCallDetails):
    """grpc.ClientCallDetails is abstract; this is the usual concrete stand-in."""


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(
        self, key_id: str, secret: bytes, *, audience: str | Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing.KEY_ID_RE.match(key_id):
            raise ValueError(f"key id {key_id!r}: must match {signing.KEY_ID_RE.pattern}")
        if isinstance(audience, str):
            signing.check_audience(audience)
        self._key_id = key_id
        self._secret = secret
        self._audience = audience
        self._clock = clock

    def _signed(self, details: grpc.ClientCallDetails, request: object) -> CallDetails:
        if not isinstance(request, bytes):
            # A message object here means the channel serializes after us: the
            # signature could not be guaranteed to match the wire bytes.
            raise TypeError(
                f"SigningInterceptor needs serialized request bytes, got {type(request).__name__}"
                " (build the multicallable with request_serializer=None)"
            )
        method = details.method
        if isinstance(method, bytes):
            method = method.decode("ascii")
        audience = self._audience if isinstance(self._audience, str) else self._audience()
        headers = signing.sign(
            self._key_id, self._secret, method, request, audience=audience,
            timestamp=int(self._clock()),
        )
        metadata = [
            (k, v) for k, v in (details.metadata or ()) if k not in signing.METADATA_KEYS
        ]
        metadata.extend(headers.metadata())
        return CallDetails(
            method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
        request: object,
    ) -> Any:
        return continuation(self._signed(client_call_details, request), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
        request: object,
    ) -> Any:
        return continuation(self._signed(client_call_details, request), request)
