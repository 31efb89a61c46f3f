"""agent.faults in-process, on real containers: a target that fails while the
partition is applied unwinds the targets before it; shared namespaces are refused."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agent.faults import netns, partition
from agent.faults.manager import FaultManager
from agent.identity import Caller
from agent.runtime import DockerRuntime
from agent.sessions import SessionManager
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import FailedPrecondition, InvalidArgument
from tests.conftest import RUN_ID, RUN_LABEL

pytestmark = pytest.mark.docker
OWNER = Caller("alice", "admin")
SPEC = pb.ContainerSpec(image="shakedown/busybox:test", command=["sleep", "300"])


def save(pid: int) -> str:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables-save"], check=True,
                         capture_output=True, text=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))


@contextlib.contextmanager
def _manager(node: str, state: Path, *adopt: str,
             ) -> Iterator[tuple[DockerRuntime, SessionManager, FaultManager]]:
    """An in-process fault manager on a runtime of ``node`` (closed afterwards)."""
    rt = DockerRuntime(node, adopt)
    try:
        sm = SessionManager(rt)
        yield rt, sm, FaultManager(rt, sm, state)
    finally:
        rt.close()


def grudge(*pairs: tuple[str, list[str]]) -> pb.FaultSpec:
    spec = pb.FaultSpec(kind=pb.FAULT_KIND_PARTITION)
    spec.partition.grudges.extend(pb.Grudge(target=t, peers=p) for t, p in pairs)
    return spec


def test_a_target_failing_mid_apply_unwinds_the_ones_before_it(
        node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        with _manager(node, tmp_path) as (_, sm, fm):
            rec = sm.open("alice", ttl=30)
            a = await sm.create_container(rec.id, OWNER, SPEC, start=True)
            b = await sm.create_container(rec.id, OWNER, SPEC, start=True)
            before = save(a.pid)
            real = partition.prepare

            async def prepare_then_lose_b(runtime: DockerRuntime,
                                          spec: pb.FaultSpec) -> partition.Plan:
                plan = await real(runtime, spec)
                await runtime.kill(b.id)  # b's namespace vanishes after it was resolved
                return plan
            monkeypatch.setattr(partition, "prepare", prepare_then_lose_b)
            with pytest.raises(FailedPrecondition, match=r"nsenter|iptables"):
                await fm.inject(rec.id, OWNER, grudge((a.id, [b.id]), (b.id, [a.id])))
            assert save(a.pid) == before  # a's chain went with the failure
            assert fm.list() == [] and list((tmp_path / "faults").glob("*.json")) == []
    asyncio.run(main())


def test_targets_sharing_a_namespace_are_refused(
        node: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    label = f"{RUN_LABEL}={RUN_ID}-{node}"

    async def main() -> None:
        side = None
        with _manager(node, tmp_path, label) as (_, sm, fm):
            try:
                rec = sm.open("alice", ttl=30)
                a = await sm.create_container(rec.id, OWNER, SPEC, start=True)
                b = await sm.create_container(rec.id, OWNER, SPEC, start=True)
                side = docker_client.containers.run(  # adopted, in a's namespace (a sidecar)
                    "shakedown/busybox:test", ["sleep", "300"], detach=True,
                    network_mode=f"container:{a.id}", labels={RUN_LABEL: f"{RUN_ID}-{node}"})
                with pytest.raises(InvalidArgument) as err:
                    await fm.inject(rec.id, OWNER, grudge((a.id, [b.id]), (side.id, [b.id])))
                assert err.value.field == "spec.partition.grudges[1].target"
                assert fm.list() == []
            finally:
                if side is not None:
                    side.remove(force=True)
    asyncio.run(main())


def test_healing_a_partition_whose_container_dies_mid_heal_is_no_error(
        node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container stops after the heal looked it up and before nsenter ran (a kill or
    the scheduler's removal racing the heal): its namespace, and our chain, are gone, so
    the heal is done, not a FailedPrecondition (which once made a fuzz run "unknown")."""
    async def main() -> None:
        with _manager(node, tmp_path) as (rt, sm, fm):
            rec = sm.open("alice", ttl=30)
            a = await sm.create_container(rec.id, OWNER, SPEC, start=True)
            b = await sm.create_container(rec.id, OWNER, SPEC, start=True)
            fault = await fm.inject(rec.id, OWNER, grudge((a.id, [b.id])))
            real = rt.inspect

            async def inspect_then_lose_a(ref: str) -> pb.Container:
                seen = await real(ref)
                if ref == a.id and seen.pid > 0:
                    await rt.kill(a.id)  # a's namespace vanishes after it was looked up
                return seen
            monkeypatch.setattr(rt, "inspect", inspect_then_lose_a)
            healed = await fm.heal(fault.id)
            assert healed.healed and "namespace" in healed.heal_note, healed.heal_note
            assert fm.list() == [] and list((tmp_path / "faults").glob("*.json")) == []
            # nsenter failing while the container runs on is a real failure: the fault
            # stays in force, to be healed again.
            c = await sm.create_container(rec.id, OWNER, SPEC, start=True)
            fault = await fm.inject(rec.id, OWNER, grudge((b.id, [c.id])))
            monkeypatch.setattr(rt, "inspect", real)

            async def refuse(pid: int, chain: str, drop_table: bool) -> tuple[str, bool]:
                raise netns.NetnsError("iptables-restore failed (planted)")
            monkeypatch.setattr(netns, "remove_chain", refuse)
            with pytest.raises(FailedPrecondition, match="planted"):
                await fm.heal(fault.id)
            assert [f.id for f in fm.list()] == [fault.id]
            monkeypatch.undo()
            assert (await fm.heal(fault.id)).healed and fm.list() == []
    asyncio.run(main())
