"""Finding a service the way its own clients do, with fallbacks that say what failed.

`Resolver.resolve(service)` tries each path in the configured order:

- `srv`: an SRV query for `_<service>._tcp.<domain>` to CoreDNS, then the
  targets' addresses (from the additional section, else an A query);
- `a`: A records of `<service>.<domain>` (then `_<service>._tcp.<domain>`),
  with a default port;
- `etcd`: the SkyDNS records read straight from etcd;
- `static`: endpoints from configuration.

The first path that yields endpoints answers; every attempt is recorded, so a
caller (and `verify discovery`) can see that DNS failed and a fallback served.
Answers are cached for their DNS TTL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# Aliased: the Resolver has a field named `dns`.
import dns.exception as dns_exception
import dns.flags as dns_flags
import dns.message as dns_message
import dns.query as dns_query
import dns.rcode as dns_rcode
import dns.rdatatype as dns_rdatatype

from shakedown import etcdclient
from shakedown.skydns import (
    DEFAULT_PREFIX,
    LayoutError,
    Record,
    key_to_name,
    normalize_domain,
    service_name,
    service_path,
)

PATHS = ("srv", "a", "etcd", "static")


class DiscoveryError(LookupError):
    """No path found the service; `attempts` says why each one failed."""

    def __init__(self, service: str, attempts: Sequence[Attempt]) -> None:
        self.service = service
        self.attempts = list(attempts)
        detail = "; ".join(f"{a.path}: {a.error}" for a in attempts) or "no path configured"
        super().__init__(f"cannot resolve {service!r}: {detail}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    priority: int = 0
    weight: int = 0
    target: str = ""
    ttl: int = 0

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Attempt:
    path: str
    ok: bool
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Resolution:
    service: str
    endpoints: tuple[Endpoint, ...]
    path: str
    ttl: float
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False


def parse_hostport(
    value: str, what: str = "address", default_port: int | None = None
) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{what} {value!r}: expected HOST:PORT")
        return value, default_port
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {value!r}: expected HOST:PORT")
    return host, int(port)


@dataclass
class Resolver:
    domain: str
    dns: tuple[str, int] | None = None
    etcd: str | None = None
    order: Sequence[str] = PATHS
    static: Mapping[str, Sequence[str]] = field(default_factory=dict)
    default_port: int | None = None
    timeout: float = 2.0
    prefix: str = DEFAULT_PREFIX
    proto: str = "_tcp"
    # Answers with no TTL (static, etcd without "ttl") are cached this long.
    default_ttl: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, Resolution]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.domain = normalize_domain(self.domain)
        unknown = [p for p in self.order if p not in PATHS]
        if unknown:
            raise ValueError(f"order: unknown path(s) {unknown}; use {PATHS}")

    # -- public ---------------------------------------------------------------------

    def resolve(self, service: str, *, fresh: bool = False) -> Resolution:
        now = self.clock()
        if not fresh:
            with self._lock:
                hit = self._cache.get(service)
            if hit is not None and hit[0] > now:
                res = hit[1]
                return Resolution(
                    res.service, res.endpoints, res.path, hit[0] - now, res.attempts, cached=True
                )
        attempts: list[Attempt] = []
        for path in self.order:
            started = time.perf_counter()
            try:
                endpoints = self._lookup(path, service)
            except Exception as exc:  # each failure is a finding, not a crash
                attempts.append(Attempt(path, False, _describe(exc), time.perf_counter() - started))
                continue
            if not endpoints:
                attempts.append(Attempt(path, False, "no records", time.perf_counter() - started))
                continue
            attempts.append(Attempt(path, True, "", time.perf_counter() - started))
            ttls = [e.ttl for e in endpoints if e.ttl > 0]
            ttl = float(min(ttls)) if ttls else self.default_ttl
            res = Resolution(service, tuple(_ordered(endpoints)), path, ttl, tuple(attempts))
            with self._lock:
                self._cache[service] = (now + ttl, res)
            return res
        raise DiscoveryError(service, attempts)

    def invalidate(self, service: str | None = None) -> None:
        with self._lock:
            if service is None:
                self._cache.clear()
            else:
                self._cache.pop(service, None)

    # -- the paths ------------------------------------------------------------------

    def _lookup(self, path: str, service: str) -> list[Endpoint]:
        if path == "srv":
            return self.lookup_srv(service)
        if path == "a":
            return self.lookup_a(service)
        if path == "etcd":
            return self.lookup_etcd(service)
        return self.lookup_static(service)

    def query(self, name: str, rdtype: str) -> dns_message.Message:
        if self.dns is None:
            raise RuntimeError("no DNS server configured (--dns HOST:PORT)")
        host, port = self.dns
        q = dns_message.make_query(name, rdtype)
        try:
            reply = dns_query.udp(q, host, port=port, timeout=self.timeout)
            if reply.flags & dns_flags.TC:
                reply = dns_query.tcp(q, host, port=port, timeout=self.timeout)
        except dns_exception.Timeout:
            raise TimeoutError(f"no answer from {host}:{port} within {self.timeout:g}s") from None
        except OSError as exc:
            raise ConnectionError(f"DNS server {host}:{port}: {exc.strerror or exc}") from None
        rcode = reply.rcode()
        if rcode == dns_rcode.SERVFAIL:
            raise RuntimeError(f"SERVFAIL from {host}:{port} for {name} (is its backend up?)")
        if rcode not in (dns_rcode.NOERROR, dns_rcode.NXDOMAIN):
            raise RuntimeError(f"{dns_rcode.to_text(rcode)} from {host}:{port} for {name}")
        return reply

    def lookup_srv(self, service: str) -> list[Endpoint]:
        reply = self.query(service_name(service, self.domain, self.proto), "SRV")
        addresses: dict[str, list[tuple[str, int]]] = {}
        for rrset in reply.additional:
            if rrset.rdtype in (dns_rdatatype.A, dns_rdatatype.AAAA):
                for rr in rrset:
                    addresses.setdefault(rrset.name.to_text(), []).append((rr.address, rrset.ttl))
        endpoints = []
        for rrset in reply.answer:
            if rrset.rdtype != dns_rdatatype.SRV:
                continue
            for rr in rrset:
                target = rr.target.to_text()
                found = addresses.get(target) or self._addresses_of(target)
                for host, ttl in found:
                    endpoints.append(
                        Endpoint(host, rr.port, rr.priority, rr.weight, target, min(rrset.ttl, ttl))
                    )
        return endpoints

    def _addresses_of(self, name: str) -> list[tuple[str, int]]:
        reply = self.query(name, "A")
        return [
            (rr.address, rrset.ttl)
            for rrset in reply.answer
            if rrset.rdtype == dns_rdatatype.A
            for rr in rrset
        ]

    def lookup_a(self, service: str) -> list[Endpoint]:
        if self.default_port is None:
            raise RuntimeError("A records carry no port: configure a default port")
        names = (f"{service}.{self.domain}.", service_name(service, self.domain, self.proto))
        for name in names:
            found = self._addresses_of(name)
            if found:
                return [Endpoint(h, self.default_port, target=name, ttl=t) for h, t in found]
        return []

    def lookup_etcd(self, service: str) -> list[Endpoint]:
        if self.etcd is None:
            raise RuntimeError("no etcd configured (--etcd URL)")
        prefix = service_path(service, self.domain, self.proto, self.prefix) + "/"
        try:
            client = etcdclient.connect(self.etcd, timeout=self.timeout)
            try:
                items = list(client.get_prefix(prefix))
            finally:
                client.close()
        except Exception as exc:
            raise ConnectionError(etcdclient.describe_error(self.etcd, exc)) from None
        endpoints = []
        for value, meta in items:
            key = meta.key.decode()
            try:
                rec = Record.from_json(value, key)
            except LayoutError:
                continue  # `verify discovery` reports malformed values; resolution skips them
            port = rec.port or self.default_port
            if port:
                endpoints.append(
                    Endpoint(
                        rec.host,
                        port,
                        rec.priority,
                        rec.weight,
                        key_to_name(key, self.prefix) + ".",
                        rec.ttl,
                    )
                )
        return endpoints

    def lookup_static(self, service: str) -> list[Endpoint]:
        entries = self.static.get(service)
        if not entries:
            raise RuntimeError(f"no static fallback configured for {service!r}")
        out = []
        for entry in entries:
            host, port = parse_hostport(entry, "static endpoint", self.default_port)
            out.append(Endpoint(host, port))
        return out


def _ordered(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Lowest priority first, then heaviest weight (RFC 2782's preference, deterministically)."""
    return sorted(endpoints, key=lambda e: (e.priority, -e.weight, e.host, e.port))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def resolve(
    service: str,
    *,
    domain: str,
    dns_server: str | None = None,
    etcd: str | None = None,
    order: Sequence[str] = PATHS,
    static: Mapping[str, Sequence[str]] | None = None,
    default_port: int | None = None,
    timeout: float = 2.0,
) -> Resolution:
    """One-shot resolution; keep a `Resolver` to benefit from its cache."""
    server = parse_hostport(dns_server, "--dns") if dns_server else None
    return Resolver(domain, server, etcd, order, static or {}, default_port, timeout).resolve(
        service
    )
