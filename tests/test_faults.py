"""Faults (issue 11): partitions and container faults against real containers and real
traffic; each heals exactly (iptables-save byte-identical), alone, on its duration, or
when its session ends, even after the driver or the agent was SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from driver.client import AgentClient
from driver.faults import FaultSpec, heal_all, heal_fault, inject_fault, list_faults
from driver.session import SessionHandle
from driver.types import Container, ContainerSpec
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound, PolicyError
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.agentproc import AgentProcess, wait_for

pytestmark = pytest.mark.docker
PORT = "7000"
SERVE = ["nc", "-ll", "-p", PORT, "-e", "echo", "ok"]


def save(docker_client: docker.DockerClient, cid: str) -> str:
    """iptables-save of the container's namespace, without its timestamp comments."""
    pid = docker_client.api.inspect_container(cid)["State"]["Pid"]
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables-save"], check=True,
                         capture_output=True, text=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))


def ip(c: Container) -> str:
    return next(iter(c.ip_addresses.values()))


def talks(client: AgentClient, src: Container, dst: Container) -> bool:
    """A TCP connect from src to dst's server succeeds (it times out after 1 s if cut)."""
    res = client.exec(src, ["nc", "-w", "1", ip(dst), PORT], timeout=10)
    return res.exit_code == 0 and b"ok" in res.stdout


def box(s: SessionHandle, network: str, tag: str, image: str,
        command: list[str] | None = None) -> Container:
    # Managed, so scoped by this run's node label (io.shakedown.* keys are the agent's).
    spec = ContainerSpec(image, command or SERVE, name=f"t{RUN_ID}-{tag}-{uuid.uuid4().hex[:4]}",
                         network=network)
    c = s.run(spec)
    return s.client.inspect(c)


@pytest.fixture()
def private_agent(fresh_agent: AgentProcess,
          docker_client: docker.DockerClient) -> Iterator[AgentProcess]:
    """A private agent, started; a failed test's persistent networks go with it too."""
    yield fresh_agent.start()
    fresh_agent.stop()
    mine = {"label": f"io.shakedown.node={fresh_agent.name}"}
    for c in docker_client.containers.list(all=True, filters=mine):
        c.remove(force=True)
    for n in docker_client.networks.list(filters=mine):
        n.remove()


@pytest.fixture()
def trio(client: AgentClient,
         busybox_image: str) -> Iterator[tuple[SessionHandle, list[Container]]]:
    """Three servers on one session network; the session's close removes them."""
    with client.open_session(ttl=30, labels={"test-run": RUN_ID}) as s:
        net = s.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        yield s, [box(s, net, n, busybox_image) for n in "abc"]


def test_partition_cuts_only_the_grudge_and_heals_byte_identically(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient) -> None:
    s, (a, b, c) = trio
    before = {x.id: save(docker_client, x.id) for x in (a, b, c)}
    assert talks(client, a, b) and talks(client, b, a)
    fault = inject_fault(client, s, FaultSpec.partition({a.name: [b.name]}))
    assert fault.kind == "partition" and fault.mechanism == "iptables-netns"
    assert fault.targets == (a.id,) and fault.chain.startswith("SD-") and not fault.healed
    assert [f.id for f in list_faults(client, s)] == [fault.id]
    assert f":{fault.chain} - " in save(docker_client, a.id)
    assert not talks(client, a, b) and not talks(client, b, a)  # both directions cut
    assert talks(client, a, c) and talks(client, c, a) and talks(client, b, c)
    healed = heal_fault(client, fault)
    assert healed.healed and healed.healed_at is not None
    assert talks(client, a, b) and talks(client, b, a)
    assert {x.id: save(docker_client, x.id) for x in (a, b, c)} == before
    assert list_faults(client, s) == []
    assert heal_fault(client, fault.id).healed  # idempotent


