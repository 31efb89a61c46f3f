"""PROXY faults: validate and resolve the spec, and keep the table of live proxies.

Placement: the proxy runs in the agent, on the agent's host, in front of one
container port. It listens on 127.0.0.1 (a kernel-chosen port unless one is
given; other addresses need --allow-proxy-bind) and forwards to the container's
address on its network (the host reaches bridge networks), or to the host port
the container publishes it on when it has no address. A client is pointed at
``Fault.params["listen"]``. With ``mechanism: "netem"`` there is no listener:
the container's own interfaces delay and drop (agent/faults/netem.py), and
``params["listen"]`` is the container's address itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.faults import netem, partition
from agent.faults import toxics as tx
from agent.faults.journal import Undo
from agent.faults.proxy import Proxy
from agent.faults.toxics import Toxic
from agent.runtime import DockerRuntime
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound, PolicyError

FIELD = "spec.proxy"
MECHANISMS = ("proxy", "netem")
DEFAULT_LISTEN = ("127.0.0.1", 0)


@dataclass
class Plan:
    container: pb.Container
    port: int
    upstream: tuple[str, int]
    listen: tuple[str, int]
    toxics: list[Toxic]
    mechanism: str = "proxy"
    bound: tuple[str, int] = field(default=("", 0))

    @property
    def params(self) -> dict[str, str]:
        out = {"container": self.container.name or self.container.id, "port": str(self.port),
               "upstream": join(self.upstream), "toxics": summary(self.toxics)}
        out["listen"] = join(self.bound) if self.mechanism == "proxy" else join(self.upstream)
        return out


def join(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def summary(toxics: list[Toxic]) -> str:
    return ",".join(f"{t.name}:{t.type}" for t in toxics)


def parse_listen(value: str, allow_bind: bool, where: str = f"{FIELD}.listen") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) with an IP literal; loopback unless allowed."""
    if not value:
        return DEFAULT_LISTEN
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise InvalidArgument(f"{value[:80]!r} is not IP:PORT (e.g. 127.0.0.1:0)",
                              field=where) from None
    if not sep or not 0 <= port <= 65535:
        raise InvalidArgument(f"port {port_text!r} is not in 0..65535", field=where)
    if not address.is_loopback and not allow_bind:
        raise PolicyError(f"a fault proxy listening on {host} (beyond loopback) is refused by "
                          "this agent (operator flag --allow-proxy-bind)", field=where)
    return str(address), port


def _upstream(box: pb.Container, port: int, network: str) -> tuple[str, int]:
    ips = {name: ip for name, ip in box.ip_addresses.items() if ip}
    if network:
        if network not in ips:
            raise InvalidArgument(f"container {box.name!r} has no address on network "
                                  f"{network!r} (it has {', '.join(sorted(ips)) or 'none'})",
                                  field=f"{FIELD}.network")
        return ips[network], port
    if ips:
        return ips[sorted(ips)[0]], port
    for p in box.ports:
        if p.container_port == port and p.protocol in ("", "tcp") and p.host_port:
            host = p.host_ip if p.host_ip and p.host_ip not in ("0.0.0.0", "::") else "127.0.0.1"
            return host, p.host_port
    raise FailedPrecondition(f"container {box.name!r} has no network address and does not "
                             f"publish port {port}: nothing to forward to",
                             field=f"{FIELD}.container")


async def prepare(runtime: DockerRuntime, spec: pb.FaultSpec, allow_bind: bool) -> Plan:
    """Validate and resolve everything before anything is journaled or started."""
    p = spec.proxy
    mechanism = p.mechanism or "proxy"
    if mechanism not in MECHANISMS:
        raise InvalidArgument(f"{p.mechanism[:40]!r} is not a mechanism (proxy or netem)",
                              field=f"{FIELD}.mechanism")
    if not 1 <= p.port <= 65535:
        raise InvalidArgument(f"port {p.port} is not in 1..65535", field=f"{FIELD}.port")
    listen = parse_listen(p.listen, allow_bind)
    found = tx.parse(p.toxics, f"{FIELD}.toxics")
    if mechanism == "netem":
        if p.listen:
            raise InvalidArgument("a netem fault has no listener", field=f"{FIELD}.listen")
        netem.check(found, f"{FIELD}.toxics")
    box = await partition._container(runtime, p.container, f"{FIELD}.container")
    if box.state not in (pb.CONTAINER_STATE_RUNNING, pb.CONTAINER_STATE_PAUSED):
        raise FailedPrecondition(f"container {p.container!r} is not running",
                                 field=f"{FIELD}.container")
    plan = Plan(box, p.port, _upstream(box, p.port, p.network), listen, found, mechanism)
    if mechanism == "netem":
        ok, why = await asyncio.to_thread(netem.probe)  # cached: probed once
        if not ok:
            raise FailedPrecondition(f"netem is unavailable on this node: {why}",
                                     field=f"{FIELD}.mechanism")
        if partition._netns(box.pid) in partition._host_namespaces():
            raise FailedPrecondition(f"container {p.container!r} uses the host's network "
                                     "namespace: netem there would shape the host",
                                     field=f"{FIELD}.container")
    return plan


async def revive(runtime: DockerRuntime, proxies: Proxies, fault: pb.Fault,
                 allow_bind: bool) -> None:
    """Listen again for a journaled proxy fault, on the address it had (clients were
    pointed there), with its latest toxics; updates its params."""
    plan = await prepare(runtime, fault.spec, allow_bind)
    if "listen" not in fault.params:
        raise FailedPrecondition("the journal does not say where it listened")
    plan.bound = await proxies.start(fault.id, plan, parse_listen(fault.params["listen"], True))
    fault.params.update(plan.params)


async def update(proxies: Proxies, fault: pb.Fault, step: Undo, wire: Sequence[pb.Toxic],
                 found: list[Toxic]) -> None:
    """Make ``found`` (parsed from ``wire``) the live fault's toxics, and its record's."""
    if fault.mechanism == "netem":
        netem.check(found, "toxics")
        await netem.change(step.pid, step.chain, found)
    else:
        proxies.update(fault.id, found)
    del fault.spec.proxy.toxics[:]
    fault.spec.proxy.toxics.extend(wire)
    fault.params["toxics"] = summary(found)


class Proxies:
    """The live proxies of this agent, by fault id."""

    def __init__(self) -> None:
        self._live: dict[str, Proxy] = {}

    async def start(self, fault_id: str, plan: Plan, listen: tuple[str, int]) -> tuple[str, int]:
        proxy = Proxy(plan.upstream, plan.toxics)
        try:
            bound = await proxy.start(*listen)
        except OSError as exc:
            raise FailedPrecondition(f"cannot listen on {join(listen)}: {exc.strerror or exc}",
                                     field=f"{FIELD}.listen") from None
        self._live[fault_id] = proxy
        return bound

    def update(self, fault_id: str, toxics: list[Toxic]) -> None:
        proxy = self._live.get(fault_id)
        if proxy is None:
            raise NotFound(f"fault {fault_id!r} has no live proxy", field="fault_id")
        proxy.update(toxics)

    def connections(self, fault_id: str) -> int:
        proxy = self._live.get(fault_id)
        return len(proxy.links) if proxy else 0

    async def close(self, fault_id: str) -> str:
        proxy = self._live.pop(fault_id, None)
        if proxy is None:
            return "no live proxy (it ended with the agent that ran it)"
        n = len(proxy.links)
        await proxy.close()
        return f"proxy closed with {n} connection(s)"

    async def close_all(self) -> None:
        for fid in list(self._live):
            await self.close(fid)
