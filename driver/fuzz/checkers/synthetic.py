"""Random register histories, linearizable by construction, for tests and benchmarks.

A simulation of `processes` clients on one register per key: every operation takes effect at
one instant between its invoke and its completion (its linearization point), against a model
of the registry, so the history it records is linearizable. Some complete as `info` (a write
that did or did not take effect, a read whose answer was lost), some as `fail` (did not take
effect), and the last few may never complete. Keys come and go like workloads do: at any time
about `active_keys` of them are in use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from driver.fuzz.history import Op

WRITE_FS = ("apply", "update", "scale", "delete")


@dataclass
class _Pending:
    invoke: Op
    done: bool = False      # took effect (its linearization point has passed)
    read: Any = None


@dataclass
class _Sim:
    rng: random.Random
    ops: list[Op] = field(default_factory=list)

    def emit(self, type: str, process: int, f: str, key: str, value: Any) -> Op:
        op = Op(index=len(self.ops), type=type, process=process, f=f,  # type: ignore[arg-type]
                key=key, value=value, time=len(self.ops) * 0.001, node=f"n{process % 3 + 1}")
        self.ops.append(op)
        return op


def register_history(rng: random.Random, operations: int, processes: int = 5,
                     active_keys: int = 10, read_ratio: float = 0.5, info_ratio: float = 0.05,
                     fail_ratio: float = 0.03, distinct_values: int | None = None,
                     unfinished: bool = True) -> list[Op]:
    """A linearizable history of about `operations` register operations.

    distinct_values: writes draw from that many values per key (collisions on purpose);
    None makes every written value unique. unfinished: leave the last pending ones open."""
    sim = _Sim(rng)
    state: dict[str, Any] = {}
    pending: dict[int, _Pending] = {}
    started = 0
    key_base = 0
    counter = 0
    while started < operations or pending:
        p = rng.randrange(processes)
        op = pending.get(p)
        if op is None:
            if started >= operations:
                if not unfinished or not pending:
                    continue
                break  # the rest stay open, as when a run is cut off
            # keys drift: now and then the oldest workload is retired and a new one begins
            if rng.random() < 2.0 / max(operations / active_keys, 1):
                key_base += 1
            key = f"w-{key_base + rng.randrange(active_keys)}"
            if rng.random() < read_ratio:
                f, value = "get", None
            else:
                f = rng.choice(WRITE_FS)
                counter += 1
                v = counter if distinct_values is None else rng.randrange(distinct_values)
                value = None if f == "delete" else {"image": "busybox", "replicas": v}
            pending[p] = _Pending(sim.emit("invoke", p, f, key, value))
            started += 1
            continue
        inv = op.invoke
        assert inv.key is not None
        roll = rng.random()
        if not op.done and roll < 0.5:
            if inv.f == "get":
                op.read = state.get(inv.key)
            else:
                state[inv.key] = inv.value  # delete writes None: absent
            op.done = True
        elif not op.done and roll < 0.5 + fail_ratio:
            sim.emit("fail", p, inv.f, inv.key, None)
            del pending[p]
        elif op.done or roll < 0.5 + fail_ratio + info_ratio:
            if rng.random() < info_ratio or not op.done:
                sim.emit("info", p, inv.f, inv.key, None)  # may or may not have happened
            else:
                sim.emit("ok", p, inv.f, inv.key, op.read if inv.f == "get" else inv.value)
            del pending[p]
    return sim.ops
