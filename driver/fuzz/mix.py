"""The mix: what a ``ClusterMachine`` example does next, as Jepsen's ``gen/mix`` would.

Each action is drawn by weight (``ClusterMachine.MIX``), then its arguments, from
a random generator seeded by the run's seed and the example's number, so a run
with the same ``--seed`` draws the same examples. Hypothesis's own draws found
little in the ~20-40 examples a budget allows (decision 38): swarm testing
switches most rules off per example, its first examples are its simplest draws,
and a seed drawn through it came out the same in half of one run's examples. A
fault is drawn only from the kinds this run's environment can do, each as likely.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from driver.fuzz.strategies import COMPONENT_FAULTS, CONTAINER_FAULTS, MAX_REPLICAS

# Two names: workloads collide (an update, a delete racing an apply) often enough to matter.
NAMES = ("w0", "w1")
MAX_FAULTS = 3  # active at once, as chosen
# A component fault healed by a later step, or held 12 s (past the reference scheduler's
# 10 s lease) and then healed.
HOLDS = (0.0, 12.0)
FAULT_KINDS = frozenset({*CONTAINER_FAULTS, "partition", *COMPONENT_FAULTS})
NODE_PICKS = 8  # fault_component's `node`: taken modulo the environment's agents

Args = dict[str, Any]


def _replicas(rng: random.Random) -> int:
    return rng.randint(1, MAX_REPLICAS)  # 0 is not a valid spec; delete is how it goes


def _burst(rng: random.Random) -> Args:
    ops = [[rng.choice(("apply", "delete", "get")), rng.choice(NAMES), _replicas(rng)]
           for _ in range(rng.randint(2, 3))]
    return {"ops": ops}


ARGS: dict[str, Callable[[random.Random], Args]] = {
    "apply": lambda rng: {"name": rng.choice(NAMES), "replicas": _replicas(rng)},
    "delete": lambda rng: {"name": rng.choice(NAMES)},
    "burst": _burst,
    "heal": lambda rng: {"which": rng.randrange(MAX_FAULTS)},
    "converge": lambda rng: {},
}


def fault(rng: random.Random, kinds: frozenset[str]) -> tuple[str, Args]:
    """(action, its arguments): a fault kind this run allows, each kind as likely as the
    others, so the component faults (where leadership bugs live: a leader frozen past its
    lease) are half of a local environment's faults, not a third."""
    allowed = [k for k in (*CONTAINER_FAULTS, "partition", *COMPONENT_FAULTS) if k in kinds]
    if not allowed:
        raise LookupError("this run has no fault kind")
    kind = rng.choice(allowed)
    if kind in CONTAINER_FAULTS:
        return "fault_container", {"kind": kind, "name": rng.choice(NAMES),
                                   "index": rng.randrange(MAX_REPLICAS)}
    if kind == "partition":
        return "partition", {"name": rng.choice(NAMES), "index": rng.randrange(MAX_REPLICAS),
                             "peers": sorted(rng.sample(NAMES, rng.randint(1, len(NAMES))))}
    return "fault_component", {"kind": kind, "node": rng.randrange(NODE_PICKS),
                               "hold": rng.choice(HOLDS)}
