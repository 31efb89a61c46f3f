"""Network partitions: a grudge applied as one iptables chain per target namespace.

For each target the fault's chain (``SD-<id>``) DROPs traffic from each peer
address (reached from INPUT) and to it (from OUTPUT), so neither side hears the
other. Chains are named by the fault, so overlapping partitions compose (a
packet any chain drops is dropped) and heal independently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent import policy
from agent.faults import netns
from agent.faults.journal import Undo
from agent.runtime import DockerRuntime
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound

MECHANISM = "iptables-netns"
FIELD = "spec.partition.grudges"
MAX_TARGETS = 64
MAX_PEERS = 256


@dataclass
class Target:
    container: pb.Container
    peers: list[str]  # CIDRs, sorted


@dataclass
class Plan:
    targets: list[Target]

    def params(self, chain: str) -> dict[str, str]:
        out = {"chain": chain}
        for t in self.targets:
            out[f"drop:{t.container.name or t.container.id}"] = ",".join(t.peers)
        return out


def chain_name(fault_id: str) -> str:
    """iptables allows 28 characters; ``f-<12 hex>`` becomes ``SD-<12 hex>``."""
    return f"SD-{fault_id.removeprefix('f-')}"[:28]


async def _container(runtime: DockerRuntime, ref: str, field: str) -> pb.Container:
    policy.container_ref(ref, field)
    try:
        return await runtime.inspect(ref)
    except NotFound as exc:
        raise InvalidArgument(exc.reason, field=field) from None


def _host_namespaces() -> set[int]:
    """The network namespaces of the agent and of init: the host's, never a target's."""
    found = set()
    for pid in ("self", "1"):
        with contextlib.suppress(OSError):
            found.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return found


def _netns(pid: int) -> int:
    """The inode of the process's network namespace (the agent runs on the engine's host)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError as exc:
        raise FailedPrecondition(f"cannot see the network namespace of pid {pid}: {exc}; "
                                 "partitions need the agent on the engine's host") from None