def test_overlapping_partitions_compose_and_heal_one_at_a_time(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient) -> None:
    s, (a, b, c) = trio
    before = {x.id: save(docker_client, x.id) for x in (a, b, c)}
    first = inject_fault(client, s, FaultSpec.partition({a.name: [b.name]}))
    second = inject_fault(client, s, FaultSpec.partition({a.name: [b.name, c.name],
                                                          c.name: [b.name]}))
    assert not talks(client, a, b) and not talks(client, a, c) and not talks(client, c, b)
    heal_fault(client, first)
    rules = save(docker_client, a.id)
    assert first.chain not in rules and f":{second.chain} - " in rules
    assert not talks(client, a, b)  # still cut by the second
    assert not talks(client, a, c) and not talks(client, c, b)
    assert [f.id for f in heal_all(client, s)] == [second.id]
    assert talks(client, a, b) and talks(client, a, c) and talks(client, c, b)
    assert {x.id: save(docker_client, x.id) for x in (a, b, c)} == before


def test_container_faults_are_recorded_and_heal(
        client: AgentClient, busybox_image: str) -> None:
    trap = ["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done"]
    with client.open_session(ttl=30) as s:
        net = s.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        x = box(s, net, "x", busybox_image, trap)
        # kill with a signal: the container's trap exits 3; healing starts it again.
        killed = inject_fault(client, s, FaultSpec.kill(x.id, "TERM"))
        assert killed.params["signal"] == "SIGTERM" and killed.mechanism == "docker-engine"
        wait_for(lambda: client.inspect(x).state == "exited", 10, what="SIGTERM to end it")
        assert client.inspect(x).exit_code == 3
        assert "started" in heal_fault(client, killed).heal_note
        assert client.inspect(x).state == "running"
        # stop, frozen until healed
        stopped = inject_fault(client, s, FaultSpec.stop(x.id, timeout=1))
        assert client.inspect(x).state == "exited"
        assert [f.id for f in list_faults(client, s)] == [stopped.id]
        heal_fault(client, stopped)
        assert client.inspect(x).state == "running"
        # pause with a duration: the agent unpauses it by itself
        paused = inject_fault(client, s, FaultSpec.pause(x.id, duration=1))
        assert client.inspect(x).state == "paused" and paused.expires_at is not None
        wait_for(lambda: client.inspect(x).state == "running", 1 + 5, what="auto-unpause")
        wait_for(lambda: not list_faults(client, s), 5, what="the expired fault to go")
        assert heal_fault(client, paused).heal_note.startswith("duration elapsed")
        # pause frozen until healed, then healed by the session's end
        frozen = inject_fault(client, s, FaultSpec.pause(x.id))
        assert frozen.expires_at is None and client.inspect(x).state == "paused"
        assert [f.id for f in heal_all(client, s)] == [frozen.id]
        assert client.inspect(x).state == "running"
        restarted = inject_fault(client, s, FaultSpec.restart(x.id, timeout=1))
        assert client.inspect(x).state == "running" and restarted.kind == "restart"
        heal_fault(client, restarted)
        # A stopped container of a closing session is removed, not started again first.
        inject_fault(client, s, FaultSpec.stop(x.id, timeout=1))
        since = int(time.time()) - 1
        s.close()
    until = int(time.time()) + 1
    actions = [e.get("Action") for e in docker.from_env().events(
        since=since, until=until, decode=True, filters={"container": x.id})]
    after = actions[len(actions) - actions[::-1].index("stop"):]  # after the fault's stop
    assert "destroy" in after and "start" not in after, actions


def test_node_info_reports_the_fault_mechanisms(client: AgentClient) -> None:
    caps = {c.name: c for c in client.node_info().capabilities}
    assert caps["iptables-netns"].available and "nsenter" in caps["iptables-netns"].detail
    assert caps["partition"].available
    assert caps["proxy"].available and caps["proxy"].detail
    assert "netem" in caps and caps["netem"].detail


def test_closing_the_session_or_its_duration_heals_a_partition(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient) -> None:
    _, (a, b, c) = trio
    before = save(docker_client, a.id)
    with client.open_session(ttl=30) as other:
        inject_fault(client, other, FaultSpec.partition({a.name: [b.name]}))
        timed = inject_fault(client, other, FaultSpec.partition({a.name: [c.name]}, duration=1))
        assert timed.expires_at is not None and not talks(client, a, c)
        wait_for(lambda: talks(client, a, c), 1 + 5, what="the timed partition to heal")
        assert [f.kind for f in list_faults(client, other)] == ["partition"]
        assert not talks(client, a, b)
    assert talks(client, a, b)  # the close healed it
    assert save(docker_client, a.id) == before


