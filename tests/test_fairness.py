"""Fair under load: one principal's long calls cannot starve another's, nor the reaper."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import docker
import pytest

from agent.limits import DEFAULT, FLAG
from driver.streams import LogStream
from driver.types import ContainerSpec
from shakedown.errors import ResourceExhausted, ShakedownError
from tests.support.agentproc import AgentProcess, wait_for

STREAMS = 70  # more than the agent's 64 streaming threads
STOPS = 33  # more than its 32 engine threads


@pytest.fixture()
def agent(fresh_agent: AgentProcess) -> AgentProcess:
    return fresh_agent.start()


def _first_chunk(stream: LogStream) -> str:
    """'ok' once the follow stream delivered its first line, else the error's name."""
    try:
        next(iter(stream))
        return "ok"
    except ResourceExhausted as exc:
        return f"exhausted: {exc}"
    except ShakedownError as exc:
        return f"error: {exc!r}"


def test_an_observer_holding_70_follow_streams_does_not_block_an_admin_exec(
    agent: AgentProcess, busybox_image: str
) -> None:
    with agent.client() as admin, agent.client("viewer") as viewer:
        session = admin.open_session(ttl=30)
        box = session.run(ContainerSpec(image=busybox_image,
                                        command=["sh", "-c", "echo up; exec sleep 300"]))
        streams = [viewer.logs(box.id, follow=True) for _ in range(STREAMS)]
        try:
            with ThreadPoolExecutor(STREAMS) as pool:
                outcomes = list(pool.map(_first_chunk, streams, timeout=30))
            held = [o for o in outcomes if o == "ok"]
            refused = [o for o in outcomes if o.startswith("exhausted")]
            assert len(held) == DEFAULT, outcomes  # the per-principal limit, no more
            assert len(refused) == STREAMS - DEFAULT, outcomes
            assert f"--{FLAG}" in refused[0] and str(DEFAULT) in refused[0]

            started = time.monotonic()
            result = admin.exec(box.id, ["echo", "admin"], timeout=2)
            assert result.exit_code == 0 and result.stdout == b"admin\n"
            assert time.monotonic() - started < 2.0
        finally:
            for s in streams:
                s.cancel()
            session.close()


def test_past_the_per_principal_limit_a_call_is_refused_not_queued(
    agent: AgentProcess, busybox_image: str
) -> None:
    with agent.client() as admin, agent.client("viewer") as viewer:
        session = admin.open_session(ttl=30)
        box = session.run(ContainerSpec(image=busybox_image,
                                        command=["sh", "-c", "echo up; exec sleep 300"]))
        streams = [viewer.logs(box.id, follow=True) for _ in range(DEFAULT)]
        try:
            assert all(_first_chunk(s) == "ok" for s in streams)
            started = time.monotonic()
            with pytest.raises(ResourceExhausted) as err:
                viewer.wait(box.id, timeout=30)
            assert time.monotonic() - started < 5  # answered at once, not after the wait
            assert f"--{FLAG} is {DEFAULT}" in str(err.value)
            assert "WaitContainer" in str(err.value)
            # Another principal is not affected.
            assert admin.exec(box.id, ["true"], timeout=5).exit_code == 0
            # Releasing one stream frees one slot (once the agent has seen the cancel).
            streams.pop().cancel()

            def reopen() -> bool:
                s = viewer.logs(box.id, follow=True)
                if _first_chunk(s) != "ok":
                    return False
                streams.append(s)
                return True
            wait_for(reopen, 10, what="a freed slot to be usable")
        finally:
            for s in streams:
                s.cancel()
            session.close()


@contextlib.contextmanager
def _stubborn(admin, busybox_image: str, docker_client: docker.DockerClient) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A container that ignores SIGTERM (sleep as PID 1): each stop of it lasts its timeout."""
    keep = admin.open_session(persistent=True)
    box = keep.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
    try:
        yield box.id
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.containers.get(box.id).kill()  # ends the slow stops at once
        keep.close()


def test_33_slow_stops_do_not_delay_a_5s_ttl_reap(
    agent: AgentProcess, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    with agent.client() as admin, _stubborn(admin, busybox_image, docker_client) as cid:
        session = admin.open_session(ttl=5)
        victim = session.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
        pool = ThreadPoolExecutor(STOPS)
        stops: list[Future[object]] = [pool.submit(admin.stop, cid, 60) for _ in range(STOPS)]
        session.stop_keepalive()
        last_touch = time.monotonic()
        try:
            wait_for(lambda: not docker_client.containers.list(
                all=True, filters={"id": victim.id}), 8.0, what="the 5 s-TTL session's reap")
            assert time.monotonic() - last_touch <= 5 + 3
            started = time.monotonic()
            assert [c.id for c in admin.list(session=session.id)] == []
            assert time.monotonic() - started < 2.0  # reads do not queue behind the stops
        finally:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.containers.get(cid).kill()
            pool.shutdown(wait=True)
        refused = [f for f in stops if isinstance(f.exception(), ResourceExhausted)]
        assert len(refused) == STOPS - DEFAULT
