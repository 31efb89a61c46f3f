"""The operation history of a fuzz run, in Jepsen's form, recorded as it happens.

Every event is one `Op` (one line of history.jsonl):

    {"index": 0, "type": "invoke", "process": 0, "f": "apply", "key": "w-3", "value": {...},
     "time": 0.0123, "node": "n1", "faults": ["f-..."], "error": null}

A process does one operation at a time: its invoke is completed by its next ok, fail or info
(info: indeterminate, it may or may not have taken effect). Nemesis events have process
"nemesis" and f "inject" (ok value {"fault", "kind", "targets", "label"}) or "heal" (ok value
{"fault": id | "all"}); `faults` on every event are the fault ids active once the event is
applied (an inject ok lists its own fault, a heal ok no longer lists the healed one).

`History` is safe to use from several worker threads: index assignment, the time stamp and
the line written to the file happen under one lock, so file order = index order = time order.
Each line is flushed as it is written, so a crash keeps everything recorded before it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
Process = int | Literal["nemesis"]

TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
COMPLETIONS: frozenset[str] = frozenset({"ok", "fail", "info"})
NEMESIS: Literal["nemesis"] = "nemesis"


class HistoryError(ValueError):
    """A malformed event or history (the message names the field or line)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One event of the history."""

    index: int
    type: OpType
    process: Process
    f: str
    key: str | None = None
    value: Any = None
    time: float = 0.0
    node: str | None = None
    faults: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "process": self.process, "f": self.f,
                "key": self.key, "value": self.value, "time": self.time, "node": self.node,
                "faults": list(self.faults), "error": self.error}

    @classmethod
    def from_json(cls, obj: Any) -> Op:
        """Parse one event; a bad one raises HistoryError naming the field."""
        if not isinstance(obj, dict):
            raise HistoryError(f"an event must be a JSON object, got {type(obj).__name__}")
        for name in ("index", "type", "process", "f"):
            if name not in obj:
                raise HistoryError(f"field {name!r} is missing")
        index, typ, process, f = obj["index"], obj["type"], obj["process"], obj["f"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise HistoryError(f"field 'index' must be an integer >= 0, got {index!r}")
        if typ not in TYPES:
            raise HistoryError(f"field 'type' must be one of {sorted(TYPES)}, got {typ!r}")
        _check_process(process)
        if not isinstance(f, str) or not f:
            raise HistoryError(f"field 'f' must be a non-empty string, got {f!r}")
        key, node, error = obj.get("key"), obj.get("node"), obj.get("error")
        for name, v in (("key", key), ("node", node), ("error", error)):
            if v is not None and not isinstance(v, str):
                raise HistoryError(f"field {name!r} must be a string or null, got {v!r}")
        t = obj.get("time", 0.0)
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
            raise HistoryError(f"field 'time' must be a finite number, got {t!r}")
        faults = obj.get("faults") or []
        if not isinstance(faults, list) or not all(isinstance(x, str) for x in faults):
            raise HistoryError(f"field 'faults' must be a list of strings, got {faults!r}")
        return cls(index=index, type=typ, process=process, f=f, key=key, value=obj.get("value"),
                   time=float(t), node=node, faults=tuple(faults), error=error)


def _check_process(process: Any) -> None:
    if process == NEMESIS:
        return
    if not isinstance(process, int) or isinstance(process, bool) or process < 0:
        raise HistoryError(f"field 'process' must be an integer >= 0 or 'nemesis', got {process!r}")


def _check_storable(value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"field 'value' is not JSON-serialisable: {exc}") from None


@dataclass(frozen=True, slots=True)
class Token:
    """What `History.invoke` hands back; pass it to `History.complete`."""

    index: int
    process: Process
    f: str
    key: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class Pair:
    """An invoke and its completion (None: it never completed, which counts as info)."""

    invoke: Op
    complete: Op | None

    @property
    def type(self) -> OpType:
        return self.complete.type if self.complete is not None else "info"

    @property
    def end(self) -> float:
        """The completion's time; +inf when there is none."""
        return self.complete.time if self.complete is not None else math.inf


