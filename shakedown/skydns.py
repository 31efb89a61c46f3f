"""The SkyDNS layout CoreDNS's etcd plugin reads: names as reversed key paths, JSON values.

`instance._scheduler._tcp.example.com` lives at
`/skydns/com/example/_tcp/_scheduler/instance`, so an SRV query for
`_scheduler._tcp.example.com` collects every instance under that path. The
layout and the prefix are parameters: other people's deployments differ.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "/skydns"
PROTOCOLS = ("_tcp", "_udp")
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


class LayoutError(ValueError):
    """A name or record that cannot be expressed in the SkyDNS layout."""


def check_label(kind: str, label: str) -> str:
    if not _LABEL.match(label):
        raise LayoutError(f"{kind} {label!r}: must be a DNS label (letters, digits, '-', '_')")
    return label


def normalize_domain(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    if not d:
        raise LayoutError("domain: must not be empty")
    for label in d.split("."):
        check_label("domain label", label)
    return d


def domain_path(domain: str, prefix: str = DEFAULT_PREFIX) -> str:
    """`example.com` -> `/skydns/com/example`."""
    labels = normalize_domain(domain).split(".")
    return prefix.rstrip("/") + "/" + "/".join(reversed(labels))


def key_to_name(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """`/skydns/com/example/_tcp/_s/i1` -> `i1._s._tcp.example.com`."""
    root = prefix.rstrip("/") + "/"
    if not key.startswith(root):
        raise LayoutError(f"key {key!r} is not under {root}")
    return ".".join(reversed([p for p in key[len(root) :].split("/") if p]))


def service_path(
    service: str, domain: str, proto: str = "_tcp", prefix: str = DEFAULT_PREFIX
) -> str:
    if proto not in PROTOCOLS:
        raise LayoutError(f"proto {proto!r}: use one of {PROTOCOLS}")
    return f"{domain_path(domain, prefix)}/{proto}/_{check_label('service', service)}"


def service_name(service: str, domain: str, proto: str = "_tcp") -> str:
    """The SRV owner name: `_scheduler._tcp.example.com.`"""
    return f"_{service}.{proto}.{normalize_domain(domain)}."


@dataclass(frozen=True, slots=True)
class Record:
    """One SkyDNS record (the JSON value); unknown fields are kept in `extra`."""

    host: str
    port: int = 0
    priority: int = 10
    weight: int = 10
    ttl: int = 0
    text: str = ""
    extra: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> str:
        doc: dict[str, Any] = {"host": self.host}
        if self.port:
            doc["port"] = self.port
        doc["priority"] = self.priority
        doc["weight"] = self.weight
        if self.ttl:
            doc["ttl"] = self.ttl
        if self.text:
            doc["text"] = self.text
        doc.update(dict(self.extra))
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Record:
        where = f"{key}: " if key else ""
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LayoutError(f"{where}value is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("host"), str) or not doc["host"]:
            raise LayoutError(f'{where}value needs a non-empty "host"')
        ints = {}
        for name in ("port", "priority", "weight", "ttl"):
            value = doc.get(name, 0 if name in ("port", "ttl") else 10)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise LayoutError(f'{where}"{name}" must be a non-negative integer')
            ints[name] = value
        known = {"host", "port", "priority", "weight", "ttl", "text"}
        extra = tuple(sorted((k, v) for k, v in doc.items() if k not in known))
        return cls(
            doc["host"],
            ints["port"],
            ints["priority"],
            ints["weight"],
            ints["ttl"],
            str(doc.get("text", "")),
            extra,
        )
