"""A BodySigner for Shakedown agents, from a keyring: the dynamic client's way to sign."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from driver.dynamic.client import BodySigner
from shakedown import keyring, signing


def agent_signer(keys: str | Path, principal: str = "driver",
                 key_id: str | None = None) -> BodySigner:
    """Signs (method, exact body bytes) with the principal's newest active key."""
    key = keyring.load(keys).signing_key(principal, key_id)

    def sign(method: str, body: bytes) -> Sequence[tuple[str, str]]:
        return signing.sign(key.id, key.secret, method, body).metadata()

    return sign
