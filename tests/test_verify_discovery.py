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
    base = ["verify", "discovery", "--etcd", private_dns.etcd.endpoint, "--domain", ZONE]
    for bad, field in (
        (["--dns", "nonsense"], "--dns"),
        (["--dns", dns, "--service", "a b"], "service"),
    ):
        assert cli_main(base + bad) == 2
        assert field in capsys.readouterr().err


def test_etcd_unreachable_is_reported(private_dns) -> None:  # type: ignore[no-untyped-def]
    private_dns.etcd.stop()
    report = _verify(private_dns)
    assert [f.code for f in report.findings] == ["etcd-unreachable"]
    assert private_dns.etcd.endpoint in report.findings[0].message


# -- regression layouts (issue 8 §2), planted with etcdctl, read back with dig ---------

BASE = "/skydns/test/shakedown"


def _found(report) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Everything reported, as (code, severity, key): tests compare the whole set."""
    return {(f.code, f.severity, f.key) for f in report.findings}


def _srv_lines(stack, name: str) -> set[tuple[int, int, int, str]]:  # type: ignore[no-untyped-def]
    """dig's SRV answer as (priority, weight, port, target)."""
    status, answer = stack.dig(name, "SRV")
    assert status == "NOERROR", (status, answer)
    out = set()
    for line in answer:
        f = line.split()
        if f[3] == "SRV":
            out.add((int(f[4]), int(f[5]), int(f[6]), f[7]))
    return out


def test_service_without_proto_label_is_found_and_broken(private_dns, live_service, capsys) -> None:  # type: ignore[no-untyped-def]
    """`/skydns/test/shakedown/acme/_svc`: the service is `_svc`, whatever `--service` spelling."""
    key = private_dns.etcdctl_put(f"{BASE}/acme/_svc", {"host": "127.0.0.1", "port": live_service})
    # What a client sees: no SRV record where clients look, but the name's A record works.
    assert private_dns.dig("_svc._tcp.acme.shakedown.test", "SRV") == ("NXDOMAIN", [])
    status, answer = private_dns.dig("_svc.acme.shakedown.test", "A")
    assert status == "NOERROR" and answer[0].split()[-1] == "127.0.0.1"
    want = {("no-lease", "warning", key), ("no-proto-label", "error", key)}
    for spelling in ("svc", "_svc", "SVC"):
        report = _verify(private_dns, service=spelling)
        assert report.registrations == 1
        assert _found(report) == want, (spelling, report.findings)
    [msg] = [f.message for f in report.findings if f.code == "no-proto-label"]
    assert "(_svc._tcp.acme.shakedown.test)" in msg and "_service" not in msg
    # With an instance label under the service: the same, for that key only.
    web = private_dns.etcdctl_put(
        f"{BASE}/acme/_web/i1", {"host": "127.0.0.1", "port": live_service}
    )
    report = _verify(private_dns)
    assert report.registrations == 2
    assert _found(report) == want | {("no-lease", "warning", web), ("no-proto-label", "error", web)}
    [msg] = [f.message for f in report.findings if f.code == "no-proto-label" and f.key == web]
    assert "(_web._tcp.acme.shakedown.test)" in msg
    for spelling in ("svc", "_svc"):
        argv = ["verify", "discovery", "--dns", private_dns.dns, "--etcd",
                private_dns.etcd.endpoint, "--domain", ZONE, "--service", spelling]  # fmt: skip
        assert cli_main(argv) == 1
        assert "no-proto-label" in capsys.readouterr().out


def test_asking_for_an_absent_service_is_not_clean(private_dns, capsys) -> None:  # type: ignore[no-untyped-def]
    lease = private_dns.etcdctl_lease(60)
    private_dns.etcdctl_put(f"{BASE}/_tcp/_api/a1", {"host": "127.0.0.1", "port": 1}, lease)
    report = _verify(private_dns, service="nosuch", check_endpoints=False)
    assert _found(report) == {("no-registrations", "error", "")}
    argv = ["verify", "discovery", "--dns", private_dns.dns, "--etcd",
            private_dns.etcd.endpoint, "--domain", ZONE, "--service", "nosuch"]  # fmt: skip
    assert cli_main(argv) == 1
    assert "no-registrations" in capsys.readouterr().out


def test_missing_weight_and_priority_zero_follow_coredns_defaults(
    private_dns, live_service
) -> None:  # type: ignore[no-untyped-def]
    """No weight, `priority: 0`, mixed groups: DNS rescales; none of it is a finding."""
    lease = private_dns.etcdctl_lease(60)
    rec = {"host": "127.0.0.1", "port": live_service, "ttl": 30}
    layout = {
        "a": {**rec, "weight": 10},  # priority missing: 10
        "b": {**rec, "weight": 30, "priority": 10},
        "c": {**rec},  # no weight: counts as 100 among a, b, c, d
        "d": {**rec, "priority": 0, "weight": 0},  # explicit zeros: priority 10, weight 100
        "e": {**rec, "priority": 20},  # alone at its priority
    }
    for name, r in layout.items():
        private_dns.etcdctl_put(f"{BASE}/_tcp/_api/{name}", r, lease)
    served = _srv_lines(private_dns, "_api._tcp.shakedown.test")
    t = "._api._tcp.shakedown.test."
    # floor(100 / 240 * w), the total of priority 10 being 10 + 30 + 100 + 100
    assert served == {
        (10, 4, live_service, "a" + t),
        (10, 12, live_service, "b" + t),
        (10, 41, live_service, "c" + t),
        (10, 41, live_service, "d" + t),
        (20, 100, live_service, "e" + t),
    }
    report = _verify(private_dns)
    assert report.registrations == 5
    assert _found(report) == set(), report.findings


