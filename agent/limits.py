"""Per-principal limits on concurrent long-running calls.

Logs(follow), WaitContainer, Exec, StopContainer and RestartContainer can hold
an engine thread for minutes. Each principal may have only so many in flight;
past that the call is refused at once with RESOURCE_EXHAUSTED naming the limit,
never queued, so one caller cannot starve the others (or the reaper).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shakedown.errors import ResourceExhausted

FLAG = "max-long-calls-per-principal"
DEFAULT = 16  # x 4 principals = the 64 streaming threads


class CallLimits:
    """Counters per principal; the event loop is single-threaded, so no lock."""

    def __init__(self, per_principal: int = DEFAULT) -> None:
        self.per_principal = per_principal
        self._active: dict[str, int] = {}

    def active(self, principal: str) -> int:
        return self._active.get(principal, 0)

    @contextmanager
    def hold(self, principal: str, call: str) -> Iterator[None]:
        n = self._active.get(principal, 0)
        if n >= self.per_principal:
            raise ResourceExhausted(
                f"{call}: principal {principal!r} already has {n} long-running calls in flight "
                f"(logs follow, wait, exec, stop, restart); the limit --{FLAG} is "
                f"{self.per_principal}")
        self._active[principal] = n + 1
        try:
            yield
        finally:
            left = self._active[principal] - 1
            if left:
                self._active[principal] = left
            else:
                del self._active[principal]
