"""Where an environment lives on disk, and the record of what runs in it.

    <base>/<name>/
      env.json     this record: kind, components (PIDs, ports, versions), creation time
      config/      inventory.toml, certs/ (PKI), certs/keys.json
      data/        etcd's data, the agents' state
      logs/        one log per component
      reports/     suite reports
      temp/        test contexts' temp dirs

The record is the only state: every command re-reads it and checks reality
(is that PID still the process we started?), so a half-broken environment is
always described truthfully and can be healed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from driver.control.process import ManagedProcess

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
STATE_VERSION = 1


class EnvError(RuntimeError):
    """A user-facing environment problem; the message says what to do."""


class EnvNotFound(EnvError):
    pass


def default_base() -> Path:
    home = os.environ.get("SHAKEDOWN_HOME")
    root = (
        Path(home)
        if home
        else Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "shakedown"
    )
    return root / "envs"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise EnvError(f"environment name {name!r}: use 1-31 lowercase letters, digits or '-'")
    return name


@dataclass(frozen=True, slots=True)
class EnvPaths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "env.json"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def certs(self) -> Path:
        return self.config / "certs"

    @property
    def keys(self) -> Path:
        return self.certs / "keys.json"

    @property
    def inventory(self) -> Path:
        return self.config / "inventory.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def make(self) -> None:
        for d in (self.config, self.data, self.logs, self.reports, self.temp):
            d.mkdir(parents=True, exist_ok=True)


@dataclass
class Component:
    """One managed process: etcd, coredns, an agent or a scheduler replica."""

    name: str  # etcd | coredns | agent-<node> | scheduler-<i>
    kind: str  # etcd | coredns | agent | scheduler
    ports: dict[str, int] = field(default_factory=dict)
    process: dict[str, Any] | None = None  # ManagedProcess.to_dict()
    version: str = ""
    # agents: the node name (also its io.shakedown.node label); schedulers: the replica's
    # -name (its discovery record and certificate), unique per environment
    node: str = ""
    stopped: bool = False  # stopped on purpose (`env stop`), not crashed: status says so

    def managed(self) -> ManagedProcess | None:
        return ManagedProcess.from_dict(self.process) if self.process else None


@dataclass
class EnvState:
    name: str
    kind: str  # local | remote
    created_at: float
    domain: str
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    components: dict[str, Component] = field(default_factory=dict)
    version: int = STATE_VERSION
    # Planted bugs (`env create --scheduler-bug`) every scheduler replica starts with: a
    # deliberately wrong scheduler for showing that checkers find what they should.
    scheduler_bugs: list[str] = field(default_factory=list)

    @property
    def etcd(self) -> str | None:
        c = self.components.get("etcd")
        return f"http://127.0.0.1:{c.ports['client']}" if c else None

    @property
    def dns(self) -> str | None:
        c = self.components.get("coredns")
        return f"127.0.0.1:{c.ports['dns']}" if c else None

    def agents(self) -> list[Component]:
        return [c for c in self.components.values() if c.kind == "agent"]

    def schedulers(self) -> list[Component]:
        return [c for c in self.components.values() if c.kind == "scheduler"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> EnvState:
        try:
            doc = json.loads(text)
            comps = {k: Component(**v) for k, v in doc.pop("components", {}).items()}
            return cls(**doc, components=comps)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EnvError(f"{source}: unreadable environment record ({exc})") from None


def load_state(paths: EnvPaths, name: str) -> EnvState:
    if not paths.state.exists():
        raise EnvNotFound(
            f"no environment {name!r} (looked in {paths.root}); "
            f"create it with `shakedown env create {name}`"
        )
    return EnvState.from_json(paths.state.read_text(encoding="utf-8"), str(paths.state))


def save_state(paths: EnvPaths, state: EnvState) -> None:
    tmp = paths.state.with_name(f".env.json.{secrets.token_hex(4)}.tmp")
    tmp.write_text(state.to_json(), encoding="utf-8")
    os.replace(tmp, paths.state)


def new_state(name: str, kind: str, domain: str) -> EnvState:
    return EnvState(name=name, kind=kind, created_at=time.time(), domain=domain)
