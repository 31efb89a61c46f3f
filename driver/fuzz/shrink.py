"""Shrinking a failure by its steps (delta debugging), within the shrink budget.

Hypothesis shrinks choices, which against a real system costs one full example
(a convergence window for every failing try) per attempt and, measured here,
made little headway in minutes. Steps are what a failure is made of, so after
Hypothesis finds one this removes chunks of steps (Zeller's ddmin: halves, then
quarters, ... then single steps) and keeps every removal after which the
replayed steps still break an invariant. Every attempt is a real run, recorded
in the history like any other example.

A racy candidate can fail one replay by luck. When the failure found replays
twice in a row (``reliable``), a candidate is kept only when it does too
(``confirmed``), else the shrunk program may not replay. When it does not, a
candidate that fails once is as good as what it came from, and demanding two in a
row kept a 10-step leadership failure from shrinking at all (decision 38).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from driver.fuzz.harness import Step


@dataclass
class Shrunk:
    steps: list[Step]
    attempts: int
    removed: int
    complete: bool  # a full pass of single-step removals found nothing more to drop


def ddmin(steps: list[Step], still_fails: Callable[[list[Step]], bool | None],
          deadline: float, clock: Callable[[], float] = time.monotonic) -> Shrunk:
    """``still_fails(candidate)``: True if it breaks an invariant, False if not, None if
    the budget ran out (the search stops there)."""
    best, attempts, seen = list(steps), 0, set()
    n = 2
    while len(best) >= 1 and clock() < deadline:
        chunk = max(1, -(-len(best) // n))
        progressed = False
        for start in range(0, len(best), chunk):
            cand = best[:start] + best[start + chunk:]
            key = tuple((s.rule, repr(s.args)) for s in cand)
            if key in seen or clock() >= deadline:
                continue
            seen.add(key)
            attempts += 1
            verdict = still_fails(cand)
            if verdict is None:
                return Shrunk(best, attempts, len(steps) - len(best), False)
            if verdict:
                best, progressed = cand, True
                n = max(n - 1, 2)
                break
        if not progressed:
            if chunk == 1:
                return Shrunk(best, attempts, len(steps) - len(best), True)
            n = min(len(best), n * 2)
    return Shrunk(best, attempts, len(steps) - len(best), False)


def confirmed(once: Callable[[list[Step]], bool | None], *, mark: Callable[[], int],
              forget: Callable[[int], None], runs: int = 2,
              ) -> Callable[[list[Step]], bool | None]:
    """``still_fails`` for ddmin that needs ``runs`` failing replays in a row. ``mark()``
    is taken before a candidate's first replay; when a later one passes (or the budget
    ends first), ``forget(mark)`` lets the caller drop what the lucky replay recorded: it
    must not become the reported failure."""
    def still_fails(steps: list[Step]) -> bool | None:
        at = mark()
        for i in range(runs):
            verdict = once(steps)
            if verdict is not True:
                if i:
                    forget(at)
                return verdict
        return True
    return still_fails


def reliable(once: Callable[[list[Step]], bool | None], steps: list[Step]) -> bool | None:
    """Whether ``steps`` fail twice in a row (one replay when the first passes); None when
    the budget ran out first."""
    for _ in range(2):
        verdict = once(steps)
        if verdict is not True:
            return verdict
    return True
