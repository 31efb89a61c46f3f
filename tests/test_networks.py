"""Session-owned networks end to end: a real agent subprocess on a real Docker engine.

Every network and container here is made by an agent of this run (so it carries
the run's node label) or, for the unmanaged-network refusal, by the SDK and
removed by id. The module's teardown removes whatever this run's agents left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from agent.runtime import DockerRuntime, SessionInfo
from driver import (
    AgentClient,
    AlreadyExists,
    ContainerSpec,
    FailedPrecondition,
    InvalidArgument,
    Network,
    NotFound,
    PolicyError,
    SessionHandle,
)
from driver.control.process import wait_for
from shakedown import labels as L
from tests.support.agentproc import AgentProcess

pytestmark = pytest.mark.docker
PORT = 7000


def remove_node_networks(dc: docker.DockerClient, node: str) -> None:
    """Containers, then networks, carrying ``node``'s label (never anyone else's)."""
    for c in dc.containers.list(all=True, filters={"label": f"{L.NODE}={node}"}):
        c.remove(force=True)
    for n in dc.networks.list(filters={"label": f"{L.NODE}={node}"}):
        n.reload()
        for cid in n.attrs.get("Containers") or {}:
            with contextlib.suppress(docker.errors.DockerException):
                n.disconnect(cid, force=True)
        with contextlib.suppress(docker.errors.DockerException):
            n.remove()


@pytest.fixture(scope="module", autouse=True)
def _cleanup(docker_client: docker.DockerClient, agent_name: str) -> Iterator[None]:
    yield
    remove_node_networks(docker_client, agent_name)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def session(client: AgentClient) -> Iterator[SessionHandle]:
    handle = client.open_session(ttl=30, labels={"purpose": "networks"})
    yield handle
    handle.close()  # removes its containers, then its networks


def server(image: str, name: str, network: str) -> ContainerSpec:
    return ContainerSpec(image, ["nc", "-ll", "-p", str(PORT), "-e", "echo", "pong"],
                         name=name, network=network, stop_signal="SIGKILL")


def reaches(client: AgentClient, src: str, host: str) -> bool:
    r = client.exec(src, ["sh", "-c", f"nc -w 2 {host} {PORT} </dev/null"], timeout=10)
    return r.ok and r.output.strip() == "pong"


def test_create_list_inspect_remove(client: AgentClient, session: SessionHandle,
                                    agent_proc: AgentProcess) -> None:
    name = uniq("net")
    net = session.create_network(name, labels={"tier": "db"}, internal=True)
    assert isinstance(net, Network)
    assert (net.name, net.driver, net.internal) == (name, "bridge", True)
    assert net.managed and net.session_id == session.id and net.node == agent_proc.name
    assert net.labels["tier"] == "db" and net.labels[L.NODE] == agent_proc.name
    assert net.labels[L.SESSION_LABEL_PREFIX + "purpose"] == "networks"
    assert net.created_at is not None and net.containers == ()

    assert [n.id for n in client.networks({"tier": "db"}, session=session)] == [net.id]
    assert [n.id for n in session.networks()] == [net.id]
    assert client.networks({"tier": "nope"}) == []
    assert client.inspect_network(name).id == net.id
    assert client.inspect_network(net.short_id).name == name
    assert session.keep_alive().network_count == 1

    assert client.remove_network(net) == net.id
    with pytest.raises(NotFound) as err:
        client.inspect_network(net.id)
    assert err.value.field == "network"
    assert session.networks() == []


def test_reach_by_name_disconnect_reconnect(client: AgentClient, session: SessionHandle,
                                            busybox_image: str) -> None:
    net = session.create_network(uniq("mesh"))
    a = session.run(ContainerSpec(busybox_image, ["sleep", "300"], name=uniq("a"),
                                  network=net.name, stop_signal="SIGKILL"))
    b = session.run(server(busybox_image, uniq("b"), net.name))
    assert net.name in a.ip_addresses and net.name in b.ip_addresses  # spec.network = ours
    assert set(client.inspect_network(net).containers) == {a.id, b.id}
    wait_for(lambda: reaches(client, a.id, b.name), 15, what="a to reach b by name")

    b2 = client.disconnect(net, b)
    assert net.name not in b2.ip_addresses
    assert client.inspect_network(net).containers == (a.id,)
    wait_for(lambda: not reaches(client, a.id, b.name), 15, what="b to become unreachable")
    with pytest.raises(FailedPrecondition):
        client.disconnect(net, b)  # not connected any more

    b3 = client.connect(net, b.name, aliases=["srv"])
    assert net.name in b3.ip_addresses
    wait_for(lambda: reaches(client, a.id, b.name), 15, what="b to be reachable again")
    assert reaches(client, a.id, "srv")
    with pytest.raises(FailedPrecondition):
        client.connect(net, b)  # already connected


def test_close_removes_containers_then_networks(client: AgentClient, busybox_image: str,
                                                docker_client: docker.DockerClient) -> None:
    handle = client.open_session(ttl=30)
    net = handle.create_network(uniq("closing"))
    other = handle.create_network(uniq("empty"))
    box = handle.run(ContainerSpec(busybox_image, ["sleep", "300"], network=net.name,
                                   stop_signal="SIGKILL"))
    with pytest.raises(FailedPrecondition):
        client.remove_network(net)  # a container is attached
    s = next(s for s in client.sessions() if s.id == handle.id)
    assert (s.container_count, s.network_count) == (1, 2)
    assert handle.close() == 1
    for nid in (net.id, other.id):
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(nid)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(box.id)


def test_reaped_session_loses_its_network(fresh_agent: AgentProcess, busybox_image: str,
                                          docker_client: docker.DockerClient) -> None:
    agent = fresh_agent.start()
    try:
        with agent.client() as c:
            short = c.open_session(ttl=1, keepalive=False)
            net = short.create_network(uniq("reaped"))
            short.run(ContainerSpec(busybox_image, ["sleep", "300"], network=net.name,
                                    stop_signal="SIGKILL"))

            def gone() -> bool:
                try:
                    docker_client.networks.get(net.id)
                    return False
                except docker.errors.NotFound:
                    return True
            wait_for(gone, 20, what="the expired session's network to be removed")
            assert c.networks(session=short.id) == []
            assert short.id not in {s.id for s in c.sessions()}
    finally:
        remove_node_networks(docker_client, agent.name)


def test_network_only_session_survives_restart(fresh_agent: AgentProcess,
                                               docker_client: docker.DockerClient) -> None:
    agent = fresh_agent.start()
    try:
        with agent.client() as c:
            handle = c.open_session(ttl=60, labels={"suite": "netonly"})
            net = handle.create_network(uniq("only"))
            handle.stop_keepalive()
        assert agent.stop() == 0
        agent.start()
        with agent.client() as c:
            found = {s.id: s for s in c.sessions()}
            assert handle.id in found
            assert found[handle.id].network_count == 1
            assert found[handle.id].labels == {"suite": "netonly"}
            assert c.close_session(handle.id) == 0
            with pytest.raises(NotFound):
                c.inspect_network(net.id)
    finally:
        remove_node_networks(docker_client, agent.name)


def test_runtime_recovers_network_only_sessions(docker_client: docker.DockerClient) -> None:
    node = f"test-{uuid.uuid4().hex[:8]}"
    sid = f"s-{uuid.uuid4().hex[:12]}"

    async def body() -> None:
        rt = DockerRuntime(node)
        try:
            info = SessionInfo(id=sid, name="n", ttl=7, principal="tester", created=time.time())
            net = await rt.networks.create(info, uniq("rec"))
            found = {s.id: s for s in await rt.recover()}
            assert set(found) == {sid} and found[sid].ttl == 7
            assert await rt.networks.session_counts() == {sid: 1}
            assert await rt.remove_session(sid) == 0
            assert await rt.networks.remove_session(sid) == 1
            assert await rt.recover() == []
            assert net.node == node
        finally:
            rt.close()
    try:
        asyncio.run(body())
    finally:
        remove_node_networks(docker_client, node)


def test_refusals(client: AgentClient, session: SessionHandle,
                  docker_client: docker.DockerClient) -> None:
    with pytest.raises(InvalidArgument) as err:
        session.create_network(uniq("ov"), driver="overlay")
    assert err.value.field == "driver"
    for name in ("host", "none", "bridge"):
        with pytest.raises(InvalidArgument) as err:
            session.create_network(name)
        assert err.value.field == "name"
    with pytest.raises(InvalidArgument) as err:
        client.remove_network("bridge")
    assert err.value.field == "network"
    with pytest.raises(InvalidArgument) as err:
        session.create_network("-bad name")
    assert err.value.field == "name"
    with pytest.raises(InvalidArgument):
        session.create_network(uniq("lbl"), labels={L.NODE: "elsewhere"})
    with pytest.raises(NotFound):
        client.create_network(uniq("nos"), session="s-000000000000")

    name = uniq("dup")
    session.create_network(name)
    with pytest.raises(AlreadyExists) as err:
        session.create_network(name)
    assert err.value.field == "name"

    foreign = docker_client.networks.create(uniq("foreign"), driver="bridge")
    try:
        for call in (lambda: client.remove_network(foreign.id),
                     lambda: client.inspect_network(foreign.name)):
            with pytest.raises(NotFound) as err:
                call()
            assert err.value.field == "network"
        assert foreign.id not in {n.id for n in client.networks()}
    finally:
        foreign.remove()


def test_observer_may_list_but_not_create(agent_proc: AgentProcess, client: AgentClient,
                                          session: SessionHandle) -> None:
    net = session.create_network(uniq("seen"))
    with agent_proc.client("viewer") as viewer:
        assert net.id in {n.id for n in viewer.networks(session=session.id)}
        assert viewer.inspect_network(net.id).name == net.name
        with pytest.raises(PolicyError):
            viewer.create_network(uniq("no"), session=session.id)
        with pytest.raises(PolicyError):
            viewer.remove_network(net)
