"""Shared plumbing of the bench/ scripts: run ids, statistics, reports, an agent fixture.

Every script is run as ``.venv/bin/python bench/<script>.py [--quick] [--json]``.
Progress goes to stderr; stdout carries either the human table or (``--json``)
exactly one JSON object, so ``run_all.py`` and CI can parse it.

Everything a run creates carries its run id (temp dir prefix, agent node
name, container label ``shakedown-bench.run=<id>``) and is removed at the end.
Processes are stopped by PID only, containers only if they carry our label.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import docker

    from tests.support.agentproc import AgentProcess

REPO = Path(__file__).resolve().parent.parent
# The bench scripts import the project (driver, agent, tests.support) from the checkout.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


RUN_LABEL = "shakedown-bench.run"  # caller label: io.shakedown.* is reserved for the agent
T = TypeVar("T")


def new_run_id() -> str:
    return f"bench{uuid.uuid4().hex[:6]}"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ arguments


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: tiny iteration counts (smoke test, numbers are noisy)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of the table")
    return p


# ------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float
    stdev: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        return cls(
            n=len(values), mean=statistics.fmean(values), p50=percentile(values, 50),
            p95=percentile(values, 95), p99=percentile(values, 99), min=min(values),
            max=max(values), stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
        )

    def scaled(self, factor: float) -> dict[str, float | int]:
        """As a dict with every time multiplied by ``factor`` (e.g. 1000 for ms)."""
        return {k: (v if k == "n" else round(v * factor, 4)) for k, v in asdict(self).items()}


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# ------------------------------------------------------------------ reports


@dataclass
class Metric:
    name: str
    value: float
    unit: str
    # "<=", "<" or ">=" against target; None: informational only.
    op: str | None = None
    target: float | None = None

    @property
    def met(self) -> bool | None:
        if self.op is None or self.target is None or math.isnan(self.value):
            return None if self.op is None else False
        return {"<=": self.value <= self.target, "<": self.value < self.target,
                ">=": self.value >= self.target, ">": self.value > self.target}[self.op]

    @property
    def verdict(self) -> str:
        met = self.met
        if met is None:
            return "(no target)"
        return "target met" if met else "target MISSED"

    def target_text(self) -> str:
        return "" if self.op is None else f"{self.op} {self.target:g}{self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _num(self.value), "unit": self.unit,
                "op": self.op, "target": self.target, "met": self.met}


@dataclass
class Report:
    bench: str
    run_id: str
    quick: bool
    metrics: list[Metric] = field(default_factory=list)
    # Human tables: (title, header, rows).
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "run_id": self.run_id, "quick": self.quick,
                "metrics": [m.as_dict() for m in self.metrics],
                "details": _clean(self.details), "notes": self.notes}

    def emit(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps(self.as_dict(), sort_keys=False))
            return
        mode = " (--quick: smoke test, numbers are noisy)" if self.quick else ""
        print(f"== {self.bench}  run {self.run_id}{mode}")
        for title, header, rows in self.tables:
            print()
            print(title)
            print(format_table(header, rows))
        print()
        print(format_table(
            ["metric", "value", "target", "verdict"],
            [[m.name, f"{m.value:.3f}{m.unit}", m.target_text(), m.verdict]
             for m in self.metrics],
        ))
        for note in self.notes:
            print(f"note: {note}")


def _num(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else round(v, 6)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def ms(seconds: float) -> str:
    return "nan" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


# ------------------------------------------------------------------ polling


# ------------------------------------------------------------------ fixtures


@contextlib.contextmanager
def workdir(run_id: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"shakedown-{run_id}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_agent(run_id: str, root: Path,
                  extra_args: Sequence[str] = ()) -> Iterator[AgentProcess]:
    """A real ``shakedown-agent`` subprocess named after the run, with a fresh PKI."""
    from tests.support.agentproc import AgentProcess, make_pki

    pki = make_pki(root / "pki", (run_id,))
    agent = AgentProcess(run_id, pki, root, extra_args=list(extra_args))
    try:
        agent.start()
        yield agent
    finally:
        code = agent.stop()
        if code not in (0, None):
            log(f"agent {run_id} exited with {code}; log tail:\n"
                + _tail(agent.log_path))


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def docker_client() -> docker.DockerClient:
    import docker

    return docker.from_env(timeout=60)


def remove_run_containers(client: docker.DockerClient, run_id: str) -> int:
    """Force-remove every container labelled with this run id (ours only); returns the count."""
    removed = 0
    for c in client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        with contextlib.suppress(Exception):
            client.api.remove_container(c["Id"], force=True)
            removed += 1
    return removed
