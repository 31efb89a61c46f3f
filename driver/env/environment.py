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
from typing import TYPE_CHECKING

from driver.env import local
from driver.env.cleanup import remove_docker_resources
from driver.env.faults import frozen
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
    from driver.env.faults import ComponentFault, ComponentFaults

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
        self.healed: list[ComponentFault] = []  # the component faults the last start() healed

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, *, nodes: int | None = None, schedulers: int | None = None,
        base: Path | None = None, progress: Progress = _quiet,
        scheduler_bugs: list[str] | None = None,
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
            bugs = env.state.scheduler_bugs
            if scheduler_bugs is not None and sorted(set(scheduler_bugs)) != bugs:
                raise EnvError(
                    f"environment {name} exists with planted scheduler bugs "
                    f"{bugs or 'none'}; destroy it first to change them")
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
        state.scheduler_bugs = sorted(set(scheduler_bugs or ()))
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
        state = load_state(paths, name)
        if state.kind == "compose":  # the stack of docker-compose.e2e.yml
            from driver.env.compose import ComposeEnvironment

            return ComposeEnvironment(name, paths, state)
        return cls(name, paths, state)

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
        """Heal every recorded component fault (`healed`), then start every component that is
        down; returns what was started."""
        self._reload()
        if self.state.kind == "remote":
            return []
        from driver.env.faults import heal_all

        self.healed = heal_all(self, "env start", progress)
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
        from driver.env.faults import drop_timers

        drop_timers(self)
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

    @property
    def faults(self) -> ComponentFaults:
        """Component faults (stop an agent, freeze etcd ...): driver/env/faults.py."""
        from driver.env.faults import ComponentFaults

        return ComponentFaults(self)

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
        channels reconnect to the same port; an agent that had to move ports gets a new
        client (its old one is closed). True when it had to be started."""
        comp = self.state.components.get(component)
        if comp is None:
            raise EnvError(f"no component {component!r} in environment {self.name}")
        if local.is_running(comp):
            proc = comp.managed()
            if proc is not None and frozen(proc.pid):  # SIGSTOPped: thaw it
                os.kill(proc.pid, signal.SIGCONT)
                return True
            return False
        port = comp.ports.get("grpc")
        try:
            local.start_component(self.paths, self.state, comp)
        finally:
            save_state(self.paths, self.state)
        if comp.kind == "agent" and comp.ports.get("grpc") != port:
            self._replace_client(comp.node)  # it had to move: its old client points nowhere
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

    def _replace_client(self, node: str) -> None:
        """A new client for one node (its agent moved ports); the others stay open."""
        if self._clients is None:
            return  # none made yet: they will be, from the new inventory
        fresh = self.inventory().clients([node])  # first: a failure here loses nothing
        with self._lock:
            if self._clients is None:  # reset meanwhile: nobody holds the new one
                old = fresh.get(node)
            else:
                old = self._clients.get(node)
                self._clients.update(fresh)
        if old is not None:
            old.close()

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


__all__ = ["EnvError", "EnvNotFound", "Environment"]
