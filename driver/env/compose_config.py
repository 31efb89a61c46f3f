"""What a compose environment is, on disk: its names, addresses and config files.

`plan()` writes, before anything runs, what docker-compose.e2e.yml needs: the PKI and
keyring (through `shakedown certs init` / `keys init`), the Corefile, the inventory,
config/compose.json (this record) and config/compose.env (the file's variables).
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from driver.env.state import Component, EnvError, EnvPaths, EnvState

NODES, SCHEDULERS = 3, 2  # fixed by docker-compose.e2e.yml
SERVICES = ("etcd", "coredns", *(f"agent-{i}" for i in range(1, NODES + 1)),
            *(f"scheduler-{i}" for i in range(1, SCHEDULERS + 1)))
RUNNER = "test-runner"
# The network namespace holders of agents and replicas (docker-compose.e2e.yml says why).
HOLDERS = tuple(f"{s}-net" for s in SERVICES if s.startswith(("agent-", "scheduler-")))
HOSTS = {"etcd": 2, "coredns": 3, RUNNER: 4,
         **{f"agent-{i}": 10 + i for i in range(1, NODES + 1)},
         **{f"scheduler-{i}": 20 + i for i in range(1, SCHEDULERS + 1)}}
AGENT_PORT, SCHEDULER_PORT, ETCD_PORT, DNS_PORT = 7700, 7450, 2379, 53
COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.e2e.yml"
CONFIG_NAME = "compose.json"
HEALTHY_S = 240.0  # a cold engine on 2 cores starts 8 containers and their probes


@dataclass(frozen=True)
class ComposeConfig:
    """What an environment's stack is: saved as config/compose.json, read on both sides."""

    env: str
    project: str
    run: str  # prefix of node and replica names: <run>-n1, <run>-s1
    net: str  # the first three octets of the stack's /24
    domain: str
    tag: str
    file: str

    def ip(self, service: str) -> str:
        return f"{self.net}.{HOSTS[service]}"

    def env_vars(self, paths: EnvPaths) -> dict[str, str]:
        """The compose file's variables (docker-compose.e2e.yml names them all)."""
        return {"SHAKEDOWN_E2E_RUN": self.run, "SHAKEDOWN_E2E_NET": self.net,
                "SHAKEDOWN_E2E_DOMAIN": self.domain, "SHAKEDOWN_E2E_PROJECT": self.project,
                "SHAKEDOWN_IMAGE_TAG": self.tag, "SHAKEDOWN_E2E_CONFIG": str(paths.config),
                "SHAKEDOWN_E2E_REPORTS": str(paths.reports)}

    @classmethod
    def load(cls, path: Path) -> ComposeConfig:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise EnvError(f"{path}: unreadable compose record ({exc})") from None


def project_version() -> str:
    from importlib.metadata import version

    return version("shakedown")


def compose_command() -> list[str]:
    """`docker compose` (v2) where present, else Debian's `docker-compose` (1.29)."""
    try:
        subprocess.run(["docker", "compose", "version"], check=True, capture_output=True,
                       timeout=20)
        return ["docker", "compose"]
    except (OSError, subprocess.SubprocessError):
        pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise EnvError("neither `docker compose` nor `docker-compose` is installed "
                   "(scripts/setup.sh installs Debian's docker-compose)")


def free_subnet(client: Any) -> str:
    """A 10.x.y.0/24 that no Docker network uses (the first three octets)."""
    used = []
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                try:
                    used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
                except ValueError:
                    continue
    rng = random.SystemRandom()
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{rng.randint(160, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise EnvError("no free 10.x.y.0/24 for the stack's network")


def components(cfg: ComposeConfig) -> dict[str, Component]:
    """The record's components: one per service, named after it."""
    out = {"etcd": Component("etcd", "etcd", {"client": ETCD_PORT}),
           "coredns": Component("coredns", "coredns", {"dns": DNS_PORT})}
    for i in range(1, NODES + 1):
        out[f"agent-{i}"] = Component(f"agent-{i}", "agent", {"grpc": AGENT_PORT},
                                      node=f"{cfg.run}-n{i}")
    for i in range(1, SCHEDULERS + 1):
        out[f"scheduler-{i}"] = Component(f"scheduler-{i}", "scheduler",
                                          {"grpc": SCHEDULER_PORT}, node=f"{cfg.run}-s{i}")
    return out


def _cli(*args: str) -> None:
    """`shakedown ARGS` in this interpreter: the PKI and keyring come from the CLI itself."""
    proc = subprocess.run([sys.executable, "-m", "driver.cli", *args], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise EnvError(f"shakedown {' '.join(args[:2])}: {proc.stderr.strip() or proc.stdout}")


def plan(paths: EnvPaths, state: EnvState, cfg: ComposeConfig) -> None:
    """Certificates, keyring, Corefile, inventory and env file; nothing runs yet."""
    from driver.control.coredns import render_corefile
    from driver.inventory import NodeConfig, write_inventory

    state.components = components(cfg)
    # Agents and replicas are dialled by IP (discovery), by node name (the scheduler's
    # ServerName) and by localhost (health probes, the driver's adapter).
    sans = {c.node: f"{cfg.ip(c.name)},{c.node},localhost,127.0.0.1"
            for c in state.components.values() if c.node}
    _cli("certs", "init", str(paths.certs), *[a for n, h in sans.items()
                                              for a in ("--agent", f"{n}={h}")],
         "--principal", "driver:admin", "--principal", "viewer:observer",
         "--principal", "scheduler:admin")
    _cli("keys", "init", str(paths.keys), "--principal", "driver", "--principal", "viewer",
         "--principal", "scheduler")
    (paths.config / "Corefile").write_text(render_corefile(
        [cfg.domain], dns_port=DNS_PORT, etcd_endpoints=[f"http://{cfg.ip('etcd')}:{ETCD_PORT}"],
        health_port=8080, ready_port=8181, host="0.0.0.0"), encoding="utf-8")
    write_inventory(paths.inventory, [
        NodeConfig(c.node, f"{cfg.ip(c.name)}:{AGENT_PORT}", paths.keys, certs=paths.certs)
        for c in state.agents()], {"certs": paths.certs, "keys": paths.keys, "principal": "driver"})
    (paths.config / CONFIG_NAME).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    (paths.config / "compose.env").write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(cfg.env_vars(paths).items())))
