"""Starting and stopping a local environment's components, detached, recorded by PID.

Order matters: etcd first (CoreDNS and the agents' registrations read it),
then CoreDNS, then the agents, then the scheduler replicas (they discover the
agents and elect a leader in etcd). Ports are chosen once at creation and reused
on every start, so addresses in the inventory stay true across stop/start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from driver.control.coredns import CoreDNSServer, find_coredns_binary
from driver.control.etcd import EtcdServer
from driver.control.process import ManagedProcess, free_port, spawn
from driver.control.scheduler import find_scheduler_binary
from driver.control.scheduler import health as scheduler_health
from driver.control.scheduler import version as scheduler_version
from driver.env.state import Component, EnvError, EnvPaths, EnvState
from driver.inventory import NodeConfig, write_inventory
from driver.pki import init_pki
from shakedown import keyring

Progress = Callable[[str], None]
COMPONENT_ORDER = ("etcd", "coredns", "agent", "scheduler")
SCHEDULER_PRINCIPAL = "scheduler"


def node_name(env: str, index: int) -> str:
    """Unique per environment, since it scopes the `io.shakedown.node` label on one engine."""
    return f"{env}-n{index}"


def replica_name(env: str, index: int) -> str:
    """A scheduler replica's -name: unique per environment, since it is in etcd and DNS."""
    return f"{env}-s{index}"


def plan(paths: EnvPaths, state: EnvState, nodes: int, schedulers: int = 0) -> None:
    """Write the config (PKI, keyring, inventory) and reserve ports: nothing runs yet.

    Agents and schedulers share one CA and principals.json: the scheduler calls
    the agents as principal `scheduler` (admin), and serves with a certificate
    issued like an agent's (`agent-<replica>.crt`), which is its default.
    """
    names = [node_name(state.name, i) for i in range(1, nodes + 1)]
    replicas = [replica_name(state.name, i) for i in range(1, schedulers + 1)]
    if state.scheduler_bugs and not replicas:
        raise EnvError("--scheduler-bug: needs scheduler replicas (not --schedulers 0)")
    check_scheduler_bugs(state.scheduler_bugs)
    principals = {"driver": "admin", "viewer": "observer"}
    if replicas:
        principals[SCHEDULER_PRINCIPAL] = "admin"
    init_pki(
        paths.certs,
        {n: ["127.0.0.1", "localhost"] for n in [*names, *replicas]},
        principals,
    )
    keyring.save(keyring.new_keyring(list(principals)), paths.keys)
    state.components["etcd"] = Component(
        "etcd", "etcd", {"client": free_port(), "peer": free_port()}
    )
    state.components["coredns"] = Component(
        "coredns",
        "coredns",
        {"dns": free_port(udp=True), "health": free_port(), "ready": free_port()},
    )
    for n in names:
        state.components[f"agent-{n}"] = Component(
            f"agent-{n}", "agent", {"grpc": free_port()}, node=n
        )
    for i, r in enumerate(replicas, 1):
        state.components[f"scheduler-{i}"] = Component(
            f"scheduler-{i}", "scheduler", {"grpc": free_port(), "metrics": free_port()}, node=r
        )
    write_env_inventory(paths, state)


def write_env_inventory(paths: EnvPaths, state: EnvState) -> None:
    write_inventory(
        paths.inventory,
        [
            NodeConfig(c.node, f"127.0.0.1:{c.ports['grpc']}", paths.keys, certs=paths.certs)
            for c in state.agents()
        ],
        {"certs": paths.certs, "keys": paths.keys, "principal": "driver"},
    )


def start_component(paths: EnvPaths, state: EnvState, comp: Component) -> None:
    try:
        _start(paths, state, comp)
    except EnvError as exc:
        # An agent's port is reserved when the environment is planned; while it was down,
        # anything (an outgoing connection, a published container port) may have taken it.
        # Move to a fresh port, and tell the inventory, rather than fail the start.
        if comp.kind != "agent" or "address in use" not in str(exc):
            raise
        comp.ports = {**comp.ports, "grpc": free_port()}
        write_env_inventory(paths, state)
        _start(paths, state, comp)
    comp.stopped = False


def _start(paths: EnvPaths, state: EnvState, comp: Component) -> None:
    if comp.kind == "etcd":
        server = EtcdServer.start(
            paths.data / "etcd",
            paths.log("etcd"),
            client_port=comp.ports["client"],
            peer_port=comp.ports["peer"],
            name=f"shakedown-{state.name}",
            detach=True,
        )
        comp.process, comp.version = server.process.to_dict(), server.version()
    elif comp.kind == "coredns":
        assert state.etcd is not None
        binary = find_coredns_binary()
        dns = CoreDNSServer.start(
            binary,
            paths.data / "coredns",
            paths.log("coredns"),
            zones=[state.domain],
            etcd_endpoints=[state.etcd],
            dns_port=comp.ports["dns"],
            health_port=comp.ports["health"],
            ready_port=comp.ports["ready"],
            detach=True,
        )
        comp.process, comp.version = dns.process.to_dict(), _coredns_version(binary)
    elif comp.kind == "scheduler":
        binary = _scheduler_binary()
        comp.process = _start_scheduler(binary, paths, state, comp).to_dict()
        comp.version = scheduler_version(binary)
    else:
        comp.process = _start_agent(paths, state, comp).to_dict()
        from agent import __version__

        comp.version = __version__


