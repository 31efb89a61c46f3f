"""Run a real `shakedown-agent` as a subprocess for tests and benchmarks.

The agent binds port 0 and reports its port through --port-file, so parallel
runs never race for ports. It is stopped by PID only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from driver.control.process import wait_for
from shakedown import keyring
from shakedown.pkilayout import PkiDir

__all__ = ["AgentProcess", "PkiFixture", "make_pki", "wait_for"]


@dataclass
class PkiFixture:
    root: Path
    keys: Path
    agents: tuple[str, ...]

    @property
    def dir(self) -> PkiDir:
        return PkiDir(self.root)


def make_pki(
    root: Path, agents: tuple[str, ...], extra_principals: dict[str, str] | None = None
) -> PkiFixture:
    from driver.pki import init_pki

    principals = {"driver": "admin", "viewer": "observer", **(extra_principals or {})}
    init_pki(root, {a: ["127.0.0.1", "localhost"] for a in agents}, principals, days=2)
    keys = root / "keys.json"
    keyring.save(keyring.new_keyring(principals), keys)
    return PkiFixture(root, keys, agents)


@dataclass
class AgentProcess:
    name: str
    pki: PkiFixture
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"agent-{self.name}.log"

    @property
    def certs(self) -> Path:
        return self.pki.root

    @property
    def keys(self) -> Path:
        return self.pki.keys

    def start(self, timeout: float = 20.0) -> AgentProcess:
        port_file = self.workdir / f"agent-{self.name}.port"
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "agent",
            "--name",
            self.name,
            "--listen",
            "127.0.0.1:0",
            "--certs",
            str(self.pki.root),
            "--keys",
            str(self.pki.keys),
            "--port-file",
            str(port_file),
            "--state-dir",
            str(self.workdir / f"state-{self.name}"),
            "--grace-period",
            "2",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"agent {self.name} exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                )
            return port_file.exists() and port_file.read_text().strip().isdigit()

        wait_for(ready, timeout, what=f"agent {self.name} to listen")
        self.port = int(port_file.read_text())
        self.write_inventory(self.inventory)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    @property
    def inventory(self) -> Path:
        """A TOML inventory naming this one agent (rewritten on each start)."""
        return self.workdir / f"inventory-{self.name}.toml"

    def write_inventory(self, path: Path) -> Path:
        path.write_text(
            "[defaults]\n"
            f'certs = "{self.pki.root}"\nkeys = "{self.pki.keys}"\nprincipal = "driver"\n\n'
            f'[[nodes]]\nname = "{self.name}"\naddress = "{self.address}"\n',
            encoding="utf-8",
        )
        return path

    def client(self, principal: str = "driver", **kw):  # type: ignore[no-untyped-def]
        from driver.client import AgentClient

        return AgentClient.from_certs_dir(
            self.address, self.pki.root, self.pki.keys, principal=principal, **kw
        )
