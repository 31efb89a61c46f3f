"""Wiring a fuzz run to an environment: its system, a context on every node, the nemesis.

The fault kinds a run may draw are what this environment can really do:
container faults and partitions where every agent reports them available, and
component faults (agents, the scheduler leader, etcd, CoreDNS) where the
environment runs those components itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from driver.fuzz.budget import Budget
from driver.fuzz.harness import Harness
from driver.fuzz.history import History
from driver.fuzz.nemesis import ComponentFaults, Nemesis
from driver.fuzz.strategies import COMPONENT_FAULTS, CONTAINER_FAULTS

CONTEXT_TTL = 30


class Rig:
    def __init__(self, env: Any, system: Any, ctx: Any, history: History,
                 components: ComponentFaults | None, kinds: frozenset[str]) -> None:
        self.env, self.system, self.ctx, self.history = env, system, ctx, history
        self.components, self.kinds = components, kinds
        self.nodes = tuple(sorted(ctx.nodes))
        self.nemesis = Nemesis(env.clients, ctx.sessions, system, self._workload,
                               components, self.nodes)
        self.nemesis.reopen = self._reopen
        self.harness_: Harness | None = None

    def _reopen(self, node: str) -> Any:
        """A fresh context session on ``node`` (ours was reaped with its agent's restart)."""
        old = self.ctx.sessions.get(node)
        if old is not None:
            old.stop_keepalive()
        # The environment's client now: an agent that had to move ports has a new one.
        self.ctx.clients[node] = client = self.env.clients()[node]
        handle = client.open_session(self.ctx.ttl, name=self.ctx.id,
                                                     labels=self.ctx.labels)
        self.ctx.sessions[node] = handle
        return handle

    def _workload(self, name: str) -> Any:
        # The nemesis names workloads logically; the machine running now knows their ids.
        model = self._model()
        return model.workload(name) if model is not None else None

    def _model(self) -> Any:
        return getattr(self.harness_, "model", None)

    def harness(self, budget: Budget, *, window: float,
                on_step: Callable[[Harness], None] | None = None) -> Harness:
        from driver.images import ensure_busybox_image

        self.harness_ = Harness(
            system=self.system, agents=self.env.clients, nemesis=self.nemesis,
            history=self.history, image=ensure_busybox_image(), run_id=self.ctx.id[-8:],
            budget=budget, kinds=self.kinds, nodes=self.nodes, window=window, on_step=on_step)
        return self.harness_

    def close_history(self) -> None:
        self.history.close()


def supported_kinds(env: Any, clients: dict[str, Any], components: Any) -> frozenset[str]:
    kinds: set[str] = set()
    infos = []
    for client in clients.values():
        with contextlib.suppress(Exception):
            infos.append(client.node_info(timeout=10))
    if infos and len(infos) == len(clients):
        kinds |= {k for k in CONTAINER_FAULTS if all(i.has(k) for i in infos)}
        if all(i.has("partition") for i in infos):
            kinds.add("partition")
    if components is not None:
        kinds |= set(getattr(components, "kinds", COMPONENT_FAULTS))
    return frozenset(kinds)


def components_of(env: Any) -> ComponentFaults | None:
    """The environment's component faults, when it runs its components itself."""
    from driver.fuzz.components import EnvComponents

    return EnvComponents.of(env)


@contextmanager
def rig_for(env: Any, history_path: Path, *, system: Any = None,
            kinds: frozenset[str] | None = None) -> Iterator[Rig]:
    own = system is None
    system = system if system is not None else env.adapter()
    if system is None:
        raise LookupError(f"environment {env.name!r} runs no system under test (no "
                          "scheduler): create it with --schedulers N or give an adapter")
    history = History(history_path)
    components = components_of(env)
    try:
        with env.context("fuzz", ttl=CONTEXT_TTL) as ctx:
            found = supported_kinds(env, ctx.clients, components)
            rig = Rig(env, system, ctx, history, components,
                      found if kinds is None else found & kinds)
            if rig.kinds & {"leader-kill", "leader-pause", "etcd-pause"}:
                rig.nemesis.reset(force=True)  # fresh replicas: nothing left of an earlier run
            try:
                yield rig
            finally:
                with contextlib.suppress(Exception):
                    rig.nemesis.heal_all()
    finally:
        history.close()
        if own:
            system.close()
