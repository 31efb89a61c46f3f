"""Static facts about the node: engine version, host size, fault capabilities.

Probed once (the engine and the kernel do not change under a running agent),
so GetNodeInfo costs no engine round trip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.faults import netem, netns

CAP_NET_ADMIN = 12


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    available: bool
    detail: str


@dataclass(frozen=True, slots=True)
class NodeFacts:
    docker_version: str
    docker_api_version: str
    kernel_version: str
    operating_system: str
    architecture: str
    cpus: int
    memory_bytes: int
    capabilities: tuple[Capability, ...]


def probe(api: Any) -> NodeFacts:
    """One /version and one /info call, plus local probes (``api`` is a docker APIClient)."""
    version = api.version()
    info = api.info()
    return NodeFacts(
        docker_version=str(version.get("Version", "")),
        docker_api_version=str(version.get("ApiVersion", "")),
        kernel_version=str(info.get("KernelVersion") or version.get("KernelVersion", "")),
        operating_system=str(info.get("OperatingSystem", "")),
        architecture=str(info.get("Architecture") or version.get("Arch", "")),
        cpus=int(info.get("NCPU") or os.cpu_count() or 1),
        memory_bytes=int(info.get("MemTotal") or 0),
        capabilities=tuple(capabilities(str(info.get("CgroupVersion", "")))),
    )


def capabilities(cgroup_version: str = "") -> list[Capability]:
    engine = "through the docker engine API"
    caps = [Capability(name, True, engine) for name in ("kill", "stop", "restart", "exec")]
    caps.append(_pause(cgroup_version))
    net_admin, why = _net_admin()
    # Mechanisms first (what a fault is applied with), then the faults they enable.
    found, detail = netns.available()
    netns_ok = found and net_admin
    caps.append(Capability("iptables-netns", netns_ok, f"{detail}; {why}" if found else detail))
    netem_ok, netem_why = netem.probe()
    caps.append(Capability("netem", netem_ok and net_admin,
                           f"{netem_why}; {why}" if netem_ok else netem_why))
    caps.append(Capability("proxy", True, "asyncio TCP proxy in the agent, on loopback "
                           "(other addresses need --allow-proxy-bind)"))
    caps.append(Capability("partition", netns_ok, "through iptables-netns" if netns_ok
                           else "needs iptables-netns"))
    caps.append(Capability("latency", True, "through proxy" + (", or netem" if netem_ok and
                                                               net_admin else "")))
    return caps


def _pause(cgroup_version: str) -> Capability:
    root = Path("/sys/fs/cgroup")
    if (root / "freezer").is_dir():
        return Capability("pause", True, "freezer cgroup mounted (cgroup v1)")
    if cgroup_version == "2" or (root / "cgroup.controllers").exists():
        return Capability("pause", True, "cgroup v2 (cgroup.freeze)")
    return Capability("pause", False, "no freezer cgroup and no cgroup v2")


def _net_admin() -> tuple[bool, str]:
    if os.geteuid() == 0:
        return True, "running as root"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:") and int(line.split()[1], 16) >> CAP_NET_ADMIN & 1:
                return True, "CAP_NET_ADMIN in effective set"
    except (OSError, ValueError):
        pass
    return False, "needs root or CAP_NET_ADMIN"
