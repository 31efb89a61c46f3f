"""The agent's promises: reaping after a driver dies, state from labels across restarts,
graceful shutdown, and malformed input that never crashes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.types import ContainerSpec
from shakedown import keyring, signing
from shakedown.errors import InvalidArgument, NotFound, PolicyError
from tests.support.agentproc import AgentProcess, wait_for

DRIVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from driver.client import AgentClient
    from driver.types import ContainerSpec
    address, certs, keys, image, ttl = sys.argv[1:6]
    c = AgentClient.from_certs_dir(address, certs, keys)
    s = c.open_session(ttl=int(ttl))
    box = s.run(ContainerSpec(image=image, command=["sleep", "300"]))
    print(box.id, flush=True)
    time.sleep(600)
""")


def _node_containers(docker_client, node: str) -> list:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(all=True, filters={"label": f"io.shakedown.node={node}"})


def test_session_is_reaped_after_its_driver_is_killed(
    agent_proc: AgentProcess,
    busybox_image: str,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRIVER_SCRIPT,
            agent_proc.address,
            str(agent_proc.certs),
            str(agent_proc.keys),
            busybox_image,
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert driver.stdout is not None
        container_id = driver.stdout.readline().strip()
        assert container_id, "driver subprocess did not create its container"
        assert docker_client.containers.get(container_id).status == "running"
        # The keep-alive thread holds the session past its TTL while the driver lives.
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 4, 10, what="one TTL to pass")
        assert docker_client.containers.get(container_id).status == "running"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        killed_at = time.monotonic()

        def gone() -> bool:
            return not docker_client.containers.list(all=True, filters={"id": container_id})

        wait_for(gone, 3 + 10, what="the dead driver's container to be reaped")
        assert time.monotonic() - killed_at >= 1.0  # reaped by TTL, not instantly
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)


def test_restart_rebuilds_sessions_from_labels(
    fresh_agent: AgentProcess, busybox_image: str
) -> None:
    agent = fresh_agent.start()
    with agent.client() as c:
        session = c.open_session(ttl=60, labels={"suite": "restart"})
        box = session.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        session.stop_keepalive()
    assert agent.stop() == 0  # SIGTERM: graceful, exit 0
    agent.start()
    with agent.client() as c:
        recovered = {s.id: s for s in c.sessions()}
        assert session.id in recovered
        assert recovered[session.id].labels.get("suite") == "restart"
        assert recovered[session.id].container_count == 1
        assert [x.id for x in c.list(session=session.id)] == [box.id]
        assert c.inspect(box.id).state == "running"
        c.keep_alive(session.id)
        assert c.close_session(session.id) == 1
        with pytest.raises(NotFound):
            c.inspect(box.id)


def test_sessions_that_expired_while_the_agent_was_down_are_reaped_at_start(
    fresh_agent: AgentProcess,
    busybox_image: str,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    agent = fresh_agent.start()
    with agent.client() as c:
        short = c.open_session(ttl=2)
        box = short.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        short.stop_keepalive()
        keep = c.open_session(persistent=True, name="long-lived")
        kept = keep.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        keep.stop_keepalive()
    agent.stop()
    down_at = time.monotonic()
    wait_for(lambda: time.monotonic() - down_at > 3, 10, what="the TTL to lapse while down")
    agent.start()
    wait_for(
        lambda: not docker_client.containers.list(all=True, filters={"id": box.id}),
        10,
        what="the expired session's container to be reaped",
    )
    assert docker_client.containers.get(kept.id).status == "running"  # persistent survives
    with agent.client() as c:
        assert c.close_session(keep.id) == 1


def test_agent_refuses_host_level_containers(client, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    with client.open_session(ttl=30) as session:
        refusals = {
            "spec.privileged": ContainerSpec(image=busybox_image, privileged=True),
            "spec.network": ContainerSpec(image=busybox_image, network="host"),
            "spec.pid_mode": ContainerSpec(image=busybox_image, pid_mode="host"),
            "spec.ipc_mode": ContainerSpec(image=busybox_image, ipc_mode="host"),
            "spec.cap_add": ContainerSpec(image=busybox_image, cap_add=["NET_ADMIN"]),
            "spec.devices": ContainerSpec(image=busybox_image, devices=["/dev/fuse"]),
        }
        for field, spec in refusals.items():
            with pytest.raises(PolicyError) as err:
                session.create(spec)
            assert err.value.field == field or (err.value.field or "").startswith(field), err.value
        from driver.types import Mount

        with pytest.raises(PolicyError) as err:
            session.create(
                ContainerSpec(
                    image=busybox_image, mounts=[Mount(type="bind", source="/etc", target="/x")]
                )
            )
        assert "spec.mounts" in (err.value.field or "")
        assert session.list(all=True) == []


# -- malformed input, through the real gRPC path ------------------------------------

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda s: s * 400),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "../../etc",
            "UPPER/Case",
            "a" * 5000,
            "\u202eevil",
            "🐳",
            "busybox:",
            ":tag",
            "x@sha256:zz",
            "-rf",
            "a b",
        ]
    ),
)
specs = st.builds(
    ContainerSpec,
    image=odd_text,
    name=odd_text,
    command=st.lists(odd_text, max_size=3),
    env=st.dictionaries(odd_text, odd_text, max_size=3),
    labels=st.dictionaries(odd_text, odd_text, max_size=3),
    working_dir=odd_text,
    user=odd_text,
    hostname=odd_text,
    memory=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    # Never pull: a valid-looking image must not send traffic off this machine.
    pull=st.just("never"),
    cpus=st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=specs)
def test_malformed_specs_get_a_clear_error_and_the_agent_survives(
    agent_proc: AgentProcess,
    client,
    spec: ContainerSpec,  # type: ignore[no-untyped-def]
) -> None:
    try:
        request = spec.to_pb()
    except (ValueError, OverflowError):
        return  # refused client-side already: never reaches the agent
    del request
    with client.open_session(ttl=30) as session:
        try:
            box = session.create(spec)
        except (InvalidArgument, PolicyError, NotFound) as exc:
            assert exc.field, f"error without a field: {exc!r}"
            assert str(exc).startswith(exc.field)
        else:  # odd but valid: a real container, removed with the session
            assert client.inspect(box.id).session_id == session.id
    assert client.node_info().name == agent_proc.name


def test_garbage_request_bytes_are_invalid_argument_not_a_crash(agent_proc: AgentProcess) -> None:
    key = keyring.load(agent_proc.keys).signing_key("driver")
    d = agent_proc.pki.dir
    creds = grpc.ssl_channel_credentials(
        d.ca_cert.read_bytes(),
        d.client_key("driver").read_bytes(),
        d.client_cert("driver").read_bytes(),
    )
    method = "/shakedown.agent.v1.Agent/CreateContainer"
    with grpc.secure_channel(agent_proc.address, creds) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        for body in (b"\xff\xff\xff", b"\x0a\xff\x01", b"\x12\x05\x0a\x03\xc3\x28\x00"):
            md = signing.sign(key.id, key.secret, method, body, audience=agent_proc.name).metadata()
            with pytest.raises(grpc.RpcError) as err:
                call(body, metadata=list(md), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "malformed request" in err.value.details()  # type: ignore[attr-defined]
    with agent_proc.client() as c:
        assert c.node_info().name == agent_proc.name
