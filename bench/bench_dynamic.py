"""DynamicClient call latency against a generated-stub call to the same method.

One real agent; both clients sign (the same key) and call ``GetNodeInfo``
sequentially on their own channel: the generated stub through ``AgentClient``
(``node_info()``), the dynamic one through ``DynamicClient.call`` with its
descriptors cached by a warm-up call. Rounds interleave the two so drift in
the machine's load hits both. Target: dynamic/stub p50 <= 1.3x.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from common import (
    Metric,
    Report,
    Summary,
    log,
    ms,
    new_run_id,
    parser,
    ratio,
    running_agent,
    workdir,
)

TARGET = 1.3


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    calls, rounds = (100, 3) if args.quick else (500, 5)
    run_id = new_run_id()
    report = Report("dynamic", run_id, args.quick)

    from driver.dynamic import DynamicClient, Tls
    from driver.dynamic.signing import agent_signer

    method = "shakedown.agent.v1.Agent/GetNodeInfo"
    lat: dict[str, list[float]] = {"stub": [], "dynamic": []}
    with workdir(run_id) as root, running_agent(run_id, root) as agent:
        stub = agent.client(timeout=30)
        dyn = DynamicClient(agent.address, Tls.from_certs_dir(agent.pki.root),
                            agent_signer(agent.pki.keys, audience=agent.name), timeout=30)
        try:
            stub.node_info()
            dyn.call(method, {})  # caches the descriptors
            for r in range(rounds):
                lat["stub"] += timed(stub.node_info, calls)
                lat["dynamic"] += timed(lambda: dyn.call(method, {}), calls)
                log(f"round {r + 1}/{rounds} done")
        finally:
            dyn.close()
            stub.close()

    stats = {k: Summary.of(v) for k, v in lat.items()}
    report.tables.append((f"{calls * rounds} sequential signed GetNodeInfo calls each",
                          ["client", "p50 ms", "p95 ms", "mean ms"],
                          [[k, ms(s.p50), ms(s.p95), ms(s.mean)] for k, s in stats.items()]))
    for k, s in stats.items():
        report.details[k] = s.scaled(1000)
    report.metrics += [
        Metric("dynamic/stub p50", ratio(stats["dynamic"].p50, stats["stub"].p50), "x", "<=",
               TARGET),
        Metric("dynamic/stub mean", ratio(stats["dynamic"].mean, stats["stub"].mean), "x"),
    ]
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
