"""The convergence invariants as a checker result.

The state machine evaluates its invariants (scheduler view = what the agents observe, no
orphaned or duplicated containers, statuses agree, no acknowledged write lost) after a heal and
the convergence window, and hands the outcomes here. An invariant that could not be evaluated
(ok=None) makes the result unknown, never a pass; so does an empty list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from driver.fuzz.results import UNKNOWN, Anomaly, CheckerResult, combine

NAME = "convergence"


@dataclass(frozen=True, slots=True)
class InvariantOutcome:
    name: str                 # e.g. "no-orphans"
    ok: bool | None           # None: could not be evaluated
    message: str = ""
    ops: tuple[int, ...] = ()  # history indexes involved (e.g. the lost write's events)
    key: str | None = None
    detail: dict[str, object] | None = None  # extra fields of its anomaly


def convergence_result(outcomes: Iterable[InvariantOutcome], elapsed: float | None = None,
                       name: str = NAME) -> CheckerResult:
    started = time.monotonic()
    seen = list(outcomes)
    anomalies = tuple(
        Anomaly(kind=o.name, message=o.message or f"invariant {o.name} does not hold",
                key=o.key, ops=tuple(o.ops), detail=dict(o.detail or {}))
        for o in seen if o.ok is False)
    unknown = sorted({o.name for o in seen if o.ok is None})
    valid = combine([UNKNOWN if o.ok is None else o.ok for o in seen])
    detail: dict[str, object] = {"checked": len(seen),
                                 "invariants": sorted({o.name for o in seen})}
    if unknown:
        detail["unknown"] = unknown
    if not seen:
        detail["message"] = "no invariant was evaluated"
    return CheckerResult(name=name, valid=valid, anomalies=anomalies,
                         elapsed=(time.monotonic() - started) if elapsed is None else elapsed,
                         detail=detail)
