"""Go client against the Python client: signed GetNodeInfo calls/s on one agent.

The same real agent serves both in interleaved rounds: the Python
``AgentClient.node_info()`` from ``--threads`` threads on one channel, and the
Go ``agentclient`` (go/internal/agentbench) from as many goroutines on one
connection. Both sign with scheme v2 over mTLS. Reported: calls/s of each and
the Go/Python ratio (informational: the agent is the bottleneck for both).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import Metric, Report, log, new_run_id, parser, ratio, running_agent, workdir

REPO = Path(__file__).resolve().parents[1]


def build(root: Path) -> Path:
    out = root / "agentbench"
    subprocess.run(["go", "build", "-o", str(out), "./internal/agentbench"], cwd=REPO / "go",
                   check=True, timeout=600)
    return out


def python_rate(client, threads: int, duration: float) -> float:  # type: ignore[no-untyped-def]
    calls = [0] * threads
    stop = time.perf_counter() + duration

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            client.node_info()
            calls[i] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(calls) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    rounds, duration = (1, 1.0) if args.quick else (3, 3.0)
    run_id = new_run_id()
    report = Report("goclient", run_id, args.quick)
    rates: dict[str, list[float]] = {"python": [], "go": []}
    with workdir(run_id) as root, running_agent(run_id, root) as agent:
        binary = build(root)
        pki = agent.pki.root
        go_cmd = [str(binary), "-target", agent.address, "-ca", str(pki / "ca.crt"),
                  "-cert", str(pki / "client-driver.crt"), "-key", str(pki / "client-driver.key"),
                  "-keys", str(agent.pki.keys), "-threads", str(args.threads),
                  "-duration", f"{duration}s"]
        client = agent.client(timeout=30)
        try:
            client.node_info()
            for r in range(rounds):
                rates["python"].append(python_rate(client, args.threads, duration))
                out = json.loads(subprocess.run(go_cmd, check=True, capture_output=True,
                                                text=True, timeout=120).stdout)
                if out["errors"]:
                    report.notes.append(f"round {r + 1}: {out['errors']} Go calls failed")
                rates["go"].append(out["calls"] / out["seconds"])
                log(f"round {r + 1}/{rounds}: python {rates['python'][-1]:.0f}/s, "
                    f"go {rates['go'][-1]:.0f}/s")
        finally:
            client.close()
    best = {k: max(v) for k, v in rates.items()}
    report.tables.append((f"signed GetNodeInfo, {args.threads} callers, best of {rounds}",
                          ["client", "calls/s"], [[k, f"{v:.0f}"] for k, v in best.items()]))
    report.details = {"rates": rates}
    report.metrics += [Metric("go/python calls/s", ratio(best["go"], best["python"]), "x"),
                       Metric("go calls/s", best["go"], "/s"),
                       Metric("python calls/s", best["python"], "/s")]
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
