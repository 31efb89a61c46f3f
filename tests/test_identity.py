"""One live agent per name per engine (agent/claim.py), one agent per port."""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agent.claim import INSTANCE, volume_name
from driver.types import ContainerSpec
from tests.conftest import RUN_ID, remove_run_containers
from tests.support.agentproc import AgentProcess, make_pki


@pytest.fixture()
def twins(tmp_path: Path, docker_client: docker.DockerClient,
          busybox_image: str) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Two agents of one name, each with its own work and state dir (as on two hosts)."""
    name = f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"
    pki = make_pki(tmp_path / "certs", (name,))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = AgentProcess(name, pki, tmp_path / "a", extra_args=["--reap-interval", "0.2"])
    b = AgentProcess(name, pki, tmp_path / "b", extra_args=["--reap-interval", "0.2"])
    yield a, b
    b.stop()
    a.stop()
    remove_run_containers(docker_client, name)
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.volumes.get(volume_name(name)).remove(force=True)


def test_second_agent_with_the_same_name_refuses_to_start_naming_the_first(
    twins: tuple[AgentProcess, AgentProcess], busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    a, b = twins
    a.start()
    assert a.proc is not None
    with a.client() as c:
        session = c.open_session(ttl=5)
        box = session.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        with pytest.raises(RuntimeError) as err:
            b.start()
        message = str(err.value)
        assert "another live agent holds this name" in message
        assert f"pid {a.proc.pid}" in message and a.address in message
        # The first agent's session is untouched: nobody else reaped it.
        assert c.keep_alive(session.id).container_count == 1
        assert c.inspect(box.id).state == "running"
        labels = docker_client.containers.get(box.id).labels
        assert labels[INSTANCE] == (a.workdir / f"state-{a.name}" / "instance").read_text().strip()
        session.stop_keepalive()


def test_the_claim_of_a_killed_agent_is_taken_over_and_its_sessions_reaped(
    twins: tuple[AgentProcess, AgentProcess], busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    a, b = twins
    a.start()
    with a.client() as c:
        session = c.open_session(ttl=2)
        box = session.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        session.stop_keepalive()
    a.stop(signal.SIGKILL)
    b.start()  # a is dead: its claim is stale, b takes over at once
    with b.client() as c:
        from tests.support.agentproc import wait_for

        wait_for(lambda: not docker_client.containers.list(
            all=True, filters={"id": box.id}), 15, what="the dead agent's session to be reaped")
        assert session.id not in {s.id for s in c.sessions()}


def test_graceful_stop_releases_the_claim(
    twins: tuple[AgentProcess, AgentProcess], docker_client: docker.DockerClient
) -> None:
    a, b = twins
    a.start()
    assert docker_client.volumes.get(volume_name(a.name))
    assert a.stop() == 0
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume_name(a.name))
    b.start()


def test_an_agent_on_a_port_in_use_fails_with_address_in_use(
    fresh_agent: AgentProcess, tmp_path: Path, docker_client: docker.DockerClient,
) -> None:
    first = fresh_agent.start()
    name = f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"
    (tmp_path / "second").mkdir()
    second = AgentProcess(name, make_pki(tmp_path / "certs2", (name,)), tmp_path / "second",
                          extra_args=["--listen", first.address])
    try:
        with pytest.raises(RuntimeError) as err:
            second.start()
        assert "address in use" in str(err.value)
        assert f"port {first.port}" in str(err.value)
        with first.client() as c:  # the first one still serves its port alone
            assert c.node_info().name == first.name
    finally:
        second.stop()
        remove_run_containers(docker_client, name)
