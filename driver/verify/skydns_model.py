"""What CoreDNS's etcd plugin serves for the SkyDNS keys in etcd: the answer a client sees.

`verify discovery` compares DNS answers with this model, not with raw etcd
values: CoreDNS defaults a missing or zero priority to 10 and rescales
weights per priority (a missing or zero weight counts as 100), so comparing
raw values flags healthy services. Modelled on CoreDNS v1.15.0 (the version
tools/coredns pins); see docs/decisions.md for the source files.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shakedown.skydns import PROTOCOLS, LayoutError

DEFAULT_PRIORITY = 10  # plugin/etcd/etcd.go defaultPriority, for a missing or 0 priority
ZERO_WEIGHT = 100  # plugin/backend_lookup.go SRV(): a missing or 0 weight counts as 100


@dataclass(frozen=True, slots=True)
class Service:
    """One etcd value as `json.Unmarshal` into CoreDNS's msg.Service reads it."""

    key: str
    host: str = ""
    port: int = 0
    priority: int = 0  # as stored; CoreDNS serves DEFAULT_PRIORITY for 0
    weight: int = 0
    ttl: int = 0
    text: str = ""
    group: str = ""
    target_strip: int = 0

    @property
    def served_priority(self) -> int:
        return self.priority or DEFAULT_PRIORITY


_INTS = {"port": 64, "priority": 64, "weight": 64, "targetstrip": 64, "ttl": 32}
_STRS = ("host", "text", "group")


def _field(doc: dict[str, Any], name: str) -> Any:
    """Go's encoding/json matches keys to fields case-insensitively; the last one wins."""
    found = None
    for k, v in doc.items():
        if k.lower() == name:
            found = v
    return found


def parse_service(key: str, raw: bytes | str) -> Service:
    """Parse like CoreDNS; a LayoutError here is a value CoreDNS fails on (SERVFAIL)."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{key}: value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{key}: value is not a JSON object")
    got: dict[str, Any] = {}
    for name, bits in _INTS.items():
        v = _field(doc, name)
        if v is None:  # absent or null: Go leaves the zero value
            continue
        lo, hi = (0, 2**32 - 1) if name == "ttl" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise LayoutError(f'{key}: "{name}" must be an integer, got {v!r}')
        got[name] = v
    for name in _STRS:
        v = _field(doc, name)
        if v is not None and not isinstance(v, str):
            raise LayoutError(f'{key}: "{name}" must be a string, got {v!r}')
        if v is not None:
            got[name] = v
    return Service(
        key,
        got.get("host", ""),
        got.get("port", 0),
        got.get("priority", 0),
        got.get("weight", 0),
        got.get("ttl", 0),
        got.get("text", ""),
        got.get("group", ""),
        got.get("targetstrip", 0),
    )


# -- names -----------------------------------------------------------------------------


def path_of(name: str, prefix: str) -> str:
    """msg.Path of the lower-cased query name (request.Name() lower-cases it):
    `a.b.Example.com` -> `/skydns/com/example/b/a`."""
    labels = [lab for lab in name.lower().rstrip(".").split(".") if lab]
    return "/".join([prefix.rstrip("/"), *reversed(labels)])


def domain_of(key: str, prefix: str) -> str:
    """msg.Domain, fully qualified: the SRV target CoreDNS makes up for an IP host."""
    parts = [p for p in key[len(prefix.rstrip("/")) :].split("/") if p]
    return ".".join(reversed(parts)) + "."


def service_labels(name: str) -> tuple[str | None, str | None, str | None]:
    """(service, proto, SRV owner) of a record name.

    The service is the `_`-prefixed label nearest the instance, with or
    without a protocol label: `i1._svc._tcp.zone` -> `_svc`, `_tcp`,
    `_svc._tcp.zone`; `i1._svc.acme.local` and `_svc.acme.local` -> `_svc`,
    None, None (no SRV query a client makes reaches them).
    """
    labels = name.rstrip(".").split(".")
    for i, lab in enumerate(labels):
        if lab.lower() in PROTOCOLS:
            if i > 0 and labels[i - 1].startswith("_"):
                return labels[i - 1], lab, ".".join(labels[i - 1 :])
            return None, lab, None
    service = next((lab for lab in labels if lab.startswith("_")), None)
    return service, None, None


def _is_ip(host: str) -> int:
    """4 or 6 for an IP address (as net.ParseIP reads it), else 0."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


