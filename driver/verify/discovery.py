"""`verify discovery`: compare what etcd holds with what DNS answers, and report flaws.

Works against any CoreDNS + etcd (SkyDNS layout) deployment: the zone(s),
the key prefix and the services are parameters. Each finding has a severity:
`error` (discovery is broken now), `warning` (it will break: stale records,
overlong TTLs), `info`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from driver.discovery.resolver import DiscoveryError, Resolver
from driver.verify.probes import probe
from shakedown import etcdclient
from shakedown.skydns import (
    DEFAULT_PREFIX,
    PROTOCOLS,
    LayoutError,
    Record,
    key_to_name,
    normalize_domain,
)

SEVERITIES = ("error", "warning", "info")
HISTORY_DEPTH = 10  # past versions read per key when looking for several writers


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    code: str
    message: str
    key: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One etcd key under the prefix, with what we learnt about it."""

    key: str
    name: str
    record: Record | None
    lease: int
    version: int
    mod_revision: int
    service: str | None  # "_scheduler" of ..._scheduler._tcp...; None when not service-like
    proto: str | None


@dataclass(slots=True)
class DiscoveryReport:
    dns: str
    etcd: str
    zones: list[str]
    registrations: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: str, code: str, message: str, key: str = "") -> None:
        self.findings.append(Finding(severity, code, message, key))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_json(self) -> dict[str, object]:
        return {
            "dns": self.dns,
            "etcd": self.etcd,
            "zones": self.zones,
            "ok": self.ok,
            "registrations": self.registrations,
            "findings": [asdict(f) for f in self.findings],
            "summary": {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES},
        }


def _entry(
    key: str, value: bytes, meta_lease: int, version: int, mod_rev: int, prefix: str
) -> tuple[Entry, str | None]:
    name = key_to_name(key, prefix)
    labels = name.split(".")
    proto = next((lab for lab in labels if lab in PROTOCOLS), None)
    service = None
    if proto is not None:
        i = labels.index(proto)
        service = labels[i - 1] if i > 0 and labels[i - 1].startswith("_") else None
    else:
        service = next((lab for lab in labels[1:] if lab.startswith("_")), None)
    try:
        record: Record | None = Record.from_json(value, key)
        problem = None
    except LayoutError as exc:
        record, problem = None, str(exc)
    return Entry(key, name, record, meta_lease, version, mod_rev, service, proto), problem


def _zone_of(name: str, zones: Sequence[str]) -> str | None:
    for zone in sorted(zones, key=len, reverse=True):
        if name == zone or name.endswith("." + zone):
            return zone
    return None


def verify_discovery(
    dns: str,
    etcd: str,
    domain: str | Sequence[str],
    *,
    service: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    static: Mapping[str, Sequence[str]] | None = None,
    certs: Path | None = None,
    check_endpoints: bool = True,
    timeout: float = 2.0,
) -> DiscoveryReport:
    """Read every registration under `prefix`, query DNS for each, probe endpoints."""
    from driver.discovery.resolver import parse_hostport

    zones = [normalize_domain(d) for d in ([domain] if isinstance(domain, str) else domain)]
    dns_addr = parse_hostport(dns, "--dns")
    report = DiscoveryReport(dns, etcd, zones)
    try:
        client = etcdclient.connect(etcd, timeout=timeout)
        resp = client.get_prefix_response(prefix.rstrip("/") + "/")
    except Exception as exc:
        report.add("error", "etcd-unreachable", etcdclient.describe_error(etcd, exc))
        return report
    try:
        entries = _collect(report, resp.kvs, prefix, service)
        leases = _lease_ttls(client, entries)
        _check_history(report, client, entries)
    finally:
        client.close()
    resolvers = {
        z: Resolver(z, dns_addr, etcd, ("srv",), timeout=timeout, prefix=prefix) for z in zones
    }
    weights = _expected_weights(entries)
    for e in entries:
        _check_entry(report, e, zones, resolvers, leases, weights, check_endpoints, certs, timeout)
    if static:
        _check_fallback(report, zones[0], etcd, static, timeout, prefix)
    return report


