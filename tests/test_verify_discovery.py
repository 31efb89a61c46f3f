"""`verify discovery` finds planted flaws in a real CoreDNS + etcd, and is quiet when healthy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from driver.cli import main as cli_main
from driver.control.process import free_port
from driver.discovery import register
from driver.verify.discovery import verify_discovery

ZONE = "shakedown.test"


@pytest.fixture()
def live_service() -> Iterator[int]:
    """A plaintext gRPC server reporting SERVING: a healthy endpoint to register."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def _verify(stack, **kw):  # type: ignore[no-untyped-def]
    dns = stack.dns
    return verify_discovery(dns, stack.etcd.endpoint, ZONE, timeout=1.0, **kw)


def test_healthy_setup_reports_clean(private_dns, live_service: int) -> None:  # type: ignore[no-untyped-def]
    regs = [
        register(
            "scheduler",
            f"s{i}",
            "127.0.0.1",
            live_service,
            ttl=10,
            weight=w,
            etcd=private_dns.etcd.endpoint,
            domain=ZONE,
        )
        for i, w in enumerate((1, 3))
    ]
    try:
        report = _verify(private_dns, static={"scheduler": [f"127.0.0.1:{live_service}"]})
    finally:
        for r in regs:
            r.deregister()
    assert report.registrations == 2
    assert report.ok
    assert [f.code for f in report.findings] == ["fallback-ok"], report.findings


def test_planted_flaws_are_found(private_dns, live_service: int) -> None:  # type: ignore[no-untyped-def]
    etcd = private_dns.etcd.endpoint
    base = "/skydns/test/shakedown"
    dead_port = free_port()
    # 1. no lease: stays forever after its registrant dies
    private_dns.put(f"{base}/_tcp/_api/stale", {"host": "127.0.0.1", "port": live_service})
    # 2. a service key without _tcp: no SRV query can match it
    private_dns.put(f"{base}/_api/nolabel", {"host": "127.0.0.1", "port": live_service})
    # 3. a dead endpoint, properly leased
    dead = register("api", "dead", "127.0.0.1", dead_port, ttl=10, etcd=etcd, domain=ZONE)
    # 4. several registrants writing one key
    private_dns.put(f"{base}/_tcp/_api/shared", {"host": "127.0.0.1", "port": live_service})
    private_dns.put(f"{base}/_tcp/_api/shared", {"host": "127.0.0.2", "port": live_service})
    # 5. a DNS TTL longer than the lease
    lease = private_dns.client.lease(10)
    private_dns.put(
        f"{base}/_tcp/_api/longttl",
        {"host": "127.0.0.1", "port": live_service, "ttl": 600},
        lease=lease,
    )
    # 6. a record outside every zone the server serves
    private_dns.put(
        "/skydns/org/example/_tcp/_api/elsewhere", {"host": "127.0.0.1", "port": live_service}
    )
    try:
        report = _verify(private_dns, static={"api": [f"127.0.0.1:{dead_port}"]})
    finally:
        dead.deregister()
    found = {(f.code, f.key.rsplit("/", 1)[-1]) for f in report.findings}
    assert ("no-lease", "stale") in found
    assert ("no-proto-label", "nolabel") in found
    assert ("dead-endpoint", "dead") in found
    assert ("several-writers", "shared") in found
    assert ("ttl-exceeds-lease", "longttl") in found
    assert ("outside-zone", "elsewhere") in found
    assert "fallback-dead" in report.codes()
    assert not report.ok
    by_code = {f.code: f for f in report.findings}
    assert by_code["no-proto-label"].severity == "error"
    assert by_code["no-lease"].severity == "warning"
    assert "_api._tcp.shakedown.test" in by_code["no-proto-label"].message


def test_dns_disagreeing_with_etcd_is_an_error(private_dns, live_service: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second CoreDNS with a long cache keeps serving an old port after etcd changed."""
    stale_dns = private_dns.start_coredns(tmp_path / "cached", cache_ttl=300)
    try:
        key = "/skydns/test/shakedown/_tcp/_api/moved"
        lease = private_dns.client.lease(60)
        private_dns.put(key, {"host": "127.0.0.1", "port": live_service, "ttl": 30}, lease=lease)
        dns = "{}:{}".format(*stale_dns.address)
        verify_discovery(dns, private_dns.etcd.endpoint, ZONE, check_endpoints=False)  # warm it
        private_dns.put(
            key, {"host": "127.0.0.1", "port": live_service + 1, "ttl": 30}, lease=lease
        )
        report = verify_discovery(dns, private_dns.etcd.endpoint, ZONE, check_endpoints=False)
    finally:
        stale_dns.stop()
    [finding] = [f for f in report.findings if f.code == "dns-disagrees"]
    assert f"port {live_service} (expected {live_service + 1} from etcd)" in finding.message


def test_unregistered_in_dns_and_cli_exit_codes(private_dns, capsys) -> None:  # type: ignore[no-untyped-def]
    dns = private_dns.dns
    code = cli_main(
        [
            "verify",
            "discovery",
            "--dns",
            dns,
            "--etcd",
            private_dns.etcd.endpoint,
            "--domain",
            ZONE,
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] and out["registrations"] == 0
    private_dns.put("/skydns/test/shakedown/_tcp/_api/bad", {"port": 1})  # no host: malformed
    code = cli_main(
        ["verify", "discovery", "--dns", dns, "--etcd", private_dns.etcd.endpoint, "--domain", ZONE]
    )
    text = capsys.readouterr().out
    assert code == 1
    assert "malformed-record" in text and "ERROR" in text


def test_etcd_unreachable_is_reported(private_dns) -> None:  # type: ignore[no-untyped-def]
    private_dns.etcd.stop()
    report = _verify(private_dns)
    assert [f.code for f in report.findings] == ["etcd-unreachable"]
    assert private_dns.etcd.endpoint in report.findings[0].message
