"""The fault journal: one JSON file per fault under ``<state-dir>/faults/``.

An entry is written (atomically) BEFORE its fault is applied and names every
step that undoes it, so an agent that was SIGKILLed mid-way can still heal on
its next start: undo steps are idempotent, undoing what was never applied is a
no-op. The entry is deleted only once the fault is healed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from shakedown.agent.v1 import agent_pb2 as pb

log = logging.getLogger(__name__)
DIR = "faults"


@dataclass
class Undo:
    """One idempotent step that undoes part of a fault."""

    # "start" (if not running), "unpause" (if paused), "unchain" (remove an iptables
    # chain), "none" (nothing to undo: restart).
    op: str
    container: str
    chain: str = ""
    # unchain: the namespace (by its container's pid then) had no filter table before.
    pid: int = 0
    drop_table: bool = False


@dataclass
class Entry:
    fault: pb.Fault
    undo: list[Undo] = field(default_factory=list)
    # False until every step of the fault was applied.
    applied: bool = False
    # The owning session as SessionInfo's fields: after a restart it is recovered
    # from here when no labelled container, network or volume names it.
    session: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "fault": json_format.MessageToDict(self.fault),
            "undo": [asdict(u) for u in self.undo],
            "applied": self.applied,
            "session": self.session,
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Entry:
        data = json.loads(text)
        fault = json_format.ParseDict(data["fault"], pb.Fault())
        return cls(fault, [Undo(**u) for u in data.get("undo", [])], bool(data.get("applied")),
                   dict(data.get("session") or {}))


class Journal:
    """Entries on disk; without a state dir (tests), nothing survives a restart."""

    def __init__(self, state_dir: Path | None) -> None:
        self.dir = state_dir / DIR if state_dir else None

    def save(self, entry: Entry) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.dir / f"{entry.fault.id}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(entry.to_json())
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the fault is applied
        os.replace(tmp, path)

    def delete(self, fault_id: str) -> None:
        if self.dir is not None:
            (self.dir / f"{fault_id}.json").unlink(missing_ok=True)

    def load(self) -> list[Entry]:
        if self.dir is None or not self.dir.is_dir():
            return []
        entries = []
        for path in sorted(self.dir.glob("f-*.json")):
            try:
                entries.append(Entry.from_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError, json_format.ParseError) as exc:
                # Keep the file for a human: a torn entry cannot be undone blindly.
                log.error("unreadable fault journal entry %s: %s", path, exc)
        return entries
