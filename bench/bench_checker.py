"""The linearizability checker's time on generated histories of 1k, 10k and 100k operations.

Histories come from `driver.fuzz.checkers.synthetic` (linearizable by construction): 8
processes, about 12 workloads in use at a time, keys retired and new ones started as the run
goes, 5% info and 3% fail outcomes, written values drawn from 5 per key (replica counts
collide, as in a fuzz run). Each is also checked with one read answer changed (usually a
violation the checker must prove). Baseline, same run, same files: porcupine through
tools/porcupine (scripts/build-porcupine.sh), its own check time (the Go process start and
JSON parsing reported apart). Ratio = ours / porcupine's check time. Limits: ours 60 s,
porcupine 30 s per history (5 s with --quick); past them the verdict is "unknown".
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO, Metric, Report, log, new_run_id, parser, workdir

from driver.fuzz.checkers.linearizable import check
from driver.fuzz.checkers.synthetic import register_history
from driver.fuzz.history import Op, dump

SIZES = (1_000, 10_000, 100_000)
TIME_LIMIT = 60.0           # ours, per history
PORCUPINE_TIMEOUT = 30.0    # porcupine's, per history


def porcupine_binary() -> Path | None:
    try:
        out = subprocess.run([str(REPO / "scripts/build-porcupine.sh")], check=True,
                             capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"porcupine not built ({exc}): no baseline")
        return None
    return Path(out.stdout.strip().splitlines()[-1])


def run_porcupine(binary: Path, path: Path, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    out = subprocess.run([str(binary), "-timeout", f"{int(limit)}s", str(path)],
                         check=True, capture_output=True, text=True, timeout=limit + 60)
    result: dict[str, Any] = json.loads(out.stdout)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def stale_read(ops: list[Op], rng: random.Random) -> list[Op]:
    """One ok read, late in the history, answers a value its key never held."""
    reads = [i for i, o in enumerate(ops) if o.type == "ok" and o.f == "get"]
    i = reads[int(len(reads) * 0.9)] if reads else rng.randrange(len(ops))
    o = ops[i]
    out = list(ops)
    out[i] = Op(index=o.index, type=o.type, process=o.process, f=o.f, key=o.key,
                value={"image": "busybox", "replicas": 999}, time=o.time, node=o.node)
    return out


def best_of(n: int, ops: list[Op]) -> tuple[float, Any]:
    times, verdict = [], None
    for _ in range(n):
        started = time.perf_counter()
        verdict = check(ops, time_limit=TIME_LIMIT).valid
        times.append(time.perf_counter() - started)
    return min(times), verdict


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated operation counts")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 10_000] or sizes[:1]
    run_id = new_run_id()
    report = Report("checker", run_id, args.quick)
    binary = porcupine_binary()
    rows: list[list[str]] = []
    details: dict[str, Any] = {}
    with workdir(run_id) as root:
        for size in sizes:
            rng = random.Random(size)
            good = register_history(rng, size, processes=8, active_keys=12,
                                    info_ratio=0.05, fail_ratio=0.03, distinct_values=5)
            for name, ops in ((f"{size}", good), (f"{size} stale read", stale_read(good, rng))):
                path = root / f"history-{name.replace(' ', '-')}.jsonl"
                dump(ops, path)
                ops_count = sum(1 for o in ops if o.type == "invoke")
                repeats = 1 if size >= 100_000 or args.quick else 3
                ours, verdict = best_of(repeats, ops)
                theirs = (run_porcupine(binary, path, 5 if args.quick else PORCUPINE_TIMEOUT)
                          if binary else None)
                ratio = ours / theirs["check_seconds"] if theirs else float("nan")
                log(f"{name}: {ops_count} ops, ours {ours:.3f}s ({verdict}), porcupine "
                    + (f"{theirs['check_seconds']:.3f}s ({theirs['valid']})" if theirs else "-"))
                rows.append([name, str(ops_count), f"{ours:.3f}", f"{ops_count / ours:,.0f}",
                             str(verdict),
                             f"{theirs['check_seconds']:.3f}" if theirs else "-",
                             f"{theirs['parse_seconds']:.3f}" if theirs else "-",
                             str(theirs["valid"]) if theirs else "-",
                             f"{ratio:.2f}" if theirs else "-"])
                details[name] = {"operations": ops_count, "events": len(ops), "seconds": ours,
                                 "valid": verdict, "porcupine": theirs, "ratio": ratio}
                if theirs and theirs["valid"] != verdict and "unknown" not in (verdict,
                                                                               theirs["valid"]):
                    report.notes.append(f"{name}: verdicts differ (ours {verdict}, "
                                        f"porcupine {theirs['valid']})")
                if name == f"{size}":
                    report.metrics.append(Metric(f"{size} ops: ops/s", ops_count / ours, " ops/s"))
                    if theirs:
                        report.metrics.append(Metric(f"{size} ops: ours/porcupine", ratio, "x"))
    largest = str(max(sizes))
    report.metrics.append(Metric(f"{largest} ops: check time", details[largest]["seconds"], "s",
                                 "<=", 10.0))
    report.tables.append(("checker time (best of 3; 1 run at 100k)",
                          ["history", "ops", "ours s", "ours ops/s", "ours valid",
                           "porcupine s", "porc. parse s", "porc. valid", "ours/porc."], rows))
    report.details = details
    report.notes.append("ratio = our check time / porcupine's check time on the same file "
                        "(porcupine's JSON parse and process start excluded)")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
