"""The typed public API: plain dataclasses, so test authors never touch protobuf.

Each type converts with ``to_pb()`` / ``from_pb()``. Enums become lowercase
strings ("running", "stdout", "if-not-present"), timestamps become aware UTC
datetimes (``None`` when unset) and CPU counts are floats (``cpus=0.5``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from shakedown.agent.v1 import agent_pb2 as pb

PULL_POLICIES = {
    "if-not-present": pb.PULL_POLICY_IF_NOT_PRESENT,
    "always": pb.PULL_POLICY_ALWAYS,
    "never": pb.PULL_POLICY_NEVER,
}
MOUNT_TYPES = {
    "volume": pb.Mount.TYPE_VOLUME,
    "tmpfs": pb.Mount.TYPE_TMPFS,
    "bind": pb.Mount.TYPE_BIND,
}
_STATES = {
    int(v): k.removeprefix("CONTAINER_STATE_").lower()
    for k, v in pb.ContainerState.items() if v != pb.CONTAINER_STATE_UNSPECIFIED
}
_STREAMS = {pb.LogChunk.STREAM_STDOUT: "stdout", pb.LogChunk.STREAM_STDERR: "stderr"}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)

Selector = Mapping[str, str | None] | Sequence[str] | str | None


def selector_to_pb(selector: Selector) -> list[str]:
    """``{"app": "web", "tier": None}`` / ``["app=web", "tier"]`` -> ``["app=web", "tier"]``."""
    if selector is None:
        return []
    if isinstance(selector, str):
        return [selector]
    if isinstance(selector, Mapping):
        return [k if v is None else f"{k}={v}" for k, v in selector.items()]
    return list(selector)


def parse_size(value: str | int) -> int:
    """Docker-style sizes: ``64m`` -> 67108864 (binary multiples, like ``docker run -m``)."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r}: use e.g. 512k, 64m, 1g or a byte count")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def _ts(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts: Timestamp = getattr(msg, name)
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _state_name(value: int) -> str:
    # CONTAINER_STATE_RUNNING -> "running"; unset or unknown -> "unknown".
    return _STATES.get(value, "unknown")


@dataclass(frozen=True, slots=True)
class PortMapping:
    container_port: int
    host_port: int = 0  # 0: the engine picks a free port
    protocol: str = "tcp"
    host_ip: str = ""  # empty: the agent's default, 127.0.0.1

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """``[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`` or ``CONTAINER_PORT[/PROTO]``."""
        rest, _, proto = text.partition("/")
        parts = rest.rsplit(":", 2)
        try:
            nums = [int(p) for p in parts[-2:]] if len(parts) > 1 else [0, int(parts[0])]
        except ValueError:
            raise ValueError(f"invalid port mapping {text!r}: use HOST:CONTAINER[/tcp]") from None
        return cls(nums[1], nums[0], proto or "tcp", parts[0] if len(parts) == 3 else "")

    def to_pb(self) -> pb.PortMapping:
        return pb.PortMapping(container_port=self.container_port, host_port=self.host_port,
                              protocol=self.protocol, host_ip=self.host_ip)

    @classmethod
    def from_pb(cls, m: pb.PortMapping) -> PortMapping:
        return cls(m.container_port, m.host_port, m.protocol or "tcp", m.host_ip)


@dataclass(frozen=True, slots=True)
class Mount:
    target: str
    source: str = ""
    type: str = "volume"  # "volume", "tmpfs" or "bind" (refused unless the node allows it)
    read_only: bool = False

    def to_pb(self) -> pb.Mount:
        if self.type not in MOUNT_TYPES:
            raise ValueError(f"mount type {self.type!r}: use one of {sorted(MOUNT_TYPES)}")
        return pb.Mount(type=MOUNT_TYPES[self.type], source=self.source, target=self.target,
                        read_only=self.read_only)

    @classmethod
    def from_pb(cls, m: pb.Mount) -> Mount:
        kind = {v: k for k, v in MOUNT_TYPES.items()}.get(m.type, "volume")
        return cls(m.target, m.source, kind, m.read_only)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    image: str
    command: list[str] = field(default_factory=list)
    name: str = ""
    entrypoint: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[PortMapping] = field(default_factory=list)
    cpus: float | None = None
    memory: int | None = None  # bytes; see parse_size()
    restart: str | None = None  # "no", "always", "unless-stopped", "on-failure"
    restart_max_retries: int = 0
    network: str = ""
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    pull: str = "if-not-present"
    mounts: list[Mount] = field(default_factory=list)
    stop_signal: str = ""
    init: bool = False
    # Host-level settings: the agent refuses each unless its operator allows it.
    privileged: bool = False
    pid_mode: str = ""
    ipc_mode: str = ""
    cap_add: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)

    def to_pb(self) -> pb.ContainerSpec:
        if self.pull not in PULL_POLICIES:
            raise ValueError(f"pull {self.pull!r}: use one of {sorted(PULL_POLICIES)}")
        spec = pb.ContainerSpec(
            name=self.name, image=self.image, command=self.command, entrypoint=self.entrypoint,
            env=self.env, labels=self.labels, ports=[p.to_pb() for p in self.ports],
            network=self.network, working_dir=self.working_dir, user=self.user,
            hostname=self.hostname, pull_policy=PULL_POLICIES[self.pull],
            mounts=[m.to_pb() for m in self.mounts], stop_signal=self.stop_signal,
            init=self.init, privileged=self.privileged, pid_mode=self.pid_mode,
            ipc_mode=self.ipc_mode, cap_add=self.cap_add, devices=self.devices,
        )
        if self.cpus is not None or self.memory is not None:
            spec.resources.nano_cpus = round((self.cpus or 0) * 1e9)
            spec.resources.memory_bytes = self.memory or 0
        if self.restart is not None:
            spec.restart_policy.name = self.restart
            spec.restart_policy.max_retries = self.restart_max_retries
        return spec

    @classmethod
    def from_pb(cls, m: pb.ContainerSpec) -> ContainerSpec:
        res, rp = m.resources, m.restart_policy
        pull = {v: k for k, v in PULL_POLICIES.items()}.get(m.pull_policy, "if-not-present")
        return cls(
            image=m.image, command=list(m.command), name=m.name, entrypoint=list(m.entrypoint),
            env=dict(m.env), labels=dict(m.labels),
            ports=[PortMapping.from_pb(p) for p in m.ports],
            cpus=res.nano_cpus / 1e9 if res.nano_cpus else None,
            memory=res.memory_bytes or None,
            restart=rp.name if m.HasField("restart_policy") else None,
            restart_max_retries=rp.max_retries, network=m.network, working_dir=m.working_dir,
            user=m.user, hostname=m.hostname, pull=pull,
            mounts=[Mount.from_pb(x) for x in m.mounts], stop_signal=m.stop_signal,
            init=m.init, privileged=m.privileged, pid_mode=m.pid_mode, ipc_mode=m.ipc_mode,
            cap_add=list(m.cap_add), devices=list(m.devices),
        )


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str
    image: str
    state: str  # "created", "running", "paused", "restarting", "exited", "dead", "removing"
    status: str = ""
    exit_code: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ports: list[PortMapping] = field(default_factory=list)
    session_id: str = ""
    managed: bool = True
    node: str = ""
    restart_count: int = 0
    oom_killed: bool = False
    pid: int = 0
    ip_addresses: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running"

    def host_port(self, container_port: int, protocol: str = "tcp") -> int | None:
        for p in self.ports:
            if p.container_port == container_port and p.protocol == protocol and p.host_port:
                return p.host_port
        return None

    @classmethod
    def from_pb(cls, m: pb.Container) -> Container:
        return cls(
            id=m.id, name=m.name, image=m.image, state=_state_name(m.state), status=m.status,
            exit_code=m.exit_code, labels=dict(m.labels), created_at=_ts(m, "created_at"),
            started_at=_ts(m, "started_at"), finished_at=_ts(m, "finished_at"),
            ports=[PortMapping.from_pb(p) for p in m.ports], session_id=m.session_id,
            managed=m.managed, node=m.node, restart_count=m.restart_count,
            oom_killed=m.oom_killed, pid=m.pid, ip_addresses=dict(m.ip_addresses),
            command=list(m.command),
        )


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    available: bool
    detail: str = ""

    @classmethod
    def from_pb(cls, m: pb.Capability) -> Capability:
        return cls(m.name, m.available, m.detail)