def test_group_of_three_with_one_weight_missing_is_not_flagged(private_dns, live_service) -> None:  # type: ignore[no-untyped-def]
    """The issue's case: DNS said 66 where the old code expected 16 for the no-weight record."""
    lease = private_dns.etcdctl_lease(60)
    for name, w in (("x", 25), ("y", 25), ("z", None)):
        r = {"host": "127.0.0.1", "port": live_service, "ttl": 30}
        private_dns.etcdctl_put(f"{BASE}/_tcp/_web/{name}", r if w is None else {**r, "weight": w},
                                lease)  # fmt: skip
    weights = {
        line[3].split(".")[0]: line[1] for line in _srv_lines(private_dns, "_web._tcp." + ZONE)
    }
    assert weights == {"x": 16, "y": 16, "z": 66}
    assert _found(_verify(private_dns)) == set()


def test_unserved_zone_is_outside_every_served_zone(private_dns, live_service) -> None:  # type: ignore[no-untyped-def]
    """Records of a zone the server refuses are checked against DNS, not just for a lease."""
    lease = private_dns.etcdctl_lease(60)
    srv = private_dns.etcdctl_put(
        "/skydns/org/example/_tcp/_api/e1", {"host": "127.0.0.1", "port": live_service}, lease
    )
    a = private_dns.etcdctl_put("/skydns/org/example/db", {"host": "127.0.0.9"}, lease)
    assert private_dns.dig("_api._tcp.example.org", "SRV")[0] == "REFUSED"
    assert private_dns.dig("db.example.org", "A")[0] == "REFUSED"
    # Not a zone we said is served: a warning. One we said is served: an error.
    report = _verify(private_dns)
    assert _found(report) == {("outside-zone", "warning", srv), ("outside-zone", "warning", a)}
    assert all("outside every served zone" in f.message for f in report.findings)
    report = verify_discovery(private_dns.dns, private_dns.etcd.endpoint, [ZONE, "example.org"],
                              timeout=1.0)  # fmt: skip
    assert _found(report) == {("outside-zone", "error", srv), ("outside-zone", "error", a)}
    assert not report.ok


def test_address_records_are_checked_against_dns(private_dns) -> None:  # type: ignore[no-untyped-def]
    """A/AAAA/CNAME-only keys are served, except one that a key under it hides from A queries."""
    lease = private_dns.etcdctl_lease(60)
    private_dns.etcdctl_put(f"{BASE}/db", {"host": "127.0.0.5"}, lease)
    private_dns.etcdctl_put(f"{BASE}/www", {"host": "db.shakedown.test"}, lease)
    private_dns.etcdctl_put(f"{BASE}/v6", {"host": "::1"}, lease)
    app = private_dns.etcdctl_put(f"{BASE}/app", {"host": "127.0.0.7"}, lease)
    replica = private_dns.etcdctl_put(f"{BASE}/app/replica", {"host": "127.0.0.6"}, lease)
    status, answer = private_dns.dig("app.shakedown.test", "A")
    assert status == "NOERROR" and [ln.split()[-1] for ln in answer] == ["127.0.0.6"]
    report = _verify(private_dns)
    assert report.registrations == 5
    assert _found(report) == {("not-in-dns", "error", app)}, report.findings
    assert replica not in {f.key for f in report.findings}


def test_service_label_without_instance(private_dns, live_service) -> None:  # type: ignore[no-untyped-def]
    """A record at `_svc._tcp.zone` itself is served, unless instances under it hide it."""
    lease = private_dns.etcdctl_lease(60)
    rec = {"host": "127.0.0.1", "port": live_service, "ttl": 30}
    private_dns.etcdctl_put(f"{BASE}/_tcp/_solo", rec, lease)
    both = private_dns.etcdctl_put(f"{BASE}/_tcp/_both", rec, lease)
    private_dns.etcdctl_put(f"{BASE}/_tcp/_both/i1", rec, lease)
    assert _srv_lines(private_dns, "_solo._tcp." + ZONE) == {
        (10, 100, live_service, "_solo._tcp.shakedown.test.")
    }
    assert _srv_lines(private_dns, "_both._tcp." + ZONE) == {
        (10, 100, live_service, "i1._both._tcp.shakedown.test.")
    }
    report = _verify(private_dns)
    assert _found(report) == {("not-in-dns", "error", both)}, report.findings
    assert _found(_verify(private_dns, service="solo")) == set()


