"""Idle memory of the agent: resident set size after a few calls, once it has settled.

Start a real ``shakedown-agent``, make a few calls (node info, list, sessions,
open + close a session), then sample its RSS (plus any children's) with
psutil until it is stable (bounded), and report it. Baseline: a bare
``python -c "import grpc, docker"`` process in the same interpreter, i.e. the
floor any Python agent built on these libraries pays. Target: < 60 MB.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil
from common import Metric, Report, log, new_run_id, parser, ratio, running_agent, workdir

MB = 1024 * 1024
TARGET_MB = 60.0
BASELINE_CODE = "import grpc, docker, sys; print('ready', flush=True); sys.stdin.read()"


def tree_memory(pid: int) -> dict[str, float]:
    """RSS/USS/PSS in bytes of a process and all its descendants."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    out = {"rss": 0.0, "uss": 0.0, "pss": 0.0, "processes": float(len(procs)),
           "threads": 0.0}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out["rss"] += proc.memory_info().rss
            out["threads"] += proc.num_threads()
            with contextlib.suppress(psutil.AccessDenied, AttributeError):
                full = proc.memory_full_info()
                out["uss"] += full.uss
                out["pss"] += getattr(full, "pss", 0)
    return out


def settle(pid: int, timeout: float, interval: float = 0.25, window: int = 6,
           tolerance: float = 64 * 1024) -> tuple[dict[str, float], bool, int]:
    """Sample until ``window`` consecutive RSS samples lie within ``tolerance`` bytes
    (or ``timeout``). Returns (last sample, settled?, samples taken)."""
    deadline = time.monotonic() + timeout
    history: list[float] = []
    sample = tree_memory(pid)
    while True:
        history.append(sample["rss"])
        recent = history[-window:]
        if len(recent) == window and max(recent) - min(recent) <= tolerance:
            return sample, True, len(history)
        if time.monotonic() > deadline:
            return sample, False, len(history)
        time.sleep(interval)  # sampling period of the poll, bounded by the deadline
        sample = tree_memory(pid)


def baseline_memory(timeout: float) -> tuple[dict[str, float], bool]:
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the imports are done
        if line.strip() != b"ready":
            raise RuntimeError("baseline process failed to import grpc and docker")
        sample, ok, _ = settle(proc.pid, timeout, window=4)
        return sample, ok
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # EOF: it exits by itself
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None,
                   help="rounds of warm-up calls before measuring (20; --quick 3)")
    args = p.parse_args(argv)
    rounds = min(args.calls or (3 if args.quick else 20), 1000)
    settle_timeout = 4.0 if args.quick else 30.0

    run_id = new_run_id()
    report = Report("rss", run_id, args.quick)
    log(f"rss: run {run_id}, {rounds} call rounds, settle timeout {settle_timeout}s")
    with workdir(run_id) as root, running_agent(run_id, root) as agent:
        assert agent.proc is not None
        pid = agent.proc.pid
        at_start = tree_memory(pid)
        with agent.client() as client:
            for _ in range(rounds):
                client.node_info()
                client.list(all=True)
                client.sessions()
            with client.open_session(ttl=30, name=run_id) as session:
                session.list()
            after_calls = tree_memory(pid)
            idle, settled, samples = settle(pid, settle_timeout)
    base, base_settled = baseline_memory(settle_timeout / 2)

    rss_mb = idle["rss"] / MB
    rows = [
        ["agent, just started", *_mem_cells(at_start)],
        ["agent, after calls", *_mem_cells(after_calls)],
        [f"agent, idle ({'settled' if settled else 'NOT settled'}, {samples} samples)",
         *_mem_cells(idle)],
        ["python -c 'import grpc, docker'", *_mem_cells(base)],
    ]
    report.tables.append(("memory (MB; processes include children)",
                          ["process", "RSS", "USS", "PSS", "procs", "threads"], rows))
    report.metrics += [
        Metric("agent idle RSS", rss_mb, " MB", "<", TARGET_MB),
        Metric("agent idle RSS / bare grpc+docker", ratio(idle["rss"], base["rss"]), "x"),
        Metric("agent idle - bare grpc+docker RSS", (idle["rss"] - base["rss"]) / MB, " MB"),
    ]
    report.details = {
        "unit": "MB",
        "agent_start": _mem_dict(at_start),
        "agent_after_calls": _mem_dict(after_calls),
        "agent_idle": _mem_dict(idle),
        "agent_settled": settled,
        "baseline": _mem_dict(base),
        "baseline_settled": base_settled,
        "call_rounds": rounds,
    }
    if not settled:
        report.notes.append(f"RSS did not settle within {settle_timeout:g}s; last sample used")
    report.emit(args.json)
    return 0


def _mem_cells(m: dict[str, float]) -> list[str]:
    return [f"{m['rss'] / MB:.1f}", f"{m['uss'] / MB:.1f}", f"{m['pss'] / MB:.1f}",
            str(int(m["processes"])), str(int(m["threads"]))]


def _mem_dict(m: dict[str, float]) -> dict[str, float]:
    return {"rss": m["rss"] / MB, "uss": m["uss"] / MB, "pss": m["pss"] / MB,
            "processes": m["processes"], "threads": m["threads"]}


if __name__ == "__main__":
    sys.exit(main())
