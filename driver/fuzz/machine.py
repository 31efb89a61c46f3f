"""``ClusterMachine``: a Hypothesis state machine driving a real system through its adapter.

Each example starts from a clean system: its workloads have names unique to
the example, and teardown heals every fault, checks the invariants after the
convergence window, deletes what the example created and checks nothing of it
is left. Every operation and fault is recorded in the harness's history (for
the checkers and the report) and every step in the harness's step log (for the
replay artifact and the printed program).

Users subclass it for their own system: the harness holds the adapter, so a
subclass adds rules (or drops some with ``precondition``) without touching the
reference scheduler; docs/fuzzing.md shows one.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from driver.adapters.base import Workload
from driver.env.state import EnvError
from driver.fuzz import mix
from driver.fuzz.harness import Harness
from driver.fuzz.invariants import Violation, settle
from driver.fuzz.mix import FAULT_KINDS, MAX_FAULTS
from driver.fuzz.model import Model
from driver.fuzz.nemesis import NothingToFault
from driver.fuzz.strategies import MAX_REPLICAS, FaultChoice, register_value, workload_spec
from shakedown.errors import ShakedownError

F = TypeVar("F", bound=Callable[..., Any])
# Codes after which a write may or may not have happened (Jepsen's info).
INDETERMINATE = ("Unavailable", "DeadlineExceeded", "InternalError", "UnknownError",
                 "Aborted", "Cancelled")


@contextlib.contextmanager
def _nemesis_op(h: Harness, f: str, value: Any) -> Iterator[Callable[[Any], None]]:
    """One nemesis operation in the history, completed whatever happens: ok with what
    ``done`` was given; fail when the environment refused (nothing was done); info when
    something else broke (it may have been done), which is then raised."""
    tok = h.history.invoke("nemesis", f, None, value, None)
    result: list[Any] = []
    try:
        yield result.append
    except (NothingToFault, ShakedownError, EnvError) as exc:
        h.history.complete(tok, "fail", error=f"{type(exc).__name__}: {exc}")
        if f != "inject":
            raise  # a heal that failed leaves a fault in force: the run cannot go on
        return
    except BaseException as exc:
        h.history.complete(tok, "info", error=f"{type(exc).__name__}: {exc}")
        raise
    h.history.complete(tok, "ok", result[0] if result else value)


def _final_replay() -> bool:
    """Hypothesis's last run of the minimal failure, to report it: always let it run (one
    example past the budget), else Hypothesis sees the failure vanish and calls it flaky."""
    from hypothesis.control import _current_build_context

    ctx = _current_build_context.value
    return bool(ctx is not None and ctx.is_final)


class BudgetExhausted(BaseException):
    """Raised before an example when the budget is spent. A BaseException, so Hypothesis
    does not take it for a failure: it ends the run, and the runner reports the smallest
    failure the harness recorded (skipping examples instead would make Hypothesis see
    different draws for the same choices)."""


class InvariantViolated(AssertionError):
    """The system broke an invariant: the example fails (replays and shrink attempts)."""


class FailureFound(BaseException):
    """The search's first failure: ends the Hypothesis run at once (Hypothesis saves the
    example in its database first), so the rest of the budget goes to driver/fuzz/shrink.py
    instead of to Hypothesis replaying it."""


def step(fn: F) -> F:
    """Log the rule and its arguments before it runs: the replay artifact is this log.

    An error that is not a verdict (our environment broke, not an invariant) is
    recorded and ends the example's actions quietly: Hypothesis would otherwise take
    it for the failure to shrink, and spend the budget on it.
    """
    @functools.wraps(fn)
    def logged(self: ClusterMachine, **kwargs: Any) -> Any:
        self.harness.log_step(fn.__name__, kwargs)
        if self.broken:
            return None
        if not self.harness.budget.searching() and not _final_replay():
            self.broken = True  # teardown only cleans up: the run is over
            raise BudgetExhausted(self.harness.budget.elapsed())
        try:
            return fn(self, **kwargs)
        except (InvariantViolated, BudgetExhausted):
            self.broken = True  # teardown cleans up but judges nothing more
            raise
        except Exception as exc:
            self.broken = True
            self.harness.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
            return None
    return logged  # type: ignore[return-value]


class ClusterMachine(RuleBasedStateMachine):
    harness: ClassVar[Harness]
    # What an example does next, by weight (Jepsen's gen/mix). One Hypothesis rule draws
    # from it: with a rule per action, Hypothesis's swarm testing switches most of them off
    # per example, and runs of ~20 examples drew one apply in 133 steps (decision 38). A
    # subclass reweighs or drops (weight 0) an action here, and adds rules as usual.
    MIX: ClassVar[tuple[tuple[str, int], ...]] = (
        ("apply", 4), ("burst", 2), ("delete", 1), ("fault", 3), ("heal", 1), ("converge", 1))

    def __init__(self) -> None:
        super().__init__()
        h = self.harness
        if not h.budget.searching() and not _final_replay():
            raise BudgetExhausted(h.budget.elapsed())
        self.model = h.model = Model(prefix=h.begin_example())
        self.broken = False
        self.writes = self.answered = 0  # answered: ok or fail, the system's own word
        self.rng: random.Random | None = None  # the mix's, seeded by the first action

    @property
    def conclusive(self) -> bool:
        """Whether the system answered any write. When every one was indeterminate (it was
        unreachable), the model allows any outcome and a pass proves nothing."""
        return self.answered > 0 or self.writes == 0

    # ------------------------------------------------------------ the mix

    @rule()
    def act(self) -> None:
        """One action, drawn from ``MIX`` by weight (driver/fuzz/mix.py), then run as its own
        logged step: the artifact and the printed program name the action, never ``act``."""
        if self.rng is None:
            # Seeded by the run's seed and the example's number, not by a Hypothesis draw:
            # Hypothesis draws the same few "simple" seeds again and again (half of one
            # run's examples were the same steps).
            self.rng = random.Random(f"{self.harness.seed}:{self.harness.examples}")
        pool = [(a, weight) for a, weight in self.MIX if weight > 0 and self._can(a)]
        if not pool:
            return
        what = self.rng.choices([a for a, _ in pool], [w for _, w in pool])[0]
        what, args = self.arguments(what, self.rng)
        getattr(self, what)(**args)

    def arguments(self, action: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """(the step to run, its arguments) for an action of the mix; a subclass that adds
        an action to ``MIX`` says here how its arguments are drawn."""
        if action == "fault":
            return mix.fault(rng, self.harness.kinds)
        return action, mix.ARGS[action](rng)

    def _can(self, action: str) -> bool:
        """Preconditions: the model's state and the run's fixed kinds only, so they replay."""
        if action == "heal":
            return self.model.chosen_faults > 0
        if action == "fault":
            return bool(self.harness.kinds & FAULT_KINDS) and \
                self.model.chosen_faults < MAX_FAULTS
        return True

    # ------------------------------------------------------------ workload actions

    @initialize(replicas=st.integers(1, MAX_REPLICAS))
    @step
    def start(self, replicas: int) -> None:
        """Every example starts with a workload: a fault needs something to hit."""
        self._write(0, "w0", replicas)

    @step
    def apply(self, name: str, replicas: int) -> None:
        self._write(0, name, replicas)

    @step
    def delete(self, name: str) -> None:
        self._write(0, name, None)

    @step
    def burst(self, ops: list[tuple[str, str, int]]) -> None:
        """Operations at once, one process each: what makes the history worth checking."""
        def run(i: int, op: tuple[str, str, int]) -> tuple[str, str, str | None]:
            f, name, n = op
            if f == "get":
                self._read(i + 1, name)
                return "read", name, None
            kind, value = self._write(i + 1, name, None if f == "delete" else n, settle=False)
            return kind, name, value

        with ThreadPoolExecutor(len(ops)) as pool:
            done = list(pool.map(run, range(len(ops)), ops))
        for name in {n for _, n, _ in done}:
            acked = [v for k, n, v in done if n == name and k == "ok"]
            maybe = [v for k, n, v in done if n == name and k == "info"]
            if acked or maybe:
                self.model.concurrent(name, acked, maybe)

    # ------------------------------------------------------------ fault actions

    @step
    def fault_container(self, kind: str, name: str, index: int) -> None:
        if kind in self.harness.kinds:
            self._inject(FaultChoice(kind, name, index))

    @step
    def partition(self, name: str, index: int, peers: list[str]) -> None:
        if "partition" not in self.harness.kinds:
            return  # a replay runs no preconditions: the artifact's kinds still hold
        self._inject(FaultChoice("partition", name, index, peers=tuple(peers)))

    @step
    def fault_component(self, kind: str, node: int, hold: float) -> None:
        """An agent stopped (``node`` picks which), the scheduler leader killed or frozen,
        etcd frozen, CoreDNS stopped: one family of the mix's faults.
        ``hold`` > 0 keeps it that long, then heals it: a leader frozen past its lease is
        a different fault from one thawed at once, and one step, so it is found as often."""
        if kind not in self.harness.kinds:
            return
        nodes = self.harness.nodes
        target = nodes[node % len(nodes)] if kind == "agent-stop" and nodes else ""
        fid = self._inject(FaultChoice(kind, node=target))
        if fid and hold:
            time.sleep(hold)
            self.model.chosen_faults -= 1
            self._heal(fid)

    @step
    def heal(self, which: int) -> None:
        # (a shrunk program may heal when nothing is in force: the count stays at 0)
        self.model.chosen_faults = max(0, self.model.chosen_faults - 1)
        active = list(self.harness.nemesis.active)  # injection order: the same on a replay
        if active:
            fid = active[which % len(active)]
            self._heal(fid)

    @step
    def converge(self) -> None:
        """Heal everything, give the system its window, then judge it."""
        self._heal_all()
        self._judge()

    def teardown(self) -> None:
        """Heal, judge, then remove what the example made; a leak fails the example."""
        h = self.harness
        try:
            if not self.broken:
                self._heal_all()
                self._judge()
                if not self.conclusive:
                    h.inconclusive += 1
        except InvariantViolated:
            self.broken = True
            raise
        except Exception as exc:  # not a verdict: recorded, as in `step`
            self.broken = True
            h.errors.append(f"teardown: {type(exc).__name__}: {exc}")
        finally:
            leaked = self._clean_up()
        if leaked and not self.broken:
            if h.budget.elapsed() >= h.budget.total:
                raise BudgetExhausted(h.budget.elapsed())  # the wait was cut short: no verdict
            self._fail([Violation("leak", "", f"left after the delete: {leaked}")])

    def _clean_up(self) -> str:
        h = self.harness
        try:
            # A failed example's leftovers will not go by waiting: remove them soon.
            return h.end_example(self.model, wait=2.0 if self.broken else h.window)
        except Exception as exc:  # the next example may start unclean: say so, go on
            self.broken = True
            h.errors.append(f"clean-up: {type(exc).__name__}: {exc}")
            return ""

    # ------------------------------------------------------------ seams for subclasses

    def value_of(self, seen: Workload | None) -> str | None:
        """What a read returns, as the register the model and the checker compare. The
        default reads the spec back; a system whose get() gives no spec overrides this."""
        return register_value(seen.spec if seen else None)

    # ------------------------------------------------------------ plumbing

    def _write(self, process: int, name: str, replicas: int | None,
               settle: bool = True) -> tuple[str, str | None]:
        h, m = self.harness, self.model
        real = m.real(name)
        if replicas is None:
            f, value, spec = "delete", None, None
        else:
            spec = workload_spec(real, h.image, replicas, m.next_version())
            value = register_value(spec)
            f = "apply" if name not in m.may_end else "update"
        tok = h.history.invoke(process, f, real, value, None)
        self.writes += 1
        try:
            if spec is None:
                h.system.delete(real)
            else:
                m.saw(name, h.system.apply(spec))
        except ShakedownError as exc:
            kind = "info" if type(exc).__name__ in INDETERMINATE else "fail"
            self.answered += kind == "fail"
            h.history.complete(tok, kind, error=f"{type(exc).__name__}: {exc}")
            if kind == "info" and settle:
                m.indeterminate(name, value)
            elif kind == "info":
                m.may_end.setdefault(name, {None})
            return kind, value
        except BaseException as exc:  # our bug, not the system's: recorded, then raised
            h.history.complete(tok, "info", error=f"{type(exc).__name__}: {exc}")
            m.indeterminate(name, value)
            raise
        self.answered += 1
        h.history.complete(tok, "ok", value)
        if settle:
            m.acknowledged(name, value)
        else:
            m.may_end.setdefault(name, {None})
        return "ok", value

    def _read(self, process: int, name: str) -> None:
        h = self.harness
        real = self.model.real(name)
        tok = h.history.invoke(process, "get", real, None, None)
        try:
            seen = h.system.get(real)
        except ShakedownError as exc:
            h.history.complete(tok, "fail", error=f"{type(exc).__name__}: {exc}")
            return
        except BaseException as exc:
            h.history.complete(tok, "fail", error=f"{type(exc).__name__}: {exc}")
            raise
        h.history.complete(tok, "ok", self.value_of(seen))

    def _inject(self, choice: FaultChoice) -> str:
        """Inject; the fault's id, or "" when nothing was injected (recorded as a fail)."""
        h = self.harness
        self.model.chosen_faults += 1
        fid = ""
        with _nemesis_op(h, "inject", str(choice)) as done:
            got = h.nemesis.inject(choice)
            fid = got.id
            done({"fault": got.id, "kind": got.kind, "targets": list(got.targets),
                  "label": got.label})
        return fid

    def _heal(self, fid: str) -> None:
        with _nemesis_op(self.harness, "heal", {"fault": fid}) as done:
            self.harness.nemesis.heal(fid)
            done({"fault": fid})

    def _heal_all(self) -> None:
        self.model.chosen_faults = 0
        with _nemesis_op(self.harness, "heal", {"fault": "all"}) as done:
            self.harness.nemesis.heal_all()
            done({"fault": "all"})

    def _judge(self) -> None:
        h = self.harness
        found = settle(h.system, h.agents(), self.model, h.window, h.grace,
                       value_of=self.value_of, deadline=h.budget.started + h.budget.total)
        if found is None:  # the budget ended the window early: no verdict
            self.broken = True
            raise BudgetExhausted(h.budget.elapsed())
        h.last_check = [str(v) for v in found] or ["all invariants hold"]
        if found and all(v.kind == "unreachable" for v in found):
            # Ground truth is missing (an agent of ours did not answer): no verdict.
            raise RuntimeError("; ".join(str(v) for v in found))
        if found:
            self._fail(found)

    def _fail(self, found: list[Violation]) -> None:
        h = self.harness
        h.record_violations(found, self.model)
        self.broken = True
        text = "; ".join(str(v) for v in found)
        raise FailureFound(text) if h.mode == "search" else InvariantViolated(text)
