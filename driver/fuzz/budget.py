"""The time budget of a fuzz run, split explicitly between search and shrink.

Hypothesis has no time budget of its own (it caps shrinking at 500 replays and
300 s). The machine asks ``searching()`` before each example: until a failure
is found, examples run until the search share of the budget is spent; after
it, shrink replays run until the whole budget is. Past either, the next example
raises ``BudgetExhausted`` before it draws anything, which ends the run; the
smallest failure the harness recorded is the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SEARCH_SHARE = 0.5


@dataclass
class Budget:
    total: float  # seconds
    search_share: float = SEARCH_SHARE
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    found_at: float | None = None

    def __post_init__(self) -> None:
        if self.total <= 0:
            raise ValueError(f"the budget must be positive, got {self.total} s")
        if not 0 < self.search_share <= 1:
            raise ValueError(f"search share must be in (0, 1], got {self.search_share}")
        self.started = self.started or self.clock()

    @property
    def search_s(self) -> float:
        return self.total * self.search_share

    @property
    def shrink_s(self) -> float:
        return self.total - self.search_s

    def elapsed(self) -> float:
        return self.clock() - self.started

    def failed(self) -> None:
        if self.found_at is None:
            self.found_at = self.elapsed()

    def searching(self) -> bool:
        """May another example (or shrink replay) run now?"""
        limit = self.search_s if self.found_at is None else self.total
        return self.elapsed() < limit

    def split(self) -> dict[str, float]:
        return {"total_s": self.total, "search_s": round(self.search_s, 1),
                "shrink_s": round(self.shrink_s, 1)}
