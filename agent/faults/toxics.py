"""Toxics: what a fault proxy does to the connections it applies to (Toxiproxy's model).

A toxic has a type, a direction (upstream: client to container; downstream:
container to client) and a toxicity (the share of connections it applies to).
``parse`` validates the wire form into ``Toxic`` values; ``CHUNK`` holds the
per-chunk behaviours the proxy's pipes run each chunk through, in list order.
Toxics acting on the whole connection at a time (cut_after, reset_peer, a
closing timeout) and on its close (slow_close) are the proxy's link's to run.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import InvalidArgument

MAX_TOXICS = 32
MAX_LATENCY_MS = 60_000
MAX_MS = 3_600_000  # timeouts, delays: an hour
MAX_DELAY_US = 10_000_000
MAX_RATE_KBPS = 10_000_000
MAX_BYTES = 1 << 40
MAX_SLICE = 1 << 20
DIRECTIONS = ("upstream", "downstream", "both")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# type -> the parameters it takes (the others must stay 0)
PARAMS: dict[str, tuple[str, ...]] = {
    "latency": ("latency_ms", "jitter_ms"),
    "bandwidth": ("rate_kbps",),
    "slow_close": ("delay_ms",),
    "timeout": ("timeout_ms",),
    "reset_peer": ("timeout_ms",),
    "slicer": ("average_size", "size_variation", "delay_us"),
    "limit_data": ("bytes",),
    "cut_after": ("timeout_ms",),
    "loss": ("probability",),
}
INT_PARAMS = ("latency_ms", "jitter_ms", "rate_kbps", "delay_ms", "timeout_ms", "bytes",
              "average_size", "size_variation", "delay_us")
_BOUNDS = {"latency_ms": MAX_LATENCY_MS, "jitter_ms": MAX_LATENCY_MS, "rate_kbps": MAX_RATE_KBPS,
           "delay_ms": MAX_MS, "timeout_ms": MAX_MS, "bytes": MAX_BYTES,
           "average_size": MAX_SLICE, "size_variation": MAX_SLICE, "delay_us": MAX_DELAY_US}
# Toxics that need one parameter above 0 to mean anything.
_REQUIRED = {"bandwidth": "rate_kbps", "slicer": "average_size", "latency": "latency_ms"}


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    direction: str = "downstream"
    toxicity: float = 1.0
    params: dict[str, float] = field(default_factory=dict, compare=True, hash=False)

    def acts_on(self, direction: str) -> bool:
        return self.direction in (direction, "both")

    def get(self, key: str) -> float:
        return self.params.get(key, 0)

    def to_pb(self) -> pb.Toxic:
        out = pb.Toxic(name=self.name, type=self.type, direction=self.direction,
                       toxicity=self.toxicity)
        for key, value in self.params.items():
            setattr(out, key, value if key == "probability" else int(value))
        return out


def _bad(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, field=where)


def parse_one(t: pb.Toxic, where: str) -> Toxic:
    if t.type not in PARAMS:
        shown = repr(t.type[:40]) if t.type else "a type"
        raise _bad(f"{where}.type", f"{shown} is not a toxic type "
                   f"(one of {', '.join(PARAMS)})" if t.type else
                   f"a toxic needs a type (one of {', '.join(PARAMS)})")
    name = t.name or t.type
    if not NAME_RE.fullmatch(name):
        raise _bad(f"{where}.name", f"{name[:70]!r} is not a toxic name (letters, digits, "
                   "_ . -, at most 64)")
    direction = t.direction or "downstream"
    if direction not in DIRECTIONS:
        raise _bad(f"{where}.direction", f"{direction[:40]!r} is not one of "
                   f"{', '.join(DIRECTIONS)}")
    toxicity = t.toxicity if t.HasField("toxicity") else 1.0
    if not (math.isfinite(toxicity) and 0 <= toxicity <= 1):
        raise _bad(f"{where}.toxicity", f"toxicity is a share of connections in 0..1, "
                   f"got {toxicity}")
    takes = PARAMS[t.type]
    params: dict[str, float] = {}
    for key in INT_PARAMS:
        value = getattr(t, key)
        if not value:
            continue
        if key not in takes:
            raise _bad(f"{where}.{key}", f"a {t.type} toxic takes no {key} "
                       f"(it takes {', '.join(takes)})")
        if value < 0:
            raise _bad(f"{where}.{key}", f"{key} must not be negative, got {value}")
        if value > _BOUNDS[key]:
            raise _bad(f"{where}.{key}", f"{key} must be at most {_BOUNDS[key]}, got {value}")
        params[key] = value
    if t.probability:
        if t.type != "loss":
            raise _bad(f"{where}.probability", f"a {t.type} toxic takes no probability")
        if not (math.isfinite(t.probability) and 0 <= t.probability <= 1):
            raise _bad(f"{where}.probability", f"probability must be in 0..1, got {t.probability}")
        params["probability"] = t.probability
    need = _REQUIRED.get(t.type)
    if need and not params.get(need):
        raise _bad(f"{where}.{need}", f"a {t.type} toxic needs {need} above 0")
    if t.type == "slicer" and params.get("size_variation", 0) >= params["average_size"]:
        raise _bad(f"{where}.size_variation", "size_variation must be below average_size")
    return Toxic(name, t.type, direction, toxicity, params)


def parse(toxics: Sequence[pb.Toxic], where: str) -> list[Toxic]:
    """Validate every toxic (``where`` names the list, e.g. spec.proxy.toxics)."""
    if len(toxics) > MAX_TOXICS:
        raise _bad(where, f"at most {MAX_TOXICS} toxics")
    out: list[Toxic] = []
    seen: set[str] = set()
    for i, t in enumerate(toxics):
        toxic = parse_one(t, f"{where}[{i}]")
        if toxic.name in seen:
            raise _bad(f"{where}[{i}].name", f"two toxics are named {toxic.name!r}: name them "
                       "apart (name defaults to the type)")
        seen.add(toxic.name)
        out.append(toxic)
    return out


# ------------------------------------------------------------ per-chunk behaviours

Forward = Callable[[bytes, float], Awaitable[None]]


class Pipe(Protocol):
    """What a behaviour sees of one direction of a connection (agent/faults/proxy.py)."""

    counters: dict[str, int]

    def close_link(self, reason: str) -> None: ...
    def reset_link(self, reason: str) -> None: ...


async def _sleep_until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _latency(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    # Toxiproxy: latency +- jitter from the chunk's arrival, so chunks queued behind a
    # delayed one are not delayed twice.
    jitter = t.get("jitter_ms")
    delay = t.get("latency_ms") + (random.uniform(-jitter, jitter) if jitter else 0)
    await _sleep_until(at + max(0.0, delay) / 1000)
    await forward(data, at)


async def _bandwidth(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    rate = t.get("rate_kbps") * 1000  # bytes per second (Toxiproxy's KB/s)
    step = max(1, int(rate / 10))  # in 100 ms slices, as Toxiproxy does
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        await asyncio.sleep(len(piece) / rate)
        await forward(piece, at)


async def _slicer(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    size, spread, pause = int(t.get("average_size")), int(t.get("size_variation")), \
        t.get("delay_us") / 1e6
    i = 0
    while i < len(data):
        n = size + (random.randint(-spread, spread) if spread else 0)
        await forward(data[i:i + max(1, n)], at)
        i += max(1, n)
        if pause and i < len(data):
            await asyncio.sleep(pause)


async def _limit_data(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    passed = pipe.counters.get(t.name, 0)
    room = int(t.get("bytes")) - passed
    if room > 0:
        await forward(data[:room], at)
        pipe.counters[t.name] = passed + min(room, len(data))
    if len(data) >= room:
        pipe.close_link(f"{t.name}: limit_data of {int(t.get('bytes'))} bytes reached")


async def _timeout(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    # Dropped on the floor (the stream is corrupt from here: removing the toxic closes it).
    pipe.counters[t.name] = pipe.counters.get(t.name, 0) + len(data)


async def _loss(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    if random.random() < t.get("probability"):
        pipe.reset_link(f"{t.name}: lost a chunk")
        return
    await forward(data, at)


async def _pass(t: Toxic, pipe: Pipe, data: bytes, at: float, forward: Forward) -> None:
    await forward(data, at)


Behaviour = Callable[[Toxic, Pipe, bytes, float, Forward], Awaitable[None]]
CHUNK: dict[str, Behaviour] = {
    "latency": _latency, "bandwidth": _bandwidth, "slicer": _slicer,
    "limit_data": _limit_data, "timeout": _timeout, "loss": _loss,
}
# Not in CHUNK (they act on the connection, not on its chunks): the link runs them.
TIMED = ("cut_after", "reset_peer", "timeout")


def per_chunk(toxics: Sequence[Toxic]) -> tuple[Toxic, ...]:
    return tuple(t for t in toxics if t.type in CHUNK)


def behaviour(t: Toxic) -> Behaviour:
    return CHUNK.get(t.type, _pass)
