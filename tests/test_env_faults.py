"""Component faults of a local environment (issue 11 §5): each is applied to the real
process (frozen: state T; stopped or killed: the PID gone), shows in `shakedown fault
list` run in another process, and heals (thawed, or started again and serving);
durations and `env start` heal them too; bad input records nothing.

One environment (2 agents, 2 scheduler replicas) for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from driver.control.process import alive, wait_for
from driver.env import Environment
from driver.env.faults import FaultError, frozen
from driver.env.status import collect
from shakedown.errors import Unavailable
from tests.support.envs import module_env

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2, schedulers=2)


def cli(env: Environment, *args: str) -> subprocess.CompletedProcess[str]:
    """`shakedown fault ...` in another process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", "fault", *args, "--env", env.name,
         "--base", str(env.paths.root.parent)],
        capture_output=True, text=True, timeout=120, cwd=os.getcwd())


def listed(env: Environment) -> list[dict[str, Any]]:
    out = cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    docs: list[dict[str, Any]] = json.loads(out.stdout)
    return [d for d in docs if d["scope"] == "component"]


def serving(env: Environment, name: str) -> bool:
    fresh = Environment.load(env.name, base=env.paths.root.parent)
    st = next(c for c in collect(fresh.paths, fresh.state).components if c.name == name)
    return st.ok


def pid_of(env: Environment, name: str) -> int:
    fresh = Environment.load(env.name, base=env.paths.root.parent)
    return fresh.pids()[name]


def healthy(env: Environment) -> bool:
    return Environment.load(env.name, base=env.paths.root.parent).status().healthy


@pytest.mark.parametrize(("kind", "component"), [
    ("pause", "etcd"), ("pause", "scheduler-leader"), ("kill", "scheduler-2"),
    ("agent-stop", "n2"), ("coredns-stop", ""),
])
def test_component_fault_is_applied_listed_and_healed(env: Environment, kind: str,
                                                      component: str) -> None:
    wait_for(lambda: healthy(env), 60, interval=0.5, what="a healthy environment")
    if component == "n2":
        component = f"{env.name}-n2"  # an agent by its node name
    fault = env.faults.inject(kind, component)
    target = fault.component
    if component == "scheduler-leader":
        leaders = Environment.load(env.name, base=env.paths.root.parent).status().leaders
        assert target.startswith("scheduler-") and leaders in ([], [target])  # it is frozen
    assert fault.id.startswith("c-") and len(fault.id) == 14 and not fault.healed
    if kind == "pause":
        assert frozen(fault.pid)  # /proc/PID/stat state T
    else:
        assert not alive(fault.pid)
        assert not serving(env, target)
    docs = listed(env)
    assert [(d["id"], d["kind"], d["component"]) for d in docs] == [(fault.id, kind, target)]
    assert docs[0]["started_at"] and docs[0]["expires_at"] is None
    healed = cli(env, "heal", fault.id, "--json")
    assert healed.returncode == 0, healed.stderr
    doc = json.loads(healed.stdout)
    assert doc["healed"] and doc["id"] == fault.id
    if kind == "pause":
        assert not frozen(fault.pid) and pid_of(env, target) == fault.pid  # thawed, same one
        assert "SIGCONT" in doc["heal_note"]
    else:
        assert pid_of(env, target) != fault.pid  # started again
    wait_for(lambda: serving(env, target), 30, interval=0.3, what=f"{target} to serve")
    assert listed(env) == []
    again = env.faults.heal(fault.id)  # idempotent: the healed record again
    assert again.healed and abs((again.healed_at or 0) - doc_time(doc)) < 1e-3


