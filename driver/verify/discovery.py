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
from driver.verify.discovery_dns import DnsChecker, Subject
from driver.verify.probes import probe
from driver.verify.skydns_model import Service, parse_service, service_labels
from shakedown import etcdclient
from shakedown.skydns import (
    DEFAULT_PREFIX,
    LayoutError,
    check_label,
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
    record: Service | None  # as CoreDNS reads the value; None when it cannot
    lease: int
    version: int
    mod_revision: int
    service: str | None  # "_scheduler" of ..._scheduler._tcp...; None when not service-like
    proto: str | None
    owner: str | None  # the SRV name a client asks: _scheduler._tcp.zone


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
    service, proto, owner = service_labels(name)
    try:
        record: Service | None = parse_service(key, value)
        problem = None
    except LayoutError as exc:
        record, problem = None, f"{exc}: CoreDNS fails every query that reads this key (SERVFAIL)"
    if record is not None:
        problem = _out_of_range(record)
    return Entry(key, name, record, meta_lease, version, mod_rev, service, proto, owner), problem


def _out_of_range(s: Service) -> str | None:
    """Values CoreDNS accepts but serves mangled (it casts them to 16 bits), or not at all."""
    if not s.host:
        return f'{s.key}: value needs a non-empty "host"; CoreDNS serves nothing for it'
    for what, v in (("port", s.port), ("priority", s.priority), ("weight", s.weight)):
        if not 0 <= v <= 0xFFFF:
            return f'{s.key}: "{what}" {v} is outside 0-65535; DNS serves it as {v & 0xFFFF}'
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
    """Read every registration under `prefix`, query DNS for each, probe endpoints.

    `service` ("svc" or "_svc") keeps only that service's records; none at
    all is an error, since its clients find nothing.
    """
    from driver.discovery.resolver import parse_hostport

    zones = [normalize_domain(d) for d in ([domain] if isinstance(domain, str) else domain)]
    dns_addr = parse_hostport(dns, "--dns")
    if service is not None:
        check_label("service", service.removeprefix("_"))
    wanted = None if service is None else "_" + service.removeprefix("_").lower()
    report = DiscoveryReport(dns, etcd, zones)
    try:
        client = etcdclient.connect(etcd, timeout=timeout)
        resp = client.get_prefix_response(prefix.rstrip("/") + "/")
    except Exception as exc:
        report.add("error", "etcd-unreachable", etcdclient.describe_error(etcd, exc))
        return report
    services, unparsable = _model_services(resp.kvs)
    try:
        entries = _collect(report, resp.kvs, prefix, wanted)
        leases = _lease_ttls(client, entries)
        _check_history(report, client, entries)
    finally:
        client.close()
    if wanted is not None and report.registrations == 0:
        report.add(
            "error",
            "no-registrations",
            f"{wanted}: no record of this service under {prefix.rstrip('/')}/; "
            "its clients find nothing",
        )
    checker = DnsChecker(dns_addr, zones, services, unparsable, prefix, timeout, report.add)
    for e in entries:
        _check_entry(report, e, checker, leases, check_endpoints, certs, timeout)
    if static:
        _check_fallback(report, zones[0], etcd, static, timeout, prefix)
    return report


def _model_services(kvs: Sequence[Any]) -> tuple[list[Service], list[str]]:
    """Every value as CoreDNS reads it (siblings set one another's weights), and the
    keys it cannot parse (they fail every query that reads them)."""
    services, bad = [], []
    for kv in kvs:
        key = kv.key.decode()
        try:
            services.append(parse_service(key, kv.value))
        except LayoutError:
            bad.append(key)
    return services, bad


def _collect(
    report: DiscoveryReport, kvs: Sequence[Any], prefix: str, wanted: str | None
) -> list[Entry]:
    entries = []
    for kv in kvs:
        key = kv.key.decode()
        e, problem = _entry(key, kv.value, kv.lease, kv.version, kv.mod_revision, prefix)
        if wanted is not None and (e.service or "").lower() != wanted:
            continue
        if e.record is not None and not e.record.host and e.record.text:
            continue  # a TXT record: CoreDNS serves it without a host; not a registration
        report.registrations += 1
        if problem:
            report.add("error", "malformed-record", problem, key)
            continue
        entries.append(e)
    return entries


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
                rec = parse_service(e.key, kv.value)
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
    checker: DnsChecker,
    leases: Mapping[int, int],
    check_endpoints: bool,
    certs: Path | None,
    timeout: float,
) -> None:
    assert e.record is not None
    rec = e.record
    if not e.lease:
        report.add(
            "warning",
            "no-lease",
            f"{e.name}: written without an etcd lease; it stays after its registrant dies",
            e.key,
        )
    if rec.port and e.service is not None and e.proto is None:
        report.add("error", "no-proto-label", _no_proto_message(e), e.key)
    served_ttl = checker.check(Subject(e.key, e.name, e.owner, rec.host))
    lease_ttl = leases.get(e.lease) if e.lease else None
    if lease_ttl is not None and served_ttl is not None and served_ttl > lease_ttl:
        report.add(
            "warning",
            "ttl-exceeds-lease",
            f"{e.name}: DNS serves it with TTL {served_ttl}s, longer than its {lease_ttl}s "
            "lease; resolvers may keep it after it is gone",
            e.key,
        )
    elif lease_ttl is not None and rec.ttl > lease_ttl:  # masked here, e.g. by a short cache
        report.add(
            "warning",
            "ttl-exceeds-lease",
            f"{e.name}: its ttl {rec.ttl}s is longer than its lease ({lease_ttl}s); "
            "resolvers may serve it after it is gone",
            e.key,
        )
    if check_endpoints and rec.port:
        p = probe(rec.host, rec.port, timeout=timeout, certs=certs)
        if p.verdict in ("tcp-refused", "tcp-timeout"):
            report.add("error", "dead-endpoint", f"{e.name}: {p.detail}", e.key)
        elif p.verdict == "not-serving":
            report.add("error", "unhealthy-endpoint", f"{e.name}: gRPC health: {p.detail}", e.key)
        elif p.verdict == "tls-needed":
            report.add("info", "health-unchecked", f"{e.name}: {p.detail}", e.key)


def _no_proto_message(e: Entry) -> str:
    labels = e.name.split(".")
    i = labels.index(e.service) if e.service in labels else 0
    owner = ".".join([labels[i], "_tcp", *labels[i + 1 :]])
    return (
        f"{e.name}: has a port but no _tcp/_udp label in its key, so no SRV query "
        f"({owner}) can match it; its clients' SRV lookups find nothing"
    )


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
