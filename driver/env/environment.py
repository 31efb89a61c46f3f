"""`Environment`: a named, persistent test environment, local or remote.

    env = Environment.create("dev", nodes=3)       # etcd + CoreDNS + 3 agents + 2 schedulers
    sched = env.adapter()                           # the reference scheduler, via discovery
    env = Environment.load("dev")                   # from any process, later
    print(env.status().healthy)
    with env.context("my-test") as ctx:             # isolated: labels, temp dir, sessions
        ...
    env.destroy()

Every operation is idempotent and tolerates a half-broken environment:
`start()` restarts only what is down, `stop()` and `destroy()` skip what is
already gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driver.env import local
from driver.env.state import (
    EnvError,
    EnvNotFound,
    EnvPaths,
    EnvState,
    check_name,
    default_base,
    load_state,
    new_state,
    save_state,
)
from driver.env.status import EnvStatus, collect
from driver.inventory import Inventory, load_inventory

if TYPE_CHECKING:
    from driver.adapters.scheduler import SchedulerAdapter
    from driver.client import AgentClient
    from driver.discovery import Resolver
    from driver.env.context import TestContext

Progress = Callable[[str], None]
DEFAULT_NODES, MAX_NODES = 3, 32
DEFAULT_SCHEDULERS, MAX_SCHEDULERS = 2, 5
ZONE_SUFFIX = "shakedown.test"


def _quiet(_: str) -> None:
    pass


class Environment:
    def __init__(self, name: str, paths: EnvPaths, state: EnvState) -> None:
        self.name, self.paths, self.state = name, paths, state
        self._clients: dict[str, AgentClient] | None = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, *, nodes: int | None = None, schedulers: int | None = None,
        base: Path | None = None, progress: Progress = _quiet,
    ) -> Environment:
        """Create and start a local environment (3 nodes, 2 scheduler replicas by default);
        if it exists, heal it.

        An existing environment of another size is refused rather than resized: the
        nodes' and replicas' PKI, keyring and inventory are fixed when it is created.
        """
        paths = EnvPaths((base or default_base()) / check_name(name))
        if paths.state.exists():
            env = cls.load(name, base=base)
            have = len(env.state.agents())
            if nodes is not None and nodes != have and env.state.kind == "local":
                raise EnvError(
                    f"environment {name} exists with {have} node(s), not {nodes}; to change "
                    f"its size, destroy it first (`shakedown env destroy {name}`), then "
                    f"`shakedown env create {name} --nodes {nodes}`")
            have = len(env.state.schedulers())
            if schedulers is not None and schedulers != have and env.state.kind == "local":
                raise EnvError(
                    f"environment {name} exists with {have} scheduler(s), not {schedulers}; "
                    f"destroy it first (`shakedown env destroy {name}`), then "
                    f"`shakedown env create {name} --schedulers {schedulers}`")
            progress(f"environment {name} exists; starting what is down")
            env.start(progress)
            return env
        nodes = DEFAULT_NODES if nodes is None else nodes
        if not 1 <= nodes <= MAX_NODES:
            raise EnvError(f"--nodes {nodes}: must be between 1 and {MAX_NODES}")
        schedulers = DEFAULT_SCHEDULERS if schedulers is None else schedulers
        if not 0 <= schedulers <= MAX_SCHEDULERS:
            raise EnvError(f"--schedulers {schedulers}: must be between 0 and {MAX_SCHEDULERS}")
        paths.make()
        state = new_state(name, "local", f"{name}.{ZONE_SUFFIX}")
        progress(f"writing config: PKI, keyring, inventory for {nodes} node(s), "
                 f"{schedulers} scheduler(s)")
        try:
            local.plan(paths, state, nodes, schedulers)
        except Exception:
            shutil.rmtree(paths.root, ignore_errors=True)
            raise
        save_state(paths, state)
        env = cls(name, paths, state)
        env.start(progress)
        return env

    @classmethod
    def create_remote(cls, name: str, inventory: Path, *, base: Path | None = None) -> Environment:
        """Record an environment of already-running remote agents: config only."""
        inv = load_inventory(inventory)  # validate before writing anything
        paths = EnvPaths((base or default_base()) / check_name(name))
        if paths.state.exists():
            raise EnvError(f"environment {name!r} already exists at {paths.root}")
        paths.make()
        from driver.inventory import write_inventory

        write_inventory(paths.inventory, inv.nodes)
        state = new_state(name, "remote", "")
        save_state(paths, state)
        return cls(name, paths, state)

    @classmethod
    def load(cls, name: str, *, base: Path | None = None) -> Environment:
        paths = EnvPaths((base or default_base()) / check_name(name))
        return cls(name, paths, load_state(paths, name))

    @staticmethod
    def all(base: Path | None = None) -> list[Environment]:
        root = base or default_base()
        found = []
        for d in sorted(root.glob("*/env.json")) if root.exists() else ():
            try:
                found.append(Environment.load(d.parent.name, base=root))
            except EnvError:
                continue
        return found

    def _reload(self) -> None:
        """Re-read the record: another process (a suite run, the CLI) may have restarted a
        component since this object loaded it, and only the record knows its PID now."""
        if self.paths.state.exists():
            self.state = load_state(self.paths, self.name)

    def start(self, progress: Progress = _quiet) -> list[str]:
        """Start every component that is down; returns what was started."""
        self._reload()
        if self.state.kind == "remote":
            return []
        started = []
        for comp in local.ordered(self.state):
            if local.is_running(comp):
                continue
            progress(f"starting {comp.name}")
            try:
                local.start_component(self.paths, self.state, comp)
            finally:
                save_state(self.paths, self.state)
            started.append(comp.name)
        self._reset_clients()
        return started

    def stop(self, progress: Progress = _quiet) -> list[str]:
        """Stop every running component (agents first); data is kept."""
        self._reload()
        stopped = []
        for comp in reversed(local.ordered(self.state)):
            if local.is_running(comp):
                progress(f"stopping {comp.name}")
                local.stop_component(comp)
                stopped.append(comp.name)
            else:
                comp.process, comp.stopped = None, True
            save_state(self.paths, self.state)
        self._reset_clients()
        return stopped

    def destroy(self, progress: Progress = _quiet) -> None:
        """Stop everything, remove this environment's containers and networks, delete it."""
        self.stop(progress)
        if self.state.kind == "local":
            removed = remove_docker_resources([c.node for c in self.state.agents()])
            if removed:
                progress(f"removed {removed} container(s)/network(s)")
        shutil.rmtree(self.paths.root, ignore_errors=True)

    # -- use ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def temp_root(self) -> Path:
        return self.paths.temp

    @property
    def domain(self) -> str:
        return self.state.domain

    @property
    def dns(self) -> str | None:
        return self.state.dns

    @property
    def etcd(self) -> str | None:
        return self.state.etcd

    def inventory(self) -> Inventory:
        return load_inventory(self.paths.inventory)

    def clients(self) -> dict[str, AgentClient]:
        """One shared client per node (thread-safe; closed by `close()`)."""
        with self._lock:
            if self._clients is None:
                self._clients = self.inventory().clients()
            return dict(self._clients)

    def status(self) -> EnvStatus:
        return collect(self.paths, self.state)

    def signal(self, component: str, sig: int) -> int:
        """Send ``sig`` to one running component (suites' faults: SIGKILL a scheduler leader or
        an agent, SIGSTOP etcd); returns its PID. ``revive()`` brings a killed one back."""
        comp = self.state.components.get(component)
        proc = comp.managed() if comp else None
        if comp is None or proc is None or not proc.alive():
            known = ", ".join(sorted(self.state.components))
            raise EnvError(f"component {component!r} is not running (components: {known})")
        os.kill(proc.pid, sig)
        return proc.pid

    def revive(self, component: str) -> bool:
        """Start one component if it is down (after a fault). Clients are kept: gRPC
        channels reconnect to the same port. True when it had to be started."""
        comp = self.state.components.get(component)
        if comp is None:
            raise EnvError(f"no component {component!r} in environment {self.name}")
        if local.is_running(comp):
            proc = comp.managed()
            if proc is not None and _stopped(proc.pid):  # frozen (SIGSTOP): thaw it
                os.kill(proc.pid, signal.SIGCONT)
                return True
            return False
        port = comp.ports.get("grpc")
        try:
            local.start_component(self.paths, self.state, comp)
        finally:
            save_state(self.paths, self.state)
        if comp.kind == "agent" and comp.ports.get("grpc") != port:
            self._reset_clients()  # it had to move: the old clients point nowhere
        return True

    def relaunch_on_new_port(self, component: str) -> int:
        """SIGKILL a scheduler replica and start it again on another port (as after a crash:
        its old record is replaced, or expires with its lease); returns the new gRPC port."""
        comp = self.state.components.get(component)
        if comp is None or comp.kind != "scheduler":
            raise EnvError(f"{component!r}: only a scheduler replica can move ports")
        if local.is_running(comp):
            self.signal(component, signal.SIGKILL)
            proc = comp.managed()
            assert proc is not None
            proc.stop(timeout=10)  # reaps it; already dead
        old = comp.ports.get("grpc")
        for _ in range(5):  # the kernel picks the port: rarely the old one again
            self.revive(component)
            if comp.ports["grpc"] != old:
                break
            self.signal(component, signal.SIGKILL)
            proc = comp.managed()
            assert proc is not None
            proc.stop(timeout=10)
        return comp.ports["grpc"]

    def component_of(self, node: str) -> str | None:
        """The component running the agent or scheduler replica named ``node``."""
        if not node:
            return None
        return next((c.name for c in self.state.components.values() if c.node == node), None)

    def pids(self) -> dict[str, int]:
        """{component name: pid} of the components running now."""
        return {c.name: p.pid for c in local.ordered(self.state)
                if (p := c.managed()) is not None and p.alive()}

    def resolver(self) -> Resolver:
        """Discovery in this environment: its CoreDNS first, then its etcd."""
        from driver.discovery import Resolver

        dns = None
        if self.dns:
            host, _, port = self.dns.rpartition(":")
            dns = (host, int(port))
        return Resolver(self.domain, dns=dns, etcd=self.etcd, order=("srv", "etcd"))

    def adapter(self) -> SchedulerAdapter | None:
        """The reference scheduler's adapter, as principal `driver`, its replicas found by
        discovery; None when this environment runs no scheduler."""
        if not self.state.schedulers():
            return None
        from driver.adapters.scheduler import DISCOVERY_NAME, SchedulerAdapter
        from driver.dynamic import Tls

        resolver = self.resolver()

        def endpoints(fresh: bool) -> list[str]:
            try:
                res = resolver.resolve(DISCOVERY_NAME, fresh=fresh)
            except LookupError:
                return []
            return [e.address for e in res.endpoints]

        # The replicas' certificates name 127.0.0.1 and localhost (local.plan).
        tls = Tls.from_certs_dir(self.paths.certs, "driver", server_name="localhost")
        return SchedulerAdapter(endpoints, tls)

    def log_path(self, component: str) -> Path:
        names = sorted(self.state.components)
        if component not in self.state.components:
            aliases = [c.name for c in self.state.components.values() if c.node == component]
            alias = aliases[0] if aliases else ""
            if alias not in self.state.components:
                raise EnvError(f"no component {component!r}; known: {', '.join(names)}")
            component = alias
        return self.paths.log(component)

    @contextmanager
    def context(self, name: str = "", *, ttl: int = 30) -> Iterator[TestContext]:
        from driver.env.context import open_context

        with open_context(self, name, ttl=ttl) as ctx:
            yield ctx

    def _reset_clients(self) -> None:
        with self._lock:
            for c in (self._clients or {}).values():
                c.close()
            self._clients = None

    def close(self) -> None:
        self._reset_clients()

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_docker_resources(nodes: list[str]) -> int:
    """Containers, networks (by label) and dead claim volumes of these nodes: nobody else's."""
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return 0
    removed = 0
    try:
        for node in nodes:
            selector = {"label": f"io.shakedown.node={node}"}
            for c in client.containers.list(all=True, filters=selector):
                c.remove(force=True)
                removed += 1
            for n in client.networks.list(filters=selector):
                n.remove()
                removed += 1
            removed += _remove_dead_claim(client, node)
    finally:
        client.close()
    return removed


def _remove_dead_claim(client: Any, node: str) -> int:
    """A SIGKILLed agent leaves its engine claim volume: remove it, unless a live agent holds it."""
    import socket

    import docker

    from agent.claim import CLAIM, Holder, holder_alive, volume_name

    try:
        volume = client.volumes.get(volume_name(node))
    except docker.errors.NotFound:
        return 0
    labels = dict(volume.attrs.get("Labels") or {})
    if labels.get(CLAIM) != node:
        return 0  # not a claim of ours, whatever its name says
    if holder_alive(Holder.from_labels(labels), node, this_host=socket.gethostname()):
        return 0
    try:
        volume.remove(force=True)
    except docker.errors.NotFound:
        return 0
    return 1


__all__ = ["EnvError", "EnvNotFound", "Environment", "remove_docker_resources"]


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["T"]
