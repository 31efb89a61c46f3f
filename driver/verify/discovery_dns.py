"""`verify discovery`, the DNS half: does DNS serve each etcd record as CoreDNS should?

Every record is checked against DNS: a service instance through the SRV query
its clients make (`_svc._tcp.zone`), anything else through the query for its
own name (A, AAAA or CNAME by its host). What DNS should answer comes from
skydns_model (CoreDNS's own defaults and weight rescaling), so only a
difference a client would see is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from driver.verify.dns_answers import Answer, SrvRR, ask
from driver.verify.skydns_model import (
    ExpectedSrv,
    Service,
    address_type,
    expected_srv,
    path_of,
    served_at_name,
    why_not_served,
)

AddFinding = Callable[[str, str, str, str], None]  # severity, code, message, key


@dataclass(frozen=True, slots=True)
class Subject:
    """One record to check: its key, name, the SRV owner it belongs to (if any), its host."""

    key: str
    name: str
    owner: str | None
    host: str


def _zone_of(name: str, zones: Sequence[str]) -> str | None:
    for zone in sorted(zones, key=len, reverse=True):
        if name == zone or name.endswith("." + zone):
            return zone
    return None


class DnsChecker:
    def __init__(
        self,
        server: tuple[str, int],
        zones: Sequence[str],
        services: Sequence[Service],
        unparsable: Sequence[str],
        prefix: str,
        timeout: float,
        add: AddFinding,
    ) -> None:
        self.server, self.zones, self.services = server, zones, services
        self.unparsable, self.prefix, self.timeout, self.add = unparsable, prefix, timeout, add
        self._answers: dict[tuple[str, str], Answer | str] = {}
        self._srv: dict[str, dict[str, ExpectedSrv]] = {}

    def _ask(self, name: str, rdtype: str) -> Answer | str:
        """The answer, or why there is none; asked once per (name, type)."""
        k = (name.lower(), rdtype)
        if k not in self._answers:
            try:
                self._answers[k] = ask(self.server, name, rdtype, self.timeout)
            except (TimeoutError, ConnectionError) as exc:
                self._answers[k] = str(exc)
        return self._answers[k]

    def check(self, s: Subject) -> int | None:
        """Report what is wrong; return the TTL DNS serves the record with, if it does."""
        qname, rdtype = (s.owner, "SRV") if s.owner else (s.name, address_type(s.host))
        answer = self._ask(qname, rdtype)
        if isinstance(answer, str):
            self.add("error", "dns-failure", f"{s.name}: {rdtype} {qname}: {answer}", s.key)
            return None
        if answer.rcode == "REFUSED":
            self._refused(s, qname, rdtype)
            return None
        if answer.rcode not in ("NOERROR", "NXDOMAIN"):
            self.add("error", "dns-failure", self._failure(s, qname, rdtype, answer), s.key)
            return None
        if s.owner:
            return self._check_srv(s, s.owner, answer)
        return self._check_address(s, rdtype, answer)

    def _refused(self, s: Subject, qname: str, rdtype: str) -> None:
        declared = _zone_of(s.name.lower(), self.zones)
        msg = (
            f"{s.name}: outside every served zone: {self.server[0]}:{self.server[1]} "
            f"answers REFUSED to {rdtype} {qname}"
        )
        if declared:  # the zone the caller says is served is not: clients get nothing
            self.add("error", "outside-zone", f"{msg}, though --domain names {declared}", s.key)
        else:
            self.add("warning", "outside-zone", f"{msg}; no client of it can resolve it", s.key)

    def _failure(self, s: Subject, qname: str, rdtype: str, answer: Answer) -> str:
        msg = f"{s.name}: {rdtype} {qname}: {answer.rcode}"
        path = path_of(qname, self.prefix)
        bad = [k for k in self.unparsable if k == path or k.startswith(path + "/")]
        if bad and answer.rcode == "SERVFAIL":
            msg += f": CoreDNS cannot parse {', '.join(bad)}, which fails the whole answer"
        return msg

    def _check_srv(self, s: Subject, owner: str, answer: Answer) -> int | None:
        if owner not in self._srv:
            self._srv[owner] = expected_srv(owner, self.services, self.prefix)
        exp = self._srv[owner].get(s.key)
        if exp is None:
            why = why_not_served(owner, s.key, self.services, self.prefix)
            self.add("error", "not-in-dns", f"{s.name}: not in the SRV answer for {owner}: {why}",
                     s.key)  # fmt: skip
            return None
        same_target = [rr for rr in answer.srv if rr.target == exp.target]
        if not same_target:
            self.add(
                "error",
                "not-in-dns",
                f"{s.name}: registered in etcd but absent from the SRV answer for {owner} "
                f"(no target {exp.target})",
                s.key,
            )
            return None

        def diffs(rr: SrvRR) -> list[str]:
            return [
                f"{what} {got} (expected {want} from etcd)"
                for what, got, want in (
                    ("port", rr.port, exp.port),
                    ("priority", rr.priority, exp.priority),
                    ("weight", rr.weight, exp.weight),
                )
                if got != want
            ]

        rr = min(same_target, key=lambda r: len(diffs(r)))
        found = diffs(rr)
        served = answer.addresses_of(exp.target)
        if exp.address and served and not _same_ip(exp.address, served):
            found.insert(0, f"address {', '.join(sorted(served))} (expected {exp.address})")
        if found:
            self.add("error", "dns-disagrees", f"{s.name}: DNS answers {'; '.join(found)}", s.key)
        return rr.ttl

    def _check_address(self, s: Subject, rdtype: str, answer: Answer) -> int | None:
        if rdtype == "CNAME":
            want = s.host.rstrip(".").lower() + "."
            if want not in answer.cnames:
                got = ", ".join(sorted(answer.cnames)) or answer.rcode
                self.add("error", "not-in-dns", f"{s.name}: CNAME {want} expected, DNS: {got}",
                         s.key)  # fmt: skip
            return None
        return answer.ttl if rdtype == "CNAME" else self._check_ip(s, rdtype, answer)

    def _check_ip(self, s: Subject, rdtype: str, answer: Answer) -> int | None:
        if not served_at_name(s.name, s.key, self.services, self.prefix):
            why = why_not_served(s.name, s.key, self.services, self.prefix)
            self.add("error", "not-in-dns", f"{s.name}: {rdtype} query does not return it: {why}",
                     s.key)  # fmt: skip
            return None
        if not _same_ip(s.host, answer.all_addresses):
            got = ", ".join(sorted(answer.all_addresses)) or answer.rcode
            self.add(
                "error",
                "not-in-dns",
                f"{s.name}: {rdtype} {s.host} in etcd, DNS answers {got}",
                s.key,
            )
            return None
        return answer.ttl


def _same_ip(host: str, addresses: set[str]) -> bool:
    """Is `host` among `addresses`, however either is spelled (::1 vs 0:0:...:1)?"""
    import ipaddress

    want = ipaddress.ip_address(host)
    return any(ipaddress.ip_address(a) == want for a in addresses)
