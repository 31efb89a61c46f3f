"""What is actually running: health from each component's own protocol, plus CPU/RSS.

Health is checked the way clients would use the component: etcd's /health, a
DNS query for the agents' SRV record through CoreDNS, a signed mTLS call
to each agent, and each scheduler replica's /healthz (leadership from its
`scheduler_leader` gauge). A dead component gets a message that says where to look.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from driver.env.state import Component, EnvPaths, EnvState
from driver.inventory import NodeConfig, load_inventory

CPU_SAMPLE_S = 0.2  # the interval CPU percent is measured over


@dataclass
class ComponentStatus:
    name: str
    kind: str
    state: str  # running | unhealthy | down | stopped (by `env stop`) | remote
    address: str = ""
    pid: int | None = None
    detail: str = ""
    version: str = ""
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    containers: int | None = None
    log: str = ""
    role: str = ""  # schedulers: leader | follower ("" when unknown)

    @property
    def ok(self) -> bool:
        return self.state in ("running", "remote")


@dataclass
class EnvStatus:
    name: str
    kind: str
    root: str
    domain: str
    created_at: float
    dns: str | None = None
    etcd: str | None = None
    components: list[ComponentStatus] = field(default_factory=list)
    scheduler_bugs: list[str] = field(default_factory=list)  # planted, from the record

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.components)

    @property
    def leaders(self) -> list[str]:
        """The scheduler replicas whose gauge says they lead (one, when all is well)."""
        return [c.name for c in self.components if c.kind == "scheduler" and c.role == "leader"]

    @property
    def stopped(self) -> bool:
        """Everything was stopped on purpose: not broken, just not running."""
        return bool(self.components) and all(c.state == "stopped" for c in self.components)

    @property
    def verdict(self) -> str:
        return "healthy" if self.healthy else "stopped" if self.stopped else "UNHEALTHY"

    def problems(self) -> list[str]:
        if self.stopped:
            return [f"stopped; start it with `shakedown env start {self.name}`"]
        return [f"{c.name} is {c.state}: {c.detail}" for c in self.components if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy, "verdict": self.verdict.lower(),
                "leaders": self.leaders}


def _address(comp: Component) -> str:
    port = comp.ports.get("client") or comp.ports.get("dns") or comp.ports.get("grpc")
    return f"127.0.0.1:{port}" if port else ""


def _etcd_health(comp: Component) -> str | None:
    try:
        url = f"http://127.0.0.1:{comp.ports['client']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            doc = json.loads(resp.read())
        return None if doc.get("health") == "true" else f"/health says {doc}"
    except OSError as exc:
        return f"/health: {getattr(exc, 'reason', exc)}"


def _dns_health(comp: Component, domain: str) -> str | None:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(f"_shakedown-agent._tcp.{domain}.", "SRV")
    try:
        reply = dns.query.udp(q, "127.0.0.1", port=comp.ports["dns"], timeout=2)
    except (dns.exception.Timeout, OSError) as exc:
        return f"no DNS answer on 127.0.0.1:{comp.ports['dns']} ({exc or 'timeout'})"
    if reply.rcode() == dns.rcode.SERVFAIL:
        return "SERVFAIL for the agents' SRV record (is etcd up?)"
    return None


def _scheduler_status(comp: Component, st: ComponentStatus) -> str | None:
    from driver.control import scheduler

    problem = scheduler.health(comp.ports["metrics"])
    leads = scheduler.is_leader(comp.ports["metrics"])
    st.role = "" if leads is None else "leader" if leads else "follower"
    st.detail = st.detail or f"replica {comp.node}, metrics 127.0.0.1:{comp.ports['metrics']}"
    return problem


def agent_status(node: NodeConfig, status: ComponentStatus) -> None:
    """Fill `status` from a signed call to the agent (and count its containers)."""
    from shakedown.errors import ShakedownError

    try:
        with node.client(timeout=5, retries=1) as client:
            info = client.node_info()
            status.version = status.version or info.agent_version
            status.containers = len(client.list(all=True))
    except ShakedownError as exc:
        reason = exc.reason
        if "connect" in reason.lower() or "unavailable" in reason.lower():
            reason = f"connection refused on {node.address}"
        # The reason only: problems() already says "<component> is down".
        status.state = "down"
        status.detail = reason + (f" (see {status.log})" if status.log else "")


def collect(paths: EnvPaths, state: EnvState) -> EnvStatus:
    out = EnvStatus(state.name, state.kind, str(paths.root), state.domain, state.created_at,
                    state.dns, state.etcd, scheduler_bugs=list(state.scheduler_bugs))
    nodes = (
        {n.name: n for n in load_inventory(paths.inventory).nodes}
        if paths.inventory.exists()
        else {}
    )
    procs: dict[str, psutil.Process] = {}
    for comp in sorted(state.components.values(), key=lambda c: c.name):
        st = ComponentStatus(
            comp.name,
            comp.kind,
            "running",
            _address(comp),
            version=comp.version,
            log=_rel(paths.log(comp.name), paths.root),
        )
        proc = comp.managed()
        if proc is None and comp.stopped:
            st.state = "stopped"
            st.detail = f"stopped by `shakedown env stop`; `shakedown env start {state.name}`"
        elif proc is None or not proc.alive():
            st.state = "down"
            st.detail = _down_detail(proc.pid if proc else None, st)
        else:
            st.pid = proc.pid
            try:
                procs[comp.name] = psutil.Process(proc.pid)
                procs[comp.name].cpu_percent(None)
            except psutil.Error:
                pass
        out.components.append(st)
    if state.kind == "remote":
        out.components = [
            ComponentStatus(n.name, "agent", "remote", n.address) for n in nodes.values()
        ]
    _probe(out, state, nodes)
    if procs:
        time.sleep(CPU_SAMPLE_S)  # a measurement interval, not synchronisation
        for st in out.components:
            p = procs.get(st.name)
            if p is None:
                continue
            try:
                with p.oneshot():
                    st.cpu_percent = p.cpu_percent(None)
                    st.rss_bytes = p.memory_info().rss
            except psutil.Error:
                pass
    return out


def _down_detail(pid: int | None, st: ComponentStatus) -> str:
    """E.g. "connection refused on 127.0.0.1:7702 (see logs/agent-n2.log)"."""
    from driver.verify.probes import tcp_connect

    why = "it was never started" if pid is None else f"process {pid} is gone"
    if st.address:
        host, _, port = st.address.rpartition(":")
        refused = tcp_connect(host, int(port), 0.5)
        if refused:
            why = f"{refused} on {st.address}"
    return f"{why} (see {st.log})"


def _probe(out: EnvStatus, state: EnvState, nodes: dict[str, NodeConfig]) -> None:
    def check(st: ComponentStatus) -> None:
        if st.state in ("down", "stopped"):
            return
        comp = state.components.get(st.name)
        if st.kind == "etcd" and comp is not None:
            problem = _etcd_health(comp)
        elif st.kind == "coredns" and comp is not None:
            problem = _dns_health(comp, state.domain)
        elif st.kind == "scheduler" and comp is not None:
            problem = _scheduler_status(comp, st)
        else:
            node = nodes.get(comp.node if comp else st.name)
            if node is None:
                st.state, st.detail = "unhealthy", "not in the inventory"
                return
            agent_status(node, st)
            return
        if problem:
            st.state, st.detail = "unhealthy", problem

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(check, out.components))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
