"""Registration, resolution, fallback and watch against real etcd + CoreDNS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from driver.cli import main as cli_main
from driver.discovery import DiscoveryError, Resolver, register, watch
from shakedown.skydns import Record, domain_path, key_to_name, service_path
from tests.support.agentproc import wait_for


def _domain() -> str:
    """A fresh subdomain of the stack's zone: tests never see each other's records."""
    return f"d{uuid.uuid4().hex[:8]}.shakedown.test"


def _resolver(stack, domain: str, **kw) -> Resolver:  # type: ignore[no-untyped-def]
    return Resolver(domain, stack.coredns.address, stack.etcd.endpoint, **kw)


def test_layout_round_trips() -> None:
    assert domain_path("a.example.com") == "/skydns/com/example/a"
    key = service_path("scheduler", "example.com") + "/s1"
    assert key == "/skydns/com/example/_tcp/_scheduler/s1"
    assert key_to_name(key) == "s1._scheduler._tcp.example.com"
    rec = Record.from_json('{"host":"10.0.0.1","port":7,"priority":1,"weight":2,"x":true}')
    assert Record.from_json(rec.to_json()) == rec


def test_registration_resolves_through_srv_and_a(dns_stack) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    with register(
        "scheduler",
        "s1",
        "127.0.0.11",
        7001,
        ttl=10,
        priority=5,
        weight=7,
        etcd=dns_stack.etcd.endpoint,
        domain=domain,
    ):
        res = _resolver(dns_stack, domain).resolve("scheduler")
        assert res.path == "srv"
        [ep] = res.endpoints
        assert (ep.host, ep.port, ep.priority) == ("127.0.0.11", 7001, 5)
        assert ep.weight == 100  # CoreDNS rescales a lone record's weight to 100
        assert ep.target == f"s1._scheduler._tcp.{domain}."
        a = _resolver(dns_stack, domain, order=("a",), default_port=9).resolve("scheduler")
        assert [(e.host, e.port) for e in a.endpoints] == [("127.0.0.11", 9)]


def test_several_instances_are_all_returned_with_relative_weights(dns_stack) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    regs = [
        register(
            "scheduler",
            f"s{i}",
            f"127.0.0.{20 + i}",
            7000 + i,
            ttl=10,
            weight=w,
            etcd=dns_stack.etcd.endpoint,
            domain=domain,
        )
        for i, w in enumerate((1, 3, 4))
    ]
    try:
        res = _resolver(dns_stack, domain).resolve("scheduler")
        got = {(e.host, e.port): e.weight for e in res.endpoints}
        assert got == {("127.0.0.20", 7000): 12, ("127.0.0.21", 7001): 37, ("127.0.0.22", 7002): 50}
        etcd_only = _resolver(dns_stack, domain, order=("etcd",)).resolve("scheduler")
        assert {(e.host, e.port, e.weight) for e in etcd_only.endpoints} == {
            ("127.0.0.20", 7000, 1),
            ("127.0.0.21", 7001, 3),
            ("127.0.0.22", 7002, 4),
        }
    finally:
        for r in regs:
            r.deregister()
    assert _resolver(dns_stack, domain, order=("etcd",)).lookup_etcd("scheduler") == []


REGISTRANT = textwrap.dedent("""
    import sys, time
    from driver.discovery import register
    etcd, domain = sys.argv[1:3]
    reg = register("scheduler", "doomed", "127.0.0.30", 7030, ttl=3, etcd=etcd, domain=domain)
    print(reg.key, flush=True)
    time.sleep(600)
