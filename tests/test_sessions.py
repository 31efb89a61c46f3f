"""agent.sessions: the Ryuk guarantee, keep-alive, ownership and recovery from labels."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.identity import Caller
from agent.runtime import DockerRuntime
from agent.sessions import SessionManager
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import AlreadyExists, NotFound, PolicyError
from tests.support.aio import until

pytestmark = pytest.mark.docker
OWNER = Caller("alice", "admin")
SPEC = pb.ContainerSpec(image="shakedown/busybox:test", command=["sleep", "300"])


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_expired_session_is_reaped_persistent_survives(node: str, tmp_path: Path) -> None:
    async def main() -> None:
        rt = DockerRuntime(node)
        sm = SessionManager(rt, reap_interval=0.2, state_dir=tmp_path)
        try:
            await sm.start()
            short = sm.open("alice", ttl=2)
            keep = sm.open("alice", ttl=1, persistent=True)
            doomed = await sm.create_container(short.id, OWNER, SPEC, start=True)
            kept = await sm.create_container(keep.id, OWNER, SPEC, start=True)

            async def gone() -> bool:
                return not await rt.containers_of_session(short.id)
            await until(gone, timeout=10)
            with pytest.raises(NotFound):
                await rt.inspect(doomed.id)
            with pytest.raises(NotFound) as err:
                sm.keep_alive(short.id, OWNER)
            assert err.value.field == "session_id"
            assert (await rt.inspect(kept.id)).state == pb.CONTAINER_STATE_RUNNING
            assert [r.id for r in sm.list()] == [keep.id]
            assert float((tmp_path / "heartbeat").read_text()) > 0
        finally:
            await sm.stop()
            rt.close()
    asyncio.run(main())


def test_keep_alive_postpones_expiry(node: str) -> None:
    async def main() -> None:
        clock = Clock()
        rt = DockerRuntime(node)
        sm = SessionManager(rt, clock=clock)
        try:
            rec = sm.open("alice", ttl=10)
            c = await sm.create_container(rec.id, OWNER, SPEC, start=False)
            clock.now += 8
            sm.keep_alive(rec.id, OWNER)
            clock.now += 8  # 16 s after open, 8 s after the keep-alive
            assert await sm.reap_once() == 0
            assert (await rt.inspect(c.id)).id == c.id
            clock.now += 2
            assert await sm.reap_once() == 1
            with pytest.raises(NotFound):
                await rt.inspect(c.id)
        finally:
            rt.close()
    asyncio.run(main())


def test_open_close_names_and_ownership(node: str) -> None:
    async def main() -> None:
        rt = DockerRuntime(node)
        sm = SessionManager(rt, default_ttl=45)
        try:
            rec = sm.open("alice", name="suite", labels={"run": "r7"})
            assert rec.id.startswith("s-") and len(rec.id) == 14 and rec.ttl == 45
            assert rec.faults == []
            assert sm.open("alice", name="suite") is rec
            with pytest.raises(AlreadyExists) as err:
                sm.open("bob", name="suite")
            assert err.value.field == "name"
            with pytest.raises(PolicyError):
                sm.get(rec.id, Caller("bob", "observer"))
            assert sm.get(rec.id, Caller("root", "admin")) is rec
            with pytest.raises(NotFound):
                sm.get("s-000000000000", OWNER)
            with pytest.raises(NotFound):
                await sm.create_container("s-000000000000", OWNER, SPEC, False)
            for _ in range(2):
                await sm.create_container(rec.id, OWNER, SPEC, start=False)
            [s] = await sm.list_pb()
            assert (s.id, s.name, s.principal, s.container_count, dict(s.labels)) == (
                rec.id, "suite", "alice", 2, {"run": "r7"})
            assert s.expires_at.seconds > s.created_at.seconds
            assert (await sm.to_pb(rec)).container_count == 2
            assert await sm.close(rec.id, OWNER) == 2
            assert sm.list() == [] and await rt.containers_of_session(rec.id) == []
            with pytest.raises(NotFound):
                await sm.close(rec.id, OWNER)
            assert sm.open("bob", name="suite").principal == "bob"  # the name is free again
        finally:
            rt.close()
    asyncio.run(main())


def test_recovery_from_labels(node: str, tmp_path: Path) -> None:
    async def first() -> tuple[str, str, str]:
        rt = DockerRuntime(node)
        sm = SessionManager(rt, reap_interval=0.2, state_dir=tmp_path)
        await sm.start()
        rec = sm.open("alice", ttl=60, name="long", labels={"run": "r1"})
        keep = sm.open("alice", ttl=5, persistent=True)
        c = await sm.create_container(rec.id, OWNER, SPEC, start=True)
        await sm.create_container(keep.id, OWNER, SPEC, start=True)
        await sm.stop()
        rt.close()
        return rec.id, keep.id, c.id

    async def second(sid: str, keep_id: str, cid: str) -> None:
        rt = DockerRuntime(node)
        sm = SessionManager(rt, reap_interval=0.2, state_dir=tmp_path)
        try:
            await sm.start()
            rec = sm.get(sid, OWNER)
            assert (rec.name, rec.ttl, rec.persistent, rec.principal, rec.labels) == (
                "long", 60, False, "alice", {"run": "r1"})
            assert rec.expires_at > time.time() + 50  # fresh heartbeat: nearly a full TTL left
            assert sm.get(keep_id, OWNER).persistent
            assert (await rt.inspect(cid)).state == pb.CONTAINER_STATE_RUNNING
            assert sm.open("alice", name="long") is rec
            assert await sm.close(sid, OWNER) == 1
        finally:
            await sm.stop()
            rt.close()

    ids = asyncio.run(first())
    asyncio.run(second(*ids))


def test_stale_heartbeat_reaps_at_start(node: str, tmp_path: Path) -> None:
    async def main() -> None:
        rt = DockerRuntime(node)
        sm = SessionManager(rt, state_dir=tmp_path)
        rec = sm.open("alice", ttl=30)
        keep = sm.open("alice", ttl=1, persistent=True)
        c = await sm.create_container(rec.id, OWNER, SPEC, start=True)
        k = await sm.create_container(keep.id, OWNER, SPEC, start=True)
        rt.close()
        # The agent "was down" for 1000 s: far longer than the session's TTL.
        (tmp_path / "heartbeat").write_text(f"{time.time() - 1000:.3f}\n")
        rt2 = DockerRuntime(node)
        sm2 = SessionManager(rt2, state_dir=tmp_path, reap_interval=60)
        try:
            await sm2.start()  # reaps before returning
            with pytest.raises(NotFound):
                await rt2.inspect(c.id)
            with pytest.raises(NotFound):
                sm2.get(rec.id)
            assert (await rt2.inspect(k.id)).state == pb.CONTAINER_STATE_RUNNING
            assert [r.id for r in sm2.list()] == [keep.id]
        finally:
            await sm2.stop()
            rt2.close()
    asyncio.run(main())


def test_no_heartbeat_grants_one_ttl(node: str, tmp_path: Path) -> None:
    async def main() -> None:
        rt = DockerRuntime(node)
        sm0 = SessionManager(rt)
        rec = sm0.open("alice", ttl=30)
        await sm0.create_container(rec.id, OWNER, SPEC, start=False)
        clock = Clock(time.time())
        sm = SessionManager(rt, state_dir=tmp_path / "fresh", clock=clock)
        try:
            await sm.start()
            assert sm.get(rec.id).expires_at == pytest.approx(clock.now + 30)
        finally:
            await sm.stop()
            rt.close()
    asyncio.run(main())
