"""Linearizability of the workload registry: one register per key.

apply/update/scale = write(the invoke's value), delete = write(null), get = read (its ok's
value; null = absent); the register starts null. Other f values are not register operations.
Values are compared as canonical JSON.

Jepsen/Knossos semantics for the outcomes: a `fail` did not happen (dropped); an `info` (or
never completed) write may have happened at any time after its invoke, so its return time is
+infinity; an info read tells nothing (dropped).

The history is checked key by key (linearizability is compositional, Herlihy & Wing), each with
Wing & Gong's search as Lowe improved it and porcupine implements it: the finite operations'
call and return events in one doubly linked list; the search linearizes only a call seen
before the first remaining return ("just in time"), lifts it out of the list, and backtracks
when it meets a return; every configuration reached is memoised, so none is explored twice.
The linearized set is kept small: operations are numbered in return order and stored as
(lowest unlinearized number, bit window above it).

Info writes (return at +infinity) are handled apart, by two sound reductions:
- One never worth placing is dropped: had it taken effect, only reads of its value could sit
  between it and the next write. So one whose value no ok read returns is dropped up front, and
  the others are placed only immediately before a read of their value that needs them.
- Once invoked, an info write is available for good, and two of the same value are
  interchangeable: the search keeps, per value, only how many are in use (available = invoked
  before the first return left), and the memo key holds those counts for the values some
  unlinearized read still returns. Without this, every subset of pending info writes was a
  distinct configuration and a single stale read in a 10k-op history exhausted the search.
Bounded: `check(..., time_limit=)` gives up at the deadline (and a key at `max_configs` memoised
configurations) and answers "unknown", naming the keys it did not finish; a violation is
reported as "false" even if other keys are unfinished.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from driver.fuzz.history import Op, pairs
from driver.fuzz.results import UNKNOWN, Anomaly, CheckerResult, Validity, combine

NAME = "linearizable"
WRITE_FS = frozenset({"apply", "update", "scale", "delete"})
READ_FS = frozenset({"get"})


@dataclass(frozen=True, slots=True)
class RegisterOp:
    """One register operation of one key: indexes are history indexes."""

    f: str
    write: bool
    value: Any          # written value (write) or value read (read); None = absent
    invoke: int         # index of the invoke event
    complete: int | None  # index of the ok/info event; None for an invoke never completed
    info: bool          # indeterminate write: may have happened, return at +infinity

    @property
    def events(self) -> tuple[int, ...]:
        return (self.invoke,) if self.complete is None else (self.invoke, self.complete)

    def describe(self) -> str:
        v = json.dumps(self.value, sort_keys=True)
        if len(v) > 60:
            v = v[:57] + "..."
        what = f"{self.f}({v})" if self.write else f"get -> {v}"
        return f"{what}{' [info]' if self.info else ''} @{self.invoke}"


def register_ops(history: Iterable[Op]) -> dict[str, list[RegisterOp]]:
    """The register operations of each key, in invoke order (fails and info reads dropped)."""
    by_key: dict[str, list[RegisterOp]] = {}
    for p in pairs(history):
        inv = p.invoke
        if inv.key is None or (inv.f not in WRITE_FS and inv.f not in READ_FS):
            continue
        kind = p.type
        if kind == "fail":
            continue
        write = inv.f in WRITE_FS
        if not write and kind == "info":
            continue
        if write:
            value = None if inv.f == "delete" else inv.value
        else:
            value = p.complete.value if p.complete is not None else None
        by_key.setdefault(inv.key, []).append(RegisterOp(
            f=inv.f, write=write, value=value, invoke=inv.index,
            complete=p.complete.index if p.complete is not None else None,
            info=kind == "info"))
    return by_key


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class KeyResult:
    key: str
    valid: Validity
    ops: int
    configs: int           # memoised configurations explored
    elapsed: float
    anomaly: Anomaly | None = None
    reason: str | None = None  # why unknown


def check_key(key: str, ops: Sequence[RegisterOp], deadline: float,
              max_configs: int = 1_000_000) -> KeyResult:
    """Search one register's history for a linearization until `deadline` (monotonic)."""
    started = time.monotonic()
    canon = [_canonical(o.value) for o in ops]
    read_values = {c for o, c in zip(ops, canon, strict=True) if not o.write}
    keep = [not (o.info and c not in read_values) for o, c in zip(ops, canon, strict=True)]
    kept = [o for o, k in zip(ops, keep, strict=True) if k]
    # Values interned as ints; 0 is null/absent, the initial state.
    intern: dict[str, int] = {"null": 0}
    vals = [intern.setdefault(c, len(intern)) for c, k in zip(canon, keep, strict=True) if k]
    fops = [o for o in kept if not o.info]
    fvals = [v for o, v in zip(kept, vals, strict=True) if not o.info]
    n = len(fops)
    if n == 0:
        return KeyResult(key, True, 0, 0, time.monotonic() - started)

    # Info writes stay out of the list: one of value v is available once the search's "now"
    # (the first return left) is past its invoke, and it is worth placing only just before a
    # read of v that needs it (anywhere else it could be left out). Which one of value v is
    # used never matters, so per value: the sorted invokes, and how many are in use.
    info_calls: dict[int, list[int]] = {}
    for o, v in zip(kept, vals, strict=True):
        if o.info:
            info_calls.setdefault(v, []).append(o.invoke)
    for invokes in info_calls.values():
        invokes.sort()

    # The finite operations' events in history order: nodes 1..2n of a doubly linked list
    # (0 is the head, END past the last), numbered in return order for the linearized set.
    events: list[tuple[int, int, int]] = []
    for j, o in enumerate(fops):
        assert o.complete is not None
        events.append((o.invoke, 0, j))
        events.append((o.complete, 1, j))
    events.sort()
    size = 2 * n + 1
    END = size
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    node_op = [-1] * size
    n_pos = [-1] * size
    is_call = [False] * size
    match = [0] * size
    call_node = [0] * n
    rid = [0] * n
    for pos, (at, is_ret, j) in enumerate(events, 1):
        node_op[pos], n_pos[pos] = j, at
        if is_ret:
            match[call_node[j]] = pos
        else:
            is_call[pos] = True
            call_node[j] = pos
    for number, (_, _, j) in enumerate(e for e in events if e[1]):
        rid[j] = number
    n_write = [fops[j].write if j >= 0 else False for j in node_op]
    n_val = [fvals[j] if j >= 0 else 0 for j in node_op]
    n_rid = [rid[j] if j >= 0 else 0 for j in node_op]

    unread = [0] * len(intern)  # reads not yet linearized, per value
    for o, v in zip(fops, fvals, strict=True):
        if not o.write:
            unread[v] += 1
    used = [0] * len(intern)    # info writes placed, per value

    state = low = window = 0
    # (value, info writes placed) for the values still to be read, sorted: given the finite
    # set, the info writes available are fixed, so only these counts tell configurations apart.
    linfo: tuple[tuple[int, int], ...] = ()
    cache: set[tuple[int, int, tuple[tuple[int, int], ...], int]] = set()
    # (call node, whether an info write was placed before it, state, low, window, linfo)
    stack: list[tuple[int, bool, int, int, int, tuple[tuple[int, int], ...]]] = []
    best_depth = -1
    failure: tuple[int, list[int], int, list[int]] | None = None  # blocked, tail, state, pending
    steps = 0
    cur = nxt[0]
    while cur != END:
        steps += 1
        if not steps & 1023 and (time.monotonic() > deadline or len(cache) > max_configs):
            reason = "time limit" if len(cache) <= max_configs else f"over {max_configs} configs"
            return KeyResult(key, UNKNOWN, n, len(cache), time.monotonic() - started,
                             reason=reason)
        if is_call[cur]:
            v = n_val[cur]
            helper = False
            ni = linfo
            if n_write[cur]:
                new_state = v
            elif v == state:
                new_state = state
            else:
                calls = info_calls.get(v)
                if calls:
                    k = cur
                    while is_call[k]:
                        k = nxt[k]
                    helper = bisect.bisect_left(calls, n_pos[k]) > used[v]
                if not helper:
                    cur = nxt[cur]
                    continue
                new_state = v
                ni = _bump(linfo, v)
            if (r := n_rid[cur]) == low:
                w = window | 1
                t = (w ^ (w + 1)).bit_length() - 1  # trailing ones: the new frontier
                nl, nw = low + t, w >> t
            else:
                nl, nw = low, window | (1 << (r - low))
            if not n_write[cur]:
                unread[v] -= 1
                if not unread[v] and ni:
                    ni = tuple(e for e in ni if e[0] != v)
            config = (nl, nw, ni, new_state)
            if config in cache:
                if not n_write[cur]:
                    unread[v] += 1
                cur = nxt[cur]
                continue
            cache.add(config)
            stack.append((cur, helper, state, low, window, linfo))
            state, low, window, linfo = new_state, nl, nw, ni
            if helper:
                used[v] += 1
            # lift the call and its return out of the list
            p, q = prv[cur], nxt[cur]
            nxt[p] = q
            prv[q] = p
            m = match[cur]
            p, q = prv[m], nxt[m]
            nxt[p] = q
            if q != END:
                prv[q] = p
            cur = nxt[0]
        else:
            # A return reached: its operation cannot be linearized after this prefix.
            if len(stack) > best_depth:
                best_depth = len(stack)
                pending: list[int] = []
                k = nxt[0]
                while k != cur and len(pending) < 16:
                    if is_call[k]:
                        pending.append(node_op[k])
                    k = nxt[k]
                failure = (node_op[cur], [node_op[e[0]] for e in stack[-8:]], state, pending)
            if not stack:
                break
            cur, helper, state, low, window, linfo = stack.pop()
            if not n_write[cur]:
                unread[n_val[cur]] += 1
            if helper:
                used[n_val[cur]] -= 1
            m = match[cur]
            nxt[prv[m]] = m
            if nxt[m] != END:
                prv[nxt[m]] = m
            nxt[prv[cur]] = cur
            prv[nxt[cur]] = cur
            cur = nxt[cur]
    elapsed = time.monotonic() - started
    if cur == END:
        return KeyResult(key, True, n, len(cache), elapsed)
    assert failure is not None
    return KeyResult(key, False, n, len(cache), elapsed,
                     anomaly=_anomaly(key, fops, failure, list(intern)))


