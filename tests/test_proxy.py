"""PROXY faults (issue 11 §4) through a real agent, in front of a real echo container,
with real traffic on loopback: latency, cut_after, reset_peer, live toxic updates,
toxicity, healing (listener and connections gone), bad input, netem honesty, and
proxies across an agent restart."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from driver.client import AgentClient
from driver.faults import FaultSpec, Toxic, heal_fault, inject_fault, list_faults, update_toxics
from driver.session import SessionHandle
from driver.types import Container, ContainerSpec
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound, PolicyError
from tests.conftest import RUN_ID
from tests.support.agentproc import AgentProcess, wait_for

pytestmark = pytest.mark.docker
PORT = 7000
ECHO = ["nc", "-ll", "-p", str(PORT), "-e", "cat"]
SLACK = 0.5  # upper tolerance on a loaded 2-core machine


def ip(c: Container) -> str:
    return next(iter(c.ip_addresses.values()))


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def rtt(sock: socket.socket, msg: bytes = b"ping\n") -> float:
    start = time.monotonic()
    sock.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = sock.recv(len(msg) - len(got))
        assert chunk, "the echo closed early"
        got += chunk
    assert got == msg
    return time.monotonic() - start


def median_rtt(sock: socket.socket, n: int = 5) -> float:
    return statistics.median(rtt(sock) for _ in range(n))


def echoing(host: str, port: int) -> socket.socket:
    """A connection whose echo answers (nc forks cat per connection: poll, don't sleep)."""
    deadline = time.monotonic() + 10
    while True:
        sock = None
        try:
            sock = connect(host, port)
            rtt(sock)
            return sock
        except (AssertionError, OSError):
            if sock is not None:
                sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling interval, bounded by the deadline


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def listeners(pid: int) -> set[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


@pytest.fixture()
def echo(client: AgentClient, busybox_image: str) -> Iterator[tuple[SessionHandle, Container]]:
    """An echo server on a session network; the session's close removes it."""
    with client.open_session(ttl=30, labels={"test-run": RUN_ID}) as s:
        net = s.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        box = s.run(ContainerSpec(busybox_image, ECHO, name=f"t{RUN_ID}-echo-"
                                  f"{uuid.uuid4().hex[:4]}", network=net))
        box = client.inspect(box)
        echoing(ip(box), PORT).close()  # up before any test measures it
        yield s, box


def test_latency_adds_the_configured_delay(
        client: AgentClient, echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    with echoing(ip(box), PORT) as direct:
        base = median_rtt(direct)
    fault = inject_fault(client, s, FaultSpec.latency(box.name, PORT, 100))
    assert fault.kind == "proxy" and fault.mechanism == "proxy"
    assert fault.targets == (box.id,) and fault.params["upstream"] == f"{ip(box)}:{PORT}"
    host, port = fault.listen
    assert host == "127.0.0.1" and port > 0
    with echoing(host, port) as sock:
        slow = median_rtt(sock)
    assert 0.1 <= slow < base + 0.1 + SLACK, (base, slow)
    heal_fault(client, fault)


def test_cut_after_closes_at_t_and_reset_peer_sends_rst(
        client: AgentClient, echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    cut = inject_fault(client, s, FaultSpec.proxy(box.name, PORT, [Toxic.cut_after(400)]))
    with connect(*cut.listen) as sock:
        opened = time.monotonic()
        sock.settimeout(5)
        rtt(sock)  # forwards until then
        while sock.recv(100):
            pass
        took = time.monotonic() - opened
    assert 0.4 <= took < 0.4 + SLACK, took
    rst = inject_fault(client, s, FaultSpec.proxy(box.name, PORT, [Toxic.reset_peer(100)]))
    with connect(*rst.listen) as sock:
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
    heal_fault(client, cut)
    heal_fault(client, rst)


def test_toxics_changed_on_a_live_proxy_reach_an_open_connection(
        client: AgentClient, echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    fault = inject_fault(client, s, FaultSpec.proxy(box.name, PORT))
    with echoing(*fault.listen) as sock:
        assert median_rtt(sock) < 0.05
        added = update_toxics(client, fault, [Toxic.latency(100, name="slow")])
        assert added.params["toxics"] == "slow:latency"
        assert 0.1 <= median_rtt(sock) < 0.1 + SLACK
        assert update_toxics(client, fault, [Toxic.latency(100, name="slow")]).id == fault.id
        update_toxics(client, fault, [])  # full state: none
        assert median_rtt(sock) < 0.05
        update_toxics(client, fault, [Toxic.latency(300, toxicity=0.0)])
        assert median_rtt(sock) < 0.05  # toxicity 0: applies to no connection
        with echoing(*fault.listen) as fresh:
            assert median_rtt(fresh) < 0.05
    listed = list_faults(client, s)
    assert [f.id for f in listed] == [fault.id] and listed[0].params["toxics"] == "latency:latency"
    with pytest.raises(InvalidArgument) as err:
        update_toxics(client, fault, [Toxic.latency(60_001)])
    assert err.value.field == "toxics[0].latency_ms"
    heal_fault(client, fault)
    with pytest.raises(NotFound):
        update_toxics(client, fault, [])


def test_heal_and_session_close_close_the_listener_and_its_connections(
        agent_proc: AgentProcess, client: AgentClient,
        echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    assert agent_proc.proc is not None
    before = listeners(agent_proc.proc.pid)
    fault = inject_fault(client, s, FaultSpec.latency(box.name, PORT, 50))
    addr = fault.listen
    assert f"127.0.0.1:{addr[1]}" in listeners(agent_proc.proc.pid)
    with echoing(*addr) as sock:
        healed = heal_fault(client, fault)
        assert healed.healed and "proxy closed with 1 connection" in healed.heal_note
        sock.settimeout(5)
        assert sock.recv(100) == b""  # its connection went with it
    assert refused(*addr) and list_faults(client, s) == []
    assert listeners(agent_proc.proc.pid) == before
    with client.open_session(ttl=30) as other:
        again = inject_fault(client, other, FaultSpec.proxy(box.name, PORT))
        echoing(*again.listen).close()
    assert refused(*again.listen)  # the session's close healed it
    assert again.id not in {f.id for f in list_faults(client)}
    assert listeners(agent_proc.proc.pid) == before


def test_a_proxy_with_a_duration_heals_itself(
        client: AgentClient, echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    fault = inject_fault(client, s, FaultSpec.latency(box.name, PORT, 50, duration=1))
    assert fault.expires_at is not None
    echoing(*fault.listen).close()
    wait_for(lambda: refused(*fault.listen), 1 + 5, what="the timed proxy to close")
    wait_for(lambda: fault.id not in {f.id for f in list_faults(client, s)}, 5,
             what="the expired proxy to leave ListFaults")
    assert heal_fault(client, fault).heal_note.startswith("duration elapsed")


def test_observer_cannot_update_toxics(
        agent_proc: AgentProcess, client: AgentClient,
        echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    fault = inject_fault(client, s, FaultSpec.proxy(box.name, PORT))
    with agent_proc.client("viewer") as viewer, pytest.raises(PolicyError):
        update_toxics(viewer, fault, [Toxic.latency(10)])
    heal_fault(client, fault)


def test_bad_input_names_the_field_and_leaves_nothing(
        agent_proc: AgentProcess, client: AgentClient,
        echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    assert agent_proc.proc is not None
    before = listeners(agent_proc.proc.pid)
    lat = Toxic.latency(10)
    cases = [
        (FaultSpec.proxy(f"t{RUN_ID}-no-such", PORT), InvalidArgument, "spec.proxy.container"),
        (FaultSpec.proxy(box.name, 0), InvalidArgument, "spec.proxy.port"),
        (FaultSpec.proxy(box.name, 70000), InvalidArgument, "spec.proxy.port"),
        (FaultSpec.latency(box.name, PORT, 60_001), InvalidArgument,
         "spec.proxy.toxics[0].latency_ms"),
        (FaultSpec.latency(box.name, PORT, 10, toxicity=1.5), InvalidArgument,
         "spec.proxy.toxics[0].toxicity"),
        (FaultSpec.proxy(box.name, PORT, [lat, Toxic("nope")]), InvalidArgument,
         "spec.proxy.toxics[1].type"),
        (FaultSpec.proxy(box.name, PORT, [lat, lat]), InvalidArgument,
         "spec.proxy.toxics[1].name"),
        (FaultSpec.proxy(box.name, PORT, [Toxic.bandwidth(-5)]), InvalidArgument,
         "spec.proxy.toxics[0].rate_kbps"),
        (FaultSpec.proxy(box.name, PORT, [lat], listen="nowhere"), InvalidArgument,
         "spec.proxy.listen"),
        (FaultSpec.proxy(box.name, PORT, [lat], network="no-such-net"), InvalidArgument,
         "spec.proxy.network"),
        (FaultSpec.proxy(box.name, PORT, [lat], mechanism="magic"), InvalidArgument,
         "spec.proxy.mechanism"),
        (FaultSpec.proxy(box.name, PORT, [lat], listen="0.0.0.0:0"), PolicyError,
         "spec.proxy.listen"),
        (FaultSpec.latency(box.name, PORT, 10, duration=-1), InvalidArgument,
         "spec.duration_seconds"),
    ]
    for spec, error, field in cases:
        with pytest.raises(error) as err:
            inject_fault(client, s, spec)
        assert getattr(err.value, "field", None) == field, (spec, err.value)
    # A listen address already taken: nothing journaled, nothing listening.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(FailedPrecondition) as err:
            inject_fault(client, s, FaultSpec.proxy(box.name, PORT, listen=busy))
        assert err.value.field == "spec.proxy.listen"
    assert list_faults(client, s) == []
    assert listeners(agent_proc.proc.pid) == before


def _kernel_has_netem() -> tuple[bool, str]:
    """Our own probe, independent of the agent's: a netem qdisc in a scratch netns."""
    if not shutil.which("tc") or not shutil.which("unshare"):
        return False, "no tc or unshare binary"
    res = subprocess.run(["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                          "delay", "1ms"], capture_output=True, text=True)
    return res.returncode == 0, res.stderr.strip() or "ok"


def test_netem_is_reported_honestly_and_used_only_where_it_exists(
        client: AgentClient, echo: tuple[SessionHandle, Container]) -> None:
    s, box = echo
    present, why = _kernel_has_netem()
    caps = {c.name: c for c in client.node_info().capabilities}
    assert caps["netem"].available == present, (caps["netem"], why)
    assert caps["proxy"].available and caps["latency"].available
    spec = FaultSpec.latency(box.name, PORT, 100, mechanism="netem")
    if not present:
        with pytest.raises(FailedPrecondition) as err:
            inject_fault(client, s, spec)
        assert err.value.field == "spec.proxy.mechanism" and "netem" in str(err.value)
        assert list_faults(client, s) == []
        pytest.skip(f"this kernel has no sch_netem ({why}): netem traffic not tested")
    with echoing(ip(box), PORT) as direct:
        base = median_rtt(direct)
    fault = inject_fault(client, s, spec)
    assert fault.mechanism == "netem" and fault.listen == (ip(box), PORT)
    with echoing(*fault.listen) as sock:
        assert 0.1 <= median_rtt(sock) < base + 0.1 + SLACK
    heal_fault(client, fault)
    with echoing(*fault.listen) as sock:
        assert median_rtt(sock) < 0.05


def test_netem_helpers_see_a_real_namespace(echo: tuple[SessionHandle, Container]) -> None:
    """What netem's heal relies on, in the echo container's namespace (no sch_netem
    needed): its interfaces are found, and removing a qdisc that is not there is a no-op."""
    import asyncio

    from agent.faults import netem
    from agent.faults.toxics import parse
    from shakedown.agent.v1 import agent_pb2 as pb

    _, box = echo
    pid = box.pid
    assert asyncio.run(netem.devices(pid)) == ["eth0"]
    assert asyncio.run(netem.remove(pid, netem.handle("f-1a2b00000000"))) == \
        "netem qdisc already gone"
    toxics = parse([pb.Toxic(type="latency", latency_ms=100, jitter_ms=5),
                    pb.Toxic(type="loss", probability=0.25)], "t")
    assert netem.args(toxics) == ["netem", "delay", "100ms", "5ms", "loss", "25.0000%"]
    with pytest.raises(InvalidArgument) as err:
        netem.check(parse([pb.Toxic(type="latency", latency_ms=1, direction="both")], "t"), "t")
    assert err.value.field == "t[0].direction"


def test_a_live_sessions_proxy_comes_back_on_its_port_after_an_agent_sigkill(
        fresh_agent: AgentProcess, busybox_image: str) -> None:
    agent = fresh_agent.start()
    with agent.client() as client:
        keep = client.open_session(ttl=30, persistent=True)
        net = keep.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        box = client.inspect(keep.run(ContainerSpec(
            busybox_image, ECHO, name=f"t{RUN_ID}-echo-{uuid.uuid4().hex[:4]}", network=net)))
        nemesis = client.open_session(ttl=30, keepalive=False)
        live = inject_fault(client, nemesis, FaultSpec.latency(box.name, PORT, 100))
        short = client.open_session(ttl=2, keepalive=False)
        dead = inject_fault(client, short, FaultSpec.proxy(box.name, PORT))
        echoing(*live.listen).close()
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    assert refused(*live.listen)  # the listener died with the agent
    killed = time.monotonic()
    wait_for(lambda: time.monotonic() - killed > 2.5, 10, what="the short TTL to pass")
    agent.start()
    with agent.client() as again:
        assert again.keep_alive(nemesis.id).id == nemesis.id
        faults = {f.id: f for f in list_faults(again)}
        assert set(faults) == {live.id}  # the dead session's proxy was healed at start
        assert faults[live.id].listen == live.listen  # same port: clients keep working
        with echoing(*live.listen) as sock:
            assert 0.1 <= median_rtt(sock) < 0.1 + SLACK  # with its toxics
        assert refused(*dead.listen) or dead.listen == live.listen
        again.close_session(nemesis.id)
        assert refused(*live.listen)
        again.close_session(keep.id)
    assert re.search(r"proxy re-created", agent.log_path.read_text())


def test_a_host_wide_bind_needs_the_operator_flag(
        fresh_agent: AgentProcess, busybox_image: str) -> None:
    fresh_agent.extra_args.append("--allow-proxy-bind")
    agent = fresh_agent.start()
    with agent.client() as client, client.open_session(ttl=30) as s:
        net = s.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        box = client.inspect(s.run(ContainerSpec(
            busybox_image, ECHO, name=f"t{RUN_ID}-echo-{uuid.uuid4().hex[:4]}", network=net)))
        wide = inject_fault(client, s, FaultSpec.proxy(box.name, PORT, listen="0.0.0.0:0"))
        host, port = wide.listen
        assert host == "0.0.0.0" and port > 0
        echoing("127.0.0.1", port).close()  # 0.0.0.0 includes loopback
        paused = inject_fault(client, s, FaultSpec.pause(box.id))
        with pytest.raises(FailedPrecondition) as err:
            update_toxics(client, paused, [Toxic.latency(10)])  # not a proxy
        assert err.value.field == "fault_id"
        heal_fault(client, paused)
        heal_fault(client, wide)
        assert refused("127.0.0.1", port)
