"""Volume ownership, spec.network ownership and public ports, against the real engine.

Foreign volumes and networks are made here through the Docker SDK with this
run's label and removed by name; everything else is made by the run's agent
and removed by its session.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator

import docker
import pytest

from driver import AgentClient, ContainerSpec, NotFound, PolicyError, SessionHandle
from driver.control.process import wait_for
from driver.types import Mount, PortMapping
from shakedown import labels as L

pytestmark = pytest.mark.docker
# Not the run label the test agent adopts (conftest): these must stay foreign to it.
RUN_LABEL = "io.shakedown.test-foreign"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def session(client: AgentClient) -> Iterator[SessionHandle]:
    handle = client.open_session(ttl=30, labels={"purpose": "volumes"})
    yield handle
    handle.close()


@pytest.fixture()
def foreign_volumes(docker_client: docker.DockerClient, run_id: str) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(docker.errors.DockerException):
            docker_client.volumes.get(name).remove(force=True)


def box(image: str, **kw: object) -> ContainerSpec:
    return ContainerSpec(image, ["sleep", "300"], stop_signal="SIGKILL", **kw)  # type: ignore[arg-type]


def test_foreign_volume_is_refused_naming_the_field(
    session: SessionHandle, busybox_image: str, docker_client: docker.DockerClient,
    run_id: str, foreign_volumes: list[str],
) -> None:
    name = uniq("foreign")
    docker_client.volumes.create(name, labels={RUN_LABEL: run_id})
    foreign_volumes.append(name)
    with pytest.raises(PolicyError) as err:
        session.run(box(busybox_image, mounts=[Mount("/data", name)]))
    assert err.value.field == "spec.mounts[0].source"
    assert session.list(all=True) == []


def test_host_bind_volume_is_refused(
    session: SessionHandle, busybox_image: str, docker_client: docker.DockerClient,
    run_id: str, foreign_volumes: list[str], tmp_path: object,
) -> None:
    name = uniq("hostbind")
    docker_client.volumes.create(
        name, driver="local", labels={RUN_LABEL: run_id},
        driver_opts={"type": "none", "o": "bind", "device": str(tmp_path)},
    )
    foreign_volumes.append(name)
    with pytest.raises(PolicyError) as err:
        session.run(box(busybox_image, mounts=[Mount("/host", name)]))
    assert err.value.field == "spec.mounts[0].source"


def test_own_volume_is_created_labelled_and_removed_with_the_session(
    client: AgentClient, busybox_image: str, docker_client: docker.DockerClient,
    agent_name: str,
) -> None:
    handle = client.open_session(ttl=30)
    name = uniq("data")
    handle.run(box(busybox_image, mounts=[Mount("/data", name)]))
    labels = docker_client.volumes.get(name).attrs["Labels"]
    assert labels[L.NODE] == agent_name and labels[L.SESSION] == handle.id
    # Not flagged: a second container of the same session mounts its own volume.
    handle.run(box(busybox_image, mounts=[Mount("/data", name, read_only=True)]))
    handle.close()
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(name)


def test_foreign_network_in_spec_is_refused(
    session: SessionHandle, busybox_image: str, docker_client: docker.DockerClient,
    run_id: str,
) -> None:
    net = docker_client.networks.create(uniq("foreign-net"), labels={RUN_LABEL: run_id})
    try:
        with pytest.raises(NotFound) as err:
            session.run(box(busybox_image, network=net.name))
        assert err.value.field == "spec.network"
        with pytest.raises(PolicyError) as err2:
            session.run(box(busybox_image, network="host"))
        assert (err2.value.field or "").startswith("spec.network")
        # Not flagged: the default bridge and the session's own network.
        own = session.create_network(uniq("own"))
        assert session.run(box(busybox_image, network=own.name)).id
        assert session.run(box(busybox_image, network="bridge")).id
    finally:
        net.remove()


def test_public_ports_need_the_operator_flag(session: SessionHandle, busybox_image: str) -> None:
    for host_ip in ("0.0.0.0", "::"):
        with pytest.raises(PolicyError) as err:
            session.run(box(busybox_image, ports=[PortMapping(80, 0, "tcp", host_ip)]))
        assert err.value.field == "spec.ports[0].host_ip"
    # Not flagged: loopback (explicit or the default).
    assert session.run(box(busybox_image, ports=[PortMapping(80, 0, "tcp", "127.0.0.1")])).id
    assert session.run(box(busybox_image, ports=[PortMapping(81)])).id


def test_volume_is_reaped_after_an_agent_sigkill(
    fresh_agent: object, busybox_image: str, docker_client: docker.DockerClient,
) -> None:
    agent = fresh_agent.start()  # type: ignore[attr-defined]
    name = uniq("orphan")
    with agent.client() as c:
        handle = c.open_session(ttl=3)
        handle.run(box(busybox_image, mounts=[Mount("/data", name)]))
    assert docker_client.volumes.get(name).attrs["Labels"][L.SESSION] == handle.id
    agent.stop(signal.SIGKILL)  # nobody keeps the session alive, and no agent reaps it
    agent.start()

    def gone() -> bool:
        return not docker_client.volumes.list(filters={"name": name})

    wait_for(gone, 3 + 15, what="the dead session's volume to be reaped after the restart")