def _collect(
    report: DiscoveryReport, kvs: Sequence[Any], prefix: str, service: str | None
) -> list[Entry]:
    entries = []
    for kv in kvs:
        key = kv.key.decode()
        e, problem = _entry(
            key,
            kv.value,
            kv.lease,
            kv.version,
            kv.mod_revision,
            prefix,
        )
        if service is not None and e.service != f"_{service}":
            continue
        report.registrations += 1
        if problem:
            report.add("error", "malformed-record", problem, key)
            continue
        entries.append(e)
    return entries


def _expected_weights(entries: Sequence[Entry]) -> dict[str, int]:
    """SRV weights as CoreDNS serves them: rescaled per priority to floor(100*w/sum), min 1.

    A weight of 0 counts as 100. Comparing raw etcd weights with DNS answers
    would flag every healthy multi-instance service.
    """
    groups: dict[tuple[str, str | None, int], list[Entry]] = {}
    for e in entries:
        if e.record is not None and e.service is not None:
            parent = e.name.split(".", 1)[1]  # the SRV owner: _svc._tcp.zone
            groups.setdefault((parent, e.proto, e.record.priority), []).append(e)
    expected: dict[str, int] = {}
    for members in groups.values():
        total = sum((m.record.weight if m.record else 0) or 100 for m in members)
        for m in members:
            w = (m.record.weight if m.record else 0) or 100
            expected[m.key] = max(1, (100 * w) // total)
    return expected


def _lease_ttls(client: Any, entries: Sequence[Entry]) -> dict[int, int]:
    ttls: dict[int, int] = {}
    for lease in {e.lease for e in entries if e.lease}:
        try:
            info = client.get_lease_info(lease)
            ttls[lease] = int(info.grantedTTL)
        except Exception:
            continue
    return ttls


def _check_history(report: DiscoveryReport, client: Any, entries: Sequence[Entry]) -> None:
    """Several hosts writing one key show up as differing values in its revision history."""
    for e in entries:
        if e.version < 2 or e.record is None:
            continue
        seen = {(e.record.host, e.record.port)}
        leases = {e.lease}
        rev = e.mod_revision - 1
        for _ in range(min(e.version - 1, HISTORY_DEPTH)):
            try:
                past = client.get_response(e.key, revision=rev)
            except Exception:
                break  # compacted: history is gone
            if not past.kvs:
                break
            kv = past.kvs[0]
            try:
                rec = Record.from_json(kv.value, e.key)
                seen.add((rec.host, rec.port))
            except LayoutError:
                pass
            leases.add(kv.lease)
            rev = kv.mod_revision - 1
        if len(seen) > 1:
            hosts = ", ".join(f"{h}:{p}" for h, p in sorted(seen))
            report.add(
                "warning",
                "several-writers",
                f"{e.name}: {len(seen)} different endpoints wrote this key ({hosts}); "
                "instances overwrite one another instead of registering their own key",
                e.key,
            )


def _check_entry(
    report: DiscoveryReport,
    e: Entry,
    zones: Sequence[str],
    resolvers: Mapping[str, Resolver],
    leases: Mapping[int, int],
    weights: Mapping[str, int],
    check_endpoints: bool,
    certs: Path | None,
    timeout: float,
) -> None:
    assert e.record is not None
    rec = e.record
    zone = _zone_of(e.name, zones)
    if zone is None:
        report.add(
            "warning",
            "outside-zone",
            f"{e.name}: not in any zone served ({', '.join(zones)}); DNS will not answer it",
            e.key,
        )
    if not e.lease:
        report.add(
            "warning",
            "no-lease",
            f"{e.name}: written without an etcd lease; it stays after its registrant dies",
            e.key,
        )
    elif e.lease in leases and rec.ttl > leases[e.lease]:
        report.add(
            "warning",
            "ttl-exceeds-lease",
            f"{e.name}: DNS TTL {rec.ttl}s is longer than its lease ({leases[e.lease]}s); "
            "resolvers will serve it after it is gone",
            e.key,
        )
    if rec.port and e.proto is None:
        report.add(
            "error",
            "no-proto-label",
            f"{e.name}: has a port but no _tcp/_udp label in its key, so no SRV query "
            f"({e.service or '_service'}._tcp.{zone or zones[0]}) can match it",
            e.key,
        )
    if zone is not None and e.service is not None and e.proto is not None:
        _check_dns(
            report, e, zone, resolvers[zone], weights.get(e.key, rec.weight), leases.get(e.lease)
        )
    if check_endpoints and rec.port:
        p = probe(rec.host, rec.port, timeout=timeout, certs=certs)
        if p.verdict in ("tcp-refused", "tcp-timeout"):
            report.add("error", "dead-endpoint", f"{e.name}: {p.detail}", e.key)
        elif p.verdict == "not-serving":
            report.add("error", "unhealthy-endpoint", f"{e.name}: gRPC health: {p.detail}", e.key)
        elif p.verdict == "tls-needed":
            report.add("info", "health-unchecked", f"{e.name}: {p.detail}", e.key)


def _check_dns(
    report: DiscoveryReport,
    e: Entry,
    zone: str,
    resolver: Resolver,
    weight: int,
    lease_ttl: int | None,
) -> None:
    assert e.record is not None and e.service is not None and e.proto is not None
    service = e.service.removeprefix("_")
    resolver.proto = e.proto
    try:
        endpoints = resolver.lookup_srv(service)
    except Exception as exc:
        report.add("error", "dns-failure", f"{e.name}: SRV query failed: {exc}", e.key)
        return
    target = e.name.rstrip(".") + "."
    mine = [ep for ep in endpoints if ep.target.lower() == target.lower()]
    if not mine:
        report.add(
            "error",
            "not-in-dns",
            f"{e.name}: registered in etcd but absent from the SRV answer for "
            f"_{service}.{e.proto}.{zone}",
            e.key,
        )
        return
    rec = e.record
    ep = mine[0]
    diffs = [
        f"{what} {dns_v} != etcd {etcd_v}"
        for what, dns_v, etcd_v in (
            ("port", ep.port, rec.port),
            ("priority", ep.priority, rec.priority),
            ("weight", ep.weight, weight),
        )
        if dns_v != etcd_v
    ]
    if rec.host != ep.host and _is_ip(rec.host):
        diffs.insert(0, f"host {ep.host} != etcd {rec.host}")
    if diffs:
        report.add("error", "dns-disagrees", f"{e.name}: DNS answers {'; '.join(diffs)}", e.key)
    if lease_ttl is not None and ep.ttl > lease_ttl:
        report.add(
            "warning",
            "ttl-exceeds-lease",
            f"{e.name}: DNS serves it with TTL {ep.ttl}s, longer than its {lease_ttl}s "
            "lease; resolvers may keep it after it is gone",
            e.key,
        )


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _check_fallback(
    report: DiscoveryReport,
    zone: str,
    etcd: str,
    static: Mapping[str, Sequence[str]],
    timeout: float,
    prefix: str,
) -> None:
    """With DNS unreachable, does the configured fallback still find each service?"""
    from driver.control.process import free_port

    dead_dns = ("127.0.0.1", free_port())  # nothing listens there: DNS is "down"
    for service, endpoints in static.items():
        resolver = Resolver(
            zone,
            dead_dns,
            etcd,
            ("srv", "etcd", "static"),
            {service: endpoints},
            timeout=min(timeout, 0.5),
            prefix=prefix,
        )
        started = time.monotonic()
        try:
            res = resolver.resolve(service)
        except DiscoveryError as exc:
            report.add("error", "fallback-broken", f"{service}: with DNS down: {exc}")
            continue
        dead = [
            ep.address
            for ep in res.endpoints
            if probe(ep.host, ep.port, timeout=timeout, grpc_health=False).verdict.startswith(
                "tcp-"
            )
        ]
        if dead:
            report.add(
                "error",
                "fallback-dead",
                f"{service}: with DNS down the {res.path} path answers, but "
                f"{', '.join(dead)} refuse connections",
            )
        else:
            report.add(
                "info",
                "fallback-ok",
                f"{service}: with DNS down, the {res.path} path answers in "
                f"{time.monotonic() - started:.2f}s",
            )


def render(report: DiscoveryReport) -> str:
    lines = [
        f"discovery: dns {report.dns}, etcd {report.etcd}, zones {', '.join(report.zones)}: "
        f"{report.registrations} registration(s)"
    ]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for f in sorted(report.findings, key=lambda f: order[f.severity]):
        lines.append(f"  {f.severity.upper():7} {f.code:20} {f.message}")
    n = len(report.errors)
    lines.append("no errors" if report.ok else f"{n} error(s)")
    return "\n".join(lines)
