"""Who may call, and did they sign it: principals, roles, HMAC and replay defence.

The mTLS handshake proves the caller holds a certificate from our CA; this
module maps that certificate to a principal on the allow-list, checks the role
against the method, and verifies the HMAC signature (scheme v2: bound to this
agent's name; v1 only with --accept-hmac-v1) over the raw request bytes.
The keyring and the allow-list are re-read when their files change, so
key rotation needs no restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.identity import Caller
from agent.nonces import NonceCache
from shakedown import keyring as keyring_mod
from shakedown import signing
from shakedown.errors import AuthError, PolicyError
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


class _Reloading:
    """A value loaded from a file, re-read when the file's mtime changes.

    The mtime is checked at most every ``interval`` seconds (a stat per call
    was a measurable share of a signed call), or at once when ``get(fresh=True)``:
    callers ask for that before refusing an unknown key or principal, so a
    rotation takes effect on the very next call. A failed reload keeps the
    previous version (a half-written or too-open file must not lock anyone out
    or in) and is logged.
    """

    def __init__(
        self, path: Path, loader: Callable[[Path], object], interval: float = 0.25
    ) -> None:
        self.path, self._loader, self.interval = path, loader, interval
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._checked = time.monotonic()
        self.value = loader(path)

    def _mtime(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # Mode and inode too: a chmod to 0644, or an atomic replace within one mtime tick.
        return (st.st_mtime_ns, st.st_ino, st.st_mode)

    def get(self, fresh: bool = False) -> object:
        now = time.monotonic()
        if not fresh and now - self._checked < self.interval:
            return self.value
        self._checked = now
        stamp = self._mtime()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self.value = self._loader(self.path)
                        log.info("reloaded", extra={"fields": {"path": str(self.path)}})
                    except Exception as exc:
                        log.error(
                            "reload failed; keeping the previous version",
                            extra={"fields": {"path": str(self.path), "error": str(exc)}},
                        )
                    self._stamp = stamp
        return self.value


def _load_keys(path: Path) -> dict[str, keyring_mod.Key]:
    # Indexed once per load: the lookup is per call.
    return {key.id: key for key in keyring_mod.load(path).keys}


class Authenticator:
    def __init__(
        self,
        keys: Path,
        principals: Mapping[str, str],
        principals_file: Path | None = None,
        *,
        name: str,
        max_skew: float = 30.0,
        clock: Callable[[], float] = time.time,
        accept_v1: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self.name = signing.check_audience(name)
        self._keyring = _Reloading(keys, _load_keys)
        self._static_principals = dict(principals)
        self._principals_file = (
            _Reloading(principals_file, load_principals) if principals_file else None
        )
        self._merged: tuple[object, dict[str, str]] = (None, {})
        self.max_skew = max_skew
        self.accept_v1 = accept_v1
        self._clock = clock
        # With a state dir the replay window survives restarts (agent/nonces.py).
        self.nonces = NonceCache(
            path=state_dir / "nonces" if state_dir is not None else None, now=clock()
        )

    def principals(self, fresh: bool = False) -> dict[str, str]:
        if self._principals_file is None:
            return self._static_principals
        loaded = self._principals_file.get(fresh)
        cached_for, merged = self._merged
        if cached_for is not loaded:  # merge once per load, not per call
            merged = {**loaded, **self._static_principals}  # type: ignore[dict-item]
            self._merged = (loaded, merged)
        return merged

    def identify(self, identities: Sequence[str]) -> Caller:
        """Map the certificate's names (CN and SANs) to an allow-listed principal."""
        for fresh in (False, True):  # re-check the file before refusing: it may just have changed
            allowed = self.principals(fresh)
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
        if headers.audience is None:
            if not self.accept_v1:
                raise AuthError(
                    "HMAC scheme v1 is disabled on this agent: sign with scheme v2 "
                    f"({signing.AUDIENCE}: {self.name}), or start the agent with "
                    "--accept-hmac-v1 to accept legacy v1 signatures"
                )
        elif headers.audience != self.name:
            raise AuthError(
                f"wrong audience: the request was signed for agent {headers.audience!r}, "
                f"this agent is {self.name!r}"
            )
        key = self._key(headers.key_id)
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

    def _key(self, key_id: str) -> keyring_mod.Key:
        ring: dict[str, keyring_mod.Key] = self._keyring.get()  # type: ignore[assignment]
        key = ring.get(key_id)
        if key is None:  # a key added just now: re-check the file before refusing
            ring = self._keyring.get(fresh=True)  # type: ignore[assignment]
            key = ring.get(key_id)
        if key is None:
            raise AuthError(f"unknown key id {key_id!r}")
        return key