def _bump(counts: tuple[tuple[int, int], ...], v: int) -> tuple[tuple[int, int], ...]:
    for i, (x, c) in enumerate(counts):
        if x == v:
            return (*counts[:i], (v, c + 1), *counts[i + 1:])
    return tuple(sorted((*counts, (v, 1))))


def _anomaly(key: str, ops: Sequence[RegisterOp], failure: tuple[int, list[int], int, list[int]],
             values: list[str]) -> Anomaly:
    blocked, tail, state, pending = failure
    b = ops[blocked]
    others = [ops[i] for i in pending if i != blocked]
    involved = [b, *others, *(ops[i] for i in tail)]
    event_ids = sorted({e for o in involved for e in o.events})
    held = values[state]
    prefix = ", ".join(ops[i].describe() for i in tail) or "nothing"
    message = (f"key {key}: {b.describe()} cannot be linearized: the longest linearizable "
               f"prefix found ends with [{prefix}] leaving the register at {held}")
    if others:
        message += "; concurrent candidates: " + ", ".join(o.describe() for o in others)
    return Anomaly(
        kind="not-linearizable", message=message, key=key, ops=tuple(event_ids),
        detail={"op": list(b.events), "state": json.loads(held),
                "linearized_tail": [list(ops[i].events) for i in tail]})


