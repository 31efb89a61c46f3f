"""A mixed burst of signed calls over 3 agents: do reads queue behind writes?

All calls are fired at once from a pool of driver threads (3 agents, one
session each, a few containers pre-created to inspect):

* create+remove: ``CreateContainer(start=True)`` of a busybox ``sleep 300``,
  then ``RemoveContainer(force=True)`` of it (two calls, timed apart);
* list: ``ListContainers`` of the session;
* inspect: ``InspectContainer`` of a pre-created container.

Default 2,000 calls: 500 create + 500 remove + 600 list + 400 inspect.
A call is *lost* when it raises (any status, deadline included).
Targets: ListContainers p95 < 1 s, 0 calls lost. Create p95 is reported.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
    remove_run_containers,
    workdir,
)

AGENTS = 3
PRECREATED = 4  # per agent, inspected by the burst
THREADS = 256
LIST_TARGET = 1.0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None,
                   help="calls in the burst (default 2000, --quick 200; max 4000)")
    args = p.parse_args(argv)
    calls = min(args.calls or (200 if args.quick else 2000), 4000)
    run_id = new_run_id()
    report = Report("burst", run_id, args.quick)

    from driver.types import ContainerSpec
    from tests.support.agentproc import AgentProcess, make_pki
    from tests.support.images import ensure_busybox_image

    dc = docker_client()
    image = ensure_busybox_image(dc)
    names = tuple(f"{run_id}-n{i}" for i in range(1, AGENTS + 1))
    spec = ContainerSpec(image=image, command=["sleep", "300"], labels={RUN_LABEL: run_id})
    with workdir(run_id) as root:
        pki = make_pki(root / "pki", names)
        agents = [AgentProcess(n, pki, root) for n in names]
        clients: list[Any] = []
        sessions: list[Any] = []
        try:
            for a in agents:
                a.start()
                c = a.client(timeout=300)
                clients.append(c)
                sessions.append(c.open_session(ttl=300))
            targets = [[s.run(spec).id for _ in range(PRECREATED)] for s in sessions]

            n_create = calls // 4
            n_list = (calls - 2 * n_create) * 3 // 5
            n_inspect = calls - 2 * n_create - n_list
            jobs: list[tuple[str, int]] = ([("create", i) for i in range(n_create)]
                                           + [("list", i) for i in range(n_list)]
                                           + [("inspect", i) for i in range(n_inspect)])
            random.Random(7).shuffle(jobs)
            lat: dict[str, list[float]] = defaultdict(list)
            errors: dict[str, int] = defaultdict(int)
            samples: list[str] = []

            def timed(method: str, fn: Callable[[], Any]) -> Any:
                started = time.perf_counter()
                try:
                    out = fn()
                except Exception as exc:  # a lost call, whatever the status
                    errors[method] += 1
                    if len(samples) < 5:
                        samples.append(f"{method}: {exc!r}"[:300])
                    return None
                lat[method].append(time.perf_counter() - started)
                return out

            def run(job: tuple[str, int]) -> None:
                kind, i = job
                k = i % AGENTS
                c, s = clients[k], sessions[k]
                if kind == "create":
                    box = timed("CreateContainer", lambda: c.create(spec, session=s, start=True))
                    if box is not None:
                        timed("RemoveContainer", lambda: c.remove(box.id, force=True))
                elif kind == "list":
                    timed("ListContainers", lambda: c.list(session=s.id, all=True))
                else:
                    timed("InspectContainer", lambda: c.inspect(targets[k][i % PRECREATED]))

            log(f"burst of {calls} calls over {AGENTS} agents ({THREADS} driver threads)")
            started = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(run, jobs))
            wall = time.perf_counter() - started
        finally:
            for s in sessions:
                try:
                    s.close()
                except Exception as exc:
                    log(f"closing a session: {exc!r}")
            for c in clients:
                c.close()
            for a in agents:
                a.stop()
            removed = remove_run_containers(dc, run_id)
            if removed:
                log(f"removed {removed} leftover containers")

    rows = []
    for method in ("ListContainers", "InspectContainer", "CreateContainer", "RemoveContainer"):
        st = Summary.of(lat[method])
        rows.append([method, str(st.n), str(errors[method]), ms(st.p50), ms(st.p95),
                     ms(st.max)])
        report.details[method] = {**st.scaled(1000), "lost": errors[method]}
    report.tables.append((f"{calls} calls in {wall:.1f} s", ["method", "ok", "lost", "p50 ms",
                                                             "p95 ms", "max ms"], rows))
    lost = sum(errors.values())
    report.metrics += [
        Metric("ListContainers p95", Summary.of(lat["ListContainers"]).p95, "s", "<",
               LIST_TARGET),
        Metric("InspectContainer p95", Summary.of(lat["InspectContainer"]).p95, "s"),
        Metric("CreateContainer p95", Summary.of(lat["CreateContainer"]).p95, "s"),
        Metric("calls lost", float(lost), "", "<=", 0),
    ]
    report.details["wall_s"] = wall
    report.notes += samples
    report.emit(args.json)
    dc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
