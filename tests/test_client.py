"""AgentClient end to end: a real agent subprocess on a real Docker engine.

Every container carries this test's own label and is removed by the test's
fixtures (only those containers: selection is by that label).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from driver import (
    AgentClient,
    AuthError,
    ContainerSpec,
    Event,
    InvalidArgument,
    NotFound,
    PolicyError,
    SessionHandle,
    Unavailable,
    fan_out,
    log_lines,
)
from driver.control.process import wait_for
from driver.types import LogChunk, Mount, PortMapping, parse_size
from shakedown import keyring
from tests.support.agentproc import AgentProcess

e2e = pytest.mark.docker  # needs the agent_proc fixture: a real agent and Docker

TEST_LABEL = "shakedown-test"


@pytest.fixture()
def labels() -> dict[str, str]:
    return {TEST_LABEL: uuid.uuid4().hex[:12]}


@pytest.fixture()
def session(client: AgentClient, labels: dict[str, str]) -> Iterator[SessionHandle]:
    handle = client.open_session(ttl=30, labels={"purpose": "test"})
    yield handle
    # Remove this test's containers (by its own label), then the session.
    for c in client.list(labels, all=True):
        client.remove(c, force=True)
    handle.close()


@pytest.fixture()
def spec(busybox_image: str, labels: dict[str, str]) -> ContainerSpec:
    return ContainerSpec(busybox_image, ["sleep", "300"], labels=labels, stop_signal="SIGKILL")


@e2e
def test_node_info(client: AgentClient, agent_proc: AgentProcess) -> None:
    info = client.node_info()
    assert info.name == agent_proc.name
    assert (info.principal, info.role) == ("driver", "admin")
    assert info.server_time is not None
    assert info.docker_version
    assert not info.policy.allow_privileged


@e2e
def test_run_list_inspect_remove(client: AgentClient, session: SessionHandle,
                                 spec: ContainerSpec, labels: dict[str, str],
                                 agent_proc: AgentProcess) -> None:
    c = session.run(spec)
    assert c.state == "running"
    assert c.labels[TEST_LABEL] == labels[TEST_LABEL]
    assert c.session_id == session.id and c.managed and c.node == agent_proc.name
    assert [x.id for x in client.list(labels)] == [c.id]
    assert [x.id for x in session.list()] == [c.id]
    assert client.list({TEST_LABEL: "someone-else"}) == []
    got = client.inspect(c.id)
    assert got.id == c.id and got.running and got.pid > 0 and got.started_at is not None
    assert client.inspect(c.name).id == c.id  # names resolve too
    assert client.remove(c, force=True) == c.id
    with pytest.raises(NotFound):
        client.inspect(c.id)


@e2e
def test_exec(client: AgentClient, session: SessionHandle, spec: ContainerSpec) -> None:
    c = session.run(spec)
    res = client.exec(c, ["sh", "-c", "echo out $GREETING; echo err >&2; exit 3"],
                      env={"GREETING": "hi"})
    assert res.exit_code == 3 and not res.ok
    assert res.output == "out hi\n"
    assert res.stderr == b"err\n"
    assert client.exec(c, ["true"]).ok


@e2e
def test_logs_and_wait(client: AgentClient, session: SessionHandle,
                       spec: ContainerSpec) -> None:
    script = "for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 7"
    c = session.run(ContainerSpec(spec.image, ["sh", "-c", script], labels=spec.labels))
    assert client.wait(c, timeout=20) == 7
    done = client.inspect(c)
    assert (done.state, done.exit_code) == ("exited", 7)
    assert done.finished_at is not None
    lines = list(log_lines(client.logs(c)))
    assert [ln.text for ln in lines if ln.stream == "stdout"] == ["line 1", "line 2", "line 3"]
    assert [ln.text for ln in lines if ln.stream == "stderr"] == ["oops"]
    # The engine applies tail to both streams together, and their relative order
    # is only as good as its two pipe readers: either last line is fine.
    assert client.logs(c, tail=1).text() in ("line 3\n", "oops\n")
    assert len(list(log_lines(client.logs(c, tail=2)))) == 2


@e2e
def test_logs_follow(client: AgentClient, session: SessionHandle, spec: ContainerSpec) -> None:
    # The sleep makes the rest arrive after the follow stream is open.
    script = "echo start; sleep 1; for i in 1 2 3; do echo n$i; done"
    c = session.run(ContainerSpec(spec.image, ["sh", "-c", script], labels=spec.labels))
    with client.logs(c, follow=True, timeout=30) as stream:
        # Follow ends when the container exits: everything, in order, live.
        text = stream.text()
    assert text == "start\nn1\nn2\nn3\n"


@e2e
def test_logs_follow_cancel(client: AgentClient, session: SessionHandle,
                            spec: ContainerSpec) -> None:
    c = session.run(ContainerSpec(spec.image, ["sh", "-c", "echo ready; sleep 300"],
                                  labels=spec.labels))
    stream = client.logs(c, follow=True)
    first = next(stream)
    assert first.data == b"ready\n"
    stream.cancel()
    assert list(stream) == []  # cancelled: iteration just ends


@e2e
def test_stop_kill_pause_restart(client: AgentClient, session: SessionHandle,
                                 spec: ContainerSpec) -> None:
    c = session.run(spec)
    assert client.pause(c).state == "paused"
    assert client.unpause(c).state == "running"
    stopped = client.stop(c, timeout=1)
    assert stopped.state == "exited"
    assert client.list(spec.labels) == []  # running only
    assert [x.id for x in client.list(spec.labels, all=True)] == [c.id]
    assert client.start(c).state == "running"
    restarted = client.restart(c, timeout=1)
    assert restarted.state == "running"
    killed = client.kill(c, "SIGKILL")
    assert killed.state in ("exited", "running")  # the engine reports asynchronously
    assert client.wait(c, timeout=10) == 137
    assert client.inspect(c).state == "exited"


@e2e
def test_events(client: AgentClient, session: SessionHandle, spec: ContainerSpec,
                agent_proc: AgentProcess) -> None:
    c = session.create(spec)
    got: queue.Queue[Event | BaseException] = queue.Queue()
    stream = client.events(spec.labels)

    def reader() -> None:
        try:
            for ev in stream:
                got.put(ev)
        except BaseException as exc:
            got.put(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert stream.wait_ready(10), "the events subscription never became live"
        client.restart(c, timeout=0)
        first = got.get(timeout=15)
        assert isinstance(first, Event), first
        assert first.container_id == c.id
        assert first.node == agent_proc.name
        assert first.labels[TEST_LABEL] == spec.labels[TEST_LABEL]
        client.kill(c, "SIGKILL")
        die = wait_for(lambda: next((e for e in _drain(got) if e.action == "die"), None), 15,
                       what="die")
        assert die.exit_code == 137
    finally:
        stream.cancel()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _drain(q: queue.Queue[Event | BaseException]) -> list[Event]:
    out: list[Event] = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return out
        if isinstance(item, BaseException):
            raise item
        out.append(item)


@e2e
def test_typed_errors(client: AgentClient, session: SessionHandle,
                      spec: ContainerSpec) -> None:
    with pytest.raises(NotFound):
        client.inspect("no-such-container-" + uuid.uuid4().hex[:8])
    with pytest.raises(InvalidArgument) as bad:
        session.create(ContainerSpec("Not A Valid Image!!", labels=spec.labels))
    assert bad.value.field == "spec.image"
    with pytest.raises(InvalidArgument) as reserved:
        session.create(ContainerSpec(spec.image, labels={**spec.labels, "io.shakedown.x": "1"}))
    assert reserved.value.field is not None and reserved.value.field.startswith("spec.labels")
    with pytest.raises(PolicyError) as denied:
        session.create(ContainerSpec(spec.image, labels=spec.labels, privileged=True))
    assert denied.value.field == "spec.privileged"
    with pytest.raises(NotFound):
        client.create(spec, session="s-000000000000")
    assert client.list(spec.labels, all=True) == []  # nothing was created


@e2e
def test_observer_may_read_but_not_write(agent_proc: AgentProcess, spec: ContainerSpec) -> None:
    with agent_proc.client(principal="viewer") as viewer:
        info = viewer.node_info()
        assert (info.principal, info.role) == ("viewer", "observer")
        viewer.list(spec.labels)
        with pytest.raises(PolicyError):
            viewer.open_session(ttl=5)


@e2e
def test_wrong_secret_is_unauthenticated(agent_proc: AgentProcess) -> None:
    key = keyring.load(agent_proc.keys).signing_key("driver")
    pki = agent_proc.pki.dir
    with AgentClient(agent_proc.address, ca=pki.ca_cert, cert=pki.client_cert("driver"),
                     key=pki.client_key("driver"), key_id=key.id, secret=b"x" * 32,
                     retries=0) as bad, pytest.raises(AuthError, match="signature"):
        bad.node_info()


@e2e
def test_unreachable_is_unavailable(agent_proc: AgentProcess) -> None:
    gone = AgentClient.from_certs_dir("127.0.0.1:1", agent_proc.certs, agent_proc.keys,
                                      timeout=5, retries=1)
    with gone, pytest.raises(Unavailable) as err:
        gone.node_info()
    assert any("127.0.0.1:1" in note for note in getattr(err.value, "__notes__", []))


@e2e
def test_200_concurrent_signed_calls(client: AgentClient, agent_proc: AgentProcess) -> None:
    calls = {f"call{i}": client for i in range(200)}
    results = fan_out(calls, lambda c: c.node_info().name, max_workers=64, timeout=120)
    assert results.failed == {}
    assert set(results.unwrap().values()) == {agent_proc.name}
    # And across many channels at once (each its own TLS connection).
    clients = {f"c{i}": agent_proc.client() for i in range(10)}
    try:
        many = fan_out(clients, lambda c: [c.list({TEST_LABEL: "none"}) for _ in range(20)])
        assert many.failed == {}
    finally:
        for c in clients.values():
            c.close()


@e2e
def test_session_keepalive_and_close(client: AgentClient, spec: ContainerSpec) -> None:
    with client.open_session(ttl=2, labels={"purpose": "keepalive-test"}) as s:
        c = s.run(spec)
        assert s.id in {x.id for x in client.sessions()}
        # Past two TTLs the session must still be alive thanks to the keep-alive thread.
        until = time.monotonic() + 4.5
        while time.monotonic() < until:
            assert client.inspect(c).running
            threading.Event().wait(0.5)
        assert s.keepalive_error is None
        assert s.close() == 1
    with pytest.raises(NotFound):
        client.inspect(c)
    assert s.id not in {x.id for x in client.sessions()}


@e2e
def test_unkept_session_is_reaped(client: AgentClient, spec: ContainerSpec) -> None:
    s = client.open_session(ttl=1, keepalive=False)
    try:
        c = s.run(spec)
        wait_for(lambda: not any(x.id == c.id for x in client.list(spec.labels, all=True)),
                 20, what="the reaper to remove the container")
    finally:
        s.close()


# ---------------------------------------------------------------- no agent needed


def test_spec_round_trip() -> None:
    spec = ContainerSpec(
        "busybox", ["sleep", "1"], env={"A": "1"}, cpus=0.5, memory=parse_size("64m"),
        ports=[PortMapping.parse("127.0.0.1:8080:80/udp"), PortMapping.parse("9000")],
        restart="on-failure", restart_max_retries=3, mounts=[Mount("/data", "vol1")],
        pull="never",
    )
    msg = spec.to_pb()
    assert msg.resources.nano_cpus == 500_000_000
    assert msg.resources.memory_bytes == 64 << 20
    assert (msg.ports[0].host_ip, msg.ports[0].host_port, msg.ports[0].container_port,
            msg.ports[0].protocol) == ("127.0.0.1", 8080, 80, "udp")
    assert (msg.ports[1].host_port, msg.ports[1].container_port) == (0, 9000)
    assert ContainerSpec.from_pb(msg) == spec
    assert not ContainerSpec("x").to_pb().HasField("resources")
    with pytest.raises(ValueError, match="pull"):
        ContainerSpec("x", pull="sometimes").to_pb()


def test_log_lines_reassemble_across_chunks() -> None:
    chunks = [LogChunk("stdout", b"a\nb"), LogChunk("stderr", b"e\n"),
              LogChunk("stdout", b"c\nd")]
    assert [(ln.stream, ln.text) for ln in log_lines(chunks)] == [
        ("stdout", "a"), ("stderr", "e"), ("stdout", "bc"), ("stdout", "d")]


def test_fan_out_keeps_every_outcome() -> None:
    results = fan_out({"a": 1, "b": 2, "c": 0}, lambda x: 10 // (x - 1))  # type: ignore[arg-type]
    assert results.succeeded == {"b": 10, "c": -10}
    assert isinstance(results.failed["a"], ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        results.raise_first()
    with pytest.raises(ZeroDivisionError):
        results.unwrap()
    assert fan_out({}, lambda c: c) == {}


def test_fan_out_timeout_marks_slow_nodes() -> None:
    release = threading.Event()
    try:
        results = fan_out({"slow": 1, "fast": 2},  # type: ignore[arg-type]
                          lambda x: release.wait(10) if x == 1 else x, timeout=0.5)
        assert results["fast"].value == 2
        assert isinstance(results["slow"].error, TimeoutError)
    finally:
        release.set()