def test_observer_may_list_but_not_inject_or_heal(
        agent_proc: AgentProcess, client: AgentClient, busybox_image: str) -> None:
    with client.open_session(ttl=30) as s, agent_proc.client("viewer") as viewer:
        target = s.run(ContainerSpec(busybox_image, ["sleep", "300"]))
        fault = inject_fault(client, s, FaultSpec.pause(target.id))
        assert [f.id for f in list_faults(viewer, s)] == [fault.id]  # the admin's fault
        heal_fault(client, fault)
        with pytest.raises(PolicyError):
            inject_fault(viewer, s, FaultSpec.kill("nope"))
        with pytest.raises(PolicyError):
            heal_all(viewer)


def test_bad_input_names_the_field_and_leaves_nothing(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient) -> None:
    s, (a, b, _) = trio
    before = save(docker_client, a.id)
    cases = [
        (FaultSpec.partition({f"t{RUN_ID}-no-such": [b.name]}), InvalidArgument,
         "spec.partition.grudges[0].target"),
        (FaultSpec.partition({a.name: []}), InvalidArgument, "spec.partition.grudges[0].peers"),
        (FaultSpec.partition({}), InvalidArgument, "spec.partition.grudges"),
        (FaultSpec.partition({a.name: [b.name]}, duration=-1), InvalidArgument,
         "spec.duration_seconds"),
        (FaultSpec.partition({a.name: [b.name], b.name: ["nope-" + RUN_ID]}), InvalidArgument,
         "spec.partition.grudges[1].peers[0]"),
        (FaultSpec.partition({a.name: ["fe80::1"]}), InvalidArgument,
         "spec.partition.grudges[0].peers[0]"),
        (FaultSpec.kill(a.id, "SIGNOPE"), InvalidArgument, "spec.container.signal"),
        (FaultSpec.pause(f"t{RUN_ID}-no-such"), InvalidArgument, "spec.container.container"),
        (FaultSpec("bogus-kind-is-caught-by-the-driver"), ValueError, None),
    ]
    for spec, error, field in cases:
        with pytest.raises(error) as err:
            inject_fault(client, s, spec)
        if field is not None:
            assert getattr(err.value, "field", None) == field, (spec, err.value)
    assert list_faults(client, s) == []
    assert save(docker_client, a.id) == before
    for bad in ("", "f-nothex", "x" * 500):
        with pytest.raises(InvalidArgument) as err:
            heal_fault(client, bad)
        assert err.value.field == "fault_id"
    with pytest.raises(NotFound) as nf:
        heal_fault(client, "f-000000000000")
    assert nf.value.field == "fault_id"


def test_a_failing_second_target_removes_the_first_targets_chain(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient) -> None:
    s, (a, b, c) = trio
    before = save(docker_client, a.id)
    client.stop(c, timeout=1)  # not running: no namespace to partition
    with pytest.raises(FailedPrecondition) as err:
        inject_fault(client, s, FaultSpec.partition({a.name: [b.name], c.name: [b.name]}))
    assert err.value.field == "spec.partition.grudges[1].target"
    assert save(docker_client, a.id) == before and list_faults(client, s) == []


DRIVER = textwrap.dedent("""
    import sys, time
    from driver.client import AgentClient
    from driver.faults import FaultSpec, inject_fault
    address, certs, keys, target, peer = sys.argv[1:6]
    c = AgentClient.from_certs_dir(address, certs, keys)
    s = c.open_session(ttl=2)
    f = inject_fault(c, s, FaultSpec.partition({target: [peer]}))
    print(f.id, flush=True)
    time.sleep(600)
""")


