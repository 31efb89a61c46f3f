"""Fault specs and records as plain dataclasses (kinds are lowercase strings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from driver.types import _ts
from shakedown.agent.v1 import agent_pb2 as pb

KINDS = {
    "kill": pb.FAULT_KIND_KILL,
    "stop": pb.FAULT_KIND_STOP,
    "pause": pb.FAULT_KIND_PAUSE,
    "restart": pb.FAULT_KIND_RESTART,
    "partition": pb.FAULT_KIND_PARTITION,
    "proxy": pb.FAULT_KIND_PROXY,
}
_NAMES = {v: k for k, v in KINDS.items()}
Grudge = Mapping[str, Sequence[str]]  # target -> peers it must not hear (containers or IPs)


@dataclass(frozen=True)
class Toxic:
    """One toxic of a proxy fault (Toxiproxy's model; docs/faults.md has the table).
    ``direction``: "upstream" (client to container), "downstream" or "both";
    ``toxicity``: the share of connections it applies to. Only the parameters of
    its type may be set; ``name`` defaults (agent side) to the type."""

    type: str
    name: str = ""
    direction: str = "downstream"
    toxicity: float = 1.0
    latency_ms: int = 0
    jitter_ms: int = 0
    rate_kbps: int = 0  # bandwidth: kilobytes (1000 bytes) per second
    delay_ms: int = 0  # slow_close
    timeout_ms: int = 0  # timeout (0: forever), reset_peer, cut_after
    bytes: int = 0  # limit_data
    average_size: int = 0  # slicer
    size_variation: int = 0
    delay_us: int = 0
    probability: float = 0.0  # loss, per chunk

    @classmethod
    def latency(cls, latency_ms: int, jitter_ms: int = 0, **kw: object) -> Toxic:
        return cls("latency", latency_ms=latency_ms, jitter_ms=jitter_ms, **kw)  # type: ignore[arg-type]

    @classmethod
    def bandwidth(cls, rate_kbps: int, **kw: object) -> Toxic:
        return cls("bandwidth", rate_kbps=rate_kbps, **kw)  # type: ignore[arg-type]

    @classmethod
    def slow_close(cls, delay_ms: int, **kw: object) -> Toxic:
        return cls("slow_close", delay_ms=delay_ms, **kw)  # type: ignore[arg-type]

    @classmethod
    def timeout(cls, timeout_ms: int = 0, **kw: object) -> Toxic:
        return cls("timeout", timeout_ms=timeout_ms, **kw)  # type: ignore[arg-type]

    @classmethod
    def reset_peer(cls, timeout_ms: int = 0, **kw: object) -> Toxic:
        return cls("reset_peer", timeout_ms=timeout_ms, **kw)  # type: ignore[arg-type]

    @classmethod
    def slicer(cls, average_size: int, size_variation: int = 0, delay_us: int = 0,
               **kw: object) -> Toxic:
        return cls("slicer", average_size=average_size, size_variation=size_variation,
                   delay_us=delay_us, **kw)  # type: ignore[arg-type]

    @classmethod
    def limit_data(cls, nbytes: int, **kw: object) -> Toxic:
        return cls("limit_data", bytes=nbytes, **kw)  # type: ignore[arg-type]

    @classmethod
    def cut_after(cls, timeout_ms: int, **kw: object) -> Toxic:
        return cls("cut_after", timeout_ms=timeout_ms, **kw)  # type: ignore[arg-type]

    @classmethod
    def loss(cls, probability: float, **kw: object) -> Toxic:
        return cls("loss", probability=probability, **kw)  # type: ignore[arg-type]

    def to_pb(self) -> pb.Toxic:
        return pb.Toxic(**{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_pb(cls, m: pb.Toxic) -> Toxic:
        values = {f.name: getattr(m, f.name) for f in fields(cls)}
        values["toxicity"] = m.toxicity if m.HasField("toxicity") else 1.0
        return cls(**values)


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
    # proxy: the container's port, its toxics, where to listen ("": 127.0.0.1, a port
    # the kernel picks), "proxy" or "netem", and which of its networks to reach it on.
    port: int = 0
    toxics: tuple[Toxic, ...] = ()
    listen: str = ""
    mechanism: str = ""
    network: str = ""

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

    @classmethod
    def proxy(cls, container: str, port: int, toxics: Sequence[Toxic] = (), listen: str = "",
              duration: int = 0, *, mechanism: str = "", network: str = "") -> FaultSpec:
        """A TCP proxy in front of ``container``'s ``port``; point clients at the
        returned fault's ``listen``. Toxics can be replaced later (``update_toxics``)."""
        return cls("proxy", container, duration=duration, port=port, toxics=tuple(toxics),
                   listen=listen, mechanism=mechanism, network=network)

    @classmethod
    def latency(cls, container: str, port: int, latency_ms: int, *, jitter_ms: int = 0,
                direction: str = "downstream", toxicity: float = 1.0,
                mechanism: str = "proxy", duration: int = 0) -> FaultSpec:
        """A proxy adding ``latency_ms`` (+- ``jitter_ms``) to each chunk; with
        ``mechanism="netem"`` the kernel delays the container's egress instead."""
        toxic = Toxic.latency(latency_ms, jitter_ms, direction=direction, toxicity=toxicity)
        return cls.proxy(container, port, (toxic,), duration=duration, mechanism=mechanism)

    def to_pb(self) -> pb.FaultSpec:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        spec = pb.FaultSpec(kind=KINDS[self.kind], duration_seconds=self.duration)
        if self.kind == "partition":
            spec.partition.grudges.extend(pb.Grudge(target=t, peers=list(p))
                                          for t, p in self.grudge)
        elif self.kind == "proxy":
            spec.proxy.CopyFrom(pb.ProxyFault(
                container=self.container, port=self.port, network=self.network,
                listen=self.listen, mechanism=self.mechanism,
                toxics=[t.to_pb() for t in self.toxics]))
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

    @property
    def listen(self) -> tuple[str, int]:
        """Where a proxy fault listens, (host, port): point the client there."""
        value = self.params.get("listen", "")
        if not value:
            raise ValueError(f"fault {self.id} ({self.kind}) has no listen address")
        host, _, port = value.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @classmethod
    def from_pb(cls, m: pb.Fault) -> Fault:
        return cls(id=m.id, kind=_NAMES.get(m.kind, "unspecified"), session_id=m.session_id,
                   targets=tuple(m.targets), params=dict(m.params),
                   started_at=_ts(m, "started_at"), expires_at=_ts(m, "expires_at"),
                   mechanism=m.mechanism, healed=m.healed, healed_at=_ts(m, "healed_at"),
                   heal_note=m.heal_note)
