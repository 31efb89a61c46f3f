"""What a ``ClusterMachine`` runs against: the system, its agents, the nemesis, the history.

One harness per fuzz run. It numbers the examples (each gets names of its own),
keeps the step log of the example running now (the last failing one becomes the
replay artifact), watches the budget, and cleans each example up: what the
system does not remove after a delete is removed through the agents, and
reported as a leak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driver.adapters.base import LabelsByName, SystemAdapter, Workload
from driver.adapters.truth import labelled, observe
from driver.client import AgentClient
from driver.fuzz.budget import Budget
from driver.fuzz.invariants import Violation
from driver.fuzz.model import Model
from driver.fuzz.nemesis import Nemesis
from shakedown.errors import ShakedownError

# Seconds the system gets to converge after a heal, at most (a loaded 2-core machine can
# take long to start containers); once it says it is done, the agents' truth must match
# within GRACE: the reference scheduler's two reconcile intervals.
DEFAULT_WINDOW = 60.0
GRACE = 8.0


@dataclass(frozen=True)
class Step:
    rule: str
    args: dict[str, Any]

    def call(self) -> str:
        """The step as a line of the replay program."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"state.{self.rule}({args})"


@dataclass
class Failure:
    steps: list[Step]
    found: list[Violation]
    example: int
    prefix: str
    ops: list[int] = field(default_factory=list)  # history indexes of the keys involved

    @property
    def violations(self) -> list[str]:
        return [str(v) for v in self.found]


def smallest_failure(failures: list[Failure]) -> Failure | None:
    """The shortest failing example (Hypothesis replays its minimal one last)."""
    if not failures:
        return None
    return min(reversed(failures), key=lambda f: len(f.steps))


@dataclass
class Harness:
    system: SystemAdapter
    agents: Callable[[], Mapping[str, AgentClient]]
    nemesis: Nemesis
    history: Any  # driver.fuzz.history.History
    image: str
    run_id: str
    budget: Budget
    kinds: frozenset[str] = frozenset()
    nodes: tuple[str, ...] = ()
    window: float = DEFAULT_WINDOW
    grace: float = GRACE
    mode: str = "search"  # or "replay": how a violation ends an example (machine._judge)
    seed: int = 0  # the run's: with an example's number, it seeds that example's mix
    examples: int = 0
    steps_total: int = 0
    steps: list[Step] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # examples that broke without a verdict
    inconclusive: int = 0  # examples that held but whose every write was indeterminate
    resumed: bool = False  # the failure an earlier run saved still failed: no search
    last_check: list[str] = field(default_factory=list)
    model: Model | None = None  # the running example's (the nemesis looks workloads up)
    on_step: Callable[[Harness], None] | None = None  # progress

    # ------------------------------------------------------------ examples

    def begin_example(self) -> str:
        self.examples += 1
        self.steps = []
        return f"fz-{self.run_id}-{self.examples}"

    def log_step(self, rule: str, args: Mapping[str, Any]) -> None:
        self.steps.append(Step(rule, {k: _plain(v) for k, v in args.items()}))
        self.steps_total += 1
        if self.on_step is not None:
            self.on_step(self)

    def record_violations(self, found: list[Violation], model: Model) -> None:
        # A violation about no one workload (a leak, an unreachable node) involves them all.
        names = model.names() if any(not v.name for v in found) else \
            {v.name for v in found}
        keys = {model.real(n) for n in names}
        ops = [op.index for op in self.history.ops if op.key in keys][-40:]
        self.failures.append(Failure(list(self.steps), list(found), self.examples,
                                     model.prefix, ops))
        self.budget.failed()

    def end_example(self, model: Model, wait: float = 30.0) -> str:
        """Delete the example's workloads; remove (and report) what outlives the delete by
        ``wait`` seconds (the window: a system just restarted needs its election and a
        reconcile; a leak is only ever a failure's cost, a clean delete ends at once)."""
        healing: BaseException | None = None
        if self.nemesis.active:  # an example that broke mid-way: its heal is recorded too
            tok = self.history.invoke("nemesis", "heal", None, {"fault": "all"}, None)
        else:
            tok = None
        try:
            self.nemesis.heal_all()
        except Exception as exc:  # still delete what the example made; raised after
            healing = exc
        if tok is not None:
            self.history.complete(tok, "info" if healing else "ok", {"fault": "all"},
                                  error=f"{type(healing).__name__}: {healing}" if healing
                                  else None)
        try:
            self.nemesis.reset()
        except Exception as exc:
            healing = healing or exc
        ids: set[tuple[str, str]] = set()
        undeleted: list[str] = []
        for name in model.names():
            real = model.real(name)
            ids |= {(wid, real) for wid in model.ids.get(name, ())}
            with contextlib.suppress(ShakedownError):
                seen = self.system.get(real)
                if seen is not None:
                    ids.add((seen.id, real))
            if not self._delete(real, wait):
                undeleted.append(real)
        ghosts = [Workload(id=wid, name=real, generation=0) for wid, real in sorted(ids)]
        reals = [model.real(n) for n in model.names()]
        # Bounded by the run's budget too (past it, a leak is not judged: see machine.py).
        deadline = min(time.monotonic() + wait, self.budget.started + self.budget.total)
        left = self._left(ghosts, reals)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self._left(ghosts, reals)
        for node, container in left:
            with contextlib.suppress(ShakedownError):
                self.agents()[node].remove(container, force=True)
        if healing is not None:
            raise healing
        if undeleted:  # what outlives a delete the system never took is no leak of its own
            raise RuntimeError(f"the system did not take the delete of {', '.join(undeleted)} "
                               f"within {wait:g} s")
        return ", ".join(sorted(c for _, c in left))

    def _delete(self, name: str, wait: float) -> bool:
        """Delete through the system until it takes it (just restarted replicas may not
        answer yet): a delete that never got through proves nothing about leaks."""
        deadline = min(time.monotonic() + wait, self.budget.started + self.budget.total)
        while True:
            try:
                self.system.delete(name)
                return True
            except ShakedownError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)

    def _left(self, ghosts: list[Workload], names: list[str]) -> list[tuple[str, str]]:
        """What is still on the agents: by every id the system returned and, where the
        adapter labels by name, by name too (an id whose answer was lost is known to no
        one else; the example's names are its own, so anything by them is its)."""
        agents = self.agents()
        found = {(o.node, o.container.name) for w in ghosts
                 for o in observe(agents, self.system, w)}
        if isinstance(self.system, LabelsByName):
            found |= {(o.node, o.container.name) for n in names
                      for o in labelled(agents, self.system.name_labels(n))}
        return sorted(found)


def _plain(value: Any) -> Any:
    """Arguments as JSON-able values (tuples become lists, dataclasses dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
