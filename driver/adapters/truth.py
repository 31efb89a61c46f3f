"""Ground truth about a workload, from the agents: what suites compare the system's word with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from driver.adapters.base import SystemAdapter, Workload
from driver.client import AgentClient
from driver.types import Container
from shakedown.errors import ShakedownError


@dataclass(frozen=True)
class Observed:
    node: str
    container: Container


def observe(agents: Mapping[str, AgentClient], system: SystemAdapter,
            workload: Workload) -> list[Observed]:
    """Every container (running or not) the agents hold for workload, by its labels.
    An unreachable agent contributes nothing: callers that need all nodes check nodes()."""
    return labelled(agents, system.container_labels(workload))


def labelled(agents: Mapping[str, AgentClient], labels: Mapping[str, str]) -> list[Observed]:
    """Every container (running or not) the agents hold with all of ``labels``."""
    out: list[Observed] = []
    for node, client in sorted(agents.items()):
        try:
            found = client.list(dict(labels), all=True)
        except (ShakedownError, ValueError):  # ValueError: a client closed under us
            continue
        out += [Observed(node, c) for c in found]
    return out


def running(agents: Mapping[str, AgentClient], system: SystemAdapter,
            workload: Workload) -> list[Observed]:
    return [o for o in observe(agents, system, workload) if o.container.running]
