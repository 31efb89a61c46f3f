"""HMAC request signing, scheme ``v2`` (legacy ``v1``); the normative text is docs/protocol.md.

A signature covers the agent it is meant for (the audience), the full method
name, a timestamp, a nonce and the SHA-256 of the exact serialized request
bytes, so a signed call cannot be replayed against another agent, another
method, later, twice, or with another body. v1 lacks the audience; agents
accept it only behind ``--accept-hmac-v1``. A request is v2 exactly when it
carries ``x-shakedown-audience``: stripping that header cannot downgrade a v2
signature, since the scheme name is the first line of the MACed string.

Pure functions only: the driver's interceptor and the agent's verifier both
build on these, and so must every other implementation (tests/vectors/).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SCHEME_V1 = "SHAKEDOWN-HMAC-SHA256-V1"
SCHEME_V2 = "SHAKEDOWN-HMAC-SHA256-V2"
SCHEME = SCHEME_V2

# Metadata keys (gRPC metadata keys are lowercase ASCII).
KEY_ID = "x-shakedown-key-id"
TIMESTAMP = "x-shakedown-timestamp"
NONCE = "x-shakedown-nonce"
SIGNATURE = "x-shakedown-signature"
AUDIENCE = "x-shakedown-audience"
REQUIRED_KEYS = (KEY_ID, TIMESTAMP, NONCE, SIGNATURE)
METADATA_KEYS = (*REQUIRED_KEYS, AUDIENCE)

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The audience is an agent name: the same rule as `--name` (shakedown.pkilayout.NAME_RE).
AUDIENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
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
    # None: a legacy v1 signature.
    audience: str | None = None

    @property
    def scheme(self) -> str:
        return SCHEME_V1 if self.audience is None else SCHEME_V2

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = (
            (KEY_ID, self.key_id),
            (TIMESTAMP, str(self.timestamp)),
            (NONCE, self.nonce),
            (SIGNATURE, self.signature),
        )
        return md if self.audience is None else (*md, (AUDIENCE, self.audience))


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def check_audience(audience: str) -> str:
    if not AUDIENCE_RE.fullmatch(audience):  # fullmatch: "$" alone would admit "n1\n"
        raise SignatureFormatError(
            f"{AUDIENCE}: malformed agent name {audience!r} "
            "(1-63 of letters, digits, '.', '_', '-'; starting with a letter or digit)"
        )
    return audience


def canonical_string(
    key_id: str,
    method: str,
    timestamp: int,
    nonce: str,
    body: bytes,
    *,
    audience: str | None = None,
) -> bytes:
    """The exact bytes that are MACed, LF-joined with no trailing LF.

    v2 (an audience given): scheme, key id, audience, method, timestamp, nonce,
    body digest. v1 (``audience=None``): the same without the audience line.
    """
    if not KEY_ID_RE.match(key_id):
        raise SignatureFormatError(f"{KEY_ID}: malformed key id {key_id!r}")
    if audience is not None:
        check_audience(audience)
    if not METHOD_RE.match(method):
        raise SignatureFormatError(f"method: malformed full method name {method!r}")
    if not (0 <= timestamp < 10**12):
        raise SignatureFormatError(f"{TIMESTAMP}: out of range: {timestamp}")
    if not NONCE_RE.match(nonce):
        raise SignatureFormatError(f"{NONCE}: must be 16-64 characters of [A-Za-z0-9_-]")
    return _canonical(key_id, audience, method, timestamp, nonce, body)


def _canonical(
    key_id: str, audience: str | None, method: str, timestamp: int, nonce: str, body: bytes
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    if audience is None:
        lines: tuple[str, ...] = (SCHEME_V1, key_id, method, str(timestamp), nonce, digest)
    else:
        lines = (SCHEME_V2, key_id, audience, method, str(timestamp), nonce, digest)
    return "\n".join(lines).encode("ascii")


def compute_signature(secret: bytes, canonical: bytes) -> str:
    return hmac.digest(secret, canonical, "sha256").hex()  # the one-shot C path


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def sign(
    key_id: str,
    secret: bytes,
    method: str,
    body: bytes,
    *,
    audience: str | None,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> SignedHeaders:
    """Sign for the agent named ``audience`` (v2); ``audience=None`` makes a legacy v1 one.

    The audience is a required keyword so that no caller signs v1 by accident.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    nn = new_nonce() if nonce is None else nonce
    canonical = canonical_string(key_id, method, ts, nn, body, audience=audience)
    return SignedHeaders(key_id, ts, nn, compute_signature(secret, canonical), audience)


def parse_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | Mapping[str, str],
) -> SignedHeaders:
    """Extract and syntax-check the signature headers (each at most once)."""
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    found: dict[str, str] = {}
    for key, value in items:
        if not key.startswith("x-shakedown-") or key not in METADATA_KEYS:
            continue
        if key in found:
            raise SignatureFormatError(f"{key}: sent more than once")
        if isinstance(value, bytes):
            raise SignatureFormatError(f"{key}: must be ASCII text")
        found[key] = value
    missing = [k for k in REQUIRED_KEYS if k not in found]
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
    audience = found.get(AUDIENCE)
    if audience is not None:
        check_audience(audience)
    return SignedHeaders(
        found[KEY_ID], int(found[TIMESTAMP]), found[NONCE], found[SIGNATURE], audience
    )


def signature_matches(secret: bytes, method: str, body: bytes, headers: SignedHeaders) -> bool:
    """Constant-time check of ``headers`` (already syntax-checked by parse_metadata)."""
    if not METHOD_RE.match(method):
        raise SignatureFormatError(f"method: malformed full method name {method!r}")
    canonical = _canonical(
        headers.key_id, headers.audience, method, headers.timestamp, headers.nonce, body
    )
    return hmac.compare_digest(compute_signature(secret, canonical), headers.signature)
