"""An environment backed by docker-compose.e2e.yml: the same system, in containers.

    env = ComposeEnvironment.create("e2e")   # certs, keys, Corefile; compose up; healthy
    env.status(); env.signal("etcd", SIGSTOP); env.revive("agent-2")
    env.destroy()                            # compose down -v --remove-orphans, its own only

Every service has a fixed address in a /24 chosen per environment (no other Docker
network uses it), so the addresses discovery serves are the ones everybody dials,
from inside the stack (the test runner) and from this host alike (a bridge network
is routable from its host). Faults are the engine's: `docker kill -s SIG` on this
project's containers, `docker start` to revive. Names carry the environment's run
id (nodes `<env>-<run>-n1`, project `shakedown-<env>-<run>`), so two stacks on one
engine never touch each other's containers, claims or networks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driver.env.cleanup import remove_docker_resources
from driver.env.compose_config import (
    AGENT_PORT,
    COMPOSE_FILE,
    CONFIG_NAME,
    DNS_PORT,
    ETCD_PORT,
    HEALTHY_S,
    HOLDERS,
    RUNNER,
    SERVICES,
    ComposeConfig,
    components,
    compose_command,
    free_subnet,
    plan,
    project_version,
)
from driver.env.environment import Environment
from driver.env.state import EnvError, EnvPaths, check_name, default_base, new_state, save_state
from driver.env.status import ComponentStatus, EnvStatus, agent_status

Progress = Callable[[str], None]
__all__ = ["AGENT_PORT", "COMPOSE_FILE", "CONFIG_NAME", "HOLDERS", "RUNNER", "SERVICES",
           "ComposeConfig", "ComposeEnvironment", "components", "free_subnet", "plan",
           "project_version"]


class ComposeEnvironment(Environment):
    """`Environment` whose components are the services of one compose project."""

    @classmethod
    def create_compose(cls, name: str, *, base: Path | None = None, tag: str | None = None,
                       progress: Progress = lambda _: None) -> ComposeEnvironment:
        import docker

        paths = EnvPaths((base or default_base()) / check_name(name))
        if paths.state.exists():
            env = Environment.load(name, base=base)
            if not isinstance(env, ComposeEnvironment):
                raise EnvError(f"environment {name} exists and is {env.state.kind}, not compose; "
                               f"destroy it first (`shakedown env destroy {name}`)")
            progress(f"environment {name} exists; starting what is down")
            env.start(progress)
            return env
        state = new_state(name, "compose", f"{name}.shakedown.test")
        client = docker.from_env()
        try:
            net = free_subnet(client)
        finally:
            client.close()
        run = f"{name}-{state.run_id[:6]}"
        cfg = ComposeConfig(name, f"shakedown-{run}", run, net, state.domain,
                            tag or os.environ.get("SHAKEDOWN_IMAGE_TAG") or project_version(),
                            str(Path(os.environ.get("SHAKEDOWN_COMPOSE_FILE", COMPOSE_FILE))))
        paths.make()
        progress(f"writing config: PKI, keyring, Corefile, inventory ({net}.0/24, "
                 f"project {cfg.project})")
        try:
            plan(paths, state, cfg)
        except Exception:
            shutil.rmtree(paths.root, ignore_errors=True)
            raise
        save_state(paths, state)
        env = cls(name, paths, state)
        try:
            env.start(progress)
        except Exception:
            env.destroy(progress)  # a half-started stack is not left running
            raise
        return env

    # -- the stack ---------------------------------------------------------------------

    @property
    def config(self) -> ComposeConfig:
        return ComposeConfig.load(self.paths.config / CONFIG_NAME)

    @property
    def dns(self) -> str | None:
        return f"{self.config.ip('coredns')}:{DNS_PORT}"

    @property
    def etcd(self) -> str | None:
        return f"http://{self.config.ip('etcd')}:{ETCD_PORT}"

    @property
    def local_agent_host(self) -> str:
        """Where an agent this process starts is reachable from the stack: the test
        runner's address inside it, else this host's address on the stack's bridge."""
        inside = os.environ.get("SHAKEDOWN_E2E_PROJECT") == self.config.project
        return self.config.ip(RUNNER) if inside else f"{self.config.net}.1"

    def compose(self, *args: str, check: bool = True, timeout: float = 600,
                capture: bool = True, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        """`docker compose -p PROJECT -f FILE ARGS` with the stack's variables (and `env`)."""
        cfg = self.config
        cmd = [*compose_command(), "-p", cfg.project, "-f", cfg.file, *args]
        env = {**os.environ, **cfg.env_vars(self.paths), **(env or {})}
        proc = subprocess.run(cmd, env=env, text=True, timeout=timeout,
                              capture_output=capture)
        if check and proc.returncode != 0:
            raise EnvError(f"{' '.join(cmd[:3])} ... {' '.join(args)}: exit {proc.returncode}: "
                           f"{(proc.stderr or '').strip()[-800:]}")
        return proc

    def _containers(self) -> dict[str, Any]:
        """service -> its container (not one-off `run` containers), from the engine."""
        import docker

        client = docker.from_env()
        try:
            found = client.containers.list(all=True, filters={
                "label": f"com.docker.compose.project={self.config.project}"})
        finally:
            client.close()
        return {c.labels.get("com.docker.compose.service", ""): c for c in found
                if c.labels.get("com.docker.compose.oneoff", "False") != "True"}

    def _container(self, component: str) -> Any:
        if component not in self.state.components:
            known = ", ".join(sorted(self.state.components))
            raise EnvError(f"no component {component!r} in environment {self.name} "
                           f"(components: {known})")
        found = self._containers().get(component)
        if found is None:
            raise EnvError(f"component {component!r} has no container (is the stack up? "
                           f"`shakedown env start {self.name}`)")
        return found

    def start(self, progress: Progress = lambda _: None) -> list[str]:
        before = {s for s, c in self._containers().items() if c.status == "running"}
        progress(f"compose up ({self.config.project})")
        self.compose("up", "-d", *SERVICES)
        self.wait_healthy(progress)
        self._reset_clients()
        return [s for s in SERVICES if s not in before]

    def wait_healthy(self, progress: Progress = lambda _: None,
                     timeout: float = HEALTHY_S) -> None:
        deadline = time.monotonic() + timeout
        waiting: list[str] = list(SERVICES)
        while time.monotonic() < deadline:
            found = self._containers()
            for s in SERVICES:
                c = found.get(s)
                if c is not None and c.status == "exited":
                    tail = c.logs(tail=5).decode(errors="replace").strip()
                    raise EnvError(f"{s} exited ({c.attrs['State'].get('ExitCode')}): {tail}")
            waiting = [s for s in SERVICES if _health(found.get(s)) != "healthy"]
            if not waiting:
                return
            time.sleep(0.5)  # a poll of the engine's health state, with a deadline
        raise EnvError(f"not healthy within {timeout:.0f} s: {', '.join(waiting)}")

    def running_count(self) -> int:
        """Services whose container runs (`env list`)."""
        return sum(1 for s, c in self._containers().items()
                   if s in SERVICES and c.status == "running")

    def stop(self, progress: Progress = lambda _: None) -> list[str]:
        running = [s for s, c in self._containers().items()
                   if c.status == "running" and s in SERVICES]
        if running:
            progress(f"compose stop ({self.config.project})")
            self.compose("stop", "-t", "10")
        self._reset_clients()
        return sorted(running)

    def destroy(self, progress: Progress = lambda _: None) -> None:
        """compose down -v --remove-orphans (this project only), then what the agents made."""
        try:
            progress(f"compose down ({self.config.project})")
            self.compose("down", "-v", "--remove-orphans", "-t", "10")
        except EnvError as exc:
            if (self.paths.config / CONFIG_NAME).exists():
                progress(f"compose down failed: {exc}")
        removed = remove_docker_resources([c.node for c in self.state.agents()])
        if removed:
            progress(f"removed {removed} container(s)/network(s)/claim(s) the agents left")
        self._reset_clients()
        shutil.rmtree(self.paths.root, ignore_errors=True)

    # -- faults: the engine's ----------------------------------------------------------

    def signal(self, component: str, sig: int) -> int:
        c = self._container(component)
        if c.status != "running":
            raise EnvError(f"component {component!r} is not running ({c.status})")
        c.kill(signal=int(sig))
        return int(c.attrs["State"].get("Pid") or 0)

    def revive(self, component: str) -> bool:
        """Start a killed service again (same address: fixed in the compose file); a running
        one gets SIGCONT, in case it was frozen. True when it had to be started."""
        import signal as signals

        c = self._container(component)
        if c.status == "running":
            c.kill(signal=int(signals.SIGCONT))
            return False
        c.start()
        deadline = time.monotonic() + HEALTHY_S
        while _health(self._containers().get(component)) != "healthy":
            if time.monotonic() > deadline:
                raise EnvError(f"{component} not healthy within {HEALTHY_S:.0f} s of its start")
            time.sleep(0.25)  # a poll of the engine's health state, with a deadline
        return True

    @property
    def relaunch_on_new_port(self) -> Any:
        # A service's port is fixed by the compose file: say so to `hasattr` (the suites
        # skip what this environment cannot do) rather than fail when called.
        raise AttributeError("a compose service cannot move ports")

    def pids(self) -> dict[str, int]:
        # Host PIDs mean nothing inside the test runner's PID namespace: no figures.
        return {}

    def status(self) -> EnvStatus:
        st = EnvStatus(self.name, "compose", str(self.paths.root), self.domain,
                       self.state.created_at, self.dns, self.etcd)
        found = self._containers()
        nodes = {n.name: n for n in self.inventory().nodes}
        cfg = self.config
        for comp in sorted(self.state.components.values(), key=lambda c: c.name):
            port = next(iter(comp.ports.values()), 0)
            cs = ComponentStatus(comp.name, comp.kind, "running", f"{cfg.ip(comp.name)}:{port}",
                                 log=f"docker logs {cfg.project}_{comp.name}")
            c = found.get(comp.name)
            health = _health(c)
            if c is None:
                cs.state, cs.detail = "down", "no container (`shakedown env start`)"
            elif c.status != "running":
                cs.state = "stopped" if c.status in ("exited", "created") else "down"
                cs.detail = f"container {c.name} is {c.status}"
            elif health != "healthy":
                cs.state, cs.detail = "unhealthy", f"health check: {health}"
            if c is not None:
                cs.pid = int(c.attrs["State"].get("Pid") or 0) or None
                cs.version = (c.image.labels or {}).get("org.opencontainers.image.version", "")
            if cs.state == "running" and comp.kind == "agent" and comp.node in nodes:
                agent_status(nodes[comp.node], cs)
            st.components.append(cs)
        self._roles(st)
        return st

    def _roles(self, st: EnvStatus) -> None:
        """Who leads, in the scheduler's own word (its /metrics is loopback-only here)."""
        replicas = [c for c in st.components if c.kind == "scheduler" and c.state == "running"]
        if not replicas:
            return
        from shakedown.errors import ShakedownError

        adapter = self.adapter()
        try:
            leader = adapter.leader() if adapter is not None else ""
        except ShakedownError:
            return
        finally:
            if adapter is not None:
                adapter.close()
        for c in replicas:
            node = self.state.components[c.name].node
            c.role = "leader" if node == leader else "follower"

    def log_path(self, component: str) -> Path:
        """The service's `docker logs`, written to logs/<component>.log now."""
        c = self._container(component if component in self.state.components
                            else self.component_of(component) or component)
        path = self.paths.log(c.labels.get("com.docker.compose.service", component))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(c.logs())
        return path


def _health(container: Any) -> str:
    if container is None:
        return "missing"
    container.reload()
    state = container.attrs.get("State") or {}
    if state.get("Status") != "running":
        return str(state.get("Status"))
    return str((state.get("Health") or {}).get("Status", "none"))
