"""Run every benchmark (each in its own process) and print one summary table.

    .venv/bin/python bench/run_all.py [--quick] [--json] [--only rpc,rss]

Each script runs with ``--json`` (plus ``--quick`` when given); its progress
goes to stderr as it runs, its JSON object is collected here. Exits 0 even if
a target is missed (the table says so); non-zero only if a script failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import format_table, log, parser

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "lifecycle": "bench_lifecycle.py",
    "rpc": "bench_rpc.py",
    "rss": "bench_rss.py",
    "discovery": "bench_discovery.py",
    "context": "bench_context.py",
    "burst": "bench_burst.py",
    "dynamic": "bench_dynamic.py",
    "goclient": "bench_goclient.py",
    "cli": "bench_cli.py",
    "scheduler": "bench_scheduler.py",
    "checker": "bench_checker.py",
    "faults": "bench_faults.py",
    "scale": "bench_scale.py",
    "fuzz": "bench_fuzz.py",
    "compose": "bench_compose.py",
}
# Generous bounds: a full run of each script takes a few minutes at most, but bench_fuzz
# (3 bugs x 3 seeds x 300 s, about 50 minutes).
TIMEOUT = {"lifecycle": 300, "rpc": 300, "rss": 200, "discovery": 120, "context": 300,
           "burst": 400, "dynamic": 200,
           "goclient": 300, "cli": 300, "scheduler": 400, "checker": 600, "faults": 400,
           "scale": 900, "compose": 900, "fuzz": 4800}


def run_one(name: str, quick: bool) -> tuple[dict[str, Any] | None, float, str]:
    cmd = [sys.executable, str(HERE / SCRIPTS[name]), "--json", *(["--quick"] if quick else [])]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                              timeout=TIMEOUT[name] / (4 if quick else 1))
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started, "timed out"
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        return None, elapsed, f"exit {proc.returncode}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), elapsed, "ok"
    except (json.JSONDecodeError, IndexError):
        return None, elapsed, "no JSON output"


def main(argv: list[str] | None = None) -> int:
    p = parser("Run all Shakedown benchmarks and summarise them")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCRIPTS)}")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}: choose from {list(SCRIPTS)}")

    results: dict[str, dict[str, Any] | None] = {}
    status: dict[str, str] = {}
    rows: list[list[str]] = []
    for name in names:
        log(f"=== {name}{' (--quick)' if args.quick else ''}")
        result, elapsed, state = run_one(name, args.quick)
        results[name], status[name] = result, state
        log(f"=== {name}: {state} in {elapsed:.1f}s")
        if result is None:
            rows.append([name, "(failed)", "", "", f"script {state}"])
            continue
        for m in result["metrics"]:
            value = "n/a" if m["value"] is None else f"{m['value']:.3f}{m['unit']}"
            target = "" if m["op"] is None else f"{m['op']} {m['target']:g}{m['unit']}"
            verdict = {True: "target met", False: "target MISSED", None: "(no target)"}[m["met"]]
            rows.append([name, m["name"], value, target, verdict])

    failed = [n for n, s in status.items() if s != "ok"]
    missed = [m["name"] for r in results.values() if r for m in r["metrics"] if m["met"] is False]
    if args.json:
        print(json.dumps({"quick": args.quick, "status": status, "results": results,
                          "missed": missed}))
    else:
        mode = " (--quick: smoke test, numbers are noisy)" if args.quick else ""
        print(f"== shakedown benchmarks{mode}")
        print(format_table(["bench", "metric", "value", "target", "verdict"], rows))
        print(f"\n{len(missed)} target(s) missed" + (f": {', '.join(missed)}" if missed else ""))
        if failed:
            print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
