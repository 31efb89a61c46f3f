"""Who may call, and did they sign it: principals, roles, HMAC and replay defence.

The mTLS handshake proves the caller holds a certificate from our CA; this
module maps that certificate to a principal on the allow-list, checks the role
against the method, and verifies the HMAC signature over the raw request
bytes. The keyring and the allow-list are re-read when their files change, so
key rotation needs no restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.identity import Caller
from shakedown import keyring as keyring_mod
from shakedown import signing
from shakedown.errors import AuthError, PolicyError, ResourceExhausted
from shakedown.pkilayout import load_principals

log = logging.getLogger("shakedown.agent.auth")

AGENT_SERVICE = "shakedown.agent.v1.Agent"
READ_ONLY_METHODS = frozenset(
    f"/{AGENT_SERVICE}/{name}"
    for name in (
        "GetNodeInfo",
        "InspectContainer",
        "ListContainers",
        "WaitContainer",
        "Logs",
        "Events",
        "ListSessions",
        "InspectNetwork",
        "ListNetworks",
        "ListFaults",
    )
)
# Health and reflection need mTLS but no HMAC, so grpcurl and grpc_health_probe
# work with a client certificate alone. They are read-only.
HMAC_EXEMPT_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
ROLES = {"admin": None, "observer": READ_ONLY_METHODS}


def needs_hmac(method: str) -> bool:
    return not method.startswith(HMAC_EXEMPT_SERVICES)


def role_allows(role: str, method: str) -> bool:
    if role == "admin":
        return True
    if role == "observer":
        return method in READ_ONLY_METHODS or not needs_hmac(method)
    return False


class NonceCache:
    """Nonces seen within the acceptance window, per key id.

    A nonce need only be remembered while its timestamp is still acceptable
    (ts + skew): after that the timestamp check rejects a replay on its own.
    Bounded, so a flood of valid calls cannot grow memory without limit.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def add(self, key_id: str, nonce: str, forget_at: float, now: float) -> bool:
        """Record a nonce; False when it was already seen (a replay)."""
        with self._lock:
            self._prune(now)
            token = (key_id, nonce)
            if token in self._seen:
                return False
            if len(self._seen) >= self._max:
                raise ResourceExhausted("nonce cache full: too many signed calls in the window")
            self._seen[token] = forget_at
            return True

    def _prune(self, now: float) -> None:
        # Entries are nearly sorted by forget_at; stop at the first live one.
        while self._seen:
            _, forget_at = next(iter(self._seen.items()))
            if forget_at > now:
                break
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class _Reloading:
    """A value loaded from a file, re-read when the file's mtime changes."""

    def __init__(self, path: Path, loader: Callable[[Path], object]) -> None:
        self.path, self._loader = path, loader
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self.value = loader(path)

    def _mtime(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    def get(self) -> object:
        stamp = self._mtime()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self.value = self._loader(self.path)
                        log.info("reloaded", extra={"fields": {"path": str(self.path)}})
                    except Exception as exc:  # a half-written file must not lock everyone out
                        log.warning(
                            "reload failed; keeping the previous version",
                            extra={"fields": {"path": str(self.path), "error": str(exc)}},
                        )
                    self._stamp = stamp
        return self.value


class Authenticator:
    def __init__(
        self,
        keys: Path,
        principals: Mapping[str, str],
        principals_file: Path | None = None,
        *,
        max_skew: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = _Reloading(keys, keyring_mod.load)
        self._static_principals = dict(principals)
        self._principals_file = (
            _Reloading(principals_file, load_principals) if principals_file else None
        )
        self.max_skew = max_skew
        self._clock = clock
        self.nonces = NonceCache()

    def principals(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        if self._principals_file is not None:
            merged.update(self._principals_file.get())  # type: ignore[call-overload]
        merged.update(self._static_principals)
        return merged

    def identify(self, identities: Sequence[str]) -> Caller:
        """Map the certificate's names (CN and SANs) to an allow-listed principal."""
        allowed = self.principals()
        for name in identities:
            role = allowed.get(name)
            if role is not None:
                return Caller(principal=name, role=role)
        shown = identities[0] if identities else "<no name>"
        raise PolicyError(f"principal {shown!r} is not on this agent's allow-list")

    def authorize(self, caller: Caller, method: str) -> None:
        if not role_allows(caller.role, method):
            raise PolicyError(
                f"principal {caller.principal!r} has role {caller.role!r}, "
                f"which may not call {method.rsplit('/', 1)[-1]}"
            )

    def verify(
        self, caller: Caller, method: str, body: bytes, metadata: Sequence[tuple[str, str | bytes]]
    ) -> Caller:
        """Check the request's HMAC signature; returns the caller with its key id."""
        try:
            headers = signing.parse_metadata(metadata)
        except signing.SignatureFormatError as exc:
            raise AuthError(f"bad signature metadata: {exc}") from None
        ring: keyring_mod.Keyring = self._keyring.get()  # type: ignore[assignment]
        key = ring.get(headers.key_id)
        if key is None:
            raise AuthError(f"unknown key id {headers.key_id!r}")
        if not key.active:
            raise AuthError(f"key id {headers.key_id!r} is retired")
        if key.principal != caller.principal:
            raise AuthError(
                f"key id {headers.key_id!r} is not bound to principal {caller.principal!r}"
            )
        now = self._clock()
        skew = headers.timestamp - now
        if abs(skew) > self.max_skew:
            raise AuthError(
                f"stale timestamp: {skew:+.0f} s from the agent's clock "
                f"(allowed ±{self.max_skew:g} s)"
            )
        try:
            matches = signing.signature_matches(key.secret, method, body, headers)
        except signing.SignatureFormatError as exc:
            raise AuthError(f"bad signature metadata: {exc}") from None
        if not matches:
            raise AuthError("signature mismatch (wrong key, or the request was altered)")
        # Only a valid signature consumes its nonce, so junk cannot burn nonces.
        if not self.nonces.add(key.id, headers.nonce, headers.timestamp + self.max_skew + 1, now):
            raise AuthError("replayed nonce")
        return Caller(caller.principal, caller.role, key.id)
