"""The system adapter: the one place a user's system under test plugs in.

Suites and the fuzzer talk to the system only through a ``SystemAdapter``,
never to the reference scheduler directly. They check its answers against
ground truth from the agents: an adapter says how to find a workload's
containers there (``container_labels``), and what "done" means for its system
(``converged``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

PHASES = ("pending", "running", "failed")
RESTART_POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class Port:
    container_port: int
    host_port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    image: str
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: Sequence[Port] = ()
    replicas: int = 1
    cpus: float = 0.0  # 0: no limit, as with docker run
    memory_bytes: int = 0
    restart_policy: str = "always"


@dataclass(frozen=True)
class Replica:
    index: int
    phase: str  # one of PHASES
    node: str = ""
    container_id: str = ""
    restarts: int = 0
    last_error: str = ""
    observed_generation: int = 0


@dataclass(frozen=True)
class Workload:
    id: str
    name: str
    generation: int
    spec: WorkloadSpec | None = None
    replicas: tuple[Replica, ...] = ()


@dataclass(frozen=True)
class Node:
    name: str
    healthy: bool
    last_seen: datetime | None = None
    address: str = ""
    reason: str = ""


@runtime_checkable
class SystemAdapter(Protocol):
    """What suites and the fuzzer need from a system under test."""

    name: str

    def apply(self, spec: WorkloadSpec) -> Workload:
        """Create or update; returns at once with the id and the new generation."""

    def get(self, name: str) -> Workload | None: ...

    def list(self) -> list[Workload]: ...

    def delete(self, name: str) -> None:
        """Idempotent: deleting what is gone is not an error."""

    def nodes(self) -> builtins.list[Node]: ...

    def converged(self, workload: Workload) -> bool:
        """Done, for this system: every replica running at the workload's generation."""

    def container_labels(self, workload: Workload) -> dict[str, str]:
        """Labels that select this workload's containers on the agents."""

    def close(self) -> None: ...


@runtime_checkable
class LabelsByName(Protocol):
    """Optional: an adapter that also labels containers by workload name lets the fuzzer
    find containers of ids it never learned (an apply whose answer was lost created one)."""

    def name_labels(self, name: str) -> dict[str, str]:
        """Labels that select every container made for a workload called ``name``,
        whatever its id."""
