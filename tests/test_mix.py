"""driver/fuzz/mix.py: the fuzzer's weighted mix of actions, without a system."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from driver.fuzz import mix
from driver.fuzz.budget import Budget
from driver.fuzz.harness import Harness
from driver.fuzz.machine import ClusterMachine


def test_a_fault_is_drawn_only_from_the_families_the_kinds_allow() -> None:
    rng = random.Random(1)
    assert {mix.fault(rng, frozenset({"kill"}))[0] for _ in range(50)} == {"fault_container"}
    kinds = {a["kind"] for _ in range(50)
             for f, a in [mix.fault(rng, frozenset({"pause", "partition"}))]
             if f == "fault_container"}
    assert kinds == {"pause"}
    got = Counter(mix.fault(rng, frozenset({"kill", "stop", "partition", "leader-pause"}))[0]
                  for _ in range(400))
    assert set(got) == {"fault_container", "partition", "fault_component"}
    # Each kind about as likely as the others: two container kinds, one of each other.
    assert got["fault_container"] > 160 and min(got["partition"], got["fault_component"]) > 70
    with pytest.raises(LookupError):
        mix.fault(rng, frozenset())


def test_arguments_are_valid_for_their_steps() -> None:
    rng = random.Random(2)
    for _ in range(200):
        a = mix.ARGS["apply"](rng)
        assert a["name"] in mix.NAMES and 1 <= a["replicas"] <= 2
        ops = mix.ARGS["burst"](rng)["ops"]
        assert 2 <= len(ops) <= 3 and all(op[0] in ("apply", "delete", "get") for op in ops)
        _, p = mix.fault(rng, frozenset({"partition"}))
        assert p["peers"] and set(p["peers"]) <= set(mix.NAMES)
        assert p["peers"] == sorted(set(p["peers"]))


ACTIONS = ("apply", "delete", "burst", "converge", "heal", "fault_container", "partition",
           "fault_component")


def _recorder(action: str) -> Any:
    def record(self: Any, **_: Any) -> None:
        self.done.append(action)
    return record


def _init(self: Any) -> None:
    ClusterMachine.__init__(self)
    self.done = []


# The real ``act``, with every action it picks recorded instead of run.
Recording: type[ClusterMachine] = type(
    "Recording", (ClusterMachine,), {"__init__": _init, **{a: _recorder(a) for a in ACTIONS}})


def _example(seed: int, kinds: frozenset[str] = frozenset({"kill"}), steps: int = 6,
             faults: int = 0) -> list[tuple[str, ...]]:
    """What 30 examples of a run with ``seed`` would do first, ``faults`` in force."""
    h = Harness(system=None, agents=dict, nemesis=None, history=None,  # type: ignore[arg-type]
                image="", run_id="t", budget=Budget(60), kinds=kinds, seed=seed)
    bound = type("Bound", (Recording,), {"harness": h})
    seqs = []
    for _ in range(30):
        m = bound()
        m.model.chosen_faults = faults
        for _ in range(steps):
            m.act()
        seqs.append(tuple(m.done))
    return seqs


def test_examples_draw_different_steps_and_writes_dominate() -> None:
    seqs = _example(3)
    # Seeds drawn through Hypothesis repeated the same steps in half of a run's examples.
    assert len(set(seqs)) >= 25  # 6 actions of 6 kinds: a repeat by chance is allowed
    counts = Counter(a for s in seqs for a in s)
    writes = counts["apply"] + counts["burst"] + counts["delete"]
    assert writes > 0.45 * sum(counts.values()) and counts["apply"] == max(counts.values())
    assert "heal" not in counts  # nothing in force: nothing to heal
    assert _example(3) == seqs  # the same run seed: the same examples (--seed)
    assert _example(4) != seqs


def test_preconditions_hold_in_the_mix() -> None:
    none = Counter(a for s in _example(5, kinds=frozenset()) for a in s)
    assert not {"fault_container", "partition", "fault_component", "heal"} & set(none)
    full = Counter(a for s in _example(5, faults=3) for a in s)  # 3 in force: the most
    assert full["heal"] > 0 and not {"fault_container", "partition",
                                     "fault_component"} & set(full)
