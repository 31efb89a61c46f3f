"""Running a saved failure again, without Hypothesis: ``shakedown fuzz --replay FILE``.

``machine_for`` gives a machine bound to an environment (what the printed
program calls); ``replay`` runs an artifact's steps ``times`` times and says how
often it still fails, which is its flake rate.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver.fuzz.budget import Budget
from driver.fuzz.harness import DEFAULT_WINDOW
from driver.fuzz.machine import ClusterMachine, InvariantViolated
from driver.fuzz.program import Artifact
from driver.fuzz.rig import rig_for

UNBOUNDED_S = 24 * 3600.0


def machine_for(env: Any, *, kinds: list[str] | None = None, window: float = DEFAULT_WINDOW,
                history: Path | None = None, base: Path | None = None,
                machine: type[ClusterMachine] = ClusterMachine,
                system: Any = None) -> ClusterMachine:
    """A machine on ``env`` (a name or an Environment); its teardown releases the rig."""
    if isinstance(env, str):
        from driver.env import Environment

        env = Environment.load(env, base=base)
    if history is None:
        from driver.fuzz.runner import reports_dir

        history = reports_dir(env.paths.root) / "history.jsonl"
    stack = contextlib.ExitStack()
    rig = stack.enter_context(rig_for(env, history, system=system,
                                      kinds=frozenset(kinds) if kinds is not None else None))
    harness = rig.harness(Budget(UNBOUNDED_S), window=window)
    harness.mode = "replay"
    bound = type(machine.__name__, (machine,), {"harness": harness})
    state = bound()
    down = state.teardown

    def teardown() -> None:
        try:
            down()
        finally:
            stack.close()
    state.teardown = teardown  # type: ignore[method-assign,unused-ignore]
    return state


@dataclass
class ReplayResult:
    runs: int
    failed: int
    violations: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Runs that proved nothing: our environment broke, or the system answered no write.
    inconclusive: int = 0

    @property
    def still_fails(self) -> bool:
        return self.failed > 0

    @property
    def conclusive(self) -> int:
        return self.runs - self.inconclusive

    @property
    def flake_rate(self) -> float:
        """The share of conclusive runs that did not reproduce the failure."""
        return round(1 - self.failed / self.conclusive, 3) if self.conclusive else 0.0


def replay(env: Any, art: Artifact, *, times: int = 5, out: Path | None = None,
           machine: type[ClusterMachine] = ClusterMachine, system: Any = None) -> ReplayResult:
    result = ReplayResult(runs=times, failed=0)
    for i in range(times):
        hist = (out / f"replay-{i + 1}.jsonl") if out is not None else None
        state = machine_for(env, kinds=art.kinds, window=art.window, history=hist,
                            machine=machine, system=system)
        found: list[str] = []
        errors_before = 0
        try:
            errors_before = len(state.harness.errors)
            try:
                for s in art.steps:
                    getattr(state, s.rule)(**s.args)
            except InvariantViolated as exc:
                found.append(str(exc))
            finally:
                try:
                    state.teardown()
                except InvariantViolated as exc:
                    found.append(str(exc))
        except Exception as exc:  # the run broke: not a reproduction, but say why
            state.harness.errors.append(f"{type(exc).__name__}: {exc}")
        broke = state.harness.errors[errors_before:]
        if not found and not broke and not state.conclusive:
            broke = [f"none of its {state.writes} writes got an answer (all indeterminate): "
                     "no verdict"]
        if broke and not found:  # our environment broke, the steps proved nothing
            result.errors += [f"run {i + 1}: {e}" for e in broke]
            result.inconclusive += 1
            continue
        if found:
            result.failed += 1
            result.violations.append(found)
    return result