def _address(value: str) -> str | None:
    """``value`` as an IPv4 CIDR, or None when it is not an address (a container ref)."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if net.version != 4:
        raise InvalidArgument("only IPv4 peers are supported (iptables, not ip6tables)")
    return str(net)


async def prepare(runtime: DockerRuntime, spec: pb.FaultSpec) -> Plan:
    """Validate and resolve every target and peer before anything is applied."""
    found, why = netns.available()
    if not found or os.geteuid() != 0:
        raise FailedPrecondition("partitions are unavailable on this node: "
                                 + (why if not found else "the agent is not root"),
                                 field="spec.kind")
    grudges = spec.partition.grudges
    if not grudges:
        raise InvalidArgument("a partition needs at least one grudge", field=FIELD)
    if len(grudges) > MAX_TARGETS:
        raise InvalidArgument(f"at most {MAX_TARGETS} targets", field=FIELD)
    targets: list[Target] = []
    seen: set[str] = set()
    namespaces: dict[int, str] = {}  # one chain per namespace: two targets may not share one
    for i, g in enumerate(grudges):
        where = f"{FIELD}[{i}]"
        box = await _container(runtime, g.target, f"{where}.target")
        if box.id in seen:
            raise InvalidArgument(f"container {g.target!r} is the target of two grudges; "
                                  "merge their peers", field=f"{where}.target")
        seen.add(box.id)
        if box.state not in (pb.CONTAINER_STATE_RUNNING, pb.CONTAINER_STATE_PAUSED) \
                or box.pid <= 0:
            raise FailedPrecondition(f"container {g.target!r} is not running: it has no "
                                     "network namespace to partition", field=f"{where}.target")
        ns = _netns(box.pid)
        if ns in _host_namespaces():
            # A host-network container's namespace is the host's: rules there would cut the
            # agent and every other workload off. Refused whatever the policy flags say.
            raise FailedPrecondition(f"container {g.target!r} uses the host's network "
                                     "namespace: a partition there would rewrite the host's "
                                     "firewall", field=f"{where}.target")
        if ns in namespaces:
            raise InvalidArgument(f"container {g.target!r} shares its network namespace with "
                                  f"{namespaces[ns]!r}: name one of them", field=f"{where}.target")
        namespaces[ns] = g.target
        if not g.peers:
            raise InvalidArgument("an empty grudge: name the peers the target must not hear",
                                  field=f"{where}.peers")
        if len(g.peers) > MAX_PEERS:
            raise InvalidArgument(f"at most {MAX_PEERS} peers", field=f"{where}.peers")
        own = {ip for ip in box.ip_addresses.values() if ip}
        peers: set[str] = set()
        for j, ref in enumerate(g.peers):
            pfield = f"{where}.peers[{j}]"
            try:
                cidr = _address(ref)
            except InvalidArgument as exc:
                raise InvalidArgument(exc.reason, field=pfield) from None
            if cidr is not None:
                peers.add(cidr)
                continue
            peer = await _container(runtime, ref, pfield)
            if peer.id == box.id:
                raise InvalidArgument("a container cannot hold a grudge against itself",
                                      field=pfield)
            ips = {ip for ip in peer.ip_addresses.values() if ip}
            if not ips:
                raise FailedPrecondition(f"container {ref!r} has no IP address (not running, "
                                         "or on no network)", field=pfield)
            peers.update(f"{ip}/32" for ip in ips)
        nets = [ipaddress.ip_network(p, strict=False) for p in peers]
        if any(ipaddress.ip_address(ip) in net for ip in own for net in nets):
            raise InvalidArgument("a target cannot drop its own address (a peer range "
                                  "includes it)", field=f"{where}.peers")
        targets.append(Target(box, sorted(peers)))
    return Plan(targets)


def undo_steps(plan: Plan, chain: str) -> list[Undo]:
    return [Undo("unchain", t.container.id, chain, t.container.pid) for t in plan.targets]


async def apply(plan: Plan, chain: str, steps: list[Undo],
                record: Callable[[], Awaitable[None]]) -> None:
    """Add the chain in each target's namespace, in order. Each step (already
    journaled) first learns whether the namespace has a filter table, and ``record``
    journals that before the chain (and perhaps the table) is added: a crash at any
    point leaves an undo that restores the namespace exactly."""
    for target, step in zip(plan.targets, steps, strict=True):
        pid = target.container.pid
        step.drop_table = not await netns.has_filter(pid)
        await record()
        await netns.add_chain(pid, chain, target.peers)


async def undo(runtime: DockerRuntime, step: Undo) -> tuple[str, bool]:
    """Remove the chain from the container's namespace; idempotent. Returns a note and
    whether the filter table's removal is still owed (another fault's chain keeps it)."""
    try:
        box = await runtime.inspect(step.container)
    except NotFound:
        return "container gone: its namespace and rules with it", False
    if box.pid <= 0:
        return "container not running: its namespace and rules are gone", False
    try:
        # A different pid is a new namespace (the container restarted): the chain died with
        # the old one, and a filter table there is not ours to remove.
        return await netns.remove_chain(box.pid, step.chain,
                                        step.drop_table and box.pid == step.pid)
    except netns.NetnsError:
        # The container stopped (or was removed) between the inspect and nsenter: its
        # namespace, and our chain in it, went with it; anything else is a real failure.
        gone = await _namespace_gone(runtime, step.container, box.pid)
        if gone:
            return gone, False
        raise


async def _namespace_gone(runtime: DockerRuntime, container: str, pid: int) -> str:
    """Why the namespace of ``pid`` (the container's) is gone now, or "" when it is not."""
    try:
        box = await runtime.inspect(container)
    except NotFound:
        return "container gone: its namespace and rules with it"
    if box.pid <= 0:
        return "container not running: its namespace and rules are gone"
    if box.pid != pid or not os.path.exists(f"/proc/{pid}/ns/net"):
        return "container restarted meanwhile: the namespace with our rules is gone"
    return ""
