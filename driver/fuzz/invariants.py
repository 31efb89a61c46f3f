"""Convergence invariants: once faults are healed and the system had its window.

Each compares the system's word (through its adapter) with ground truth from
the agents (containers found by the adapter's labels) and with the model:

- ``lost-write``: the workload's settled value is one the model allows (every
  acknowledged apply or delete is reflected);
- ``view-mismatch``: the system's replicas name exactly the running containers
  the agents hold for the workload;
- ``duplicate`` / ``missing``: as many running containers as replicas;
- ``orphan``: no container is left for a deleted workload or an old id;
- ``status-mismatch``: a replica said to run has its container running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from driver.adapters.base import SystemAdapter, Workload
from driver.adapters.truth import observe
from driver.client import AgentClient
from driver.fuzz.model import Model
from driver.fuzz.strategies import register_value
from shakedown.errors import ShakedownError


@dataclass(frozen=True)
class Violation:
    kind: str
    name: str  # logical workload name ("" when about a node)
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.message}" if self.name else \
            f"{self.kind}: {self.message}"


def _ghost(wid: str, name: str) -> Workload:
    return Workload(id=wid, name=name, generation=0)


def check(system: SystemAdapter, agents: Mapping[str, AgentClient], model: Model,
          value_of: Callable[[Workload | None], str | None] | None = None) -> list[Violation]:
    out: list[Violation] = []
    for node, client in sorted(agents.items()):
        try:
            client.node_info(timeout=5)
        except ShakedownError as exc:
            out.append(Violation("unreachable", "", f"agent {node}: {exc}"))
    if out:
        return out  # ground truth is incomplete: nothing else can be judged
    for name in model.names():
        real = model.real(name)
        try:
            seen = system.get(real)
        except ShakedownError as exc:
            out.append(Violation("unavailable", name, f"get {real}: {exc}"))
            continue
        value = value_of(seen) if value_of else register_value(seen.spec if seen else None)
        allowed = model.may_end[name]
        if value not in allowed:
            want = " or ".join(sorted(str(v) for v in allowed))
            out.append(Violation("lost-write", name, f"{real} is {value}, acknowledged {want}"))
        ids = set(model.ids.get(name, ()))
        if seen is not None:
            ids.discard(seen.id)
            out += _live(system, agents, name, seen)
        for wid in sorted(ids):
            left = observe(agents, system, _ghost(wid, real))
            if left:
                out.append(Violation("orphan", name, f"{len(left)} container(s) of old id "
                                     f"{wid}: {', '.join(o.container.name for o in left)}"))
    return out


def _live(system: SystemAdapter, agents: Mapping[str, AgentClient], name: str,
          seen: Workload) -> list[Violation]:
    out: list[Violation] = []
    want = seen.spec.replicas if seen.spec else 0
    found = observe(agents, system, seen)
    up = {o.container.id for o in found if o.container.running}
    down = [o.container.name for o in found if not o.container.running]
    if len(up) > want:
        out.append(Violation("duplicate", name, f"{len(up)} running containers for {want} "
                             "replica(s)"))
    elif len(up) < want:
        out.append(Violation("missing", name, f"{len(up)} running containers for {want} "
                             "replica(s)"))
    if down:
        out.append(Violation("orphan", name, f"stopped container(s) kept: {', '.join(down)}"))
    said = {r.container_id for r in seen.replicas if r.container_id}
    if said != up:
        out.append(Violation("view-mismatch", name, f"the system names {sorted(said)}, the "
                             f"agents run {sorted(up)}"))
    bad = [r.index for r in seen.replicas if r.phase == "running" and r.container_id not in up]
    if bad:
        out.append(Violation("status-mismatch", name, f"replica(s) {bad} said running, their "
                             "container is not"))
    return out


def claims_done(system: SystemAdapter, model: Model) -> bool:
    """The system's own word: every live workload converged, every deleted one gone."""
    try:
        for name in model.names():
            seen = system.get(model.real(name))
            if None in model.may_end[name] and len(model.may_end[name]) == 1:
                if seen is not None:
                    return False
            elif seen is None or not system.converged(seen):
                return False
    except ShakedownError:
        return False
    return True


def settle(system: SystemAdapter, agents: Mapping[str, AgentClient], model: Model,
           window: float, grace: float = 8.0, poll: float = 0.5,
           value_of: Callable[[Workload | None], str | None] | None = None,
           deadline: float | None = None) -> list[Violation] | None:
    """Poll until every invariant holds; the violations left when the system has said it is
    done for ``grace`` seconds, or when ``window`` seconds pass without that. None when the
    monotonic ``deadline`` (the run's budget) came first: no verdict, either way.

    Waiting on the system's own word keeps a slow (loaded) machine from being judged too
    early, and a system that is wrong but sure of itself from costing the whole window."""
    started = time.monotonic()
    done_since: float | None = None
    while True:
        found = check(system, agents, model, value_of)
        now = time.monotonic()
        if not found:
            return found
        if claims_done(system, model):
            done_since = now if done_since is None else done_since
        else:
            done_since = None
        if now - started >= window or (done_since is not None and now - done_since >= grace):
            return found
        if deadline is not None and now >= deadline:
            return None
        time.sleep(poll)
