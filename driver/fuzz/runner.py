"""One fuzz run: Hypothesis drives a ``ClusterMachine`` within a budget, then the checkers.

Everything a run produces goes under the environment's ``reports/<stamp>/``:
``history.jsonl`` (as it happens), ``results.json``, ``report.html``, and on a
failure ``replay.json`` (the artifact ``--replay`` runs) and ``program.py``.
The example database lives in the environment directory (``fuzz-db/``), so a
failure found once is replayed, and its shrinking resumes, on the next run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.reporting import with_reporter
from hypothesis.stateful import get_state_machine_test

from driver.fuzz.budget import Budget
from driver.fuzz.harness import DEFAULT_WINDOW, Harness, Step, smallest_failure
from driver.fuzz.machine import BudgetExhausted, ClusterMachine, FailureFound, InvariantViolated
from driver.fuzz.program import Artifact, render_program
from driver.fuzz.rig import Rig, rig_for
from driver.fuzz.shrink import Shrunk, confirmed, ddmin, reliable

EXIT = {True: 0, False: 1, "unknown": 2}
CHECK_LIMIT_S = 60.0


@dataclass
class FuzzConfig:
    budget_s: float = 120.0
    seed: int | None = None
    steps: int = 10
    examples: int = 500  # the budget is what bounds a run; this only caps a fast system
    window: float = DEFAULT_WINDOW
    search_share: float = 0.5
    kinds: frozenset[str] | None = None  # None: every kind the environment supports


@dataclass
class FuzzResult:
    valid: bool | str
    seed: int
    reports_dir: Path
    report: Path | None
    artifact: Path | None
    program: str | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT[self.valid]


def reports_dir(env_root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{secrets.token_hex(2)}"
    out = env_root / "reports" / stamp
    out.mkdir(parents=True)
    return out


def run_fuzz(env: Any, cfg: FuzzConfig, *, machine: type[ClusterMachine] = ClusterMachine,
             system: Any = None, on_step: Callable[[Harness], None] | None = None) -> FuzzResult:
    out = reports_dir(env.paths.root)
    run_seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**32)
    budget = Budget(cfg.budget_s, cfg.search_share)
    with rig_for(env, out / "history.jsonl", system=system, kinds=cfg.kinds) as rig:
        harness = rig.harness(budget, window=cfg.window, on_step=on_step)
        harness.seed = run_seed
        bound = type(machine.__name__, (machine,), {"harness": harness})
        db = _database(env.paths.root, harness, machine)
        # A failure an earlier run saved is tried first, as Hypothesis's database would
        # (its saved choices no longer mean the same steps: the mix is seeded per example).
        found, printed = (None, []) if _resume(bound, harness, db) else \
            _search(bound, cfg, run_seed, db)
        shrunk = _shrink(bound, harness, db) if harness.failures else None
        return _finish(env, rig, harness, cfg, run_seed, out, found, printed, budget, shrunk)


def _database(root: Path, harness: Harness, machine: type[ClusterMachine]) -> Path:
    """One example database per machine, mix and set of fault kinds: the rules and actions
    a saved example drew must exist when it is replayed (else its draws mean other steps)."""
    import hashlib

    sig = ",".join([machine.__qualname__, repr(machine.MIX), *sorted(harness.kinds)])
    return root / "fuzz-db" / hashlib.sha256(sig.encode()).hexdigest()[:12]


def _search(bound: type[ClusterMachine], cfg: FuzzConfig, run_seed: int,
            db: Path) -> tuple[BaseException | None, list[str]]:
    s = settings(max_examples=cfg.examples, stateful_step_count=cfg.steps, deadline=None,
                 database=DirectoryBasedExampleDatabase(str(db)),
                 suppress_health_check=list(HealthCheck), verbosity=Verbosity.normal,
                 # No Hypothesis shrink: driver/fuzz/shrink.py shrinks by steps, faster here.
                 phases=(Phase.explicit, Phase.reuse, Phase.generate),
                 report_multiple_bugs=False, print_blob=False)
    test = seed(run_seed)(get_state_machine_test(bound, settings=s))
    printed: list[str] = []
    with with_reporter(lambda line: printed.append(str(line))):
        try:
            test()
        except (BudgetExhausted, FailureFound):
            pass  # the budget ended the search, or it found a failure: the harness has it
        except Exception as exc:  # a failure (AssertionError), Flaky, or a broken run
            if not isinstance(exc.__context__, BudgetExhausted | FailureFound):
                return exc, printed
            # Hypothesis calls a replay that the budget stopped "flaky": it is the budget.
    return None, printed


def _replays(bound: type[ClusterMachine], harness: Harness,
             ) -> Callable[[list[Step]], bool | None]:
    """still_fails(steps) for the shrinker: a fresh example running exactly these steps."""
    def still_fails(steps: list[Step]) -> bool | None:
        errors = len(harness.errors)
        try:
            state = bound()
        except BudgetExhausted:
            return None
        try:
            try:
                for s in steps:
                    getattr(state, s.rule)(**s.args)
            finally:
                state.teardown()
        except InvariantViolated:
            return len(harness.errors) == errors
        except BudgetExhausted:
            return None
        return False
    return still_fails


def _resume(bound: type[ClusterMachine], harness: Harness, db: Path) -> bool:
    """Replay the shrunk failure an earlier run saved beside the database; True (and it is
    this run's failure, to shrink further) when it still fails."""
    try:
        steps = Artifact.load(db / "shrunk.json").steps
    except (ValueError, OSError):
        return False
    harness.mode = "replay"
    try:
        failed = _replays(bound, harness)(steps) is True
    finally:
        harness.mode = "search"
    harness.resumed = failed
    return failed


def _shrink(bound: type[ClusterMachine], harness: Harness, db: Path) -> Shrunk | None:
    """Shrink the smallest failure by steps; start from the best one an earlier run saved
    (in the example database's directory) when it still fails, so shrinking resumes."""
    best = smallest_failure(harness.failures)
    assert best is not None
    harness.mode = "replay"

    def forget(at: int) -> None:  # a lucky failure of a racy candidate is not reported
        del harness.failures[at:]

    once = _replays(bound, harness)
    steady = reliable(once, best.steps)
    if steady is None:
        return Shrunk(best.steps, 0, 0, False)
    still_fails = confirmed(once, mark=lambda: len(harness.failures), forget=forget,
                            runs=2 if steady else 1)
    saved = db / "shrunk.json"
    with contextlib.suppress(ValueError, OSError):
        prior = Artifact.load(saved).steps
        if len(prior) < len(best.steps) and still_fails(prior):
            best = smallest_failure(harness.failures) or best
    result = ddmin(best.steps, still_fails, harness.budget.started + harness.budget.total)
    final = smallest_failure(harness.failures)
    if final is not None:
        with contextlib.suppress(OSError):
            db.mkdir(parents=True, exist_ok=True)
            Artifact(env="", seed=0, steps=final.steps, violations=final.violations).save(saved)
    return result


def _finish(env: Any, rig: Rig, harness: Harness, cfg: FuzzConfig, run_seed: int, out: Path,
            found: BaseException | None, printed: list[str], budget: Budget,
            shrunk: Shrunk | None) -> FuzzResult:
    from driver.fuzz.checks import run_checkers

    rig.close_history()
    failure = smallest_failure(harness.failures)
    if failure is None and not harness.errors and 0 < harness.examples <= harness.inconclusive:
        harness.errors.append(f"none of the {harness.examples} examples' writes got an answer "
                              "(all indeterminate): the system was never tested")
    results = run_checkers(out / "history.jsonl", harness.failures, found, CHECK_LIMIT_S,
                           harness.errors)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    program = artifact = None
    if failure is not None:
        art = Artifact(env=env.name, seed=run_seed, steps=failure.steps, window=cfg.window,
                       kinds=sorted(harness.kinds), violations=failure.violations)
        artifact = art.save(out / "replay.json")
        program = render_program(art)
        (out / "program.py").write_text(program)
    summary = {
        "env": env.name, "seed": run_seed, "valid": results["valid"],
        "examples": harness.examples, "steps": harness.steps_total,
        "inconclusive": harness.inconclusive, "resumed": harness.resumed,
        "elapsed_s": round(budget.elapsed(), 1), "budget": budget.split(),
        "found_at_s": budget.found_at, "kinds": sorted(harness.kinds),
        "shrunk_steps": len(failure.steps) if failure else None,
        "found_steps": len(harness.failures[0].steps) if harness.failures else None,
        "shrink": None if shrunk is None else {
            "attempts": shrunk.attempts, "removed": shrunk.removed, "complete": shrunk.complete},
        "violations": failure.violations if failure else [],
        "error": None if failure is not None else (
            f"{type(found).__name__}: {found}" if found is not None else
            (harness.errors[0] if harness.errors else None)),
        "hypothesis": [line for line in printed if line.strip()][-40:],
        "reports_dir": str(out), "artifact": str(artifact) if artifact else None,
    }
    report = _render(out, results, program, summary)
    summary["report"] = str(report) if report else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return FuzzResult(results["valid"], run_seed, out, report, artifact, program, summary)


def _render(out: Path, results: dict[str, Any], program: str | None,
            summary: dict[str, Any]) -> Path | None:
    from driver.fuzz.history import load
    from driver.fuzz.report import render_report

    events = [op.to_json() for op in load(out / "history.jsonl")]
    meta = {k: summary[k] for k in ("env", "seed", "examples", "steps", "elapsed_s", "budget")}
    started = time.monotonic()
    path = render_report(events, results, out=out / "report.html", program=program, meta=meta)
    summary["report_render_s"] = round(time.monotonic() - started, 2)
    return path
