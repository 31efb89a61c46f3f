"""Suite basic_workflow: on every node, a container's whole life through the agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from driver.adapters import Port, SystemAdapter, WorkloadSpec
from driver.adapters.truth import observe, running
from driver.client import AgentClient
from driver.control.process import wait_for
from driver.env.context import TestContext
from driver.types import ContainerSpec
from shakedown.errors import NotFound

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("basic_workflow")]
T = TypeVar("T")
DEADLINE_S = 20.0  # generous for a loaded CI engine; polls return as soon as ready


def test_node_info_is_sane(agents: dict[str, AgentClient], shakedown_node: str) -> None:
    info = agents[shakedown_node].node_info()
    assert info.name == shakedown_node
    assert info.agent_version and info.docker_version and info.docker_api_version
    assert info.cpus > 0 and info.memory_bytes > 0
    assert info.principal and info.role in ("admin", "observer")
    assert info.server_time is not None
    # The clocks matter to HMAC timestamps: the agent rejects skew beyond its window.
    assert abs(info.server_time - datetime.now(UTC)) < timedelta(minutes=5)


def test_container_lifecycle(ctx: TestContext, shakedown_node: str,
                             shakedown_image: str) -> None:
    agent = ctx.clients[shakedown_node]
    spec = ContainerSpec(shakedown_image, ["sh", "-c", "echo ready; exec sleep 300"],
                         stop_signal="SIGKILL")
    c = ctx.run(shakedown_node, spec)
    assert c.running and c.node == shakedown_node
    assert {k: c.labels.get(k) for k in ctx.labels} == ctx.labels

    wait_for(lambda: "ready" in agent.logs(c).text(), DEADLINE_S,
             what="the container's first log line")

    result = agent.exec(c, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.output.strip(), result.stderr.strip()) == (3, "out", b"err")

    stopped = agent.stop(c, timeout=1)
    assert stopped.state == "exited"
    restarted = agent.restart(c, timeout=1)
    assert restarted.running
    assert agent.exec(c, ["true"]).ok

    assert [x.id for x in ctx.containers() if x.node == shakedown_node] == [c.id]
    agent.remove(c, force=True)
    with pytest.raises(NotFound):
        agent.inspect(c)
    assert not [x for x in ctx.containers() if x.node == shakedown_node]


def test_run_to_completion(ctx: TestContext, shakedown_node: str, shakedown_image: str) -> None:
    agent = ctx.clients[shakedown_node]
    c = ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["sh", "-c", "exit 7"]))
    assert agent.wait(c, timeout=DEADLINE_S) == 7
    assert agent.inspect(c).exit_code == 7


def test_workload_through_the_system(system: SystemAdapter, agents: dict[str, AgentClient],
                                     shakedown_image: str, unique_name: str) -> None:
    """Apply through the system under test; check it on the agents, then delete it."""
    spec = WorkloadSpec(unique_name, shakedown_image, ["sh", "-c", "echo up; exec sleep 3600"],
                        env={"SHAKEDOWN_SUITE": "basic_workflow"},
                        ports=(Port(container_port=8080),), replicas=1)
    w = system.apply(spec)
    try:
        wait_for(lambda: system.converged(w) and running(agents, system, w), 60,
                 what=f"workload {w.name} running")
        [box] = running(agents, system, w)
        seen = system.get(w.name)
        assert seen is not None and [r.node for r in seen.replicas] == [box.node]
        assert seen.replicas[0].container_id == box.container.id  # status tracks the truth
        truth = agents[box.node].inspect(box.container)
        assert truth.image == shakedown_image and truth.running
        assert truth.command[-2:] == ["-c", "echo up; exec sleep 3600"]
        assert [p.container_port for p in truth.ports] == [8080]
        assert all(p.host_port > 0 for p in truth.ports)  # published, on a port the engine chose
        # The env reached the process: asked of the container itself.
        assert agents[box.node].exec(box.container, ["sh", "-c", "echo $SHAKEDOWN_SUITE"]
                                     ).output.strip() == "basic_workflow"
    finally:
        system.delete(w.name)
    wait_for(lambda: not observe(agents, system, w), 60, what=f"{w.name}'s containers removed")
    assert system.get(w.name) is None
    stored = getattr(system, "stored", None)
    if stored is not None:
        wait_for(lambda: stored(w) is not True, 30, what=f"{w.name}'s stored state removed")
