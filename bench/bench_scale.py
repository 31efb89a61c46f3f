"""Driver scale: fan-out and one test context over 100 agents on this machine (one engine).

Starts ``--agents`` (100) real ``shakedown-agent`` processes, a few at a time
(``--start-concurrency``, 4: the box has 2 cores), each on a kernel-chosen port
read back from its ``--port-file``, with one PKI for all (as the tests make it).
Then, after a cold fan-out (the first call on every channel: TLS handshakes),
interleaved rounds of ``fan_out`` of GetNodeInfo and of ListContainers over the
first ``--small`` (10) and over all agents: wall time, calls/s, the driver's CPU
time (``process_time``, every thread) and RSS, and the agents' CPU time summed
(psutil), which says whether a fan-out is agent-bound or driver-bound. Then the
creation and close of one ``TestContext`` across all nodes (and across 10).

Targets: fan-out(100) / fan-out(10) <= 3x (p50 wall); driver peak RSS < 300 MB.
Also reported: the driver's TCP connections to the agents (one channel each).
Every agent is stopped by PID at the end, even on failure; the claim volumes of
this run's names are removed if a killed agent left one.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import Metric, Report, Summary, log, ms, new_run_id, parser, ratio, workdir
from fleet import (
    ENGINE,
    Fleet,
    agent_connections,
    agents_cpu,
    agents_rss,
    driver_rss,
    engine_pids,
    peak_rss,
)

from driver.fanout import fan_out

MB = 1024 * 1024
OPEN_THREADS: dict[str, int] = {}  # context label -> Python threads while it was open
RATIO_TARGET = 3.0
RSS_TARGET_MB = 300.0


# ------------------------------------------------------------------ measuring


@dataclass
class Side:
    label: str
    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    agent_cpu: list[float] = field(default_factory=list)
    engine_cpu: list[float] = field(default_factory=list)
    failed: int = 0


def measure(side: Side, pids: list[int], fn: Callable[[], dict[str, Any]]) -> None:
    a0, e0 = agents_cpu(pids), agents_cpu(ENGINE)
    c0, t0 = time.process_time(), time.perf_counter()
    failed = fn()
    wall = time.perf_counter() - t0
    side.cpu.append(time.process_time() - c0)
    side.walls.append(wall)
    side.agent_cpu.append(agents_cpu(pids) - a0)
    side.engine_cpu.append(agents_cpu(ENGINE) - e0)
    side.failed += len(failed)


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(path)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        log(f"profile written to {path}; top by cumulative time:\n{out.getvalue()}")


def fanout_rounds(clients: dict[str, Any], small: int, rounds: int, pids: list[int],
                  profile: str | None) -> dict[str, Side]:
    names = list(clients)
    subsets = {"10": {n: clients[n] for n in names[:small]}, "all": clients}
    calls: dict[str, Callable[[Any], Any]] = {
        # No RPC: what the fan-out machinery itself costs the driver.
        "no-op": lambda c: None,
        "GetNodeInfo": lambda c: c.node_info(timeout=60),
        "ListContainers": lambda c: c.list(all=True, timeout=60),
    }
    sides = {f"{m} x{len(subsets[s])}": Side(f"{m} x{len(subsets[s])}")
             for m in calls for s in subsets}
    order = [(m, s) for m in calls for s in subsets]
    with profiled(profile):
        for r in range(rounds):
            for m, s in order if r % 2 == 0 else list(reversed(order)):
                sub = subsets[s]
                measure(sides[f"{m} x{len(sub)}"], pids,
                        lambda sub=sub, m=m: fan_out(sub, calls[m]).failed)
    return sides


def context_rounds(inventory: Path, small: int, rounds: int, pids: list[int]
                   ) -> tuple[dict[str, Side], dict[str, Side]]:
    from driver.env.context import InventoryEnv, TestContext

    env = InventoryEnv(inventory, name="scale")
    opens: dict[str, Side] = {}
    closes: dict[str, Side] = {}
    try:
        clients = env.clients()
        subsets = {"10": list(clients)[:small], "all": list(clients)}
        for r in range(rounds):
            for key in ("10", "all") if r % 2 == 0 else ("all", "10"):
                label = f"context x{len(subsets[key])}"
                ctx = TestContext(env, f"scale-{r}", 30, nodes=subsets[key])

                def open_it(ctx: TestContext = ctx, label: str = label) -> dict[str, Any]:
                    ctx.open()
                    OPEN_THREADS[label] = threading.active_count()
                    return {}

                def close_it(ctx: TestContext = ctx) -> dict[str, Any]:
                    return dict(enumerate(ctx.close()))

                measure(opens.setdefault(label, Side(label)), pids, open_it)
                measure(closes.setdefault(label, Side(label)), pids, close_it)
    finally:
        env.close()
    return opens, closes


# ------------------------------------------------------------------ report


def side_rows(sides: dict[str, Side], n_of: Callable[[str], int]) -> list[list[str]]:
    rows = []
    for label, s in sides.items():
        w, c, a = Summary.of(s.walls), Summary.of(s.cpu), Summary.of(s.agent_cpu)
        n = n_of(label)
        rows.append([label, str(w.n), ms(w.p50), ms(w.mean), ms(w.max),
                     f"{n / w.p50:.0f}" if w.p50 else "nan", ms(c.mean), ms(a.mean),
                     ms(Summary.of(s.engine_cpu).mean), str(s.failed)])
    return rows


HEADER = ["side", "n", "p50 ms", "mean ms", "max ms", "calls/s (p50)", "driver CPU ms",
          "agents CPU ms", "engine CPU ms", "failed"]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=None, help="agents to start (100; --quick 12)")
    p.add_argument("--small", type=int, default=10, help="the small fan-out (10)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per side (10; --quick 3)")
    p.add_argument("--start-concurrency", type=int, default=4,
                   help="agents starting at once (4)")
    p.add_argument("--start-timeout", type=float, default=600.0,
                   help="deadline for every agent to listen, seconds (600)")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="cProfile the warm fan-out rounds into FILE")
    args = p.parse_args(argv)
    size = max(2, min(args.agents or (12 if args.quick else 100), 400))
    small = max(1, min(args.small, size))
    rounds = max(1, min(args.rounds or (3 if args.quick else 10), 200))

    run_id = new_run_id()
    report = Report("scale", run_id, args.quick)
    log(f"scale: run {run_id}, {size} agents, fan-out {small} vs {size}, {rounds} rounds")
    with workdir(run_id) as root:
        fleet = Fleet(run_id, root, size)
        try:
            fleet.make_pki()
            started = fleet.start(args.start_concurrency, args.start_timeout)
            log(f"{size} agents listening after {started:.1f} s")
            pids = fleet.pids()
            ENGINE[:] = engine_pids()
            inventory = fleet.write_inventory(root / "inventory.toml", fleet.names)
            run(report, fleet, inventory, pids, size, small, rounds, started, args.profile)
        finally:
            t0 = time.monotonic()
            fleet.stop()
            log(f"agents stopped in {time.monotonic() - t0:.1f} s")
    report.emit(args.json)
    return 0


def run(report: Report, fleet: Fleet, inventory: Path, pids: list[int], size: int, small: int,
        rounds: int, started: float, profile: str | None) -> None:
    from driver.inventory import load_inventory

    rss0 = driver_rss()
    t0 = time.perf_counter()
    clients = load_inventory(inventory).clients()
    build_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        cold = fan_out(clients, lambda c: c.node_info(timeout=60))
        cold_s = time.perf_counter() - t0
        if cold.failed:
            cold.raise_first()
        conns = agent_connections(set(fleet.ports.values()))
        log("fan-out rounds")
        sides = fanout_rounds(clients, small, rounds, pids, profile)
        conns_after = agent_connections(set(fleet.ports.values()))
        threads = threading.active_count()
    finally:
        for c in clients.values():
            c.close()
    log("context rounds")
    opens, closes = context_rounds(inventory, small, rounds, pids)
    rss_peak = peak_rss()

    def n_of(label: str) -> int:
        return size if label.endswith(f"x{size}") else small

    report.tables.append((f"fan-out over {small} and {size} agents ({rounds} interleaved rounds)",
                          HEADER, side_rows(sides, n_of)))
    report.tables.append(("one context: open (OpenSession on every node)", HEADER,
                          side_rows(opens, n_of)))
    report.tables.append(("one context: close (CloseSession on every node)", HEADER,
                          side_rows(closes, n_of)))
    cores = psutil.cpu_count() or 1
    for m in ("GetNodeInfo", "ListContainers"):
        big, little = sides[f"{m} x{size}"], sides[f"{m} x{small}"]
        report.metrics.append(Metric(f"{m} fan-out {size}/{small} (p50 wall)",
                                     ratio(Summary.of(big.walls).p50,
                                           Summary.of(little.walls).p50), "x", "<=",
                                     RATIO_TARGET))
    for m in ("GetNodeInfo", "ListContainers"):
        big, little = sides[f"{m} x{size}"], sides[f"{m} x{small}"]
        drv = Summary.of(big.cpu).mean
        agt = Summary.of(big.agent_cpu).mean + Summary.of(big.engine_cpu).mean
        report.metrics += [
            # Flat from 10 to 100: the driver's work per node does not grow with the fleet.
            Metric(f"{m} driver CPU per call x{small}",
                   Summary.of(little.cpu).mean / small * 1e6, " us"),
            Metric(f"{m} driver CPU per call x{size}", drv / size * 1e6, " us"),
            # ~1: the fan-out ran as fast as this box's cores allow (machine-bound).
            Metric(f"{m} x{size} wall / CPU floor ((driver+agents+engine CPU)/{cores} cores)",
                   ratio(Summary.of(big.walls).mean, (drv + agt) / cores), "x"),
            Metric(f"{m} x{size} driver share of the CPU", ratio(drv, drv + agt) * 100, " %"),
        ]
    for label, s in (*opens.items(), *[(f"{k} close", v) for k, v in closes.items()]):
        name = label if label.endswith("close") else f"{label} open"
        report.metrics.append(Metric(f"{name} p50", Summary.of(s.walls).p50 * 1000, " ms"))
    noop = Summary.of(sides[f"no-op x{size}"].walls).p50
    report.metrics += [
        Metric(f"fan-out machinery alone x{size} (no RPC) p50", noop * 1000, " ms"),
        Metric("driver peak RSS", rss_peak / MB, " MB", "<", RSS_TARGET_MB),
        Metric(f"driver RSS growth for {size} clients", (rss_peak - rss0) / MB, " MB"),
        Metric(f"{size} clients built", build_s * 1000, " ms"),
        Metric(f"cold fan-out x{size} (TLS handshakes)", cold_s * 1000, " ms"),
        Metric("driver TCP connections to agents", float(conns_after), ""),
        Metric(f"driver threads with a context x{size} open",
               float(OPEN_THREADS.get(f"context x{size}", 0)), ""),
        Metric(f"{size} agents started", started, " s"),
        Metric(f"{size} agents RSS", agents_rss(pids) / MB, " MB"),
    ]
    report.details.update({
        "agents": size, "small": small, "rounds": rounds, "threads_after_fanout": threads,
        "connections_after_cold": conns, "connections_after_rounds": conns_after,
        "fanout": {k: {"wall": Summary.of(v.walls).scaled(1000),
                       "driver_cpu": Summary.of(v.cpu).scaled(1000),
                       "agents_cpu": Summary.of(v.agent_cpu).scaled(1000),
                       "engine_cpu": Summary.of(v.engine_cpu).scaled(1000), "failed": v.failed}
                   for k, v in sides.items()},
        "context_open": {k: {"wall": Summary.of(v.walls).scaled(1000),
                             "driver_cpu": Summary.of(v.cpu).scaled(1000),
                             "agents_cpu": Summary.of(v.agent_cpu).scaled(1000)}
                         for k, v in opens.items()},
        "context_close": {k: {"wall": Summary.of(v.walls).scaled(1000),
                              "driver_cpu": Summary.of(v.cpu).scaled(1000),
                              "agents_cpu": Summary.of(v.agent_cpu).scaled(1000)}
                          for k, v in closes.items()},
        "unit": "ms",
    })
    report.notes.append(
        f"{psutil.cpu_count()} cores host the {size} agents, dockerd and the driver: a fan-out "
        "whose agents' CPU (summed) exceeds its wall time x cores is agent-bound")


if __name__ == "__main__":
    sys.exit(main())