def test_dead_endpoint_is_flagged(private_dns, live_service) -> None:  # type: ignore[no-untyped-def]
    lease = private_dns.etcdctl_lease(60)
    dead = private_dns.etcdctl_put(
        f"{BASE}/_tcp/_api/dead", {"host": "127.0.0.1", "port": free_port(), "ttl": 30}, lease
    )
    private_dns.etcdctl_put(
        f"{BASE}/_tcp/_api/live", {"host": "127.0.0.1", "port": live_service, "ttl": 30}, lease
    )
    report = _verify(private_dns)
    assert _found(report) == {("dead-endpoint", "error", dead)}, report.findings
    assert _found(_verify(private_dns, check_endpoints=False)) == set()


def test_mix_of_leased_and_unleased_flags_only_the_unleased(private_dns, live_service) -> None:  # type: ignore[no-untyped-def]
    lease = private_dns.etcdctl_lease(60)
    rec = {"host": "127.0.0.1", "port": live_service, "ttl": 30}
    leased = [private_dns.etcdctl_put(f"{BASE}/_tcp/_api/l{i}", rec, lease) for i in range(2)]
    unleased = [private_dns.etcdctl_put(f"{BASE}/_tcp/_api/u{i}", rec) for i in range(2)]
    report = _verify(private_dns)
    assert _found(report) == {("no-lease", "warning", k) for k in unleased}
    assert report.ok and not set(leased) & {f.key for f in report.findings}


def test_model_matches_what_coredns_serves(private_dns) -> None:  # type: ignore[no-untyped-def]
    """skydns_model's SRV answer equals dig's, record for record, on varied layouts."""
    import random

    from driver.verify.skydns_model import expected_srv, parse_service

    rng = random.Random(8)
    lease = private_dns.etcdctl_lease(60)
    planted: dict[str, dict[str, object]] = {}
    for svc in ("alpha", "beta", "gamma", "delta"):
        for i in range(rng.randint(1, 6)):
            rec: dict[str, object] = {"port": 7000 + i, "ttl": 30}
            rec["host"] = f"127.0.1.{i}" if rng.random() < 0.7 else f"h{i}.{svc}.shakedown.test"
            if (p := rng.choice(["-", 0, 0, 5, 10, 20])) != "-":
                rec["priority"] = p
            if (w := rng.choice(["-", 0, 1, 3, 7, 50, 100, 999, None])) != "-":
                rec["weight"] = w  # None is JSON null: Go leaves 0
            planted[f"{BASE}/_tcp/_{svc}/i{i}"] = rec
    planted[f"{BASE}/_tcp/_delta/deep/i9"] = {"host": "127.0.2.9", "port": 7009, "Priority": 5}
    for key, rec in planted.items():
        private_dns.etcdctl_put(key, rec, lease)
    services = [parse_service(k, json.dumps(r)) for k, r in planted.items()]
    for svc in ("alpha", "beta", "gamma", "delta"):
        owner = f"_{svc}._tcp.{ZONE}"
        model = {
            (e.priority, e.weight, e.port, e.target)
            for e in expected_srv(owner, services, "/skydns").values()
        }
        assert model == _srv_lines(private_dns, owner), svc
    report = _verify(private_dns, check_endpoints=False)
    assert report.registrations == len(planted)
    assert _found(report) == set(), report.findings


def test_a_value_coredns_cannot_parse_fails_its_whole_service(private_dns) -> None:  # type: ignore[no-untyped-def]
    """`"port": "80"` breaks Go's json.Unmarshal: DNS answers SERVFAIL for its siblings too."""
    lease = private_dns.etcdctl_lease(60)
    good = private_dns.etcdctl_put(f"{BASE}/_tcp/_api/good", {"host": "127.0.0.1", "port": 80},
                                   lease)  # fmt: skip
    bad = private_dns.etcdctl_put(f"{BASE}/_tcp/_api/bad", {"host": "127.0.0.1", "port": "80"},
                                  lease)  # fmt: skip
    assert private_dns.dig("_api._tcp." + ZONE, "SRV")[0] == "SERVFAIL"
    report = _verify(private_dns, check_endpoints=False)
    assert _found(report) == {("malformed-record", "error", bad), ("dns-failure", "error", good)}
    [failure] = [f for f in report.findings if f.code == "dns-failure"]
    assert f"CoreDNS cannot parse {bad}" in failure.message


def test_upper_case_key_is_never_served(private_dns) -> None:  # type: ignore[no-untyped-def]
    lease = private_dns.etcdctl_lease(60)
    key = private_dns.etcdctl_put(f"{BASE}/_tcp/_API/i1", {"host": "127.0.0.1", "port": 80},
                                  lease)  # fmt: skip
    assert private_dns.dig("_API._tcp." + ZONE, "SRV")[0] == "NXDOMAIN"
    report = _verify(private_dns, service="api", check_endpoints=False)
    assert _found(report) == {("not-in-dns", "error", key)}
    assert "upper-case" in report.findings[0].message