def doc_time(doc: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(doc["healed_at"]).timestamp()


def test_a_duration_heals_after_the_injecting_command_exited(env: Environment) -> None:
    out = cli(env, "inject", "pause", "etcd", "--duration", "1")
    assert out.returncode == 0, out.stderr
    fid = out.stdout.strip()
    pid = pid_of(env, "etcd")
    record = next(f for f in env.faults.list() if f.id == fid)
    assert record.duration == 1 and record.expires_at and record.timer
    # The timer process heals it (nothing else touches the environment meanwhile).
    wait_for(lambda: not frozen(pid), 20, what="the timer to thaw etcd")
    wait_for(lambda: not alive(record.timer["pid"]), 10,  # type: ignore[index]
             what="the timer process to end")
    assert env.faults.list() == []
    assert env.faults.heal(fid).heal_note.startswith("duration elapsed")


def test_env_start_heals_every_recorded_component_fault(env: Environment) -> None:
    wait_for(lambda: healthy(env), 60, interval=0.5, what="a healthy environment")
    paused = env.faults.inject("pause", "etcd")
    stopped = env.faults.inject("agent-stop", f"{env.name}-n1")
    out = subprocess.run(
        [sys.executable, "-m", "driver.cli", "env", "start", env.name, "--json",
         "--base", str(env.paths.root.parent)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted(f["id"] for f in doc["healed"]) == sorted([paused.id, stopped.id])
    assert doc["status"]["healthy"]
    assert not frozen(paused.pid) and not alive(stopped.pid)
    assert env.faults.list() == [] and listed(env) == []
    text = subprocess.run(
        [sys.executable, "-m", "driver.cli", "env", "start", env.name,
         "--base", str(env.paths.root.parent)], capture_output=True, text=True, timeout=120)
    assert "nothing was down" in text.stdout and "healed fault" not in text.stdout


def test_bad_input_is_refused_naming_the_field_and_records_nothing(env: Environment) -> None:
    with pytest.raises(FaultError, match="component 'nope': not in environment") as e1:
        env.faults.inject("pause", "nope")
    assert e1.value.field == "component"
    with pytest.raises(FaultError, match="must not be negative") as e2:
        env.faults.inject("pause", "etcd", duration=-1)
    assert e2.value.field == "duration"
    with pytest.raises(FaultError, match=r"that is etcd \(etcd\), not an agent"):
        env.faults.inject("agent-stop", "etcd")
    with pytest.raises(FaultError, match="fault kind 'melt'") as e3:
        env.faults.inject("melt", "etcd")
    assert e3.value.field == "kind"
    out = cli(env, "inject", "agent-stop", "nope")
    assert out.returncode == 2 and "component: component 'nope'" in out.stderr
    out = cli(env, "inject", "pause", "etcd", "--duration", "-5")
    assert out.returncode == 2 and "--duration -5: must not be negative" in out.stderr
    out = cli(env, "heal", "c-000000000000")
    assert out.returncode == 2 and "no component fault 'c-000000000000'" in out.stderr
    assert env.faults.list() == [] and listed(env) == []
    assert not frozen(pid_of(env, "etcd"))


def test_one_fault_per_component(env: Environment) -> None:
    first = env.faults.inject("pause", "etcd")
    try:
        out = cli(env, "inject", "kill", "etcd")
        assert out.returncode == 1 and f"already has fault {first.id}" in out.stderr
        assert [f.id for f in env.faults.list()] == [first.id]
    finally:
        env.faults.heal_all()
    assert not frozen(first.pid)


def test_records_live_in_the_environment_dir(env: Environment) -> None:
    fault = env.faults.inject("pause", "etcd")
    try:
        doc = json.loads(Path(env.paths.root, "faults.json").read_text())
        assert [f["id"] for f in doc["active"]] == [fault.id]
    finally:
        env.faults.heal(fault)
    doc = json.loads(Path(env.paths.root, "faults.json").read_text())
    assert doc["active"] == [] and fault.id in [f["id"] for f in doc["healed"]]


def test_a_client_held_across_an_agent_stop_gets_through_at_once_when_it_is_back(
        env: Environment) -> None:
    """The fuzzer's teardown failed so (CI, stop 16): calls while an agent was down had
    pushed its channel's reconnect backoff to seconds, and a channel in backoff fails calls
    at once, so the first call after the heal was refused by an agent that was serving."""
    wait_for(lambda: healthy(env), 60, interval=0.5, what="a healthy environment")
    node = f"{env.name}-n2"
    client = env.clients()[node]
    client.node_info(timeout=10)
    fault = env.faults.inject("agent-stop", node)
    refused, deadline = 0, time.monotonic() + 8
    while time.monotonic() < deadline and refused < 40:  # ~8 s of refusals: a long backoff
        with pytest.raises(Unavailable):
            client.node_info(timeout=1)
        refused += 1
    env.faults.heal(fault.id)  # started again and serving (it waits for that)
    if env.clients()[node] is not client:
        pytest.skip("the agent had to move ports: its old client was closed, not reused")
    assert client.node_info(timeout=10).name  # one call, no polling: that is the point
