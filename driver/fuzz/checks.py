"""The checkers a fuzz run ends with, over its history and what its examples found.

- ``convergence``: the invariants each example checked after its window
  (driver/fuzz/invariants.py); an example that broke for another reason (an
  error, not a verdict) makes it "unknown", never "valid".
- ``linearizable``: the workload registry as one register per workload,
  checked on the whole history within a time limit ("unknown" past it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driver.fuzz.checkers import linearizable
from driver.fuzz.checkers.convergence import InvariantOutcome, convergence_result
from driver.fuzz.harness import Failure, smallest_failure
from driver.fuzz.history import load
from driver.fuzz.results import CheckerResult, Results


def convergence(failures: list[Failure], error: BaseException | None,
                errors: Sequence[str] = ()) -> CheckerResult:
    """The examples' verdicts as invariant outcomes: a violation is false; a run that broke
    before any verdict is unknown; examples that all held are true."""
    if failures:
        # The reported (shortest) failure first, then the latest others.
        best = smallest_failure(failures)
        shown = [f for f in failures[-5:] if f is not best][:4]
        if best is not None:
            shown.insert(0, best)
        outcomes = [InvariantOutcome(v.kind, False, str(v), tuple(f.ops), f.prefix,
                                     {"example": f.example, "steps": len(f.steps)})
                    for f in shown for v in f.found]
    elif error is not None or errors:
        why = f"{type(error).__name__}: {error}" if error is not None else errors[0]
        result = convergence_result([InvariantOutcome("run", None)])
        result.detail.update(message=f"the run broke before a verdict: {why}",
                             errors=list(errors)[:20])
        return result
    else:
        outcomes = [InvariantOutcome("invariants", True)]
    return convergence_result(outcomes)


def run_checkers(history: Path, failures: list[Failure], error: BaseException | None,
                 time_limit: float, errors: list[str] | None = None) -> dict[str, Any]:
    results = Results()
    results.add(convergence(failures, error, errors or []))
    results.add(linearizable.check(load(history), time_limit=time_limit))
    out: dict[str, Any] = results.to_json()
    return out
