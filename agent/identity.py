"""Who is calling: set by the guard interceptor, read by handlers."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    principal: str
    role: str
    key_id: str = ""


CALLER: ContextVar[Caller] = ContextVar("shakedown_caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served (LookupError outside one)."""
    return CALLER.get()
