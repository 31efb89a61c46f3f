"""Between the Docker engine's shapes and Shakedown's.

Inspect and list attrs become ``pb.Container`` (states, timestamps, ports) or
``pb.Network``; a ``pb.ContainerSpec`` becomes ``create_container`` arguments;
the engine's multiplexed log stream becomes (stream, bytes) chunks; SDK and
transport exceptions become the matching ``ShakedownError``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any

import docker
import requests
from docker.types import Mount

from agent.ownership import Ownership
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    ShakedownError,
    Unavailable,
)

_STATES = {
    "created": pb.CONTAINER_STATE_CREATED, "running": pb.CONTAINER_STATE_RUNNING,
    "paused": pb.CONTAINER_STATE_PAUSED, "restarting": pb.CONTAINER_STATE_RESTARTING,
    "exited": pb.CONTAINER_STATE_EXITED, "dead": pb.CONTAINER_STATE_DEAD,
    "removing": pb.CONTAINER_STATE_REMOVING,
}
_EXITED = re.compile(r"Exited \((-?\d+)\)")


def to_pb(attrs: dict[str, Any], owner: Ownership) -> pb.Container:
    """A container from its inspect attrs."""
    config, state = attrs.get("Config") or {}, attrs.get("State") or {}
    labels = config.get("Labels") or {}
    net = attrs.get("NetworkSettings") or {}
    c = pb.Container(
        id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"), image=config.get("Image", ""),
        state=_STATES.get(state.get("Status", ""), pb.CONTAINER_STATE_UNSPECIFIED),
        status=state.get("Status", ""), exit_code=int(state.get("ExitCode") or 0),
        labels=labels, session_id=labels.get(L.SESSION, ""), managed=owner(labels)[1],
        node=owner.node, restart_count=int(attrs.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")), pid=int(state.get("Pid") or 0),
        command=[x for x in [attrs.get("Path"), *(attrs.get("Args") or [])] if x],
    )
    _set_time(c.created_at, attrs.get("Created"))
    _set_time(c.started_at, state.get("StartedAt"))
    _set_time(c.finished_at, state.get("FinishedAt"))
    bound = net.get("Ports") or (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for key, binds in bound.items():
        port, _, proto = key.partition("/")
        for b in binds or [{}]:
            c.ports.add(container_port=int(port), protocol=proto or "tcp",
                        host_ip=b.get("HostIp", ""), host_port=int(b.get("HostPort") or 0))
    for name, n in (net.get("Networks") or {}).items():
        if n and n.get("IPAddress"):
            c.ip_addresses[name] = n["IPAddress"]
    return c


def summary_to_pb(s: dict[str, Any], owner: Ownership) -> pb.Container:
    """A container from one entry of the engine's container list."""
    labels = s.get("Labels") or {}
    status = s.get("Status", "")
    m = _EXITED.search(status)
    c = pb.Container(
        id=s["Id"], name=(s.get("Names") or [""])[0].lstrip("/"), image=s.get("Image", ""),
        state=_STATES.get(s.get("State", ""), pb.CONTAINER_STATE_UNSPECIFIED), status=status,
        exit_code=int(m.group(1)) if m else 0, labels=labels,
        session_id=labels.get(L.SESSION, ""), managed=owner(labels)[1],
        node=owner.node, command=[s["Command"]] if s.get("Command") else [],
    )
    c.created_at.FromSeconds(int(s.get("Created") or 0))
    for p in s.get("Ports") or []:
        c.ports.add(container_port=int(p.get("PrivatePort") or 0), protocol=p.get("Type", ""),
                    host_ip=p.get("IP", ""), host_port=int(p.get("PublicPort") or 0))
    for name, n in ((s.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if n and n.get("IPAddress"):
            c.ip_addresses[name] = n["IPAddress"]
    return c


def network_to_pb(attrs: dict[str, Any], owner: Ownership) -> pb.Network:
    """A network from its inspect attrs (or list entry: then without containers)."""
    labels = attrs.get("Labels") or {}
    n = pb.Network(
        id=attrs["Id"], name=attrs.get("Name", ""), driver=attrs.get("Driver", ""),
        internal=bool(attrs.get("Internal")), labels=labels,
        session_id=labels.get(L.SESSION, ""), managed=owner(labels)[1], node=owner.node,
        containers=sorted(attrs.get("Containers") or {}),
    )
    _set_time(n.created_at, attrs.get("Created"))
    return n


def create_kwargs(api: Any, spec: pb.ContainerSpec, labels: dict[str, str]) -> dict[str, Any]:
    """``APIClient.create_container`` keyword arguments for ``spec``."""
    bindings: dict[str, list[tuple[str, int | None]]] = {}
    ports: list[tuple[int, str]] = []
    for p in spec.ports:
        proto = p.protocol or "tcp"
        key = f"{p.container_port}/{proto}"
        if key not in bindings:
            ports.append((p.container_port, proto))
        bindings.setdefault(key, []).append((p.host_ip or "127.0.0.1", p.host_port or None))
    kinds = {pb.Mount.TYPE_VOLUME: "volume", pb.Mount.TYPE_TMPFS: "tmpfs",
             pb.Mount.TYPE_BIND: "bind"}
    mounts = [Mount(m.target, m.source or None, type=kinds[m.type], read_only=m.read_only)
              for m in spec.mounts]
    rp = spec.restart_policy
    host_config = api.create_host_config(
        port_bindings=bindings or None,
        mem_limit=spec.resources.memory_bytes or None,
        nano_cpus=spec.resources.nano_cpus or None,
        restart_policy={"Name": rp.name, "MaximumRetryCount": rp.max_retries}
        if rp.name else None,
        network_mode=spec.network or None, privileged=spec.privileged,
        pid_mode=spec.pid_mode or None, ipc_mode=spec.ipc_mode or None,
        cap_add=list(spec.cap_add) or None, devices=list(spec.devices) or None,
        mounts=mounts or None, init=True if spec.init else None,
    )
    return dict(
        image=spec.image, command=list(spec.command) or None,
        entrypoint=list(spec.entrypoint) or None,
        environment=[f"{k}={v}" for k, v in spec.env.items()] or None,
        labels=labels, ports=ports or None, host_config=host_config,
        name=spec.name or None, working_dir=spec.working_dir or None,
        user=spec.user or None, hostname=spec.hostname or None,
        stop_signal=spec.stop_signal or None, detach=True,
    )


def _set_time(ts: Any, value: str | None) -> None:
    if not value or value.startswith("0001-"):
        return
    with contextlib.suppress(ValueError):
        ts.FromJsonString(value)


class Demuxer:
    """Splits the engine's multiplexed stream: 8-byte headers (stream id, big-endian size)."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.buf = bytearray()

    def feed(self, data: bytes) -> Iterable[tuple[int, bytes]]:
        if self.tty:
            return [(1, data)] if data else []
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            size = int.from_bytes(self.buf[4:8], "big")
            if len(self.buf) < 8 + size:
                break
            stream = self.buf[0]
            out.append((stream if stream in (1, 2) else 1, bytes(self.buf[8:8 + size])))
            del self.buf[:8 + size]
        return out


def translate(exc: BaseException, field: str = "container") -> BaseException:
    """Map an SDK/transport exception to the matching ShakedownError."""
    if isinstance(exc, ShakedownError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(explain(exc), field=field)
    if isinstance(exc, docker.errors.APIError):
        msg, code = explain(exc), exc.status_code
        if code == 409:
            if "already in use" in msg or "Conflict. The container name" in msg:
                # The engine's message names the holder's full id, which may be a
                # container this caller may not see: say only that the name is taken.
                return AlreadyExists("name in use on this node", field="spec.name")
            return FailedPrecondition(msg, field=field)
        if code == 400:
            return InvalidArgument(msg, field=field)
        return InternalError(f"docker engine: {msg}", field=field)
    if isinstance(exc, requests.exceptions.Timeout):
        return DeadlineExceeded(f"docker engine did not answer in time: {exc}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unavailable(f"docker engine unreachable: {exc}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        return InternalError(f"docker engine: {exc}")
    return exc


def explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)