def test_fault_heals_within_ttl_after_its_driver_is_sigkilled(
        agent_proc: AgentProcess, client: AgentClient,
        trio: tuple[SessionHandle, list[Container]], docker_client: docker.DockerClient) -> None:
    _, (a, b, _) = trio
    before = save(docker_client, a.id)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, agent_proc.address,
                               str(agent_proc.certs), str(agent_proc.keys), a.name, b.name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        fid = driver.stdout.readline().strip()
        assert fid.startswith("f-") and not talks(client, a, b)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        killed = time.monotonic()
        wait_for(lambda: fid not in {f.id for f in list_faults(client)}, 2 + 2,
                 what="the dead driver's fault to heal")
        assert time.monotonic() - killed <= 4
        assert save(docker_client, a.id) == before and talks(client, a, b)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)


def test_partition_is_gone_when_the_agent_restarts_after_a_sigkill(
        private_agent: AgentProcess, busybox_image: str,
        docker_client: docker.DockerClient) -> None:
    fresh_agent = private_agent
    with fresh_agent.client() as client:
        # The containers' session is persistent: it (and they) outlive the agent.
        keep = client.open_session(ttl=30, persistent=True)
        net = keep.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        a, b = box(keep, net, "a", busybox_image), box(keep, net, "b", busybox_image)
        before = {x.id: save(docker_client, x.id) for x in (a, b)}
        short = client.open_session(ttl=2, keepalive=False)
        fault = inject_fault(client, short, FaultSpec.partition(
            {a.name: [b.name], b.name: [a.name]}))
        assert not talks(client, a, b)
    assert fresh_agent.stop(signal.SIGKILL) == -signal.SIGKILL
    killed = time.monotonic()
    assert fault.chain in save(docker_client, a.id)  # the rules outlived the agent
    wait_for(lambda: time.monotonic() - killed > 2.5, 10, what="the session's TTL to pass")
    fresh_agent.start()
    # Healed during start-up, before the agent served its first call.
    assert {x.id: save(docker_client, x.id) for x in (a, b)} == before
    with fresh_agent.client() as again:
        assert list_faults(again) == []
        assert talks(again, a, b)
        again.close_session(keep.id)


def test_live_faults_outlive_an_agent_crash_and_their_timers_are_rearmed(
        private_agent: AgentProcess, busybox_image: str,
        docker_client: docker.DockerClient) -> None:
    fresh_agent = private_agent
    with fresh_agent.client() as client:
        keep = client.open_session(ttl=30, persistent=True)
        net = keep.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        a, b, c = (box(keep, net, n, busybox_image) for n in "abc")
        before = save(docker_client, a.id)
        # A nemesis session of its own: it owns no container, only its faults.
        nemesis = client.open_session(ttl=30, keepalive=False)
        held = inject_fault(client, nemesis, FaultSpec.partition({a.name: [b.name]}))
        timed = inject_fault(client, nemesis, FaultSpec.partition({a.name: [c.name]},
                                                                  duration=6))
    assert fresh_agent.stop(signal.SIGKILL) == -signal.SIGKILL
    fresh_agent.start()
    with fresh_agent.client() as again:
        assert again.keep_alive(nemesis.id).id == nemesis.id  # recovered from the journal
        assert {f.id for f in list_faults(again, nemesis.id)} == {held.id, timed.id}
        assert not talks(again, a, b) and not talks(again, a, c)
        wait_for(lambda: [f.id for f in list_faults(again, nemesis.id)] == [held.id],
                 6 + 5, what="the re-armed timer to heal the timed partition")
        assert talks(again, a, c) and not talks(again, a, b)
        assert again.close_session(nemesis.id) == 0  # its end heals the other
        assert talks(again, a, b) and save(docker_client, a.id) == before
        again.close_session(keep.id)


