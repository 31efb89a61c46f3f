"""Container lifecycle latency: driver -> agent versus the docker SDK on the same engine.

One cycle = create + start + forced remove of a busybox ``sleep 60`` container.

* agent:  ``AgentClient`` over mTLS + HMAC: ``create(spec, session=..., start=True)``
  then ``remove(force=True)`` (a session is opened once, outside the timing).
* docker: the docker SDK in this process: ``api.create_container`` / ``api.start``
  / ``api.remove_container(force=True)``, same image, command and labels.
* docker+inspect (breakdown, informational): the docker side plus the one
  ``inspect_container`` the agent makes after create+start to build its answer,
  i.e. the same engine work as the agent. agent - docker+inspect = the RPC
  cost (TLS, HMAC, guard, thread hop); docker+inspect - docker = the extra
  engine call. ``--no-breakdown`` leaves it out.

The sides are interleaved after a warm-up, rotating and reversing their order
each round, so engine drift (cache state, background work, other load) hits
all alike. Target: agent/docker mean and median <= 1.10x.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
    running_agent,
    workdir,
)

TARGET = 1.10
COMMAND = ["sleep", "60"]

Phases = tuple[float, float]  # (create+start, remove) seconds


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=None,
                   help="measured rounds, one cycle per side each (default 40, --quick 3; max 200)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up cycles per side (default 2)")
    p.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                   help="skip the docker+inspect side (a third fewer cycles)")
    args = p.parse_args(argv)
    pairs = min(args.pairs or (3 if args.quick else 40), 200)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)

    from driver.types import ContainerSpec
    from tests.support.images import ensure_busybox_image

    run_id = new_run_id()
    labels = {RUN_LABEL: run_id}
    dc = docker_client()
    image = ensure_busybox_image(dc)
    report = Report("lifecycle", run_id, args.quick)
    log(f"lifecycle: run {run_id}, image {image}, {warmup} warm-up + {pairs} rounds")
    load_before = os.getloadavg()

    try:
        with workdir(run_id) as root, running_agent(run_id, root) as agent:
            client = agent.client()
            session = client.open_session(ttl=120, name=run_id, labels=labels)
            try:
                spec = ContainerSpec(image=image, command=COMMAND, labels=labels)

                def via_agent() -> Phases:
                    t0 = time.perf_counter()
                    c = session.create(spec, start=True)
                    t1 = time.perf_counter()
                    client.remove(c, force=True)
                    return t1 - t0, time.perf_counter() - t1

                def via_docker(inspect: bool = False) -> Phases:
                    t0 = time.perf_counter()
                    cid = dc.api.create_container(image, COMMAND, labels=labels)["Id"]
                    dc.api.start(cid)
                    if inspect:
                        dc.api.inspect_container(cid)
                    t1 = time.perf_counter()
                    dc.api.remove_container(cid, force=True)
                    return t1 - t0, time.perf_counter() - t1

                sides: dict[str, Callable[[], Phases]] = {"agent": via_agent,
                                                          "docker": via_docker}
                if args.breakdown:
                    sides["docker+inspect"] = lambda: via_docker(inspect=True)
                names = list(sides)
                for _ in range(warmup):
                    for fn in sides.values():
                        fn()
                samples: dict[str, list[Phases]] = {k: [] for k in sides}
                started = time.monotonic()
                for i in range(pairs):
                    k = i % len(names)
                    order = names[k:] + names[:k]
                    if (i // len(names)) % 2:
                        order.reverse()
                    for side in order:
                        samples[side].append(sides[side]())
                    if (i + 1) % 10 == 0:
                        log(f"  {i + 1}/{pairs} rounds, {time.monotonic() - started:.1f}s")
                rpc_floor = [_timed(client.node_info) for _ in range(20 if not args.quick else 5)]
                server_ms = _server_times(agent.log_path, pairs)
            finally:
                with contextlib.suppress(Exception):
                    session.close()
                client.close()
    finally:
        leaked = remove_run_containers(dc, run_id)
        if leaked:
            log(f"removed {leaked} leftover container(s) labelled {RUN_LABEL}={run_id}")
        dc.close()

    _fill(report, samples, Summary.of(rpc_floor))
    _fill_server(report, samples, server_ms)
    report.details["loadavg_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    if max(load_before[0], os.getloadavg()[0]) > 1.5:
        report.notes.append(f"host was busy (1-min load {load_before[0]:.1f} -> "
                            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs): noisy numbers")
    report.emit(args.json)
    return 0


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _server_times(log_path: Path, n: int) -> dict[str, list[float]]:
    """The guard's audit "ms" (admission + handler, server side) of the last ``n``
    CreateContainer and RemoveContainer calls, from the agent's JSON log."""
    out: dict[str, list[float]] = {"CreateContainer": [], "RemoveContainer": []}
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            method = str(doc.get("method", "")).rsplit("/", 1)[-1]
            if doc.get("msg") == "rpc" and method in out and doc.get("code") == "OK":
                out[method].append(float(doc["ms"]) / 1000)
    return {k: v[-n:] for k, v in out.items()}


