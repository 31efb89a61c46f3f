"""Ownership, decided by labels alone.

A container (or network) is *managed* when it carries this agent's managed-by
and node labels, *adopted* when it matches an operator adopt selector; nothing
else is ever touched. A managed container or network also carries its
session's labels, which is all the agent needs to rebuild its session table
after a restart. The engine filters below work for both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.policy import parse_selector
from shakedown import labels as L

Selector = list[tuple[str, str | None]]


def matches(labels: dict[str, str], selector: Selector) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in selector)


def _filters(selector: Selector) -> list[str]:
    return [k if v is None else f"{k}={v}" for k, v in selector]


class Ownership:
    """Which containers/networks this agent sees (managed or adopted), which it manages."""

    def __init__(self, node: str, adopt: Sequence[str] = ()) -> None:
        self.node = node
        self.adopt: list[Selector] = [parse_selector([s], "adopt") for s in adopt]

    def __call__(self, labels: dict[str, str] | None) -> tuple[bool, bool]:
        """(visible, managed) for a container with these labels."""
        labels = labels or {}
        managed = (labels.get(L.MANAGED_BY) == L.MANAGED_BY_VALUE
                   and labels.get(L.NODE) == self.node)
        return managed or any(matches(labels, sel) for sel in self.adopt), managed

    def managed_labels(self) -> dict[str, str]:
        """The labels that make a container this agent's own."""
        return {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.NODE: self.node}

    def list_filters(self, selector: Selector, session_id: str = "") -> list[list[str]]:
        """Engine label filters, one query each, that together find every visible
        container matching ``selector`` (only the session's, when one is given)."""
        extra = _filters(selector)
        queries = [[f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE}", f"{L.NODE}={self.node}", *extra]]
        if session_id:
            queries[0].append(f"{L.SESSION}={session_id}")
        else:
            queries += [_filters(sel) + extra for sel in self.adopt]
        return queries


@dataclass
class SessionInfo:
    """What the labels of a session's containers say about it."""

    id: str
    name: str = ""
    ttl: int = 30
    persistent: bool = False
    principal: str = ""
    created: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


def session_labels(s: SessionInfo) -> dict[str, str]:
    out = {
        L.SESSION: s.id, L.SESSION_NAME: s.name, L.SESSION_TTL: str(s.ttl),
        L.SESSION_PERSISTENT: "true" if s.persistent else "false",
        L.SESSION_PRINCIPAL: s.principal, L.SESSION_CREATED: f"{s.created:.3f}",
    }
    out.update({L.SESSION_LABEL_PREFIX + k: v for k, v in s.labels.items()})
    return out


def session_from_labels(sid: str, labels: dict[str, str]) -> SessionInfo:
    def num(key: str, default: float) -> float:
        try:
            return float(labels.get(key, default))
        except ValueError:
            return default

    n = len(L.SESSION_LABEL_PREFIX)
    return SessionInfo(
        id=sid, name=labels.get(L.SESSION_NAME, ""), ttl=max(1, int(num(L.SESSION_TTL, 30))),
        persistent=labels.get(L.SESSION_PERSISTENT) == "true",
        principal=labels.get(L.SESSION_PRINCIPAL, ""), created=num(L.SESSION_CREATED, 0.0),
        labels={k[n:]: v for k, v in labels.items() if k.startswith(L.SESSION_LABEL_PREFIX)},
    )