""")


def test_killed_registrant_disappears_within_its_lease(dns_stack) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    proc = subprocess.Popen(
        [sys.executable, "-c", REGISTRANT, dns_stack.etcd.endpoint, domain],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert proc.stdout is not None
        key = proc.stdout.readline().strip()
        assert key.endswith("/_tcp/_scheduler/doomed")
        resolver = _resolver(dns_stack, domain, order=("srv",))
        assert resolver.resolve("scheduler").endpoints[0].port == 7030
        # Alive past its TTL: the lease is kept alive.
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 4, 10, what="one lease TTL")
        assert dns_stack.client.get(key)[0] is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        wait_for(lambda: dns_stack.client.get(key)[0] is None, 3 + 3, what="the lease to expire")
        assert time.monotonic() - killed <= 3 + 3

        # DNS follows once its (5 s) cache lapses.
        def gone() -> bool:
            try:
                resolver.resolve("scheduler", fresh=True)
                return False
            except DiscoveryError:
                return True

        wait_for(gone, 10, what="DNS to stop answering")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_coredns_down_falls_back_and_etcd_down_is_a_clear_error(private_dns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    with register(
        "scheduler", "s1", "127.0.0.40", 7040, ttl=10, etcd=private_dns.etcd.endpoint, domain=domain
    ):
        resolver = _resolver(
            private_dns, domain, timeout=1.0, static={"scheduler": ["127.0.0.41:7041"]}
        )
        assert resolver.resolve("scheduler").path == "srv"
        private_dns.coredns.stop()
        res = resolver.resolve("scheduler", fresh=True)
        assert res.path == "etcd"
        assert [a.path for a in res.attempts if not a.ok] == ["srv", "a"]
        assert res.endpoints[0].host == "127.0.0.40"
        private_dns.etcd.stop()
        res = resolver.resolve("scheduler", fresh=True)
        assert res.path == "static" and res.endpoints[0].port == 7041
    no_static = _resolver(private_dns, domain, order=("srv", "etcd"), timeout=1.0)
    with pytest.raises(DiscoveryError) as err:
        no_static.resolve("scheduler")
    assert f"etcd unreachable at {private_dns.etcd.endpoint}" in str(err.value)


def test_answers_are_cached_for_their_ttl(dns_stack) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    now = [100.0]
    resolver = _resolver(dns_stack, domain, clock=lambda: now[0])
    with register(
        "scheduler", "s1", "127.0.0.50", 7050, ttl=10, etcd=dns_stack.etcd.endpoint, domain=domain
    ):
        first = resolver.resolve("scheduler")
        assert not first.cached and first.ttl > 0
        assert resolver.resolve("scheduler").cached
        now[0] += first.ttl + 0.1
        assert not resolver.resolve("scheduler").cached


def test_watch_reports_additions_and_removals(dns_stack) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    first = register(
        "scheduler", "s1", "127.0.0.60", 7060, ttl=10, etcd=dns_stack.etcd.endpoint, domain=domain
    )
    with watch(dns_stack.etcd.endpoint, domain, "scheduler") as w:
        changes = iter(w)
        snap = next(changes)
        assert (snap.kind, snap.name) == ("added", f"s1._scheduler._tcp.{domain}")
        second = register(
            "scheduler",
            "s2",
            "127.0.0.61",
            7061,
            ttl=10,
            etcd=dns_stack.etcd.endpoint,
            domain=domain,
        )
        added = next(changes)
        assert added.kind == "added" and added.record is not None
        assert added.record.port == 7061
        first.deregister()
        removed = next(changes)
        assert (removed.kind, removed.name) == ("removed", f"s1._scheduler._tcp.{domain}")
        second.deregister()


def test_cli_resolve_json_and_register_until_sigterm(dns_stack, capsys) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns = dns_stack.dns
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driver.cli",
            "discover",
            "register",
            "scheduler",
            "c1",
            "--host",
            "127.0.0.70",
            "--port",
            "7070",
            "--ttl",
            "5",
            "--etcd",
            dns_stack.etcd.endpoint,
            "--domain",
            domain,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("registered ")
        code = cli_main(
            ["discover", "resolve", "scheduler", "--dns", dns, "--domain", domain, "--json"]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["path"] == "srv"
        assert out["endpoints"][0]["port"] == 7070
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "deregistered" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Deregistration is immediate, not a lease expiry.
    etcd_path = _resolver(dns_stack, domain, order=("etcd",))
    assert etcd_path.lookup_etcd("scheduler") == []
    code = cli_main(
        [
            "discover",
            "resolve",
            "scheduler",
            "--dns",
            dns,
            "--domain",
            domain,
            "--order",
            "etcd",
            "--etcd",
            dns_stack.etcd.endpoint,
        ]
    )
    assert code == 1
    assert "no records" in capsys.readouterr().err
