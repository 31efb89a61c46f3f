"""The reference scheduler on a local environment: Apply -> running, and workloads/minute.

The bench creates its own environment (2 nodes, 2 scheduler replicas) named
after the run under the run's temp dir, and destroys it at the end.

(a) Latency: `ApplyWorkload` of a 1-replica busybox `sleep` (through the
    driver's SchedulerAdapter, discovery included) until a container with the
    scheduler's labels (`dev.shakedown.scheduler.managed=true`,
    `.workload-id=<id>`) is seen running on an agent (ListContainers on both
    agents, polled). Baseline (same run, interleaved): `AgentClient.run` of the
    same image and command (create + start) in a session on one agent, then the
    same observation. p50/p99 of each and the ratio; target p50 <= 1.5x.
    Between rounds (untimed): the workload is deleted / the container removed,
    and its absence observed.
(b) Throughput: `--concurrency` (50) threads each Apply one workload at once;
    wall time until all are running, as workloads/minute. Baseline: the same
    number of `AgentClient.run` calls at once, spread over the two agents.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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

from driver.adapters.base import WorkloadSpec
from driver.adapters.scheduler import MANAGED_LABEL, WORKLOAD_LABEL, SchedulerAdapter
from driver.client import AgentClient
from driver.env import Environment
from driver.images import ensure_busybox_image
from driver.session import SessionHandle
from driver.types import ContainerSpec

TARGET_RATIO = 1.5
POLL_S = 0.005  # observation poll; each poll is one ListContainers per agent anyway
DEADLINE_S = 60.0
COMMAND = ("sleep", "300")


def poll(pred: Callable[[], bool], what: str, deadline: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(POLL_S)


class Observer:
    """What the agents run, by label: the one observation both sides share."""

    def __init__(self, clients: dict[str, AgentClient]) -> None:
        self.clients = list(clients.values())

    def running(self, selector: dict[str, str]) -> list[str]:
        """Running containers' ids across agents."""
        return [c.id for cl in self.clients for c in cl.list(selector) if c.state == "running"]

    def any_left(self, selector: dict[str, str]) -> bool:
        return any(cl.list(selector, all=True) for cl in self.clients)

    def workload_ids_running(self) -> set[str]:
        return {c.labels.get(WORKLOAD_LABEL, "") for cl in self.clients
                for c in cl.list({MANAGED_LABEL: "true"}) if c.state == "running"}


def scheduler_round(sched: SchedulerAdapter, obs: Observer, spec: WorkloadSpec) -> float:
    t0 = time.perf_counter()
    w = sched.apply(spec)
    sel = sched.container_labels(w)
    poll(lambda: bool(obs.running(sel)), f"workload {spec.name} to run")
    elapsed = time.perf_counter() - t0
    sched.delete(spec.name)
    poll(lambda: not obs.any_left(sel), f"workload {spec.name}'s containers to go")
    return elapsed


def direct_round(client: AgentClient, session: SessionHandle, obs: Observer,
                 spec: ContainerSpec, marker: str) -> float:
    sel = {RUN_LABEL: spec.labels[RUN_LABEL], "bench-round": marker}
    t0 = time.perf_counter()
    c = client.run(ContainerSpec(image=spec.image, command=list(spec.command),
                                 labels={**spec.labels, "bench-round": marker}),
                   session=session)
    poll(lambda: bool(obs.running(sel)), "the direct container to run")
    elapsed = time.perf_counter() - t0
    client.remove(c, force=True)
    return elapsed


def measure_latency(env: Environment, sched: SchedulerAdapter, obs: Observer, image: str,
                    run_id: str, rounds: int, report: Report) -> None:
    node, client = sorted(env.clients().items())[0]
    session = client.open_session(120, name=f"{run_id}-direct", labels={RUN_LABEL: run_id})
    base = ContainerSpec(image=image, command=list(COMMAND), labels={RUN_LABEL: run_id})
    sides: dict[str, list[float]] = {"scheduler": [], "direct": []}
    try:
        def one(side: str, i: int, keep: bool) -> None:
            if side == "scheduler":
                spec = WorkloadSpec(name=f"{run_id}-a{i}", image=image, command=COMMAND)
                t = scheduler_round(sched, obs, spec)
            else:
                t = direct_round(client, session, obs, base, f"{i}")
            if keep:
                sides[side].append(t)

        for i in range(2):  # warm-up: connections, descriptors, the image in the page cache
            for side in sides:
                one(side, -1 - i, keep=False)
        for i in range(rounds):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                one(side, i, keep=True)
    finally:
        session.close()
    s, d = Summary.of(sides["scheduler"]), Summary.of(sides["direct"])
    report.tables.append((
        f"(a) Apply -> container running ({rounds} interleaved rounds; direct on {node})",
        ["side", "n", "p50 ms", "p99 ms", "mean ms", "min ms", "max ms"],
        [[name, str(x.n), ms(x.p50), ms(x.p99), ms(x.mean), ms(x.min), ms(x.max)]
         for name, x in (("scheduler Apply", s), ("AgentClient.run (direct)", d))]))
    report.metrics += [
        Metric("apply->running p50 / direct", ratio(s.p50, d.p50), "x", "<=", TARGET_RATIO),
        Metric("apply->running p99 / direct", ratio(s.p99, d.p99), "x"),
        Metric("apply->running p50", s.p50 * 1000, " ms"),
        Metric("apply->running p99", s.p99 * 1000, " ms"),
    ]
    report.details["latency"] = {"scheduler": s.scaled(1000), "direct": d.scaled(1000)}