def check(history: Iterable[Op], time_limit: float = 60.0, max_configs: int = 1_000_000,
          key_time_limit: float | None = None) -> CheckerResult:
    """Check every key's register history within `time_limit` seconds.

    Keys go smallest first, each capped at `key_time_limit` (default a tenth of the limit), so
    one hard key cannot starve the rest; the keys that ran out then share what is left of the
    limit, evenly, in a second pass."""
    started = time.monotonic()
    deadline = started + time_limit
    cap = time_limit / 10 if key_time_limit is None else key_time_limit
    by_key = register_ops(history)
    order = sorted(by_key, key=lambda k: (len(by_key[k]), k))
    done: dict[str, KeyResult] = {}
    for key in order:
        now = time.monotonic()
        if now >= deadline:
            break
        done[key] = check_key(key, by_key[key], min(deadline, now + cap), max_configs)
    retry = [k for k in order if k in done and done[k].reason == "time limit"]
    for i, key in enumerate(retry):
        now = time.monotonic()
        if now >= deadline:
            break
        done[key] = check_key(key, by_key[key], now + (deadline - now) / (len(retry) - i),
                              max_configs)
    results = [done[k] for k in order if k in done]
    unfinished = [k for k in order if k not in done or done[k].valid == UNKNOWN]
    valid = combine([*(r.valid for r in results), *([UNKNOWN] * bool(unfinished))] or [True])
    detail: dict[str, Any] = {
        "keys": len(by_key), "operations": sum(len(v) for v in by_key.values()),
        "configs": sum(r.configs for r in results), "time_limit": time_limit}
    if unfinished:
        detail["unfinished"] = sorted(unfinished)
        reasons = {r.key: r.reason for r in results if r.reason}
        detail["message"] = (f"{len(unfinished)} key(s) not finished within the limits "
                             f"({', '.join(sorted(set(reasons.values())) or ['time limit'])}): "
                             + ", ".join(sorted(unfinished)[:20]))
    anomalies = tuple(r.anomaly for r in results if r.anomaly is not None)
    return CheckerResult(name=NAME, valid=valid, anomalies=anomalies,
                         elapsed=time.monotonic() - started, detail=detail)
