"""``ctx.faults``: faults scoped to a test context, healed when it ends.

    f = ctx.faults.partition(shapes.isolate([a.name, b.name, c.name], a.name))
    ctx.faults.kill(b.name)                 # a container: found on whichever node holds it
    ctx.faults.pause("scheduler-leader")    # a component of a local environment
    ctx.faults.heal(f); ctx.faults.heal_all()

Container faults are injected by the agent that holds the container, in that node's
context session, so they heal with the session (context exit, or the agent reaping
it after the driver died). Component faults (driver/env/faults.py) belong to no
session: the context heals the ones it injected when it closes.

A name is a component when the context's environment is local and names one of its
components (``etcd``, ``agent-<node>``, a node name, ``scheduler-leader`` ...);
anything else is a container.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from driver.fanout import fan_out
from driver.faults import shapes
from driver.faults.client import heal_all, heal_fault, inject_fault
from driver.faults.types import Fault, FaultSpec, Grudge
from shakedown.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from driver.client import AgentClient
    from driver.env.context import TestContext
    from driver.env.faults import ComponentFault

SHAPES = ("isolate", "halves", "bridge", "ring")


def locate(clients: Mapping[str, AgentClient], container: str,
           field: str = "container") -> str:
    """The node whose agent holds ``container`` (a name or id), asking every node at once."""
    if not container:
        raise InvalidArgument("a container name or id is required", field=field)

    def holds(client: AgentClient) -> bool:
        try:
            client.inspect(container)
        except NotFound:
            return False
        return True

    results = fan_out(clients, holds)
    found = [n for n, ok in results.succeeded.items() if ok]
    if len(found) == 1:
        return found[0]
    if found:
        raise InvalidArgument(f"container {container!r} is on several nodes ({', '.join(found)})"
                              ": name it by id", field=field)
    results.raise_first()
    raise InvalidArgument(f"no agent holds a container {container!r} (nodes: "
                          f"{', '.join(clients) or 'none'})", field=field)


def shape(name: str, containers: Sequence[str]) -> dict[str, list[str]]:
    """A named partition shape over container names (isolate cuts off the first)."""
    if name not in SHAPES:
        raise InvalidArgument(f"shape {name!r}: one of {', '.join(SHAPES)}", field="shape")
    try:
        if name == "isolate":
            return shapes.isolate(containers, containers[0] if containers else None)
        if name == "halves":
            return shapes.halves(containers, shuffle=False)
        if name == "bridge":
            return shapes.bridge(containers, shuffle=False)
        return shapes.majorities_ring(containers, shuffle=False)
    except (ValueError, IndexError) as exc:
        raise InvalidArgument(f"{name}: {exc or 'needs containers'}", field="containers") from None


def _is_address(peer: str) -> bool:
    try:
        ipaddress.ip_network(peer, strict=False)
    except ValueError:
        return False
    return True


def place(clients: Mapping[str, AgentClient], grudge: Grudge) -> tuple[str, Grudge]:
    """The node a partition goes to (its targets' node: they must share one) and the grudge
    it gets there: peers held by other nodes become their addresses."""
    if not grudge:
        raise InvalidArgument("a partition needs at least one target", field="grudge")
    nodes = {t: locate(clients, t, f"grudge[{t!r}]") for t in grudge}
    if len(set(nodes.values())) > 1:
        raise InvalidArgument(f"a partition's targets must be on one node, not {nodes}: inject "
                              "one partition per node", field="grudge")
    node = next(iter(nodes.values()))
    placed: dict[str, list[str]] = {}
    for target, peers in grudge.items():
        placed[target] = []
        for peer in peers:
            where = node if _is_address(peer) else locate(clients, peer, f"grudge[{target!r}]")
            if where == node:
                placed[target].append(peer)
            else:
                found = clients[where].inspect(peer).ip_addresses.values()
                placed[target] += [ip for ip in found if ip]
    return node, placed


class ContextFaults:
    """The faults of one `TestContext` (``ctx.faults``)."""

    def __init__(self, ctx: TestContext) -> None:
        self.ctx = ctx
        self.injected: list[Fault | ComponentFault] = []
        self._node_of: dict[str, str] = {}  # agent fault id -> node

    # ------------------------------------------------------------ what a name is

    def _env_faults(self) -> Any | None:
        host = self.ctx.host
        state = getattr(host, "state", None)
        return host.faults if state is not None and state.kind == "local" else None  # type: ignore[attr-defined]

    def is_component(self, name: str) -> bool:
        from driver.env.faults import LEADER

        if self._env_faults() is None:
            return False
        host: Any = self.ctx.host
        return name == LEADER or name in host.state.components or bool(host.component_of(name))

    # ------------------------------------------------------------ inject

    def _agent(self, node: str, spec: FaultSpec) -> Fault:
        session = self.ctx.session(node)
        fault = inject_fault(session.client, session, spec)
        self._node_of[fault.id] = node
        self.injected.append(fault)
        return fault

    def _on_holder(self, container: str, spec: FaultSpec) -> Fault:
        return self._agent(locate(self.ctx.clients, container), spec)

    def component(self, kind: str, component: str = "", duration: int = 0,
                  signal: str = "") -> ComponentFault:
        env_faults = self._env_faults()
        if env_faults is None:
            raise InvalidArgument(f"environment {self.ctx.host.name!r} is not local: no "
                                  "component faults", field="component")
        fault: ComponentFault = env_faults.inject(kind, component, duration=duration,
                                                  signal=signal)
        self.injected.append(fault)
        return fault

    def partition(self, grudge_or_shape: Grudge | str, duration: int = 0, *,
                  containers: Sequence[str] = ()) -> Fault:
        """A grudge ({target: [peers]}, e.g. from driver.faults.shapes), or a shape name
        (isolate, halves, bridge, ring) over ``containers``."""
        grudge = (shape(grudge_or_shape, list(containers))
                  if isinstance(grudge_or_shape, str) else grudge_or_shape)
        node, placed = place(self.ctx.clients, grudge)
        return self._agent(node, FaultSpec.partition(placed, duration=duration))

    def latency(self, container: str, port: int, latency_ms: int, **kw: Any) -> Fault:
        """The agent's proxy in front of ``port`` (FaultSpec.latency's keywords)."""
        spec = FaultSpec.latency(container, port, latency_ms, **kw)
        return self._on_holder(container, spec)

    def kill(self, target: str, signal: str = "", *,
             duration: int = 0) -> Fault | ComponentFault:
        if self.is_component(target):
            return self.component("kill", target, duration, signal)
        return self._on_holder(target, FaultSpec.kill(target, signal, duration=duration))

    def pause(self, target: str, duration: int = 0) -> Fault | ComponentFault:
        if self.is_component(target):
            return self.component("pause", target, duration)
        return self._on_holder(target, FaultSpec.pause(target, duration=duration))

    def stop(self, target: str, duration: int = 0) -> Fault | ComponentFault:
        """A container, an agent (agent-stop) or CoreDNS (coredns-stop)."""
        if self.is_component(target):
            host: Any = self.ctx.host
            name = host.component_of(target) or target
            kind = host.state.components[name].kind if name in host.state.components else ""
            if kind not in ("agent", "coredns"):
                raise InvalidArgument(f"stop {target!r}: only an agent or CoreDNS stops; "
                                      "kill or pause the others", field="component")
            return self.component(f"{kind}-stop", name, duration)
        return self._on_holder(target, FaultSpec.stop(target, duration=duration))

    def restart(self, container: str) -> Fault:
        return self._on_holder(container, FaultSpec.restart(container))

    # ------------------------------------------------------------ heal

    def heal(self, fault: Fault | ComponentFault | str) -> Fault | ComponentFault:
        fid = fault if isinstance(fault, str) else fault.id
        if fid.startswith("c-"):
            env_faults = self._env_faults()
            if env_faults is None:
                raise InvalidArgument(f"no component fault {fid!r} here", field="fault")
            healed: ComponentFault = env_faults.heal(fid)
            return healed
        node = self._node_of.get(fid)
        if node is None:
            raise InvalidArgument(f"fault {fid!r} was not injected by context {self.ctx.id}",
                                  field="fault")
        return heal_fault(self.ctx.clients[node], fid)

    def heal_all(self) -> list[Fault | ComponentFault]:
        """Everything this context injected (its sessions' faults, its component faults)."""
        healed: list[Fault | ComponentFault] = []
        for node, session in self.ctx.sessions.items():
            if any(n == node for n in self._node_of.values()):
                healed += heal_all(session.client, session)
        healed += self._heal_components()
        return healed

    def _heal_components(self) -> list[Fault | ComponentFault]:
        env_faults = self._env_faults()
        ids = [f.id for f in self.injected if f.id.startswith("c-")]
        return [env_faults.heal(i) for i in ids] if env_faults is not None else []

    def close(self) -> list[str]:
        """Heal the context's component faults (agent faults go with its sessions); returns
        the errors, one per fault that would not heal."""
        errors: list[str] = []
        env_faults = self._env_faults()
        for fault in self.injected:
            if env_faults is None or not fault.id.startswith("c-"):
                continue
            try:
                env_faults.heal(fault.id)
            except Exception as exc:  # reported; the others still heal
                errors.append(f"healing {fault.id} ({fault.kind} on "
                              f"{getattr(fault, 'component', '')}): {exc}")
        return errors
