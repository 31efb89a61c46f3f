"""HMAC v2 against real agents on the real engine: signatures are bound to one agent,
and the replay window survives restarts (SIGTERM and SIGKILL)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from driver.types import ContainerSpec
from shakedown import keyring, signing
from shakedown.agent.v1 import agent_pb2
from shakedown.errors import AuthError
from tests.conftest import RUN_ID, remove_run_containers
from tests.support.agentproc import AgentProcess, make_pki

GET = "/shakedown.agent.v1.Agent/GetNodeInfo"
REMOVE = "/shakedown.agent.v1.Agent/RemoveContainer"


def _raw(
    agent: AgentProcess, method: str, body: bytes, md: list[tuple[str, str]]
) -> grpc.RpcError | None:
    """One call with exactly these bytes and headers; None when it succeeded."""
    d = agent.pki.dir
    creds = grpc.ssl_channel_credentials(
        d.ca_cert.read_bytes(),
        d.client_key("driver").read_bytes(),
        d.client_cert("driver").read_bytes(),
    )
    with grpc.secure_channel(agent.address, creds) as channel:
        try:
            channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
                body, metadata=md, timeout=15
            )
        except grpc.RpcError as err:
            return err
    return None


def _sign(
    agent: AgentProcess, method: str, body: bytes, audience: str | None
) -> list[tuple[str, str]]:
    key = keyring.load(agent.keys).signing_key("driver")
    return list(signing.sign(key.id, key.secret, method, body, audience=audience).metadata())


@pytest.fixture()
def two_agents(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """n1 and n2 on one engine, sharing one PKI and keyring (the replay's precondition)."""
    base = f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"
    names = (f"{base}-n1", f"{base}-n2")
    pki = make_pki(tmp_path / "certs", names)
    agents = [AgentProcess(n, pki, tmp_path) for n in names]
    try:
        for a in agents:
            a.start()
        yield agents[0], agents[1]
    finally:
        for a in agents:
            a.stop()
            remove_run_containers(docker_client, a.name)


def test_request_for_n1_replayed_to_n2_is_refused_naming_the_audience(
    two_agents: tuple[AgentProcess, AgentProcess],
    docker_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    n1, n2 = two_agents
    with n2.client() as c2:
        session = c2.open_session(ttl=60)
        box = c2.create(
            ContainerSpec(image=busybox_image, command=["sleep", "60"]), session=session
        )
        body = agent_pb2.RemoveContainerRequest(container=box.id, force=True).SerializeToString()
        for_n1 = _sign(n1, REMOVE, body, audience=n1.name)
        err = _raw(n2, REMOVE, body, for_n1)
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        details = err.details() or ""  # type: ignore[attr-defined]
        assert "audience" in details and n1.name in details and n2.name in details, details
        docker_client.containers.get(box.id)  # still there: the replay had no effect
        # The same bytes signed for n2 do remove it: only the audience stopped the replay.
        assert _raw(n2, REMOVE, body, _sign(n2, REMOVE, body, audience=n2.name)) is None
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(box.id)
    # A driver that names the wrong agent is told so, with both names.
    with (
        n2.client(agent_name=n1.name, retries=0) as wrong,
        pytest.raises(AuthError, match="audience"),
    ):
        wrong.node_info()


def test_v1_is_refused_unless_the_agent_accepts_it(
    two_agents: tuple[AgentProcess, AgentProcess],
) -> None:
    n1, n2 = two_agents
    err = _raw(n1, GET, b"", _sign(n1, GET, b"", audience=None))
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "v1 is disabled" in err.details() and "--accept-hmac-v1" in err.details()  # type: ignore[attr-defined]
    # An audience header bolted onto a v1 signature is not a v2 signature.
    v1 = dict(_sign(n1, GET, b"", audience=None))
    err = _raw(n1, GET, b"", [*v1.items(), (signing.AUDIENCE, n1.name)])
    assert err is not None and "signature mismatch" in err.details()  # type: ignore[attr-defined]
    n2.stop()
    n2.extra_args.append("--accept-hmac-v1")
    n2.start()
    assert _raw(n2, GET, b"", _sign(n2, GET, b"", audience=None)) is None
    # v2 still works there, and still checks the audience.
    assert _raw(n2, GET, b"", _sign(n2, GET, b"", audience=n2.name)) is None
    err = _raw(n2, GET, b"", _sign(n2, GET, b"", audience=n1.name))
    assert err is not None and "audience" in err.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_replay_after_a_restart_is_refused(fresh_agent: AgentProcess, sig: int) -> None:
    agent = fresh_agent.start()
    md = _sign(agent, GET, b"", audience=agent.name)
    assert _raw(agent, GET, b"", md) is None
    agent.stop(sig)  # right after the call returned: its nonce must already be on disk
    agent.start()
    err = _raw(agent, GET, b"", md)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "replayed nonce" in err.details()  # type: ignore[attr-defined]
    # Fresh calls are unaffected.
    assert _raw(agent, GET, b"", _sign(agent, GET, b"", audience=agent.name)) is None
    with agent.client() as c:
        assert c.node_info().name == agent.name


# ------------------------------------------------------------------ the nonce file


def test_nonce_file_keeps_live_records_and_drops_expired_and_torn_ones(tmp_path: Path) -> None:
    from agent.nonces import NonceCache

    path = tmp_path / "state" / "nonces"
    cache = NonceCache(path=path, now=1000.0)
    assert cache.add("k1", "a" * 16, 1040, now=1000.0)
    assert cache.add("k1", "b" * 16, 1010, now=1000.0)
    assert not cache.add("k1", "a" * 16, 1040, now=1001.0)
    cache.close()
    assert (path.stat().st_mode & 0o777) == 0o600
    with path.open("a") as fh:
        fh.write("1050 k1 torn-record-with-no-newl")  # a crash mid-write
    again = NonceCache(path=path, now=1020.0)
    assert not again.add("k1", "a" * 16, 1040, now=1020.0)  # still in its window
    assert again.add("k1", "b" * 16, 1050, now=1020.0)  # its window had passed: forgotten
    assert again.add("k1", "torn-record-with-no-newl", 1050, now=1020.0)
    again.close()
    third = NonceCache(path=path, now=1030.0)  # what came after the torn line is remembered
    assert not third.add("k1", "torn-record-with-no-newl", 1050, now=1030.0)
    assert not third.add("k1", "b" * 16, 1050, now=1030.0)
    third.close()


def test_nonce_file_is_compacted(tmp_path: Path) -> None:
    from agent import nonces

    path = tmp_path / "nonces"
    cache = nonces.NonceCache(path=path, now=0.0)
    for i in range(3 * nonces.COMPACT_MIN):
        # Each record lives 1 s: at most a handful are live at any time.
        assert cache.add("k", f"nonce-{i:010d}", i / 100 + 1, now=i / 100)
    cache.close()
    lines = path.read_text().splitlines()
    assert len(lines) <= nonces.COMPACT_MIN + 1
    assert all(line.count(" ") == 2 for line in lines)


def test_driver_learns_the_audience_from_the_agent_certificate(
    two_agents: tuple[AgentProcess, AgentProcess],
) -> None:
    """No name given: the CN of the agent's certificate, read by one TLS handshake."""
    n1, n2 = two_agents
    with n2.client() as c:
        assert c.audience.known is None  # nothing asked yet: constructing needs no network
        assert c.node_info().name == n2.name
        assert c.audience.known == n2.name
    from driver.inventory import load_inventory

    node = load_inventory(n1.inventory).node(n1.name)
    with node.client() as c:  # from an inventory: the node name, no handshake
        assert c.audience.known == n1.name
        assert c.node_info().name == n1.name
