"""Shared fixtures: a PKI, a real agent on a real Docker engine, clients.

Everything a test run creates is scoped by RUN_ID: the agent's node name (and
so the `io.shakedown.node` label on every container it makes), temp dirs and
container names. Teardown removes only what carries this run's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.agentproc import AgentProcess, PkiFixture, make_pki
from tests.support.images import ensure_busybox_image

RUN_ID = uuid.uuid4().hex[:8]
RUN_LABEL = "io.shakedown.test-run"


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"a running Docker engine is required (start dockerd): {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    return ensure_busybox_image(docker_client)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"shakedown-{RUN_ID}")


@pytest.fixture(scope="session")
def agent_name() -> str:
    return f"t{RUN_ID}-n1"


@pytest.fixture(scope="session")
def pki(session_dir: Path, agent_name: str) -> PkiFixture:
    from driver.pki import revoke

    # "revoked" is an admin on the allow-list whose certificate is on the CRL:
    # only revocation stands between it and the agent.
    fixture = make_pki(session_dir / "certs", (agent_name,), {"revoked": "admin"})
    revoke(fixture.root, "revoked")
    return fixture


@pytest.fixture(scope="session")
def agent_proc(
    pki: PkiFixture,
    session_dir: Path,
    agent_name: str,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[AgentProcess]:
    agent = AgentProcess(
        agent_name, pki, session_dir, extra_args=["--adopt", f"label={RUN_LABEL}={RUN_ID}"]
    ).start()
    yield agent
    agent.stop()
    remove_run_containers(docker_client, agent_name)


def remove_run_containers(client: docker.DockerClient, node: str) -> None:
    """Remove the containers one agent of this run made (never anyone else's)."""
    for c in client.containers.list(all=True, filters={"label": f"io.shakedown.node={node}"}):
        c.remove(force=True)


@pytest.fixture()
def client(agent_proc: AgentProcess):  # type: ignore[no-untyped-def]
    c = agent_proc.client()
    yield c
    c.close()


@pytest.fixture()
def fresh_agent(tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str):  # type: ignore[no-untyped-def]
    """A private agent with its own PKI, for tests that restart it or rotate its keys."""
    name = f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"
    agent = AgentProcess(
        name, make_pki(tmp_path / "certs", (name,)), tmp_path, extra_args=["--reap-interval", "0.2"]
    )
    yield agent
    agent.stop()
    remove_run_containers(docker_client, name)


@pytest.fixture(scope="session")
def dns_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """etcd + our CoreDNS (zone shakedown.test.), shared by the run; stopped by PID."""
    from tests.support.dns import start_dns_stack

    stack = start_dns_stack(tmp_path_factory.mktemp(f"dns-{RUN_ID}"))
    yield stack
    stack.stop()


@pytest.fixture()
def private_dns(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A stack of one's own, for tests that stop components or read every key."""
    from tests.support.dns import start_dns_stack

    stack = start_dns_stack(tmp_path / "dns")
    yield stack
    stack.stop()


@pytest.fixture()
def node(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[str]:
    """A node name of this test alone: only its containers and networks carry the label."""
    name = f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"
    yield name
    selector = {"label": f"io.shakedown.node={name}"}
    for c in docker_client.containers.list(all=True, filters=selector):
        c.remove(force=True, v=True)
    for n in docker_client.networks.list(filters=selector):
        n.remove()
