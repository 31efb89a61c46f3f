"""The fuzzer's model of the desired state, built only from what it asked and was told.

Rules and preconditions never read live observations (Hypothesis must be able
to replay the same choices); the model is what the invariants compare the
system against once it has converged. A write whose answer was lost (a
timeout: Jepsen's ``info``) may or may not have happened, so the model keeps
the set of values a key may end with, not one value.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from driver.adapters.base import Workload


@dataclass
class Model:
    prefix: str  # makes logical names unique per example: "<prefix>-w0"
    # logical name -> the values its register may hold once settled (None: absent)
    may_end: dict[str, set[str | None]] = field(default_factory=dict)
    # logical name -> every workload id the system returned for it (old ones must be gone)
    ids: dict[str, set[str]] = field(default_factory=dict)
    last: dict[str, Workload] = field(default_factory=dict)
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    in_flight: dict[str, set[str | None]] = field(default_factory=dict)  # info writes' values
    chosen_faults: int = 0  # injects minus heals as chosen (preconditions read this)

    def real(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def names(self) -> list[str]:
        return sorted(self.may_end)

    def next_version(self) -> int:
        return next(self.versions)

    def workload(self, name: str) -> Workload | None:
        return self.last.get(name)

    def saw(self, name: str, workload: Workload) -> None:
        self.ids.setdefault(name, set()).add(workload.id)
        self.last[name] = workload

    def acknowledged(self, name: str, value: str | None) -> None:
        """A write that certainly happened, after every earlier one; an earlier write whose
        answer was lost may still land after it (Jepsen's info), so it stays possible."""
        self.may_end[name] = {value} | self.in_flight.get(name, set())

    def indeterminate(self, name: str, value: str | None) -> None:
        """A write that may have happened (or may still happen)."""
        self.may_end.setdefault(name, {None}).add(value)
        self.in_flight.setdefault(name, set()).add(value)

    def concurrent(self, name: str, acked: list[str | None], maybe: list[str | None]) -> None:
        """Writes to one key that ran at once: any acknowledged one may have won."""
        self.in_flight.setdefault(name, set()).update(maybe)
        if acked:
            self.may_end[name] = set(acked) | self.in_flight[name]
        else:
            for v in maybe:
                self.indeterminate(name, v)
