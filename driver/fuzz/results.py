"""Checker verdicts and their aggregation into results.json.

    {"valid": true|false|"unknown",
     "checkers": {"<name>": {"valid": ..., "anomalies": [{"kind", "message", "key", "ops"}],
                             "elapsed": <s>, ...}}}

The run is invalid if any checker found an anomaly, else unknown if any could not decide,
else valid: an "unknown" never turns into a pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Validity = bool | Literal["unknown"]
UNKNOWN: Literal["unknown"] = "unknown"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One thing found wrong; `ops` are history indexes of the operations involved."""

    kind: str
    message: str
    key: str | None = None
    ops: tuple[int, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)  # extra fields, written alongside

    def to_json(self) -> dict[str, Any]:
        return {**self.detail, "kind": self.kind, "message": self.message, "key": self.key,
                "ops": list(self.ops)}


@dataclass(frozen=True, slots=True)
class CheckerResult:
    name: str
    valid: Validity
    anomalies: tuple[Anomaly, ...] = ()
    elapsed: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)  # extra fields, e.g. keys checked

    def __post_init__(self) -> None:
        if not (isinstance(self.valid, bool) or self.valid == UNKNOWN):
            raise ValueError(f"field 'valid' must be true, false or 'unknown', got {self.valid!r}")

    def to_json(self) -> dict[str, Any]:
        return {**self.detail, "valid": self.valid,
                "anomalies": [a.to_json() for a in self.anomalies],
                "elapsed": round(self.elapsed, 6)}


def combine(verdicts: Iterable[Validity]) -> Validity:
    """False if any is false; else unknown if any is unknown (or there are none); else true."""
    seen = list(verdicts)
    if any(v is False for v in seen):
        return False
    if not seen or any(v == UNKNOWN for v in seen):
        return UNKNOWN
    return True


@dataclass
class Results:
    checkers: dict[str, CheckerResult] = field(default_factory=dict)

    def add(self, result: CheckerResult) -> None:
        if result.name in self.checkers:
            raise ValueError(f"checker {result.name!r} already has a result")
        self.checkers[result.name] = result

    @property
    def valid(self) -> Validity:
        return combine(r.valid for r in self.checkers.values())

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid,
                "checkers": {name: r.to_json() for name, r in self.checkers.items()}}

    def write(self, path: Path) -> None:
        """Write results.json atomically (a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Results:
        out = cls()
        for name, r in obj.get("checkers", {}).items():
            extra = {k: v for k, v in r.items() if k not in ("valid", "anomalies", "elapsed")}
            anomalies = tuple(
                Anomaly(kind=a["kind"], message=a["message"], key=a.get("key"),
                        ops=tuple(a.get("ops", ())),
                        detail={k: v for k, v in a.items()
                                if k not in ("kind", "message", "key", "ops")})
                for a in r.get("anomalies", ()))
            out.add(CheckerResult(name=name, valid=r["valid"], anomalies=anomalies,
                                  elapsed=float(r.get("elapsed", 0.0)), detail=extra))
        return out

    @classmethod
    def load(cls, path: Path) -> Results:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
