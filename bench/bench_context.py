"""Test contexts on a 3-node local environment: setup + teardown cost, env create, 50 at once.

(a) An empty context (`with env.context(): pass`: one OpenSession + one
    CloseSession per node, concurrently, plus a temp dir): mean/p50/p99 against
    the seed project's anchor of 500 ms per environment; target mean < 50 ms.
    Baseline (same run, interleaved): one bare OpenSession + CloseSession round
    trip on one node, i.e. the floor of any per-node session scheme.
(b) `Environment.create(nodes=3, schedulers=0)` (etcd, CoreDNS, 3 agents, no scheduler)
and `destroy()` wall time.
(c) `--concurrency` (50) contexts in parallel threads, each creating one busybox
    container: wall time and this process's peak RSS (psutil, sampled every 10 ms).
    Baseline: the same containers in parallel through one pre-opened session per node.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from common import (
    RUN_LABEL,
    Metric,
    Report,
    Summary,
    docker_client,
    log,
    ms,
    new_run_id,
    parser,
    ratio,
    remove_run_containers,
    workdir,
)

from driver.env import Environment
from driver.images import ensure_busybox_image
from driver.types import ContainerSpec

SEED_ANCHOR_S = 0.500  # the seed project's cost of one isolated environment
TARGET_MS = 50.0
MB = 1024 * 1024


class PeakRss:
    """This process's RSS, sampled in a thread while the block runs."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.proc = interval, psutil.Process()
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            self.peak = max(self.peak, self.proc.memory_info().rss)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def empty_context(env: Environment, name: str) -> tuple[float, float]:
    """(setup, teardown) seconds of one empty context."""
    t0 = time.perf_counter()
    cm = env.context(name, ttl=30)
    cm.__enter__()
    t1 = time.perf_counter()
    cm.__exit__(None, None, None)
    return t1 - t0, time.perf_counter() - t1


def bare_round(env: Environment, node: str) -> float:
    client = env.clients()[node]
    t0 = time.perf_counter()
    handle = client.open_session(30, name="bench-bare", keepalive=False)
    client.close_session(handle.id)
    return time.perf_counter() - t0


def measure_contexts(env: Environment, iterations: int, report: Report) -> None:
    node = env.inventory().names[0]
    for i in range(5):  # warm-up: channels, TLS sessions, thread pools
        empty_context(env, f"warm{i}")
        bare_round(env, node)
    ctx_s: list[float] = []
    setup_s: list[float] = []
    teardown_s: list[float] = []
    bare_s: list[float] = []

    def context_side() -> None:
        setup, teardown = empty_context(env, "bench")
        setup_s.append(setup)
        teardown_s.append(teardown)
        ctx_s.append(setup + teardown)

    def bare_side() -> None:
        bare_s.append(bare_round(env, node))

    for i in range(iterations):
        # Alternate the order so drift and caching hit both sides alike.
        for side in (context_side, bare_side) if i % 2 == 0 else (bare_side, context_side):
            side()
    c, b = Summary.of(ctx_s), Summary.of(bare_s)
    s, t = Summary.of(setup_s), Summary.of(teardown_s)
    report.tables.append((
        f"(a) empty context, 3 nodes ({iterations} iterations, interleaved)",
        ["side", "n", "mean ms", "p50 ms", "p99 ms", "max ms"],
        [[name, str(x.n), ms(x.mean), ms(x.p50), ms(x.p99), ms(x.max)] for name, x in (
            ("context setup+teardown", c), ("  setup (OpenSession x3)", s),
            ("  teardown (CloseSession x3)", t), ("bare Open+Close, 1 node", b))],
    ))
    report.metrics += [
        Metric("empty context mean", c.mean * 1000, " ms", "<", TARGET_MS),
        Metric("empty context p99", c.p99 * 1000, " ms"),
        Metric("empty context / seed anchor 500 ms", ratio(c.mean, SEED_ANCHOR_S), "x"),
        Metric("empty context / bare session round", ratio(c.mean, b.mean), "x"),
    ]
    report.details["context"] = {"setup_teardown": c.scaled(1000), "setup": s.scaled(1000),
                                 "teardown": t.scaled(1000), "bare_round": b.scaled(1000),
                                 "unit": "ms"}