def test_a_half_applied_fault_is_undone_at_start(
        private_agent: AgentProcess, busybox_image: str,
        docker_client: docker.DockerClient) -> None:
    """An agent SIGKILLed between journaling a fault and finishing it: the next start
    undoes whatever part was applied, even though the session is alive."""
    from agent.faults.journal import Entry, Journal, Undo
    from shakedown.agent.v1 import agent_pb2 as pb

    fresh_agent = private_agent
    with fresh_agent.client() as client:
        keep = client.open_session(ttl=30, persistent=True)
        net = keep.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        a, b = box(keep, net, "a", busybox_image), box(keep, net, "b", busybox_image)
    assert fresh_agent.stop(signal.SIGKILL) == -signal.SIGKILL
    before = save(docker_client, a.id)
    chain, pid = "SD-0123456789ab", client_pid(docker_client, a.id)
    batch = f"*filter\n:{chain} - [0:0]\n-A {chain} -s {ip(b)}/32 -j DROP\n" \
            f"-I INPUT 1 -j {chain}\nCOMMIT\n"  # the OUTPUT jump never made it
    subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables-restore", "--noflush"],
                   input=batch, text=True, check=True)
    fault = pb.Fault(id="f-0123456789ab", kind=pb.FAULT_KIND_PARTITION, session_id=keep.id,
                     targets=[a.id], mechanism="iptables-netns")
    journal = Journal(fresh_agent.workdir / f"state-{fresh_agent.name}")
    undo = Undo("unchain", a.id, chain, pid, drop_table="*filter" not in before)
    journal.save(Entry(fault, [undo]))
    assert chain in save(docker_client, a.id)
    fresh_agent.start()
    assert save(docker_client, a.id) == before
    assert journal.load() == []
    with fresh_agent.client() as again:
        assert list_faults(again) == [] and talks(again, b, a)
        again.close_session(keep.id)


def client_pid(docker_client: docker.DockerClient, cid: str) -> int:
    return int(docker_client.api.inspect_container(cid)["State"]["Pid"])


def test_adopted_containers_take_faults_like_managed_ones(
        client: AgentClient, trio: tuple[SessionHandle, list[Container]],
        docker_client: docker.DockerClient, busybox_image: str) -> None:
    s, (a, _, _) = trio
    net = next(iter(a.ip_addresses))
    foreign = docker_client.containers.run(  # not the agent's: adopted by the run label
        busybox_image, SERVE, detach=True, network=net, labels={RUN_LABEL: RUN_ID},
        name=f"t{RUN_ID}-adopted-{uuid.uuid4().hex[:4]}")
    try:
        adopted = client.inspect(foreign.id)
        assert not adopted.managed and talks(client, a, adopted)
        before = save(docker_client, foreign.id)
        cut = inject_fault(client, s, FaultSpec.partition({foreign.name: [a.name]}))
        assert not talks(client, a, adopted)
        frozen = inject_fault(client, s, FaultSpec.pause(foreign.id))
        assert client.inspect(foreign.id).state == "paused"
        assert {f.id for f in heal_all(client, s)} == {cut.id, frozen.id}
        assert client.inspect(foreign.id).state == "running" and talks(client, a, adopted)
        assert save(docker_client, foreign.id) == before
    finally:
        foreign.remove(force=True)


def test_heal_all_heals_every_session_on_the_node(
        private_agent: AgentProcess, busybox_image: str,
        docker_client: docker.DockerClient) -> None:
    fresh_agent = private_agent  # a private agent: "all" must not reach other tests' faults
    with fresh_agent.client() as client, client.open_session(ttl=30) as s1, \
            client.open_session(ttl=30) as s2:
        net = s1.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        a, b = box(s1, net, "a", busybox_image), box(s1, net, "b", busybox_image)
        before = save(docker_client, a.id)
        f1 = inject_fault(client, s1, FaultSpec.partition({a.name: [b.name]}))
        f2 = inject_fault(client, s2, FaultSpec.pause(b.id))
        with pytest.raises(InvalidArgument) as err:
            _call_heal_all_without_scope(client)
        assert err.value.field == "session_id"
        assert {f.id for f in heal_all(client)} == {f1.id, f2.id}
        assert list_faults(client) == [] and save(docker_client, a.id) == before
        assert client.inspect(b).state == "running"


def _call_heal_all_without_scope(client: AgentClient) -> None:
    from driver.faults.client import _call
    from shakedown.agent.v1 import agent_pb2 as pb

    _call(client, "HealAll", pb.HealAllRequest(), None)
