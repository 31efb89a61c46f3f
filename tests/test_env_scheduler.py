"""`shakedown env` runs the reference scheduler (examples/scheduler): 2 replicas, one leader.

One environment (2 nodes, 2 replicas, the default) for the whole module; the
stop/start test runs last since it restarts everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from driver.adapters.base import WorkloadSpec
from driver.adapters.scheduler import SchedulerAdapter
from driver.env import Environment
from driver.images import ensure_busybox_image
from tests.support.agentproc import wait_for
from tests.support.envs import assert_env_gone


def _cli(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", "env", *args, "--base", str(base)],
        capture_output=True, text=True, timeout=120, cwd=os.getcwd(),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    base = tmp_path_factory.mktemp("envs")
    name = f"t{uuid.uuid4().hex[:6]}"
    created = _cli(base, "create", name, "--nodes", "2", "--json")  # 2 schedulers: the default
    if created.returncode != 0:  # a half-started environment: leave nothing running
        if (base / name / "env.json").exists():
            Environment.load(name, base=base).destroy()
        pytest.fail(f"env create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
    env = Environment.load(name, base=base)
    yield env
    env.close()
    env = Environment.load(name, base=base)  # the record as the last test left it
    nodes = [c.node for c in env.state.agents()]
    pids = list(env.pids().values())
    try:
        assert len(pids) == 6  # etcd, coredns, 2 agents, 2 schedulers: all must go
    finally:
        env.destroy()  # whatever the count said: never leak an environment
    assert_env_gone(docker_client, nodes, pids, env.paths.root)


@pytest.fixture
def adapter(env: Environment) -> Iterator[SchedulerAdapter]:
    a = env.adapter()
    assert a is not None
    yield a
    a.close()


def _registered(env: Environment) -> set[int]:
    try:
        return {e.port for e in env.resolver().resolve("scheduler", fresh=True).endpoints}
    except LookupError:
        return set()


def test_both_replicas_register_and_exactly_one_leads(env: Environment) -> None:
    scheds = sorted(env.state.schedulers(), key=lambda c: c.name)
    assert [c.name for c in scheds] == ["scheduler-1", "scheduler-2"]
    assert [c.node for c in scheds] == [f"{env.name}-s1", f"{env.name}-s2"]  # unique per env
    want = {c.ports["grpc"] for c in scheds}
    # Through CoreDNS (SRV _scheduler._tcp.<domain>), as a user's resolver finds them.
    wait_for(lambda: _registered(env) == want, 15, what="both replicas in discovery")
    assert env.resolver().resolve("scheduler", fresh=True).path == "srv"

    def one_leader() -> bool:
        return len(env.status().leaders) == 1

    wait_for(one_leader, 20, what="exactly one leader")
    st = env.status()
    assert st.healthy, st.problems()
    roles = sorted(c.role for c in st.components if c.kind == "scheduler")
    assert roles == ["follower", "leader"]
    assert {"scheduler-1", "scheduler-2"} <= set(env.pids())
    out = _cli(env.paths.root.parent, "status", env.name)
    assert out.returncode == 0, out.stdout
    assert out.stdout.count("(leader)") == 1 and out.stdout.count("(follower)") == 1
    assert f"scheduler leader: {st.leaders[0]}" in out.stdout
    doc = json.loads(_cli(env.paths.root.parent, "status", env.name, "--json").stdout)
    assert sorted(c["role"] for c in doc["components"] if c["kind"] == "scheduler") == roles
    assert doc["leaders"] == st.leaders


def test_adapter_applies_a_workload_that_runs_on_an_agent_and_deletes_it(
    env: Environment, adapter: SchedulerAdapter
) -> None:
    wait_for(lambda: len(env.status().leaders) == 1, 20, what="a leader")
    assert adapter.leader() in {c.node for c in env.state.schedulers()}
    name = f"w{uuid.uuid4().hex[:8]}"
    w = adapter.apply(WorkloadSpec(name=name, image=ensure_busybox_image(),
                                   command=("sleep", "300")))
    labels = adapter.container_labels(w)
    assert labels == {"dev.shakedown.scheduler.managed": "true",
                      "dev.shakedown.scheduler.workload-id": w.id}
    clients = env.clients()
    try:
        def containers(all: bool = False) -> list[object]:
            return [c for cl in clients.values() for c in cl.list(labels, all=all)]

        running = wait_for(containers, 30, what="the replica to run on an agent")
        assert len(running) == 1
        wait_for(lambda: adapter.converged(w), 30, what="the scheduler to report it running")
    finally:
        adapter.delete(name)
    wait_for(lambda: not containers(all=True), 30, what="its containers to be removed")
    assert adapter.get(name) is None


def test_status_reports_a_killed_replica_and_start_heals_it(env: Environment) -> None:
    comp = env.state.components["scheduler-2"]
    proc = comp.managed()
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive(), 10, what="the replica to die")
    st = env.status()
    assert not st.healthy
    assert [c.state for c in st.components if c.name == "scheduler-2"] == ["down"]
    assert any(p.startswith("scheduler-2 is down: ") and "logs/scheduler-2.log" in p
               for p in st.problems())
    assert env.log_path(comp.node) == env.paths.log("scheduler-2")  # `env logs NAME <replica>`
    assert env.start() == ["scheduler-2"]  # only what was down
    wait_for(lambda: len(env.status().leaders) == 1, 30, what="one leader")
    assert env.status().healthy


def test_stop_then_start_brings_the_schedulers_back(env: Environment) -> None:
    old = {c.name: c.managed().pid for c in env.state.schedulers()}  # type: ignore[union-attr]
    stopped = env.stop()
    assert stopped[:2] == ["scheduler-2", "scheduler-1"]  # first: they call the agents
    st = env.status()
    assert st.stopped and st.verdict == "stopped"
    assert env.pids() == {}
    started = env.start()
    assert started[-2:] == ["scheduler-1", "scheduler-2"]  # last: after the agents
    new = {n: p for n, p in env.pids().items() if n.startswith("scheduler-")}
    assert sorted(new) == sorted(old) and not set(new.values()) & set(old.values())
    want = {c.ports["grpc"] for c in env.state.schedulers()}
    wait_for(lambda: _registered(env) == want, 20, what="both replicas back in discovery")
    wait_for(lambda: len(env.status().leaders) == 1, 30, what="a leader again")
    assert env.status().healthy
