"""Fault specs and records as plain dataclasses (kinds are lowercase strings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from driver.types import _ts
from shakedown.agent.v1 import agent_pb2 as pb

KINDS = {
    "kill": pb.FAULT_KIND_KILL,
    "stop": pb.FAULT_KIND_STOP,
    "pause": pb.FAULT_KIND_PAUSE,
    "restart": pb.FAULT_KIND_RESTART,
    "partition": pb.FAULT_KIND_PARTITION,
}
_NAMES = {v: k for k, v in KINDS.items()}
Grudge = Mapping[str, Sequence[str]]  # target -> peers it must not hear (containers or IPs)


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    container: str = ""
    signal: str = ""
    timeout: int | None = None
    # (target, peers) pairs, in order: the agent applies them in this order.
    grudge: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Seconds until it heals itself; 0: until healed or its session ends.
    duration: int = 0

    @classmethod
    def kill(cls, container: str, signal: str = "", *, duration: int = 0) -> FaultSpec:
        return cls("kill", container, signal=signal, duration=duration)

    @classmethod
    def stop(cls, container: str, timeout: int | None = None, *,
             duration: int = 0) -> FaultSpec:
        """Without a duration the container stays stopped until healed."""
        return cls("stop", container, timeout=timeout, duration=duration)

    @classmethod
    def pause(cls, container: str, *, duration: int = 0) -> FaultSpec:
        """Without a duration the container stays frozen until healed."""
        return cls("pause", container, duration=duration)

    @classmethod
    def restart(cls, container: str, timeout: int | None = None) -> FaultSpec:
        return cls("restart", container, timeout=timeout)

    @classmethod
    def partition(cls, grudge: Grudge, *, duration: int = 0) -> FaultSpec:
        return cls("partition", grudge=tuple((t, tuple(p)) for t, p in grudge.items()),
                   duration=duration)

    def to_pb(self) -> pb.FaultSpec:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        spec = pb.FaultSpec(kind=KINDS[self.kind], duration_seconds=self.duration)
        if self.kind == "partition":
            spec.partition.grudges.extend(pb.Grudge(target=t, peers=list(p))
                                          for t, p in self.grudge)
        else:
            spec.container.container = self.container
            spec.container.signal = self.signal
            if self.timeout is not None:
                spec.container.timeout_seconds = self.timeout
        return spec


@dataclass(frozen=True)
class Fault:
    id: str
    kind: str
    session_id: str
    targets: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    expires_at: datetime | None = None
    mechanism: str = ""
    healed: bool = False
    healed_at: datetime | None = None
    heal_note: str = ""

    @property
    def chain(self) -> str:
        """The iptables chain a partition lives in (empty for other kinds)."""
        return self.params.get("chain", "")

    @classmethod
    def from_pb(cls, m: pb.Fault) -> Fault:
        return cls(id=m.id, kind=_NAMES.get(m.kind, "unspecified"), session_id=m.session_id,
                   targets=tuple(m.targets), params=dict(m.params),
                   started_at=_ts(m, "started_at"), expires_at=_ts(m, "expires_at"),
                   mechanism=m.mechanism, healed=m.healed, healed_at=_ts(m, "healed_at"),
                   heal_note=m.heal_note)
