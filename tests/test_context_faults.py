"""`ctx.faults` (issue 11 §6): container faults go to the node whose agent holds the
container, in that node's context session; component faults are healed when the context
exits; bad input is refused naming the field, with nothing left behind.

One environment (2 agents, no scheduler) for the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

from driver.client import AgentClient
from driver.control.process import alive, wait_for
from driver.env import Environment
from driver.env.context import TestContext
from driver.env.faults import FaultError, frozen
from driver.faults import FaultSpec, list_faults
from driver.faults.context import place
from driver.types import Container, ContainerSpec
from shakedown.errors import InvalidArgument
from tests.conftest import RUN_ID
from tests.support.envs import module_env

pytestmark = pytest.mark.docker
PORT = "7000"
SERVE = ["nc", "-ll", "-p", PORT, "-e", "echo", "ok"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2)


def box(ctx: TestContext, node: str, network: str, image: str) -> Container:
    spec = ContainerSpec(image, SERVE, name=f"t{RUN_ID}-{uuid.uuid4().hex[:6]}", network=network)
    return ctx.clients[node].inspect(ctx.run(node, spec))


def ip(c: Container) -> str:
    return next(iter(c.ip_addresses.values()))


def talks(client: AgentClient, src: Container, dst: Container) -> bool:
    res = client.exec(src, ["nc", "-w", "1", ip(dst), PORT], timeout=10)
    return res.exit_code == 0 and b"ok" in res.stdout


def test_a_container_fault_goes_to_the_node_that_holds_it(env: Environment,
                                                          busybox_image: str) -> None:
    n1, n2 = env.clients()
    with env.context("ctx-kill") as ctx:
        c = box(ctx, n2, "", busybox_image)
        fault = ctx.faults.kill(c.name)
        assert fault.id.startswith("f-") and fault.kind == "kill"
        assert fault.session_id == ctx.sessions[n2].id  # n2's context session
        assert [f.id for f in list_faults(ctx.clients[n2], ctx.sessions[n2])] == [fault.id]
        assert list_faults(ctx.clients[n1], ctx.sessions[n1]) == []
        wait_for(lambda: not ctx.clients[n2].inspect(c.id).running, 10, what="the kill")
        assert ctx.faults.heal(fault).healed
        wait_for(lambda: ctx.clients[n2].inspect(c.id).running, 10, what="the restart")
        paused = ctx.faults.pause(c.name)
        assert ctx.clients[n2].inspect(c.id).state == "paused"
        session = ctx.sessions[n2]
    # Leaving the context closed the session, which healed the pause with it.
    assert paused.id not in [f.id for f in list_faults(session.client)]


def test_partition_by_shape_cuts_and_heal_all_restores(env: Environment,
                                                       busybox_image: str) -> None:
    n1, n2 = env.clients()
    with env.context("ctx-partition") as ctx:
        net = ctx.create_network(n1, "p").name
        a, b, c = (box(ctx, n1, net, busybox_image) for _ in range(3))
        client = ctx.clients[n1]
        assert talks(client, a, b) and talks(client, a, c)
        fault = ctx.faults.partition("isolate", containers=[a.name, b.name, c.name])
        assert fault.kind == "partition" and fault.session_id == ctx.sessions[n1].id
        assert not talks(client, a, b) and not talks(client, c, a)
        assert talks(client, b, c)  # the others still talk
        assert [f.id for f in ctx.faults.heal_all()] == [fault.id]
        assert talks(client, a, b) and talks(client, c, a)
        # A grudge works the same; a peer on another node becomes its addresses.
        other = box(ctx, n2, "", busybox_image)
        node, placed = place(ctx.clients, {a.name: [b.name, other.name]})
        assert node == n1
        assert placed[a.name] == [b.name, ip(other)]
        with pytest.raises(InvalidArgument, match="targets must be on one node") as e:
            ctx.faults.partition({a.name: [b.name], other.name: [a.name]})
        assert e.value.field == "grudge"
        assert list_faults(client, ctx.sessions[n1]) == []


def test_context_exit_heals_its_component_faults(env: Environment) -> None:
    n1 = env.state.agents()[0].node
    with env.context("ctx-components") as ctx:
        paused = ctx.faults.pause("etcd")
        stopped = ctx.faults.stop(n1)  # the agent of n1, while the context has a session there
        assert paused.kind == "pause" and stopped.kind == "agent-stop"
        assert frozen(paused.pid) and not alive(stopped.pid)
        assert {f.id for f in env.faults.list()} == {paused.id, stopped.id}
    # No ContextCleanupError: the agent was started again before its session was closed.
    assert env.faults.list() == []
    assert not frozen(paused.pid)
    assert env.status().healthy
    assert ctx.closed


def test_bad_input_is_refused_and_nothing_is_left(env: Environment, busybox_image: str) -> None:
    with env.context("ctx-bad") as ctx:
        with pytest.raises(InvalidArgument, match="no agent holds a container") as e:
            ctx.faults.kill(f"t{RUN_ID}-nosuch")
        assert e.value.field == "container"
        with pytest.raises(FaultError, match="must not be negative"):
            ctx.faults.pause("etcd", duration=-1)
        with pytest.raises(InvalidArgument, match="only an agent or CoreDNS stops"):
            ctx.faults.stop("etcd")
        with pytest.raises(InvalidArgument, match="shape 'circle'") as e:
            ctx.faults.partition("circle", containers=["x"])
        assert e.value.field == "shape"
        assert all(list_faults(s.client, s) == [] for s in ctx.sessions.values())
    assert env.faults.list() == []


def test_latency_goes_to_the_holder(env: Environment, busybox_image: str) -> None:
    if not hasattr(FaultSpec, "latency"):
        pytest.skip("FaultSpec.latency is not in this build yet (the proxy faults)")
    _, n2 = env.clients()
    with env.context("ctx-latency") as ctx:
        spec = ContainerSpec(busybox_image, SERVE, name=f"t{RUN_ID}-{uuid.uuid4().hex[:6]}")
        c = ctx.run(n2, spec)
        fault = ctx.faults.latency(c.name, int(PORT), 100)
        assert fault.session_id == ctx.sessions[n2].id
        assert ctx.faults.heal(fault).healed
