"""Many ``shakedown-agent`` processes on this machine, and what they cost (bench_scale.py).

Each agent binds a kernel-chosen port and reports it through ``--port-file``; all share
one PKI made as the tests make it. Stopped by PID (with the recorded argv) only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from common import log

from driver.control import process


@dataclass
class Fleet:
    """N agents as processes; stopped by PID (with their recorded argv) in ``stop()``."""

    run_id: str
    root: Path
    size: int
    names: list[str] = field(default_factory=list)
    procs: dict[str, process.ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    keys: Path = field(default=Path())
    certs: Path = field(default=Path())

    def __post_init__(self) -> None:
        self.names = [f"{self.run_id}-{i:03d}" for i in range(self.size)]

    def make_pki(self) -> None:
        from tests.support.agentproc import make_pki

        pki = make_pki(self.root / "pki", tuple(self.names))
        self.certs, self.keys = pki.root, pki.keys

    def argv(self, name: str) -> list[str]:
        return [sys.executable, "-m", "agent", "--name", name, "--listen", "127.0.0.1:0",
                "--certs", str(self.certs), "--keys", str(self.keys),
                "--port-file", str(self.port_file(name)),
                "--state-dir", str(self.root / "state" / name), "--grace-period", "1",
                # Idle cost x100: fewer reaper wake-ups and log lines.
                "--reap-interval", "2", "--log-level", "warning"]

    def port_file(self, name: str) -> Path:
        return self.root / "ports" / name

    def start(self, concurrency: int, timeout: float) -> float:
        """Start every agent, at most ``concurrency`` starting at once; returns seconds."""
        (self.root / "ports").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}
        pending, starting = list(self.names), []
        t0 = time.monotonic()
        deadline = t0 + timeout
        while pending or starting:
            while pending and len(starting) < concurrency:
                name = pending.pop(0)
                self.procs[name] = process.spawn(
                    name, self.argv(name), self.root / "logs" / f"{name}.log", env=env,
                    detach=False)
                starting.append(name)
            for name in list(starting):
                port = self._read_port(name)
                if port is not None:
                    self.ports[name] = port
                    starting.remove(name)
                    if len(self.ports) % 20 == 0:
                        log(f"{len(self.ports)}/{self.size} agents listening")
                elif not self.procs[name].alive():
                    raise RuntimeError(f"agent {name} exited during start:\n"
                                       + self.procs[name].log_tail(3000))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.ports)}/{self.size} agents listening after "
                                   f"{timeout:.0f} s")
            if starting:
                time.sleep(0.05)  # poll interval of the port files, bounded by the deadline
        return time.monotonic() - t0

    def _read_port(self, name: str) -> int | None:
        with contextlib.suppress(OSError):
            text = self.port_file(name).read_text().strip()
            if text.isdigit():
                return int(text)
        return None

    def write_inventory(self, path: Path, names: list[str]) -> Path:
        lines = ["[defaults]", f'certs = "{self.certs}"', f'keys = "{self.keys}"',
                 'principal = "driver"', ""]
        for name in names:
            lines += ["[[nodes]]", f'name = "{name}"',
                      f'address = "127.0.0.1:{self.ports[name]}"', ""]
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def stop(self) -> None:
        """SIGTERM every agent at once, then wait (SIGKILL after 15 s): all by PID."""
        live = [p for p in self.procs.values() if p.alive()]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        for p in live:  # stop() re-checks the argv before it signals
            with contextlib.suppress(Exception):
                p.stop(timeout=15)
        self._remove_claims()

    def _remove_claims(self) -> None:
        """A SIGKILLed agent leaves its claim volume; remove exactly ours."""
        import docker

        from agent.claim import volume_name

        ours = {volume_name(n) for n in self.names}
        client = docker.from_env(timeout=60)
        try:
            prefix = volume_name(self.run_id)
            for vol in client.volumes.list(filters={"name": prefix}):
                if vol.name in ours:
                    with contextlib.suppress(Exception):
                        vol.remove(force=True)
        finally:
            client.close()


def agents_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def engine_pids() -> list[int]:
    """dockerd and containerd: ListContainers and CloseSession are their work too (read only)."""
    return [p.pid for p in psutil.process_iter(["name"])
            if p.info["name"] in ("dockerd", "containerd")]


ENGINE: list[int] = []


def agents_rss(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def driver_rss() -> float:
    return float(psutil.Process().memory_info().rss)


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # KiB on Linux


def agent_connections(ports: set[int]) -> int:
    conns = psutil.Process().net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port in ports
               and c.status == psutil.CONN_ESTABLISHED)


