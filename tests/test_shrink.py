"""ddmin over steps. When the failure found replays reliably, each kept candidate is
confirmed by a second failing replay: a racy candidate that failed once by luck is not
kept, and what its lucky replay recorded is forgotten (it must not become the reported
failure). When it does not, candidates are kept on a single failure."""

from __future__ import annotations

from typing import Any

from driver.fuzz.harness import Step
from driver.fuzz.shrink import confirmed, ddmin, reliable

STEPS = [Step("start", {"replicas": 2}), Step("apply", {"name": "w1"}),
         Step("converge", {}), Step("delete", {"name": "w1"}),
         Step("apply", {"name": "w0", "replicas": 1})]
NEEDED = {"start", "converge"}  # the bug needs these two, in this order


def fails(steps: list[Step]) -> bool:
    return {s.rule for s in steps} >= NEEDED


def test_a_deterministic_failure_shrinks_to_what_it_needs_each_kept_step_replayed_twice() -> None:
    runs: list[tuple[str, ...]] = []

    def once(steps: list[Step]) -> bool:
        runs.append(tuple(s.rule for s in steps))
        return fails(steps)

    forgotten: list[int] = []
    out = ddmin(STEPS, confirmed(once, mark=lambda: len(runs), forget=forgotten.append),
                deadline=float("inf"))
    assert [s.rule for s in out.steps] == ["start", "converge"] and out.complete
    kept = {r for r in runs if set(r) >= NEEDED}
    assert all(runs.count(r) == 2 for r in kept)  # confirmed
    assert all(runs.count(r) == 1 for r in set(runs) - kept)  # a pass is not replayed again
    assert forgotten == []


def test_a_candidate_that_failed_once_by_luck_is_not_kept_and_its_record_is_forgotten() -> None:
    lucky = ("delete", "apply")  # ddmin's first candidate; fails only by a race
    seen: dict[tuple[str, ...], int] = {}
    records: list[tuple[str, ...]] = []

    def once(steps: list[Step]) -> bool:
        key = tuple(s.rule for s in steps)
        seen[key] = seen.get(key, 0) + 1
        if fails(steps) or (key == lucky and seen[key] == 1):
            records.append(key)  # what a failing replay records (a Failure)
            return True
        return False

    def forget(at: int) -> None:
        del records[at:]

    out = ddmin(STEPS, confirmed(once, mark=lambda: len(records), forget=forget),
                deadline=float("inf"))
    assert seen[lucky] == 2  # tried, failed once, then passed its confirmation
    assert lucky not in records  # its lucky failure is not reported
    assert [s.rule for s in out.steps] == ["start", "converge"]


def test_a_budget_spent_before_the_confirmation_keeps_the_last_confirmed() -> None:
    calls = 0

    def once(steps: list[Step]) -> bool | None:
        nonlocal calls
        calls += 1
        # Call 1 passes (delete, apply); call 2 fails (start, apply, converge); the budget
        # ends at call 3, its confirmation.
        return None if calls == 3 else fails(steps)

    forgotten: list[int] = []
    out = ddmin(STEPS, confirmed(once, mark=lambda: 7, forget=forgotten.append),
                deadline=float("inf"))
    assert out.steps == STEPS and not out.complete and forgotten == [7]


def test_reliable_says_whether_a_failure_replays_twice_in_a_row() -> None:
    """Only a failure that replays twice in a row has its candidates confirmed: a racy one
    is shrunk on single failures (two in a row kept a 10-step one from shrinking at all)."""
    def script(*verdicts: bool | None) -> tuple[list[int], Any]:
        calls: list[int] = []

        def once(steps: list[Step]) -> bool | None:
            calls.append(1)
            return verdicts[len(calls) - 1]
        return calls, once

    for verdicts, want, runs in [((True, True), True, 2), ((True, False), False, 2),
                                 ((False,), False, 1), ((None,), None, 1),
                                 ((True, None), None, 2)]:
        calls, once = script(*verdicts)
        assert reliable(once, STEPS) is want and len(calls) == runs, verdicts


def test_a_racy_failure_shrinks_on_single_failures() -> None:
    """runs=1: a candidate that fails once is kept; one that passes is not replayed again."""
    runs: list[tuple[str, ...]] = []

    def once(steps: list[Step]) -> bool:
        runs.append(tuple(s.rule for s in steps))
        return fails(steps)

    out = ddmin(STEPS, confirmed(once, mark=lambda: 0, forget=lambda at: None, runs=1),
                deadline=float("inf"))
    assert [s.rule for s in out.steps] == ["start", "converge"] and out.complete
    assert len(runs) == len(set(runs))  # every candidate ran once
