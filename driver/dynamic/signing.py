"""A BodySigner for Shakedown agents, from a keyring: the dynamic client's way to sign."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from driver.dynamic.client import BodySigner
from shakedown import keyring, signing


def agent_signer(keys: str | Path, principal: str = "driver",
                 key_id: str | None = None, *,
                 audience: str | Callable[[], str]) -> BodySigner:
    """Signs (method, exact body bytes) with the principal's newest active key, for the
    agent named ``audience`` (HMAC v2; a callable is asked on each call, e.g. an
    ``agentname.Audience``)."""
    key = keyring.load(keys).signing_key(principal, key_id)
    if isinstance(audience, str):
        signing.check_audience(audience)

    def sign(method: str, body: bytes) -> Sequence[tuple[str, str]]:
        name = audience if isinstance(audience, str) else audience()
        return signing.sign(key.id, key.secret, method, body, audience=name).metadata()

    return sign