def _start_agent(paths: EnvPaths, state: EnvState, comp: Component) -> ManagedProcess:
    port_file = paths.temp / f"{comp.name}.port"
    port_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "agent",
        "--name",
        comp.node,
        "--listen",
        f"127.0.0.1:{comp.ports['grpc']}",
        "--certs",
        str(paths.certs),
        "--keys",
        str(paths.keys),
        "--state-dir",
        str(paths.data / comp.name),
        "--port-file",
        str(port_file),
        "--register-domain",
        state.domain,
    ]
    if state.etcd:
        argv += ["--register-etcd", state.etcd]
    env = {
        **os.environ,
        "PYTHONPATH": _source_root() + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = spawn(comp.name, argv, paths.log(comp.name), env=env, detach=True)

    try:
        proc.wait_ready(port_file.exists, 30, f"agent {comp.node} to listen")
    except RuntimeError:
        raise EnvError(f"agent {comp.node} exited during start: "
                       f"{_last_line(proc.log_tail())} (see {paths.log(comp.name)})") from None
    return proc


def _scheduler_binary() -> Path:
    # Build first: a no-op (~0.1 s) when current, and the scheduler's source changes
    # often enough that running a stale build from the symlink would mislead.
    import subprocess

    try:
        return find_scheduler_binary(build_first=True)
    except (subprocess.CalledProcessError, FileNotFoundError, RuntimeError) as exc:
        raise EnvError(f"no scheduler binary: {exc}; build it with scripts/build-scheduler.sh "
                       "(needs Go) or set SHAKEDOWN_SCHEDULER, or use --schedulers 0") from None


NODE_TIMEOUT_S = 10
SCHEDULER_BUGS_ENV = "SHAKEDOWN_SCHEDULER_BUGS"  # examples/scheduler/internal/bugs


def check_scheduler_bugs(bugs: list[str]) -> None:
    """Refuse (EnvError) a planted-bug name the scheduler binary does not know.

    The binary is the one list of names: it parses every -bug before -h, so it
    exits 0 exactly when all are known, else names the bad one.
    """
    import subprocess

    if not bugs:
        return
    argv = [str(_scheduler_binary()), *(a for b in bugs for a in ("-bug", b)), "-h"]
    env = {k: v for k, v in os.environ.items() if k != SCHEDULER_BUGS_ENV}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    if proc.returncode != 0:
        # `invalid value "x" for flag -bug: "x" is not a planted bug; known: ...`
        why = next((line.split("-bug: ", 1)[1] for line in proc.stderr.splitlines()
                    if "-bug: " in line), _last_line(proc.stderr))
        raise EnvError(f"--scheduler-bug: {why}")


def _start_scheduler(binary: Path, paths: EnvPaths, state: EnvState,
                     comp: Component) -> ManagedProcess:
    # Both ports are the kernel's choice at each start, read back from port files: a port
    # reserved at plan time can be taken by anyone before the start (it was, in CI). The
    # replica registers its real port in discovery, which is how clients find it.
    port_file = paths.temp / f"{comp.name}.port"
    metrics_file = paths.temp / f"{comp.name}.metrics-port"
    for f in (port_file, metrics_file):
        f.unlink(missing_ok=True)
    assert state.etcd is not None
    argv = [
        str(binary),
        "-name", comp.node,
        "-certs", str(paths.certs),
        "-listen", "127.0.0.1:0",
        "-metrics", "127.0.0.1:0",
        "-etcd", state.etcd,
        "-domain", state.domain,
        "-principal", SCHEDULER_PRINCIPAL,
        "-port-file", str(port_file),
        "-metrics-port-file", str(metrics_file),
        # A test environment: a node down for 10 s loses its replicas (default 30 s).
        "-node-timeout", f"{NODE_TIMEOUT_S}s",
        *(arg for bug in state.scheduler_bugs for arg in ("-bug", bug)),
    ]
    # The record is the only source of planted bugs: none inherited from our environment.
    env = {k: v for k, v in os.environ.items() if k != SCHEDULER_BUGS_ENV}
    proc = spawn(comp.name, argv, paths.log(comp.name), env=env, detach=True)

    def serving() -> bool:
        ports = [_read_port(f) for f in (port_file, metrics_file)]
        if None in ports:
            return False
        comp.ports = {**comp.ports, "grpc": ports[0] or 0, "metrics": ports[1] or 0}
        return scheduler_health(comp.ports["metrics"]) is None

    try:
        proc.wait_ready(serving, 30, f"scheduler {comp.node} to serve")
    except RuntimeError:
        raise EnvError(f"scheduler {comp.node} exited during start: "
                       f"{_last_line(proc.log_tail())} (see {paths.log(comp.name)})") from None
    return proc


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _source_root() -> str:
    # The agent runs as `python -m agent` from this same installation.
    return str(Path(__file__).resolve().parents[2])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _coredns_version(binary: Path) -> str:
    import subprocess

    try:
        out = subprocess.run(
            [str(binary), "-version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.split("\n", 1)[0].strip()


def ordered(state: EnvState) -> list[Component]:
    return sorted(state.components.values(), key=lambda c: (COMPONENT_ORDER.index(c.kind), c.name))


def is_running(comp: Component) -> bool:
    proc = comp.managed()
    return proc is not None and proc.alive()


def stop_component(comp: Component) -> bool:
    proc = comp.managed()
    stopped = bool(proc and proc.stop(timeout=15))
    comp.process, comp.stopped = None, True
    return stopped