def _strip(name: str, n: int) -> str:
    """msg.targetStrip: drop the n leftmost labels, or none if that overshoots."""
    labels = name.rstrip(".").split(".")
    return name if n <= 0 or n >= len(labels) else ".".join(labels[n:]) + "."


# -- which keys a query reads ---------------------------------------------------------


def served_for(name: str, services: Sequence[Service], prefix: str) -> list[Service]:
    """etcd.Records + msg.Group: every key under the name's path, else the exact key."""
    path = path_of(name, prefix)
    below = sorted((s for s in services if s.key.startswith(path + "/")), key=lambda s: s.key)
    found = below or [s for s in services if s.key == path]
    return _group(found)


def _group(sx: list[Service]) -> list[Service]:
    """msg.Group: the shortest key's group, if any, keeps only that group (and ungrouped)."""
    if not sx:
        return sx
    group, slashes = sx[0].group, sx[0].key.count("/")
    lengths = [s.key.count("/") for s in sx]
    for s, n in zip(sx, lengths, strict=True):
        if n < slashes:
            if not s.group:
                break
            slashes, group = n, s.group
    if not group:
        return sx
    kept = []
    for s, n in zip(sx, lengths, strict=True):
        if not s.group:
            kept.append(s)
        elif n == slashes and s.group != group:
            return sx  # disagreement on one level: no grouping
        elif s.group == group:
            kept.append(s)
    return kept


# -- what a query answers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpectedSrv:
    key: str
    target: str  # fully qualified, lower case
    port: int
    priority: int
    weight: int
    address: str  # the host when it is an IP (served as additional A/AAAA), else ""


def expected_srv(owner: str, services: Sequence[Service], prefix: str) -> dict[str, ExpectedSrv]:
    """plugin.SRV for `owner`: per key, the SRV record `dig SRV owner` shows."""
    sx = [s for s in served_for(owner, services, prefix) if s.host]  # etcd.shouldInclude
    totals: dict[int, int] = {}
    for s in sx:
        totals[s.served_priority] = totals.get(s.served_priority, 0) + (s.weight or ZERO_WEIGHT)
    out: dict[str, ExpectedSrv] = {}
    seen: set[tuple[str, int]] = set()
    for s in sx:
        if s.port == -1:
            continue
        # The same float64 arithmetic as CoreDNS, so rounding matches.
        w1 = 100.0 / float(totals[s.served_priority]) * float(s.weight or ZERO_WEIGHT)
        weight = max(1, math.floor(w1) & 0xFFFF)
        if _is_ip(s.host):
            target = _strip(domain_of(s.key, prefix), s.target_strip).lower()
            if (target, s.port & 0xFFFF) in seen:
                continue  # isDuplicate: same target and port
            seen.add((target, s.port & 0xFFFF))
            address = s.host
        else:
            target = _strip(s.host.rstrip(".") + ".", s.target_strip).lower()
            address = ""
        out[s.key] = ExpectedSrv(
            s.key, target, s.port & 0xFFFF, s.served_priority & 0xFFFF, weight, address
        )
    return out


def why_not_served(owner: str, key: str, services: Sequence[Service], prefix: str) -> str:
    """Why the model leaves `key` out of `owner`'s answer."""
    path = path_of(owner, prefix)
    if key[len(prefix.rstrip("/")) :] != key[len(prefix.rstrip("/")) :].lower():
        return "its key has upper-case letters, and CoreDNS looks keys up in lower case"
    if key == path and any(s.key.startswith(path + "/") for s in services):
        return f"keys under {path}/ exist, so CoreDNS answers {owner} from them and skips this one"
    mine = next((s for s in services if s.key == key), None)
    if mine is not None and mine.port == -1:
        return "port -1 means 'no port' to CoreDNS"
    if mine is not None and _is_ip(mine.host) and mine.target_strip:
        return "targetstrip makes its SRV target the same as another record's"
    return "its group attribute differs from the group the shortest key sets"


def address_type(host: str) -> str:
    """The query type that serves a record at its own name: A, AAAA or CNAME."""
    v = _is_ip(host)
    return "A" if v == 4 else "AAAA" if v == 6 else "CNAME"


def served_at_name(name: str, key: str, services: Sequence[Service], prefix: str) -> bool:
    """Does an A/AAAA query for `name` carry this key's address? (CNAME reads the exact key.)"""
    return any(s.key == key for s in served_for(name, services, prefix))
