"""shakedown fuzz: steps per second on a correct local environment, and per planted bug the
time to find it (median over seeds) and the length it shrinks to.

Each environment (etcd, CoreDNS, 2 schedulers, 2 agents) is created for the run, named
with its run id, and destroyed at the end. The baseline of the steps/s row, measured in
the same run, is the same environment's raw apply+get round trip through the adapter:
the ratio says how much of a step is the fuzzer's own bookkeeping and judging.

    .venv/bin/python bench/bench_fuzz.py [--quick] [--json] [--seeds 1,2,3] [--budget S]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import Metric, Report, log, new_run_id, parser

from driver.env import Environment
from driver.fuzz.runner import FuzzConfig, run_fuzz
from driver.fuzz.strategies import workload_spec
from driver.images import ensure_busybox_image

BUGS = ("skip-orphan-gc", "blind-write", "dual-leader")


def raw_ops_per_s(env: Environment, n: int) -> float:
    """Apply + get through the adapter, no fuzzer: the baseline of one workload step."""
    system, image = env.adapter(), ensure_busybox_image()
    assert system is not None
    started = time.monotonic()
    try:
        for i in range(n):
            system.apply(workload_spec("bench-raw", image, 1, i + 1))
            system.get("bench-raw")
    finally:
        system.delete("bench-raw")
        system.close()
    return 2 * n / (time.monotonic() - started)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--budget", type=float, default=None, help="seconds per run (default 300)")
    args = p.parse_args()
    seeds = [int(s) for s in (args.seeds or ("3" if args.quick else "1,2,3")).split(",")]
    budget = args.budget or (90.0 if args.quick else 300.0)
    run_id = new_run_id()
    report = Report("fuzz", run_id, args.quick)
    base = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    rows: list[list[str]] = []
    details: dict[str, object] = {"budget_s": budget, "seeds": seeds, "bugs": {}}
    try:
        log("correct environment: steps/s")
        with Environment.create(f"{run_id}ok", nodes=2, schedulers=2, base=base) as env:
            try:
                raw = raw_ops_per_s(env, 5 if args.quick else 20)
                r = run_fuzz(env, FuzzConfig(budget_s=30 if args.quick else 120, seed=seeds[0]))
                rate = r.summary["steps"] / max(r.summary["elapsed_s"], 0.001)
                report.metrics += [
                    Metric("fuzz steps/s (correct system)", rate, "/s"),
                    Metric("raw adapter ops/s (baseline)", raw, "/s"),
                    Metric("fuzz steps/s / raw ops/s", rate / raw, "x"),
                    Metric("false alarms on the correct system", float(r.valid is False), "",
                           "<=", 0)]
                details["correct"] = {k: r.summary[k] for k in ("valid", "examples", "steps",
                                                                "elapsed_s")}
            finally:
                env.destroy()
        for bug in BUGS:
            found, shrunk = [], []
            with Environment.create(f"{run_id}{bug[:4]}", nodes=2, schedulers=2, base=base,
                                    scheduler_bugs=[bug]) as env:
                try:
                    for seed in seeds:
                        log(f"{bug}: seed {seed}")
                        # Each seed searches from nothing: the example database (and its
                        # saved shrink) would hand it the last seed's failure at once.
                        shutil.rmtree(env.paths.root / "fuzz-db", ignore_errors=True)
                        r = run_fuzz(env, FuzzConfig(budget_s=budget, seed=seed))
                        s = r.summary
                        if s["found_at_s"] is not None and r.valid is False:
                            found.append(s["found_at_s"])
                            shrunk.append(s["shrunk_steps"])
                        rows.append([bug, str(seed), str(r.valid),
                                     f"{s['found_at_s']:.0f} s" if s["found_at_s"] else "-",
                                     str(s.get("found_steps") or "-"),
                                     str(s["shrunk_steps"] or "-")])
                finally:
                    env.destroy()
            details["bugs"][bug] = {"found_at_s": found, "shrunk_steps": shrunk}  # type: ignore[index]
            report.metrics.append(Metric(f"{bug}: found in runs", len(found), "",
                                         ">=", len(seeds)))
            if found:
                report.metrics += [
                    Metric(f"{bug}: time to find, median", statistics.median(found), " s"),
                    Metric(f"{bug}: shrunk steps, max", max(shrunk), "", "<=", 8)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.tables.append(("planted bugs", ["bug", "seed", "valid", "found at", "found steps",
                                           "shrunk steps"], rows))
    report.details = details
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
