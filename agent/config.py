"""The agent's configuration, as parsed from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.registration import RegistrationConfig


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Host-level container settings, each refused unless the operator allows it."""

    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allow_cap_add: bool = False
    allow_devices: bool = False
    allow_bind_mounts: bool = False
    # Published ports on a non-loopback host address (0.0.0.0, ::, a LAN address).
    allow_public_ports: bool = False
    # Fault proxies listening on a non-loopback address (reachable from other hosts).
    allow_proxy_bind: bool = False
    # Registries images may come from (normalised: "docker.io", "ghcr.io",
    # "localhost:5000"); empty means any.
    allow_registries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    listen: str
    ca: Path
    cert: Path
    key: Path
    keys: Path
    principals: dict[str, str]
    crl: Path | None = None
    # Re-read on change; merged with `principals` (which win).
    principals_file: Path | None = None
    port_file: Path | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Label selectors ("key" or "key=value") of unmanaged containers we may act on.
    adopt: tuple[str, ...] = ()
    max_clock_skew: float = 30.0
    # Also accept legacy HMAC v1 signatures (no audience: replayable to other agents).
    accept_hmac_v1: bool = False
    default_session_ttl: int = 30
    reap_interval: float = 1.0
    state_dir: Path | None = None
    docker_host: str | None = None
    grace_period: float = 10.0
    log_level: str = "info"
    # Register this agent in discovery (CoreDNS via etcd) while it serves.
    registration: RegistrationConfig | None = None
    # Fairness (agent/limits.py): concurrent long-running calls per principal.
    max_long_calls_per_principal: int = 16
