"""HMAC request signing, scheme ``v1`` (the normative text is docs/protocol.md).

A signature covers the full method name, a timestamp, a nonce and the SHA-256
of the exact serialized request bytes, so a signed call cannot be replayed
against another method, later, twice, or with another body. Pure functions
only: the driver's interceptor and the agent's verifier both build on these,
and so must every other implementation (tests/vectors/hmac-v1.json).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SCHEME = "SHAKEDOWN-HMAC-SHA256-V1"

# Metadata keys (gRPC metadata keys are lowercase ASCII).
KEY_ID = "x-shakedown-key-id"
TIMESTAMP = "x-shakedown-timestamp"
NONCE = "x-shakedown-nonce"
SIGNATURE = "x-shakedown-signature"
METADATA_KEYS = (KEY_ID, TIMESTAMP, NONCE, SIGNATURE)

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TIMESTAMP_RE = re.compile(r"^(0|[1-9][0-9]{0,11})$")
METHOD_RE = re.compile(r"^/[A-Za-z0-9_.]+/[A-Za-z0-9_]+$")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")


class SignatureFormatError(ValueError):
    """A signing input or metadata value is malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    key_id: str
    timestamp: int
    nonce: str
    signature: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (KEY_ID, self.key_id),
            (TIMESTAMP, str(self.timestamp)),
            (NONCE, self.nonce),
            (SIGNATURE, self.signature),
        )


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_string(key_id: str, method: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes that are MACed: six lines joined by LF, no trailing LF."""
    if not KEY_ID_RE.match(key_id):
        raise SignatureFormatError(f"{KEY_ID}: malformed key id {key_id!r}")
    if not METHOD_RE.match(method):
        raise SignatureFormatError(f"method: malformed full method name {method!r}")
    if not (0 <= timestamp < 10**12):
        raise SignatureFormatError(f"{TIMESTAMP}: out of range: {timestamp}")
    if not NONCE_RE.match(nonce):
        raise SignatureFormatError(f"{NONCE}: must be 16-64 characters of [A-Za-z0-9_-]")
    return "\n".join((SCHEME, key_id, method, str(timestamp), nonce, body_digest(body))).encode(
        "ascii"
    )


def compute_signature(secret: bytes, canonical: bytes) -> str:
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def sign(
    key_id: str,
    secret: bytes,
    method: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> SignedHeaders:
    ts = int(time.time()) if timestamp is None else timestamp
    nn = new_nonce() if nonce is None else nonce
    sig = compute_signature(secret, canonical_string(key_id, method, ts, nn, body))
    return SignedHeaders(key_id, ts, nn, sig)


def parse_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | Mapping[str, str],
) -> SignedHeaders:
    """Extract and syntax-check the four signature headers (each exactly once)."""
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    found: dict[str, str] = {}
    for key, value in items:
        if key not in METADATA_KEYS:
            continue
        if key in found:
            raise SignatureFormatError(f"{key}: sent more than once")
        if isinstance(value, bytes):
            raise SignatureFormatError(f"{key}: must be ASCII text")
        found[key] = value
    missing = [k for k in METADATA_KEYS if k not in found]
    if missing:
        raise SignatureFormatError(f"missing signature metadata: {', '.join(missing)}")
    if not KEY_ID_RE.match(found[KEY_ID]):
        raise SignatureFormatError(f"{KEY_ID}: malformed")
    if not TIMESTAMP_RE.match(found[TIMESTAMP]):
        raise SignatureFormatError(f"{TIMESTAMP}: must be decimal Unix seconds")
    if not NONCE_RE.match(found[NONCE]):
        raise SignatureFormatError(f"{NONCE}: must be 16-64 characters of [A-Za-z0-9_-]")
    if not SIGNATURE_RE.match(found[SIGNATURE]):
        raise SignatureFormatError(f"{SIGNATURE}: must be 64 lowercase hex digits")
    return SignedHeaders(found[KEY_ID], int(found[TIMESTAMP]), found[NONCE], found[SIGNATURE])


def signature_matches(secret: bytes, method: str, body: bytes, headers: SignedHeaders) -> bool:
    expected = compute_signature(
        secret,
        canonical_string(headers.key_id, method, headers.timestamp, headers.nonce, body),
    )
    return hmac.compare_digest(expected, headers.signature)
