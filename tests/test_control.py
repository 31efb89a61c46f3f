"""driver.control against real processes: etcd 3.4, our CoreDNS build, sleepers.

The DNS assertions double as the record of how CoreDNS's etcd plugin (the
version pinned in tools/coredns/go.mod) answers for the SkyDNS layout.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from driver.control.coredns import render_corefile, skydns_key
from driver.control.etcd import EtcdServer
from driver.control.process import ManagedProcess, alive, free_port, spawn, stop, wait_for
from tests.support.dns import ZONE, DnsStack, start_dns_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStack]:
    s = start_dns_stack(tmp_path_factory.mktemp("dns"))
    yield s
    s.stop()
    assert not alive(s.etcd.pid) and not alive(s.coredns.pid)


def _gone(pid: int) -> bool:
    return not alive(pid) and not Path(f"/proc/{pid}").exists()


# -- process ------------------------------------------------------------------


def _sleeper(tmp_path: Path, *, detach: bool = False, ignore_term: bool = False) -> ManagedProcess:
    code = (
        "import signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    log = tmp_path / "sleeper.log"
    p = spawn("sleeper", [sys.executable, "-c", code], log, detach=detach)
    wait_for(lambda: "ready" in log.read_text(), 10, what="sleeper to start")
    return p


def _orphan(tmp_path: Path) -> int:
    """A sleeper that is not our child (as if started by an earlier CLI run)."""
    log = tmp_path / "orphan.log"
    grandchild = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
    )
    spawn("launcher", [sys.executable, "-c", grandchild], log, detach=False)

    def pid() -> int:
        last = log.read_text().splitlines()[-1].strip()
        return int(last) if last.isdigit() else 0

    return wait_for(pid, 10, what="orphan pid")


def test_stop_never_signals_a_recycled_pid(tmp_path: Path) -> None:
    pid = _orphan(tmp_path)
    assert alive(pid)
    # A record whose PID now belongs to another program (as after PID reuse).
    stale = ManagedProcess("etcd-old", ("etcd", "--name", "x"), pid, tmp_path / "x.log", 0.0)
    assert stale.alive() is False
    assert stale.stop(timeout=1) is False
    assert stop(pid, "/usr/bin/etcd", timeout=1) is False
    assert alive(pid)
    # The right argv[0] stops it, though it is not our child.
    assert stop(pid, sys.executable, timeout=5) is True
    assert not alive(pid)
    assert stop(pid, sys.executable) is False  # already gone: a no-op


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    p = _sleeper(tmp_path, ignore_term=True)
    t0 = time.monotonic()
    assert p.stop(timeout=0.3) is True
    assert _gone(p.pid)
    assert p.stop() is False  # already gone: a no-op
    assert time.monotonic() - t0 < 5


def test_detached_process_has_its_own_session(tmp_path: Path) -> None:
    p = _sleeper(tmp_path, detach=True)
    try:
        assert os.getsid(p.pid) == p.pid != os.getsid(0)
        assert ManagedProcess.from_dict(p.to_dict()) == p
    finally:
        p.stop(sig=signal.SIGKILL)
    assert _gone(p.pid)


def test_free_port_is_bindable_for_tcp_and_udp() -> None:
    import socket

    port = free_port(udp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", port))
        t.bind(("127.0.0.1", port))


# -- etcd ---------------------------------------------------------------------


def test_etcd_starts_healthy_and_stops_without_leftovers(tmp_path: Path) -> None:
    e = EtcdServer.start(tmp_path / "data", tmp_path / "etcd.log", name="solo")
    try:
        assert e.healthy()
        assert e.version().startswith("3.4.")
        assert e.endpoint == f"http://127.0.0.1:{e.port}"
        assert e.host == "127.0.0.1"
    finally:
        assert e.stop() is True
    assert _gone(e.pid)
    assert not e.healthy()


# -- CoreDNS config -----------------------------------------------------------


def test_render_corefile_and_keys() -> None:
    text = render_corefile(
        ["shakedown.test"], dns_port=5300, etcd_endpoints=["http://127.0.0.1:2379"],
        health_port=1, ready_port=2,
    )  # fmt: skip
    assert text.startswith("shakedown.test.:5300 {")
    assert "bind 127.0.0.1" in text and "cache 5" in text and "path /skydns" in text
    assert "cache" not in render_corefile(
        ["a."], dns_port=1, etcd_endpoints=["http://h:1"], health_port=2, ready_port=3, cache_ttl=0
    )
    with pytest.raises(ValueError):
        render_corefile(
            ["evil. {\n}"], dns_port=1, etcd_endpoints=["http://h:1"], health_port=2, ready_port=3
        )
    assert skydns_key("x.shakedown.test.") == "/skydns/test/shakedown/x"
    assert skydns_key("_grpc._tcp.svc.Shakedown.test") == "/skydns/test/shakedown/svc/_tcp/_grpc"


# -- CoreDNS answers ----------------------------------------------------------


def test_a_record_from_etcdctl_put(stack: DnsStack) -> None:
    stack.etcdctl("put", "/skydns/test/shakedown/x", '{"host":"127.0.0.9"}')
    for tcp in (False, True):
        r = stack.query("x.shakedown.test.", "A", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        [rrset] = r.answer
        assert [rd.address for rd in rrset] == ["127.0.0.9"]
        # The cache rewrites TTLs to cache_ttl (5) - not the etcd plugin's 300.
        assert rrset.ttl <= 5


def test_srv_record_with_address_in_additional(stack: DnsStack) -> None:
    stack.put(
        "/skydns/test/shakedown/svc/_tcp/_grpc/i1",
        {"host": "127.0.0.9", "port": 7701, "priority": 10, "weight": 5},
    )
    r = stack.query("_grpc._tcp.svc.shakedown.test.", "SRV")
    [srv] = r.answer
    [rd] = list(srv)
    # CoreDNS names an IP-host instance after its key and adds its A record.
    target = "i1._grpc._tcp.svc.shakedown.test."
    assert (rd.priority, rd.port, rd.target.to_text()) == (10, 7701, target)
    # Weight is rescaled to a share (percent) of its priority group: 5/5 -> 100.
    assert rd.weight == 100
    [extra] = r.additional
    assert extra.name.to_text() == target and extra.rdtype == dns.rdatatype.A
    assert [a.address for a in extra] == ["127.0.0.9"]


def test_srv_weights_are_shares_within_a_priority(stack: DnsStack) -> None:
    base = "/skydns/test/shakedown/wsvc/_tcp/_grpc"
    stack.put(f"{base}/a", {"host": "127.0.0.1", "port": 1, "priority": 10, "weight": 1})
    stack.put(f"{base}/b", {"host": "127.0.0.2", "port": 2, "priority": 10, "weight": 3})
    stack.put(f"{base}/c", {"host": "127.0.0.3", "port": 3, "priority": 20})  # weight 0 -> 100
    [srv] = stack.query("_grpc._tcp.wsvc.shakedown.test.", "SRV").answer
    assert sorted((rd.port, rd.priority, rd.weight) for rd in srv) == [
        (1, 10, 25), (2, 10, 75), (3, 20, 100),
    ]  # fmt: skip


def test_missing_name_and_foreign_zone(stack: DnsStack) -> None:
    r = stack.query("nope.shakedown.test.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    assert stack.query("example.com.", "A").rcode() == dns.rcode.REFUSED


def test_ttls_without_cache_and_change_visibility(stack: DnsStack, tmp_path: Path) -> None:
    raw = stack.start_coredns(tmp_path / "nocache", cache_ttl=0)
    short = stack.start_coredns(tmp_path / "cache1", cache_ttl=1)
    try:
        stack.put("t300.shakedown.test.", {"host": "127.0.0.20"})
        stack.put("t7.shakedown.test.", {"host": "127.0.0.21", "ttl": 7})
        lease = stack.client.lease(10)
        stack.put("tl.shakedown.test.", {"host": "127.0.0.22"}, lease=lease)

        def ttl(name: str) -> int:
            return int(stack.query(name, server=raw).answer[0].ttl)

        assert ttl("t300.shakedown.test.") == 300  # etcd plugin default
        assert ttl("t7.shakedown.test.") == 7  # the record's "ttl"
        assert ttl("tl.shakedown.test.") == 30  # lease TTL, clamped up to 30

        # A changed record is visible through a cache within cache_ttl.
        name = "flip.shakedown.test."
        stack.put(name, {"host": "127.0.0.30"})
        assert stack.query(name, server=short).answer[0][0].address == "127.0.0.30"
        stack.put(name, {"host": "127.0.0.31"})
        t0 = time.monotonic()
        wait_for(
            lambda: stack.query(name, server=short).answer[0][0].address == "127.0.0.31",
            5, what="new address through the cache",
        )  # fmt: skip
        assert time.monotonic() - t0 < 2.5
    finally:
        assert raw.stop() is True and short.stop() is True
    assert _gone(raw.pid) and _gone(short.pid)
    assert not raw.ready()


def test_stack_is_serving(stack: DnsStack) -> None:
    assert stack.zone == ZONE
    assert stack.coredns.ready() and stack.coredns.healthy() and stack.etcd.healthy()


def test_wait_ready_stops_a_process_that_never_gets_ready(tmp_path: Path) -> None:
    proc = spawn("stuck", ["sleep", "30"], tmp_path / "stuck.log", detach=False)
    with pytest.raises(TimeoutError):
        proc.wait_ready(lambda: False, 0.3, "a readiness that never comes")
    assert not proc.alive()


def test_wait_ready_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    proc = spawn("quits", ["sh", "-c", "echo boom; exit 3"], tmp_path / "quits.log", detach=False)
    with pytest.raises(RuntimeError, match="quits exited during start"):
        proc.wait_ready(lambda: False, 10, "a readiness that never comes")
