"""One DNS question, and the answer reduced to what `verify discovery` compares."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


@dataclass(frozen=True, slots=True)
class SrvRR:
    target: str  # fully qualified, lower case
    port: int
    priority: int
    weight: int
    ttl: int


@dataclass(slots=True)
class Answer:
    qname: str
    rdtype: str
    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL", ...
    srv: list[SrvRR] = field(default_factory=list)
    addresses: dict[str, set[str]] = field(default_factory=dict)  # owner -> A/AAAA values
    cnames: set[str] = field(default_factory=set)  # targets, fully qualified, lower case
    ttl: int | None = None  # the smallest TTL in the answer section

    def addresses_of(self, owner: str) -> set[str]:
        return self.addresses.get(owner.lower(), set())

    @property
    def all_addresses(self) -> set[str]:
        return set().union(*self.addresses.values()) if self.addresses else set()


def ask(server: tuple[str, int], name: str, rdtype: str, timeout: float) -> Answer:
    """Ask `server`; UDP, then TCP when truncated. Raises TimeoutError/ConnectionError."""
    host, port = server
    qname = name.rstrip(".") + "."
    q = dns.message.make_query(qname, rdtype)
    try:
        reply = dns.query.udp(q, host, port=port, timeout=timeout)
        if reply.flags & dns.flags.TC:
            reply = dns.query.tcp(q, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        raise TimeoutError(f"no answer from {host}:{port} within {timeout:g}s") from None
    except OSError as exc:
        raise ConnectionError(f"DNS server {host}:{port}: {exc.strerror or exc}") from None
    out = Answer(qname, rdtype, dns.rcode.to_text(reply.rcode()))
    sections = [(rs, True) for rs in reply.answer] + [(rs, False) for rs in reply.additional]
    for rrset, in_answer in sections:
        owner = rrset.name.to_text().lower()
        if in_answer:
            out.ttl = rrset.ttl if out.ttl is None else min(out.ttl, rrset.ttl)
        if rrset.rdtype == dns.rdatatype.SRV and in_answer:
            out.srv.extend(
                SrvRR(rr.target.to_text().lower(), rr.port, rr.priority, rr.weight, rrset.ttl)
                for rr in rrset
            )
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.addresses.setdefault(owner, set()).update(rr.address for rr in rrset)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            out.cnames.update(rr.target.to_text().lower() for rr in rrset)
    return out
