"""agent.runtime against the real engine. Every container is scoped by a per-test node label
(or is created here by id) and only those are removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import docker
import pytest

from agent.config import AgentConfig
from agent.identity import CALLER, Caller
from agent.runtime import DockerRuntime, SessionInfo
from agent.service import AgentService
from agent.sessions import SessionManager
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    ImagePullError,
    InvalidArgument,
    NotFound,
)
from tests.support.aio import until

pytestmark = pytest.mark.docker
T = TypeVar("T")
SLEEP = ["sleep", "300"]


@pytest.fixture
def foreign(docker_client: docker.DockerClient) -> Iterator[list[Any]]:
    """Containers made with the SDK, not the agent; removed by id."""
    made: list[Any] = []
    yield made
    for c in made:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)


def session(**kw: Any) -> SessionInfo:
    kw.setdefault("id", f"s-{uuid.uuid4().hex[:12]}")
    return SessionInfo(principal="tester", created=time.time(), **kw)


def spec(command: list[str] | None = None, **kw: Any) -> pb.ContainerSpec:
    return pb.ContainerSpec(image="shakedown/busybox:test", command=command or SLEEP, **kw)


def run(fn: Callable[[DockerRuntime], Awaitable[T]], node: str, adopt: tuple[str, ...] = ()) -> T:
    async def main() -> T:
        rt = DockerRuntime(node, adopt)
        try:
            return await fn(rt)
        finally:
            rt.close()
    return asyncio.run(main())


def test_lifecycle(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        s = session(name="life", labels={"run": "r1"})
        c = await rt.create(s, spec(["sh", "-c", "echo hi; echo err >&2; exec sleep 300"],
                                    labels={"app": "a"}, ports=[pb.PortMapping(container_port=80)],
                                    env={"GREETING": "hello"}), start=False)
        assert c.state == pb.CONTAINER_STATE_CREATED and c.managed and c.node == node
        assert c.session_id == s.id
        assert c.labels[L.MANAGED_BY] == L.MANAGED_BY_VALUE and c.labels[L.NODE] == node
        assert c.labels[L.SESSION_NAME] == "life" and c.labels[L.SESSION_PRINCIPAL] == "tester"
        assert c.labels[L.SESSION_LABEL_PREFIX + "run"] == "r1" and c.labels["app"] == "a"
        c = await rt.start(c.name)
        assert c.state == pb.CONTAINER_STATE_RUNNING and c.pid > 0 and c.ip_addresses
        assert c.ports[0].host_ip == "127.0.0.1" and c.ports[0].host_port > 0
        assert c.started_at.seconds > 0
        assert (await rt.inspect(c.id[:12])).id == c.id
        listed = await rt.list_containers([("app", "a")])
        assert [x.id for x in listed] == [c.id]
        assert await rt.list_containers([("app", "nope")]) == []
        assert [x.id for x in await rt.list_containers(session_id=s.id)] == [c.id]
        assert (await rt.pause(c.id)).state == pb.CONTAINER_STATE_PAUSED
        with pytest.raises(FailedPrecondition):
            await rt.pause(c.id)
        assert (await rt.unpause(c.id)).state == pb.CONTAINER_STATE_RUNNING

        code, out, err = await rt.exec(c.id, ["sh", "-c", "echo $GREETING $X; pwd; echo e >&2; "
                                       "exit 3"], env={"X": "there"}, workdir="/tmp")
        assert (code, out, err) == (3, b"hello there\n/tmp\n", b"e\n")

        await until(lambda: _has_logs(rt, c.id))
        chunks = [x async for x in rt.logs(c.id)]
        assert sorted(chunks) == [(1, b"hi\n"), (2, b"err\n")]
        assert [x async for x in rt.logs(c.id, stderr=True, stdout=False)] == [(2, b"err\n")]
        assert [x async for x in rt.logs(c.id, since=time.time() + 3600)] == []
        [(_, stamped)] = [x async for x in rt.logs(c.id, tail=1, timestamps=True)]
        assert stamped.endswith(b"\n") and stamped[:2] == b"20"  # RFC 3339 stamp first
        # follow: the stream blocks (sleep 300), and closing it returns promptly.
        follow = rt.logs(c.id, follow=True)
        got = [await follow.__anext__(), await follow.__anext__()]
        assert sorted(got) == [(1, b"hi\n"), (2, b"err\n")]
        nxt = asyncio.ensure_future(follow.__anext__())
        await asyncio.sleep(0.1)
        assert not nxt.done()
        started = time.monotonic()
        nxt.cancel()  # the consumer goes away mid-read: the engine stream is closed at once
        with pytest.raises(asyncio.CancelledError):
            await nxt
        await follow.aclose()
        assert time.monotonic() - started < 2

        c = await rt.stop(c.id, timeout=1)
        assert c.state == pb.CONTAINER_STATE_EXITED and c.finished_at.seconds > 0
        c = await rt.restart(c.id, timeout=1)
        assert c.state == pb.CONTAINER_STATE_RUNNING
        c = await rt.kill(c.id, "SIGKILL")
        assert await rt.wait(c.id, timeout=10) == (137, "")
        assert (await rt.inspect(c.id)).exit_code == 137
        [listed_exited] = await rt.list_containers(all=True, session_id=s.id)
        assert listed_exited.state == pb.CONTAINER_STATE_EXITED and listed_exited.exit_code == 137
        assert await rt.list_containers(session_id=s.id) == []
        assert await rt.remove(c.name) == c.id
        with pytest.raises(NotFound):
            await rt.inspect(c.id)
    run(body, node)


async def _has_logs(rt: DockerRuntime, cid: str) -> bool:
    return len([x async for x in rt.logs(cid)]) >= 2


def test_wait_and_exec_deadlines(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        c = await rt.create(session(), spec(), start=True)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as err:
            await rt.wait(c.id, timeout=1)
        assert err.value.field == "timeout_seconds"
        with pytest.raises(DeadlineExceeded):
            await rt.exec(c.id, ["sleep", "30"], timeout=1)
        assert time.monotonic() - started < 6
        # wait on a stopped container answers at once.
        await rt.kill(c.id)
        assert (await rt.wait(c.id))[0] == 137
    run(body, node)


def test_create_errors(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        s = session()
        await rt.create(s, spec(name=f"{node}-x"))
        with pytest.raises(AlreadyExists) as exists:
            await rt.create(s, spec(name=f"{node}-x"))
        assert exists.value.field == "spec.name"
        with pytest.raises(NotFound) as never:
            await rt.create(s, pb.ContainerSpec(image="shakedown/absent:nope",
                                                pull_policy=pb.PULL_POLICY_NEVER))
        assert never.value.field == "spec.image"
        # A registry on a closed loopback port: the pull fails fast with the engine's reason,
        # as ImagePullError (the agent answered), never Unavailable (a dead agent).
        with pytest.raises(ImagePullError) as pull:
            await rt.create(s, pb.ContainerSpec(image="localhost:1/absent:nope"))
        assert pull.value.field == "spec.image" and "localhost:1" in str(pull.value)
        with pytest.raises(InvalidArgument) as bad_cmd:
            await rt.create(s, spec(["/no/such/binary"]), start=True)
        assert bad_cmd.value.field == "spec.command"
        # create+start is atomic: the failed container is gone.
        assert len(await rt.list_containers(all=True, session_id=s.id)) == 1
        with pytest.raises(NotFound) as net:
            await rt.create(s, spec(network=f"{node}-nonet"), start=True)
        assert net.value.field == "spec.network"
    run(body, node)


def test_unmanaged_containers_are_invisible(node: str, docker_client: docker.DockerClient,
                                            foreign: list[Any]) -> None:
    plain = docker_client.containers.run("shakedown/busybox:test", SLEEP, detach=True,
                                   labels={"test-owner": node})
    foreign.append(plain)
    other_node = docker_client.containers.run("shakedown/busybox:test", SLEEP, detach=True, labels={
        L.MANAGED_BY: L.MANAGED_BY_VALUE, L.NODE: node + "-other", L.SESSION: "s-000000000000"})
    foreign.append(other_node)

    async def body(rt: DockerRuntime) -> None:
        for target in (plain, other_node):
            for op in (rt.inspect, rt.start, rt.stop, rt.kill, rt.pause, rt.remove, rt.wait):
                with pytest.raises(NotFound) as err:
                    await op(target.id)
                assert err.value.field == "container" and "not managed" in err.value.reason
            with pytest.raises(NotFound):
                await rt.exec(target.name, ["true"])
            with pytest.raises(NotFound):
                [x async for x in rt.logs(target.id)]
        ids = {c.id for c in await rt.list_containers(all=True)}
        assert not ids & {plain.id, other_node.id}
        assert await rt.recover() == []
    run(body, node)
    plain.reload()
    other_node.reload()
    assert plain.status == other_node.status == "running"  # untouched


def test_adoption(node: str, docker_client: docker.DockerClient, foreign: list[Any]) -> None:
    adopted = docker_client.containers.run("shakedown/busybox:test", SLEEP, detach=True,
                                     labels={"persys.managed": "true", "test-owner": node})
    foreign.append(adopted)

    async def without(rt: DockerRuntime) -> None:
        with pytest.raises(NotFound):
            await rt.inspect(adopted.id)
        assert await rt.list_containers([("test-owner", node)]) == []

    async def with_selector(rt: DockerRuntime) -> None:
        c = await rt.inspect(adopted.name)
        assert c.id == adopted.id and not c.managed and c.state == pb.CONTAINER_STATE_RUNNING
        assert [x.id for x in await rt.list_containers([("test-owner", node)])] == [adopted.id]
        assert (await rt.pause(adopted.id)).state == pb.CONTAINER_STATE_PAUSED
        await rt.unpause(adopted.id)
        assert (await rt.exec(adopted.id, ["echo", "adopted"]))[1] == b"adopted\n"
        # Adopted containers are never part of a session's sweep.
        assert await rt.recover() == []
        assert await rt.remove_session("s-000000000000") == 0

    run(without, node)
    run(with_selector, node, adopt=("persys.managed=true",))
    run(with_selector, node, adopt=("persys.managed",))
    adopted.reload()
    assert adopted.status == "running"


def test_events(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        s = session()
        events = rt.events(session_id=s.id)
        assert await rt.events_ready()
        c = await rt.create(s, spec(), start=True)
        await rt.kill(c.id)
        seen: list[pb.Event] = []

        async def collect() -> None:
            async for ev in events:
                assert ev.container_id == c.id and ev.session_id == s.id and ev.node == node
                seen.append(ev)
                if ev.action == "die":
                    return
        await asyncio.wait_for(collect(), 15)
        actions = [e.action for e in seen]
        assert actions[:2] == ["create", "start"] and actions[-1] == "die"
        assert seen[-1].exit_code == 137 and seen[-1].labels[L.SESSION] == s.id
        await events.aclose()
    run(body, node)


def test_recover_and_remove_session(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        a = session(name="a", ttl=7, persistent=True, labels={"run": "x"})
        b = session()
        for _ in range(2):
            await rt.create(a, spec())
        await rt.create(b, spec(), start=True)
        found = {s.id: s for s in await rt.recover()}
        assert set(found) == {a.id, b.id}
        got = found[a.id]
        assert (got.name, got.ttl, got.persistent, got.principal, got.labels) == (
            "a", 7, True, "tester", {"run": "x"})
        assert abs(got.created - a.created) < 0.01
        assert await rt.session_counts() == {a.id: 2, b.id: 1}
        assert await rt.remove_session(b.id) == 1
        assert await rt.containers_of_session(b.id) == []
        assert len(await rt.containers_of_session(a.id)) == 2
    run(body, node)


def test_node_info_is_cached_and_fast(node: str) -> None:
    async def body(rt: DockerRuntime) -> None:
        facts = await rt.node_info()
        assert facts.docker_version and facts.docker_api_version and facts.cpus > 0
        names = {c.name for c in facts.capabilities}
        assert {"kill", "stop", "restart", "exec", "pause", "partition", "latency"} <= names
        assert all(c.detail for c in facts.capabilities)
        started = time.monotonic()
        many = await asyncio.gather(*(rt.node_info() for _ in range(200)))
        assert all(f is facts for f in many) and time.monotonic() - started < 0.5
    run(body, node)


def test_service_glue(node: str) -> None:
    """The servicer end to end without gRPC: the guard would have set CALLER."""
    async def body(rt: DockerRuntime) -> None:
        config = AgentConfig(name=node, listen="127.0.0.1:0", ca=None, cert=None, key=None,  # type: ignore[arg-type]
                             keys=None, principals={}, adopt=("persys.managed",))  # type: ignore[arg-type]
        sessions = SessionManager(rt)
        svc = AgentService(config, rt, sessions, "0.0.0-test")
        CALLER.set(Caller("driver", "admin"))
        info = await svc.GetNodeInfo(pb.GetNodeInfoRequest(), None)
        assert (info.name, info.principal, info.role) == (node, "driver", "admin")
        assert list(info.policy.adopt_selectors) == ["persys.managed"] and info.server_time.seconds
        s = await svc.OpenSession(pb.OpenSessionRequest(ttl_seconds=60, name="glue"), None)
        assert s.principal == "driver" and s.expires_at.seconds > 0
        with pytest.raises(InvalidArgument) as err:
            await svc.CreateContainer(pb.CreateContainerRequest(
                session_id=s.id, spec=spec(labels={"io.shakedown.x": "1"})), None)
        assert err.value.field == 'spec.labels["io.shakedown.x"]'
        with pytest.raises(NotFound) as missing:
            await svc.CreateContainer(pb.CreateContainerRequest(
                session_id="s-000000000000", spec=spec()), None)
        assert missing.value.field == "session_id"
        c = await svc.CreateContainer(pb.CreateContainerRequest(
            session_id=s.id, spec=spec(["sh", "-c", "echo out; exec sleep 300"]), start=True), None)
        await svc.KillContainer(pb.KillContainerRequest(container=c.id, signal="KILL"), None)
        waited = await svc.WaitContainer(pb.WaitContainerRequest(container=c.id), None)
        assert waited.exit_code == 137
        logs = [x async for x in svc.Logs(pb.LogsRequest(container=c.id), None)]
        assert [(x.stream, x.data) for x in logs] == [(pb.LogChunk.STREAM_STDOUT, b"out\n")]
        [listed] = (await svc.ListSessions(pb.ListSessionsRequest(), None)).sessions
        assert listed.id == s.id and listed.container_count == 1
        closed = await svc.CloseSession(pb.CloseSessionRequest(session_id=s.id), None)
        assert closed.removed_containers == 1
    run(body, node)


def test_name_reuse_never_reaches_a_foreign_container(node: str, docker_client: docker.DockerClient,
                                                      foreign: list[Any]) -> None:
    name = f"{node}-reused"

    async def body(rt: DockerRuntime) -> None:
        first = await rt.create(session(), spec(name=name))
        docker_client.containers.get(first.id).remove(force=True)  # out of band
        # Same name, now a managed container made by another agent process: found afresh.
        other = DockerRuntime(node)
        try:
            second = await other.create(session(), spec(name=name))
        finally:
            other.close()
        assert (await rt.inspect(name)).id == second.id
        docker_client.containers.get(second.id).remove(force=True)
        # Same name, now someone else's container: invisible, and left alone.
        plain = docker_client.containers.create("shakedown/busybox:test", SLEEP, name=name)
        foreign.append(plain)
        for op in (rt.inspect, rt.start, rt.remove):
            with pytest.raises(NotFound):
                await op(name)
        plain.reload()
        assert plain.status == "created"
    run(body, node)


def test_slow_event_subscriber_is_dropped_not_blocking() -> None:
    from agent.events import EventHub
    from shakedown.errors import ResourceExhausted

    def event(n: int) -> dict[str, Any]:
        return {"Type": "container", "Action": "start", "timeNano": n,
                "Actor": {"ID": f"c{n}", "Attributes": {"name": f"n{n}", "mine": "1"}}}

    async def body() -> None:
        hub = EventHub(None, "n", lambda labels: ("mine" in labels, True), lambda cid: None,
                       queue_size=2)
        hub._closing.set()  # no engine thread: events are fed by hand below
        slow, fast = hub.subscribe([], ""), hub.subscribe([("mine", "1")], "")
        got_fast: list[str] = []
        for n in range(1, 4):
            hub._dispatch(event(n))
            await asyncio.sleep(0)  # let the loop run the fan-out callbacks
            got_fast.append((await fast.__anext__()).container_id)
        hub._dispatch({"Type": "container", "Action": "start", "Actor": {"ID": "x"}})  # foreign
        assert got_fast == ["c1", "c2", "c3"]
        assert [(await slow.__anext__()).container_id for _ in range(2)] == ["c1", "c2"]
        with pytest.raises(ResourceExhausted):
            await slow.__anext__()
        await fast.aclose()
    asyncio.run(body())
