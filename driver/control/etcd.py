"""A single-member etcd (Debian's etcd-server 3.4) on loopback.

It backs CoreDNS's etcd plugin (service discovery) for local environments and
tests. Plain HTTP on 127.0.0.1 only: nothing off the machine can reach it, so
TLS is deferred until etcd has to be shared across hosts.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from driver.control.process import ManagedProcess, free_port, spawn

HOST = "127.0.0.1"


@dataclass(frozen=True)
class EtcdServer:
    process: ManagedProcess
    name: str
    port: int
    peer_port: int
    data_dir: Path
    host: str = HOST

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls,
        data_dir: Path,
        log_path: Path,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        name: str = "shakedown",
        binary: str = "etcd",
        detach: bool = False,
        timeout: float = 30.0,
    ) -> EtcdServer:
        """Start etcd and wait until /health says so. Port 0 picks a free port
        (etcd cannot report a port it chose itself, hence free_port's race)."""
        client_port = client_port or free_port(HOST)
        peer_port = peer_port or free_port(HOST)
        client_url = f"http://{HOST}:{client_port}"
        peer_url = f"http://{HOST}:{peer_port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"shakedown-{name}",
            # zap + stderr: structured logs into our log file, and no
            # deprecation warning about the old capnslog logger.
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        proc = spawn(f"etcd-{name}", argv, log_path, detach=detach)
        server = cls(proc, name, client_port, peer_port, data_dir)

        proc.wait_ready(server.healthy, timeout, f"etcd {name} to be healthy at {client_url}")
        return server

    def _get_json(self, path: str, timeout: float = 2.0) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=timeout) as resp:
            data = json.loads(resp.read())
        if not isinstance(data, dict):
            raise ValueError(f"etcd {path}: expected a JSON object, got {data!r}")
        return data

    def healthy(self) -> bool:
        """GET /health == {"health": "true"} (a leader exists, the store answers)."""
        try:
            return self._get_json("/health").get("health") == "true"
        except (OSError, ValueError):  # URLError is an OSError
            return False

    def version(self) -> str:
        """The server version, e.g. "3.4.23" (GET /version)."""
        return str(self._get_json("/version")["etcdserver"])

    def stop(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        return self.process.stop(timeout=timeout, sig=sig)