@dataclass(frozen=True, slots=True)
class Policy:
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allow_cap_add: bool = False
    allow_devices: bool = False
    allow_bind_mounts: bool = False
    adopt_selectors: tuple[str, ...] = ()
    allow_public_ports: bool = False
    # Registries images may come from; empty means any.
    allow_registries: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, m: pb.Policy) -> Policy:
        return cls(m.allow_privileged, m.allow_host_network, m.allow_host_pid, m.allow_host_ipc,
                   m.allow_cap_add, m.allow_devices, m.allow_bind_mounts,
                   tuple(m.adopt_selectors), m.allow_public_ports, tuple(m.allow_registries))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    agent_version: str = ""
    docker_version: str = ""
    docker_api_version: str = ""
    kernel_version: str = ""
    operating_system: str = ""
    architecture: str = ""
    cpus: int = 0
    memory_bytes: int = 0
    capabilities: tuple[Capability, ...] = ()
    policy: Policy = field(default_factory=Policy)
    principal: str = ""  # the caller, as the agent authenticated it
    role: str = ""
    server_time: datetime | None = None

    def has(self, capability: str) -> bool:
        return any(c.name == capability and c.available for c in self.capabilities)

    @classmethod
    def from_pb(cls, m: pb.NodeInfo) -> NodeInfo:
        return cls(
            name=m.name, agent_version=m.agent_version, docker_version=m.docker_version,
            docker_api_version=m.docker_api_version, kernel_version=m.kernel_version,
            operating_system=m.operating_system, architecture=m.architecture, cpus=m.cpus,
            memory_bytes=m.memory_bytes,
            capabilities=tuple(Capability.from_pb(c) for c in m.capabilities),
            policy=Policy.from_pb(m.policy), principal=m.principal, role=m.role,
            server_time=_ts(m, "server_time"),
        )


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    name: str = ""
    ttl_seconds: int = 0
    persistent: bool = False
    principal: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    container_count: int = 0
    network_count: int = 0

    @classmethod
    def from_pb(cls, m: pb.Session) -> Session:
        return cls(m.id, m.name, m.ttl_seconds, m.persistent, m.principal,
                   _ts(m, "created_at"), _ts(m, "expires_at"), dict(m.labels),
                   m.container_count, m.network_count)