@dataclass
class History:
    """Thread-safe recorder; with a path, appends each event to that history.jsonl as it goes."""

    path: Path | None = None
    _ops: list[Op] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _t0: float = field(default_factory=time.monotonic, init=False, repr=False)
    _open: dict[Process, Token] = field(default_factory=dict, init=False, repr=False)
    _faults: dict[str, None] = field(default_factory=dict, init=False, repr=False)  # ordered set
    _file: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    # ------------------------------------------------------------------ recording

    def invoke(self, process: Process, f: str, key: str | None = None, value: Any = None,
               node: str | None = None) -> Token:
        """Record the start of an operation; a process with one still open is an error."""
        _check_process(process)
        if not isinstance(f, str) or not f:
            raise HistoryError(f"field 'f' must be a non-empty string, got {f!r}")
        with self._lock:
            if process in self._open:
                raise HistoryError(
                    f"process {process!r} already has operation {self._open[process].index} open: "
                    "a process does one operation at a time")
            op = self._append_locked("invoke", process, f, key, value, node, None)
            token = Token(op.index, process, f, key, node)
            self._open[process] = token
            return token

    def complete(self, token: Token, type: OpType, value: Any = None,
                 error: str | None = None) -> Op:
        """Record the completion (ok, fail or info) of the operation `token` started."""
        if type not in COMPLETIONS:
            raise HistoryError(f"field 'type' must be one of {sorted(COMPLETIONS)}, got {type!r}")
        with self._lock:
            if self._open.get(token.process) != token:
                raise HistoryError(f"operation {token.index} of process {token.process!r} "
                                   "is not open (already completed, or not from this history)")
            _check_storable(value)  # before any state changes: a refused event changes nothing
            if type == "ok" and token.process == NEMESIS:
                self._track_fault_locked(token.f, value)
            del self._open[token.process]
            return self._append_locked(type, token.process, token.f, token.key, value,
                                       token.node, error)

    def nemesis_inject(self, fault_id: str, kind: str, targets: Iterable[str],
                       label: str) -> Op:
        """Record a fault that is now in force (an invoke and its ok, back to back)."""
        value = {"fault": fault_id, "kind": kind, "targets": list(targets), "label": label}
        return self.complete(self.invoke(NEMESIS, "inject", None, value), "ok", value)

    def nemesis_heal(self, fault_id: str) -> Op:
        """Record that `fault_id` (or "all") is healed (an invoke and its ok, back to back)."""
        value = {"fault": fault_id}
        return self.complete(self.invoke(NEMESIS, "heal", None, value), "ok", value)

    def _track_fault_locked(self, f: str, value: Any) -> None:
        fault = value.get("fault") if isinstance(value, dict) else None
        if not isinstance(fault, str) or not fault:
            if f in ("inject", "heal"):
                raise HistoryError(f"a nemesis {f} ok needs value {{'fault': id}}, got {value!r}")
            return
        if f == "inject":
            self._faults[fault] = None
        elif f == "heal":
            if fault == "all":
                self._faults.clear()
            else:
                self._faults.pop(fault, None)

    def _append_locked(self, type: OpType, process: Process, f: str, key: str | None,
                       value: Any, node: str | None, error: str | None) -> Op:
        op = Op(index=len(self._ops), type=type, process=process, f=f, key=key, value=value,
                time=round(time.monotonic() - self._t0, 6), node=node,
                faults=tuple(self._faults), error=error)
        try:  # with or without a file: what is recorded must be storable
            line = json.dumps(op.to_json(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise HistoryError(f"field 'value' is not JSON-serialisable: {exc}") from None
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        self._ops.append(op)
        return op

    # ------------------------------------------------------------------ reading

    @property
    def active_faults(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._faults)

    @property
    def ops(self) -> list[Op]:
        """A snapshot of every event so far, in index order."""
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump(ops: Iterable[Op], path: Path) -> None:
    """Write events as history.jsonl (for histories not recorded by a `History`)."""
    with Path(path).open("w", encoding="utf-8") as out:
        for op in ops:
            out.write(json.dumps(op.to_json(), separators=(",", ":"), allow_nan=False) + "\n")


def load(path: Path) -> list[Op]:
    """Read history.jsonl. A last line cut off without its newline (the recorder died while
    writing it) is dropped; any other bad line is an error naming its line number."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines[-1] = ""  # an incomplete last line: the event was never fully recorded
    ops: list[Op] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            op = Op.from_json(json.loads(line))
        except json.JSONDecodeError as exc:
            raise HistoryError(f"{path}:{number}: not JSON: {exc.msg}") from None
        except HistoryError as exc:
            raise HistoryError(f"{path}:{number}: {exc}") from None
        if op.index != len(ops):
            raise HistoryError(f"{path}:{number}: field 'index' is {op.index}, expected {len(ops)}")
        ops.append(op)
    return ops


def pairs(history: Iterable[Op]) -> list[Pair]:
    """Each invoke with its completion (the same process's next ok/fail/info), in invoke order.
    An invoke never completed gets complete=None (info); a completion with no open invoke
    of its process is an error."""
    out: list[Pair] = []
    open_: dict[Process, int] = {}  # process -> position in out
    for op in history:
        if op.type == "invoke":
            if op.process in open_:
                raise HistoryError(f"event {op.index}: process {op.process!r} invokes while "
                                   f"event {out[open_[op.process]].invoke.index} is open")
            open_[op.process] = len(out)
            out.append(Pair(op, None))
        else:
            at = open_.pop(op.process, None)
            if at is None:
                raise HistoryError(f"event {op.index}: {op.type} of process {op.process!r} "
                                   "completes no open invoke")
            out[at] = Pair(out[at].invoke, op)
    return out


def iter_fault_periods(history: Iterable[Op]) -> Iterator[tuple[str, Op, Op | None]]:
    """(fault id, inject ok, heal ok or None while it lasts to the end) for each fault."""
    started: dict[str, Op] = {}
    for op in history:
        if op.process != NEMESIS or op.type != "ok" or not isinstance(op.value, dict):
            continue
        fault = op.value.get("fault")
        if op.f == "inject" and isinstance(fault, str):
            started[fault] = op
        elif op.f == "heal" and fault == "all":
            for fid, inject in started.items():
                yield fid, inject, op
            started.clear()
        elif op.f == "heal" and isinstance(fault, str) and fault in started:
            yield fault, started.pop(fault), op
    for fid, inject in started.items():
        yield fid, inject, None
