"""The HMAC keyring: key ids bound to principals, several active at once.

One JSON file serves both ends: the agent loads every key to verify, and a
driver picks the active key bound to its own principal to sign. JSON keeps it
trivially readable from Go. Written with mode 0600, and refused on load when
group- or world-accessible or owned by another user; secrets are base64.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shakedown.secretfile import SecretFileError, read_secret
from shakedown.signing import KEY_ID_RE

FORMAT_VERSION = 1
MIN_SECRET_BYTES = 16


class KeyringError(ValueError):
    """The keyring file is missing, malformed or lacks a usable key."""


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    principal: str
    secret: bytes = field(repr=False)
    active: bool = True
    created: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "principal": self.principal,
            "secret": base64.b64encode(self.secret).decode("ascii"),
            "active": self.active,
            "created": self.created,
        }


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[Key, ...]

    def get(self, key_id: str) -> Key | None:
        for key in self.keys:
            if key.id == key_id:
                return key
        return None

    def signing_key(self, principal: str | None = None, key_id: str | None = None) -> Key:
        """The newest active key for ``principal`` (or the one named ``key_id``)."""
        if key_id is not None:
            key = self.get(key_id)
            if key is None:
                raise KeyringError(f"key id {key_id!r} is not in the keyring")
            return key
        candidates = [
            k for k in self.keys if k.active and (principal is None or k.principal == principal)
        ]
        if not candidates:
            who = f" for principal {principal!r}" if principal else ""
            raise KeyringError(f"no active key{who} in the keyring")
        # On equal timestamps the later entry wins: a rotation within one second still takes.
        return max(enumerate(candidates), key=lambda ik: (ik[1].created, ik[0]))[1]

    def with_key(self, key: Key) -> Keyring:
        if self.get(key.id) is not None:
            raise KeyringError(f"key id {key.id!r} already exists")
        return Keyring((*self.keys, key))

    def to_json(self) -> str:
        return (
            json.dumps(
                {"version": FORMAT_VERSION, "keys": [k.to_json() for k in self.keys]}, indent=2
            )
            + "\n"
        )


def generate_key(principal: str, key_id: str | None = None, nbytes: int = 32) -> Key:
    kid = key_id or f"{principal}-{secrets.token_hex(4)}"
    if not KEY_ID_RE.match(kid):
        raise KeyringError(f"key id {kid!r}: must match {KEY_ID_RE.pattern}")
    return Key(kid, principal, secrets.token_bytes(nbytes), True, int(time.time()))


def new_keyring(principals: Iterable[str]) -> Keyring:
    return Keyring(tuple(generate_key(p) for p in principals))


def parse(text: str, source: str = "keyring") -> Keyring:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyringError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise KeyringError(f'{source}: expected an object with "version": {FORMAT_VERSION}')
    raw_keys = doc.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyringError(f'{source}: "keys" must be a list')
    keys: list[Key] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_keys):
        where = f"{source}: keys[{i}]"
        if not isinstance(raw, dict):
            raise KeyringError(f"{where}: must be an object")
        kid, principal, secret = raw.get("id"), raw.get("principal"), raw.get("secret")
        if not isinstance(kid, str) or not KEY_ID_RE.match(kid):
            raise KeyringError(f"{where}.id: missing or malformed")
        if kid in seen:
            raise KeyringError(f"{where}.id: duplicate key id {kid!r}")
        if not isinstance(principal, str) or not principal:
            raise KeyringError(f"{where}.principal: missing")
        if not isinstance(secret, str):
            raise KeyringError(f"{where}.secret: missing")
        try:
            secret_bytes = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"{where}.secret: not base64") from None
        if len(secret_bytes) < MIN_SECRET_BYTES:
            raise KeyringError(f"{where}.secret: shorter than {MIN_SECRET_BYTES} bytes")
        seen.add(kid)
        keys.append(
            Key(
                kid,
                principal,
                secret_bytes,
                bool(raw.get("active", True)),
                int(raw.get("created", 0)),
            )
        )
    return Keyring(tuple(keys))


def load(path: str | os.PathLike[str]) -> Keyring:
    """Read and parse the keyring, refusing one others could read (shakedown.secretfile)."""
    p = Path(path)
    try:
        data = read_secret(p, "keyring")
    except SecretFileError as exc:
        raise KeyringError(str(exc)) from None
    except OSError as exc:
        raise KeyringError(f"cannot read keyring {p}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyringError(f"{p}: not UTF-8 text") from None
    return parse(text, str(p))


def save(keyring: Keyring, path: str | os.PathLike[str]) -> None:
    """Atomically write the keyring with mode 0600 (never world-readable, even briefly)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(keyring.to_json())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
