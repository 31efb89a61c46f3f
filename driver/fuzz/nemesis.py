"""The fuzzer's nemesis: turns drawn fault choices into real faults, and heals them.

Container faults and partitions go to the agent holding the container, in the
harness's context session on that node (so they heal with it whatever
happens). Component faults (an agent stopped, the scheduler leader killed or
frozen, etcd frozen, CoreDNS stopped) go to the environment. A choice whose
target does not exist right now (a workload with no container yet) injects
nothing: the step is recorded as a failed inject, never guessed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from driver.adapters.base import SystemAdapter, Workload
from driver.adapters.truth import running
from driver.client import AgentClient
from driver.faults.client import heal_all as heal_session
from driver.faults.client import heal_fault, inject_fault
from driver.faults.types import FaultSpec
from driver.fuzz.strategies import CONTAINER_FAULTS, FaultChoice
from shakedown.errors import NotFound, ShakedownError


class ComponentFaults(Protocol):
    """What the environment offers for faults outside the agents (local envs)."""

    def inject(self, kind: str, component: str, *, duration: int = 0) -> str: ...

    def heal(self, fault_id: str) -> None: ...


@dataclass(frozen=True)
class Injected:
    id: str
    kind: str
    targets: tuple[str, ...]
    label: str
    node: str = ""  # the agent holding an agent fault; "" for component faults


def answering(system: SystemAdapter, within: float, poll: float = 0.25) -> None:
    """Wait until the system answers a read. Restarted replicas come back on new ports, and
    a step sent before discovery has them gets Unavailable: an indeterminate write, which
    the model lets end any way, so the example would pass having tested nothing."""
    deadline = time.monotonic() + within
    while True:
        try:
            system.list()
            return
        except ShakedownError as exc:
            if time.monotonic() >= deadline:
                raise SystemNotAnswering(
                    f"the system did not answer within {within:g} s of its replicas' "
                    f"restart: {type(exc).__name__}: {exc}") from None
        time.sleep(poll)


class SystemNotAnswering(RuntimeError):
    """The system under test did not come back after a restart: no example can run."""


class NothingToFault(LookupError):
    """The choice names no live target now: nothing was injected."""


class Nemesis:
    def __init__(self, agents: Callable[[], Mapping[str, AgentClient]],
                 sessions: Mapping[str, Any], system: SystemAdapter,
                 workloads: Callable[[str], Workload | None],
                 components: ComponentFaults | None = None, nodes: tuple[str, ...] = ()) -> None:
        """``agents()`` gives the clients now (an agent stopped and started again may have
        had to move ports: its old client is closed); ``workloads(logical name)`` gives the
        model's workload (its id) for a name; ``nodes`` are the agent nodes component
        faults may stop, in a fixed order."""
        self.agents, self.sessions = agents, sessions
        self.system, self.workloads = system, workloads
        self.components, self.nodes = components, nodes
        # node -> a new session there, for when ours is gone (an agent stopped and started
        # again does not keep other callers' sessions)
        self.reopen: Callable[[str], Any] | None = None
        self.active: dict[str, Injected] = {}
        self.touched: set[str] = set()  # kinds injected since the last reset()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ inject

    def inject(self, choice: FaultChoice, duration: int = 0) -> Injected:
        if choice.kind in CONTAINER_FAULTS or choice.kind == "partition":
            done = self._agent_fault(choice, duration)
        else:
            done = self._component_fault(choice, duration)
        with self._lock:
            self.active[done.id] = done
            self.touched.add(done.kind)
        return done

    def _container(self, name: str, index: int) -> tuple[str, Any]:
        w = self.workloads(name)
        if w is None:
            raise NothingToFault(f"workload {name} was never applied")
        live = sorted(running(self.agents(), self.system, w), key=lambda o: o.container.name)
        if not live:
            raise NothingToFault(f"workload {name} has no running container")
        found = live[index % len(live)]
        return found.node, found.container

    def _agent_fault(self, choice: FaultChoice, duration: int) -> Injected:
        node, target = self._container(choice.workload, choice.index)
        if choice.kind == "partition":
            peers = sorted({ip for p in choice.peers if p
                            for ip in self._addresses(p) if ip not in
                            target.ip_addresses.values()})
            if not peers:
                raise NothingToFault(f"no peer of {choice.workload} has an address")
            spec = FaultSpec.partition({target.id: peers}, duration=duration)
        elif choice.kind == "kill":
            spec = FaultSpec.kill(target.id, "SIGKILL", duration=duration)
        elif choice.kind == "stop":
            spec = FaultSpec.stop(target.id, 1, duration=duration)
        else:
            spec = FaultSpec.pause(target.id, duration=duration)
        try:
            fault = inject_fault(self.agents()[node], self.sessions[node], spec, timeout=30)
        except NotFound as exc:
            if exc.field != "session_id" or self.reopen is None:
                raise
            fault = inject_fault(self.agents()[node], self.reopen(node), spec, timeout=30)
        return Injected(fault.id, choice.kind, (target.name,), str(choice), node)

    def _addresses(self, name: str) -> list[str]:
        w = self.workloads(name)
        if w is None:
            return []
        return [ip for o in running(self.agents(), self.system, w)
                for ip in o.container.ip_addresses.values() if ip]

    def _component_fault(self, choice: FaultChoice, duration: int) -> Injected:
        if self.components is None:
            raise NothingToFault(f"this environment has no component faults ({choice.kind})")
        kind, component = _COMPONENT[choice.kind]
        if choice.kind == "agent-stop":
            component = choice.node or (self.nodes[0] if self.nodes else "")
        fid = self.components.inject(kind, component, duration=duration)
        return Injected(fid, choice.kind, (component,), str(choice))

    # ------------------------------------------------------------ heal

    def heal(self, fault_id: str) -> None:
        """Heal one fault; it stays active (to be healed again) if healing fails."""
        with self._lock:
            done = self.active.get(fault_id)
        if done is None:
            return
        if done.kind == "leader-kill":
            # A replica cannot start (and serve) while etcd is frozen: thaw etcd first.
            for fid, other in list(self.active.items()):
                if other.kind == "etcd-pause":
                    self.heal(fid)
        if done.node:
            # NotFound: healed with its session (reaped by an agent restart): nothing left.
            with contextlib.suppress(NotFound):
                heal_fault(self.agents()[done.node], fault_id, timeout=30)
        elif self.components is not None:
            self.components.heal(fault_id)
        with self._lock:
            self.active.pop(fault_id, None)

    def reset(self, *, force: bool = False) -> list[str]:
        """After an example that hit the scheduler's processes (or etcd under them), start
        every replica afresh: damage a fault did to a process's memory (a leader that never
        stepped down) must not leak into the next example. What was restarted."""
        hit = force or bool(self.touched & _PROCESS_FAULTS)
        self.touched = set()
        restart = getattr(self.components, "restart_schedulers", None)
        if not hit or restart is None:
            return []
        done: list[str] = restart()
        answering(self.system, READY_S)
        return done

    def heal_all(self) -> list[str]:
        """Heal every active fault (each is tried; the first error is raised after), in
        dependency order: etcd before the schedulers (a replica cannot start while etcd is
        frozen), components before agent faults (a stopped agent cannot heal its own).
        Then every fault of our sessions on every agent, known or not: an inject whose
        answer was lost may have been applied all the same."""
        ids = sorted(self.active, key=lambda f: (bool(self.active[f].node),
                                                 _HEAL_ORDER.get(self.active[f].kind, 9)))
        errors: list[Exception] = []
        for fid in ids:
            try:
                self.heal(fid)
            except Exception as exc:  # keep healing the rest
                errors.append(exc)
        for node, session in self.sessions.items():
            try:
                heal_session(self.agents()[node], session, timeout=30)
            except NotFound:
                pass  # the session is gone: the agent healed its faults when it went
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return ids


# Seconds restarted replicas get to answer (they wait for etcd, then register in
# discovery); a loaded 2-core machine has taken over 5.
READY_S = 30.0
_PROCESS_FAULTS = {"leader-kill", "leader-pause", "etcd-pause"}
_HEAL_ORDER = {"etcd-pause": 0, "coredns-stop": 1, "leader-kill": 2, "leader-pause": 2,
               "agent-stop": 3}
# choice kind -> (the environment's component fault kind, its component)
_COMPONENT = {
    "agent-stop": ("agent-stop", ""),
    "leader-kill": ("kill", "scheduler-leader"),
    "leader-pause": ("pause", "scheduler-leader"),
    "etcd-pause": ("pause", "etcd"),
    "coredns-stop": ("coredns-stop", "coredns"),
}