def concurrent_scheduler(sched: SchedulerAdapter, obs: Observer, image: str, run_id: str,
                         n: int) -> float:
    names = [f"{run_id}-b{i}" for i in range(n)]
    ids: set[str] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)

    def apply(name: str) -> None:
        barrier.wait()
        w = sched.apply(WorkloadSpec(name=name, image=image, command=COMMAND))
        with lock:
            ids.add(w.id)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(apply, name) for name in names]
        barrier.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
    poll(lambda: ids <= obs.workload_ids_running(), f"{n} workloads to run", 180)
    wall = time.perf_counter() - t0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(sched.delete, names))
    poll(lambda: not obs.any_left({MANAGED_LABEL: "true"}), "the workloads' containers to go",
         180)
    return wall


def concurrent_direct(env: Environment, obs: Observer, image: str, run_id: str,
                      n: int) -> float:
    clients = sorted(env.clients().items())
    sessions = {node: cl.open_session(120, name=f"{run_id}-tp", labels={RUN_LABEL: run_id})
                for node, cl in clients}
    barrier = threading.Barrier(n + 1)
    spec = ContainerSpec(image=image, command=list(COMMAND), labels={RUN_LABEL: run_id})
    made: list[tuple[AgentClient, str]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        node, cl = clients[i % len(clients)]
        barrier.wait()
        c = cl.run(spec, session=sessions[node])
        with lock:
            made.append((cl, c.id))

    try:
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(run, i) for i in range(n)]
            barrier.wait()
            t0 = time.perf_counter()
            for f in futures:
                f.result()
        poll(lambda: len(obs.running({RUN_LABEL: run_id})) >= n, f"{n} containers to run", 180)
        wall = time.perf_counter() - t0
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda m: m[0].remove(m[1], force=True), made))
    finally:
        for h in sessions.values():
            h.close()
    return wall


def measure_throughput(env: Environment, sched: SchedulerAdapter, obs: Observer, image: str,
                       run_id: str, n: int, report: Report) -> None:
    direct = concurrent_direct(env, obs, image, run_id, n)
    sched_s = concurrent_scheduler(sched, obs, image, run_id, n)
    per_min_s, per_min_d = n / sched_s * 60, n / direct * 60
    report.tables.append((
        f"(b) {n} at once until all are running",
        ["side", "wall s", "workloads/min"],
        [["scheduler Apply x" + str(n), f"{sched_s:.3f}", f"{per_min_s:.0f}"],
         ["AgentClient.run x" + str(n) + " (direct, 2 agents)", f"{direct:.3f}",
          f"{per_min_d:.0f}"]]))
    report.metrics += [
        Metric(f"workloads/min at {n} concurrent Apply", per_min_s, "/min"),
        Metric("throughput scheduler / direct", ratio(per_min_s, per_min_d), "x"),
    ]
    report.details["throughput"] = {"n": n, "scheduler_s": sched_s, "direct_s": direct}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved latency rounds per side (30; --quick 3)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="concurrent Apply calls for the throughput (50; --quick 10)")
    args = p.parse_args(argv)
    rounds = max(1, min(args.rounds or (3 if args.quick else 30), 1000))
    concurrency = max(1, min(args.concurrency or (10 if args.quick else 50), 200))

    run_id = new_run_id()
    report = Report("scheduler", run_id, args.quick)
    log(f"scheduler: run {run_id}, {rounds} rounds, {concurrency} concurrent")
    image = ensure_busybox_image()
    dclient = docker_client()
    try:
        with workdir(run_id) as root:
            t0 = time.perf_counter()
            env = Environment.create(run_id, nodes=2, schedulers=2, base=root)
            report.details["env_create_s"] = time.perf_counter() - t0
            try:
                sched = env.adapter()
                assert sched is not None
                obs = Observer(env.clients())
                poll(lambda: len(sched.nodes()) == 2 and all(n.healthy for n in sched.nodes()),
                     "the scheduler to see both agents healthy")
                report.details["leader"] = sched.leader()
                log("(a) Apply -> running")
                measure_latency(env, sched, obs, image, run_id, rounds, report)
                log(f"(b) {concurrency} concurrent")
                measure_throughput(env, sched, obs, image, run_id, concurrency, report)
                sched.close()
            finally:
                env.destroy()
    finally:
        leaked = remove_run_containers(dclient, run_id)
        dclient.close()
        if leaked:
            report.notes.append(f"{leaked} container(s) of the run were left and removed")
    report.notes.append("both sides end at the same observation: a running container seen "
                        "through the agents' ListContainers (polled every "
                        f"{POLL_S * 1000:.0f} ms)")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
