"""One live agent per name per Docker engine: a claim held in the engine itself.

The claim is a volume named ``shakedown-agent-claim-<node>``. Creating a named
volume is atomic in the engine and idempotent: the first creator's labels stick,
so whoever finds its own instance id on the volume after creating it holds the
claim. The labels say who holds it (instance id, pid, host, address), which is
what a second agent needs to tell whether the holder is still alive:

- same host: the pid is alive and is a shakedown agent;
- another host: something accepts TCP connections on the holder's address.

A dead holder's claim is taken over (removed and created again); a live one's
refuses the start, naming the holder. Works across hosts that share nothing but
the engine. A graceful stop releases the claim.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from shakedown import labels as L

log = logging.getLogger(__name__)

CLAIM = L.PREFIX + "claim"  # value: the node name
INSTANCE = L.PREFIX + "instance"  # also stamped on every container the agent creates
PID, HOST, ADDRESS, STARTED = (CLAIM + s for s in (".pid", ".host", ".address", ".started"))
INSTANCE_FILE = "instance"
PROBE_TIMEOUT = 1.0


class AgentClaimed(OSError):
    """Another live agent instance holds this name on this engine."""


def volume_name(node: str) -> str:
    return f"shakedown-agent-claim-{node}"


def instance_id(state_dir: Path | None) -> str:
    """This agent's instance id: kept in the state dir, so a restart is the same instance."""
    if state_dir is None:
        return f"i-{secrets.token_hex(8)}"
    path = state_dir / INSTANCE_FILE
    with contextlib.suppress(OSError):
        value = path.read_text().strip()
        if value:
            return value
    value = f"i-{secrets.token_hex(8)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
    return value


@dataclass(frozen=True, slots=True)
class Holder:
    instance: str
    pid: int
    host: str
    address: str

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> Holder:
        pid = labels.get(PID, "")
        return cls(labels.get(INSTANCE, ""), int(pid) if pid.isdigit() else 0,
                   labels.get(HOST, ""), labels.get(ADDRESS, ""))

    def describe(self) -> str:
        return f"instance {self.instance}, pid {self.pid} on host {self.host}, at {self.address}"


def _pid_is_agent(pid: int, node: str) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's: assume it is the agent
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    # A recycled pid is not the old agent: its command line names the node.
    return b"agent" in cmdline and node.encode() in cmdline.split(b"\0")


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return True  # cannot tell: assume alive, never take a live claim
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def holder_alive(holder: Holder, node: str, *, this_host: str) -> bool:
    if holder.host == this_host:
        return _pid_is_agent(holder.pid, node)
    return _listening(holder.address)


class EngineClaim:
    def __init__(self, api: Any, node: str, instance: str, address: str) -> None:
        self.api, self.node, self.instance, self.address = api, node, instance, address
        self.name = volume_name(node)
        self.host = socket.gethostname()
        self.held = False

    def _labels(self) -> dict[str, str]:
        return {CLAIM: self.node, INSTANCE: self.instance, PID: str(os.getpid()),
                HOST: self.host, ADDRESS: self.address, STARTED: f"{time.time():.3f}"}

    def _current(self) -> dict[str, str] | None:
        try:
            return dict(self.api.inspect_volume(self.name).get("Labels") or {})
        except docker.errors.NotFound:
            return None

    def acquire(self) -> None:
        """Hold the claim, or raise AgentClaimed naming the live holder."""
        for _ in range(3):
            # Idempotent: when the volume exists, the engine keeps its first labels.
            self.api.create_volume(self.name, labels=self._labels())
            labels = self._current()
            if labels is None:
                continue  # removed between our create and inspect: try again
            holder = Holder.from_labels(labels)
            if holder.instance == self.instance and holder.pid == os.getpid():
                self.held = True
                return
            if holder_alive(holder, self.node, this_host=self.host):
                raise AgentClaimed(
                    f"--name {self.node}: another live agent holds this name on this Docker "
                    f"engine ({holder.describe()}); stop it or choose another --name")
            log.warning("taking over the claim of a dead agent",
                        extra={"fields": {"claim": self.name, "holder": holder.describe()}})
            with contextlib.suppress(docker.errors.NotFound):
                self.api.remove_volume(self.name, force=True)
        raise AgentClaimed(f"--name {self.node}: the engine claim {self.name} keeps changing "
                           "hands; another agent with this name is starting")

    def verify(self) -> bool:
        """Still ours? (Another agent may only take it once we look dead.)"""
        labels = self._current()
        return bool(labels and labels.get(INSTANCE) == self.instance
                    and labels.get(PID) == str(os.getpid()))

    def release(self) -> None:
        if self.held and self.verify():
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_volume(self.name, force=True)
        self.held = False