def _fill_server(report: Report, samples: dict[str, list[Phases]],
                 server: dict[str, list[float]]) -> None:
    if not server["CreateContainer"] or not server["RemoveContainer"]:
        report.notes.append("no audit lines with timings in the agent log: no server-side split")
        return
    rows = []
    split: dict[str, dict[str, float]] = {}
    for i, (phase, method) in enumerate((("create+start", "CreateContainer"),
                                         ("remove -f", "RemoveContainer"))):
        client_side = Summary.of([x[i] for x in samples["agent"]])
        srv = Summary.of(server[method])
        direct = Summary.of([x[i] for x in samples["docker"]])
        split[phase] = {
            "client_ms": client_side.p50 * 1000, "server_ms": srv.p50 * 1000,
            "docker_ms": direct.p50 * 1000,
            "transport_ms": (client_side.p50 - srv.p50) * 1000,
            "agent_internal_ms": (srv.p50 - direct.p50) * 1000,
        }
        rows.append([phase, ms(client_side.p50), ms(srv.p50), ms(direct.p50),
                     ms(client_side.p50 - srv.p50), ms(srv.p50 - direct.p50)])
    report.tables.append((
        "where the agent's time goes, p50 ms (server = the guard's audit timing, "
        "admission + handler)",
        ["phase", "agent (client)", "agent (server)", "docker direct",
         "RPC+client = client-server", "in agent = server-docker"], rows))
    report.details["server_split_p50_ms"] = split


def _fill(report: Report, samples: dict[str, list[Phases]], floor: Summary) -> None:
    total = {s: Summary.of([a + b for a, b in v]) for s, v in samples.items()}
    create = {s: Summary.of([a for a, _ in v]) for s, v in samples.items()}
    remove = {s: Summary.of([b for _, b in v]) for s, v in samples.items()}

    rows = []
    for phase, summ in (("cycle", total), ("create+start", create), ("remove -f", remove)):
        for side in summ:
            s = summ[side]
            rows.append([phase, side, str(s.n), ms(s.mean), ms(s.p50), ms(s.p95), ms(s.stdev)])
        a, d = summ["agent"], summ["docker"]
        rows.append([phase, "agent/docker", "", f"{ratio(a.mean, d.mean):.3f}x",
                     f"{ratio(a.p50, d.p50):.3f}x", f"{ratio(a.p95, d.p95):.3f}x", ""])
    report.tables.append(("latency per cycle (ms)",
                          ["phase", "side", "n", "mean", "p50", "p95", "stdev"], rows))
    report.tables.append(("signed GetNodeInfo round trip, same client (ms): the per-RPC floor",
                          ["n", "mean", "p50", "p95"],
                          [[str(floor.n), ms(floor.mean), ms(floor.p50), ms(floor.p95)]]))
    report.metrics += [
        Metric("lifecycle mean agent/docker", ratio(total["agent"].mean, total["docker"].mean),
               "x", "<=", TARGET),
        Metric("lifecycle p50 agent/docker", ratio(total["agent"].p50, total["docker"].p50),
               "x", "<=", TARGET),
    ]
    if "docker+inspect" in total:
        d, di, a = total["docker"], total["docker+inspect"], total["agent"]
        report.notes.append(
            f"breakdown of the mean overhead: extra engine inspect {(di.mean - d.mean) * 1000:+.1f}"
            f" ms, RPC/agent path {(a.mean - di.mean) * 1000:+.1f} ms "
            f"(p50: {(di.p50 - d.p50) * 1000:+.1f} / {(a.p50 - di.p50) * 1000:+.1f} ms)")
        report.metrics.append(Metric("lifecycle mean agent/(docker+inspect)",
                                     ratio(a.mean, di.mean), "x"))
    report.details = {
        "unit": "ms",
        "cycle": {k: v.scaled(1000) for k, v in total.items()},
        "create_start": {k: v.scaled(1000) for k, v in create.items()},
        "remove": {k: v.scaled(1000) for k, v in remove.items()},
        "node_info_rtt": floor.scaled(1000),
        "overhead_ms": {
            "mean": (total["agent"].mean - total["docker"].mean) * 1000,
            "p50": (total["agent"].p50 - total["docker"].p50) * 1000,
        },
    }
    report.notes.append(
        f"agent overhead per cycle: {(total['agent'].mean - total['docker'].mean) * 1000:+.1f} ms "
        f"mean, {(total['agent'].p50 - total['docker'].p50) * 1000:+.1f} ms p50 (2 RPCs/cycle)")


if __name__ == "__main__":
    sys.exit(main())