@dataclass(frozen=True, slots=True)
class Network:
    """A bridge network a session owns (``managed``) or one adopted by selector."""

    id: str
    name: str
    driver: str = "bridge"
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    session_id: str = ""
    managed: bool = True
    node: str = ""
    created_at: datetime | None = None
    containers: tuple[str, ...] = ()  # ids of the attached containers

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def from_pb(cls, m: pb.Network) -> Network:
        return cls(m.id, m.name, m.driver, m.internal, dict(m.labels), m.session_id, m.managed,
                   m.node, _ts(m, "created_at"), tuple(m.containers))


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def output(self) -> str:
        """stdout as text (UTF-8, undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_pb(cls, m: pb.ExecResponse) -> ExecResult:
        return cls(m.exit_code, m.stdout, m.stderr)


@dataclass(frozen=True, slots=True)
class LogChunk:
    stream: str  # "stdout" or "stderr"
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    @classmethod
    def from_pb(cls, m: pb.LogChunk) -> LogChunk:
        return cls(_STREAMS.get(m.stream, "stdout"), m.data)


@dataclass(frozen=True, slots=True)
class LogLine:
    stream: str
    text: str  # without the trailing newline


def log_lines(chunks: Iterable[LogChunk]) -> Iterator[LogLine]:
    """Reassemble lines per stream: chunk boundaries need not fall on newlines."""
    pending: dict[str, bytes] = {}
    for chunk in chunks:
        buf = pending.get(chunk.stream, b"") + chunk.data
        *lines, pending[chunk.stream] = buf.split(b"\n")
        for line in lines:
            yield LogLine(chunk.stream, line.decode("utf-8", "replace"))
    for stream, rest in pending.items():
        if rest:
            yield LogLine(stream, rest.decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Event:
    action: str  # create, start, die, kill, pause, unpause, stop, destroy, oom, ...
    container_id: str
    container_name: str = ""
    session_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None  # set on "die"
    node: str = ""
    time: datetime | None = None

    @classmethod
    def from_pb(cls, m: pb.Event) -> Event:
        return cls(m.action, m.container_id, m.container_name, m.session_id, dict(m.labels),
                   m.exit_code if m.HasField("exit_code") else None, m.node, _ts(m, "time"))
