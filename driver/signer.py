"""HMAC-signing of every call (scheme v2, ``shakedown.signing``).

Every signature names its audience, the agent it is meant for, so the agent
refuses it if it is replayed to another one (driver/agentname.py finds the name).

The signature must cover the exact bytes on the wire, so callers serialize
once and sign those ``bytes``; signing a message object would sign *a*
serialization, not *the* one sent. ``RequestSigner`` makes the metadata for
one attempt; ``AgentClient`` passes it straight to the call (an interceptor
costs ~100 us of client CPU per call). ``SigningInterceptor`` does the same for
channels you build yourself. Each attempt is signed afresh, so a retry gets a
new timestamp and nonce (the agent rejects a reused nonce).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import grpc

from shakedown import signing


class RequestSigner:
    def __init__(
        self, key_id: str, secret: bytes, *, audience: str | Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing.KEY_ID_RE.match(key_id):
            raise ValueError(f"key id {key_id!r}: must match {signing.KEY_ID_RE.pattern}")
        if isinstance(audience, str):
            signing.check_audience(audience)
        self.key_id = key_id
        self._secret = secret
        self._audience = audience
        self._clock = clock

    def metadata(self, method: str, body: bytes) -> tuple[tuple[str, str], ...]:
        if not isinstance(body, bytes):
            # A message object here means the channel serializes after us: the
            # signature could not be guaranteed to match the wire bytes.
            raise TypeError(
                f"SigningInterceptor needs serialized request bytes, got {type(body).__name__}"
                " (build the multicallable with request_serializer=None)"
            )
        audience = self._audience if isinstance(self._audience, str) else self._audience()
        return signing.sign(
            self.key_id, self._secret, method, body, audience=audience,
            timestamp=int(self._clock()),
        ).metadata()


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class CallDetails(_CallDetails, grpc.ClientCallDetails):
    """grpc.ClientCallDetails is abstract; this is the usual concrete stand-in."""


def merge_metadata(
    own: Sequence[tuple[str, str]] | None, signed: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The caller's metadata without any signature header of its own, plus ours."""
    out = [(k, v) for k, v in (own or ()) if k not in signing.METADATA_KEYS]
    out.extend(signed)
    return out


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(
        self, key_id: str, secret: bytes, *, audience: str | Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = RequestSigner(key_id, secret, audience=audience, clock=clock)

    def _signed(self, details: grpc.ClientCallDetails, request: object) -> CallDetails:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode("ascii")
        signed = self._signer.metadata(method, request)  # type: ignore[arg-type]
        return CallDetails(
            method, details.timeout, merge_metadata(details.metadata, signed),
            details.credentials, getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
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