def parallel_contexts(env: Environment, n: int, spec: ContainerSpec) -> float:
    def one(i: int) -> None:
        with env.context(f"par{i}", ttl=30) as ctx:
            ctx.run(ctx.nodes[i % len(ctx.nodes)], spec)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def parallel_one_session(env: Environment, n: int, spec: ContainerSpec) -> float:
    clients = env.clients()
    handles = {node: c.open_session(30, name="bench-base") for node, c in clients.items()}
    nodes = list(handles)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda i: handles[nodes[i % len(nodes)]].run(spec), range(n)))
        with ThreadPoolExecutor(max_workers=len(handles)) as pool:
            list(pool.map(lambda h: h.close(), handles.values()))
        return time.perf_counter() - t0
    finally:
        for h in handles.values():
            with contextlib.suppress(Exception):
                h.close()


def measure_parallel(env: Environment, n: int, image: str, run_id: str,
                     report: Report) -> None:
    spec = ContainerSpec(image, ["sleep", "300"], stop_signal="SIGKILL",
                         labels={RUN_LABEL: run_id})
    base_s = parallel_one_session(env, n, spec)
    rss = PeakRss()
    with rss.sampling():
        wall = parallel_contexts(env, n, spec)
    report.tables.append((
        f"(c) {n} concurrent contexts, one container each",
        ["side", "wall s", "per container ms"],
        [[f"{n} contexts", f"{wall:.3f}", ms(wall / n)],
         ["one session per node (baseline)", f"{base_s:.3f}", ms(base_s / n)]],
    ))
    report.metrics += [
        Metric(f"{n} concurrent contexts wall", wall, " s"),
        Metric(f"{n} contexts / one session per node", ratio(wall, base_s), "x"),
        Metric("driver peak RSS during contexts", rss.peak / MB, " MB"),
        Metric("driver RSS growth during contexts", (rss.peak - rss.before) / MB, " MB"),
    ]
    report.details["parallel"] = {"n": n, "wall_s": wall, "baseline_s": base_s,
                                  "rss_before_mb": rss.before / MB, "rss_peak_mb": rss.peak / MB}


def measure_create(base: Path, run_id: str, repeats: int) -> tuple[list[float], list[float]]:
    """Extra create/destroy cycles beyond the main environment's (same sizes)."""
    creates, destroys = [], []
    for i in range(repeats):
        name = f"{run_id}-c{i}"
        t0 = time.perf_counter()
        env = Environment.create(name, nodes=3, schedulers=0, base=base)
        creates.append(time.perf_counter() - t0)
        destroys.append(timed(env.destroy))
    return creates, destroys


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=None,
                   help="empty contexts measured (300; --quick 20)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="contexts in parallel (50; --quick 10)")
    p.add_argument("--creates", type=int, default=None,
                   help="extra Environment.create/destroy cycles (2; --quick 0)")
    args = p.parse_args(argv)
    iterations = min(args.iterations or (20 if args.quick else 300), 10000)
    concurrency = min(args.concurrency or (10 if args.quick else 50), 200)
    repeats = min(args.creates if args.creates is not None else (0 if args.quick else 2), 20)

    run_id = new_run_id()
    report = Report("context", run_id, args.quick)
    log(f"context: run {run_id}, {iterations} iterations, {concurrency} concurrent")
    image = ensure_busybox_image()
    dclient = docker_client()
    creates: list[float] = []
    destroys: list[float] = []
    try:
        with workdir(run_id) as root:
            t0 = time.perf_counter()
            env = Environment.create(run_id, nodes=3, schedulers=0, base=root)
            creates.append(time.perf_counter() - t0)
            try:
                log("(a) empty contexts")
                measure_contexts(env, iterations, report)
                log(f"(c) {concurrency} concurrent contexts")
                measure_parallel(env, concurrency, image, run_id, report)
            finally:
                destroys.append(timed(env.destroy))
            log(f"(b) {repeats} more create/destroy cycles")
            more_c, more_d = measure_create(root, run_id, repeats)
            creates += more_c
            destroys += more_d
    finally:
        leaked = remove_run_containers(dclient, run_id)
        dclient.close()
        if leaked:
            report.notes.append(f"{leaked} container(s) of the run were left and removed")
    cs, ds = Summary.of(creates), Summary.of(destroys)
    report.tables.append(("(b) Environment.create(nodes=3) / destroy()", ["op", "n", "mean s",
                          "min s", "max s"],
                          [["create", str(cs.n), f"{cs.mean:.3f}", f"{cs.min:.3f}",
                            f"{cs.max:.3f}"],
                           ["destroy", str(ds.n), f"{ds.mean:.3f}", f"{ds.min:.3f}",
                            f"{ds.max:.3f}"]]))
    report.metrics += [Metric("env create (3 nodes) mean", cs.mean, " s"),
                       Metric("env destroy mean", ds.mean, " s")]
    report.details["env"] = {"create_s": creates, "destroy_s": destroys}
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
