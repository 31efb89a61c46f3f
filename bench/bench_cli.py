"""CLI start-up and `agent run` + `agent rm` versus the docker SDK for the same container.

* help:   wall time of ``shakedown --help`` (a fresh process each time): what every
  command pays before it does anything. Target p50 < 0.15 s.
* cli:    ``shakedown agent run --inventory INV IMAGE sleep 60`` then
  ``shakedown agent rm -f --inventory INV ID``: two processes, as a user runs them.
* docker: the baseline, measured in the same run on the same engine: the docker SDK
  in this process, ``containers.run(IMAGE, ["sleep", "60"], detach=True)`` then
  ``container.remove(force=True)``, the same busybox test image and labels.

The sides alternate (order reversed every other round) after a warm-up, so engine
drift hits both alike. Target: cli/docker mean <= 1.5x. The CLI runs with its
byte-code cached (in the run's temp dir), as an installed package does.
"""

from __future__ import annotations

import os
import subprocess
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

HELP_TARGET_S = 0.15
RATIO_TARGET = 1.5
COMMAND = ["sleep", "60"]


def _shakedown() -> list[str]:
    """The installed console script next to this interpreter (what users run)."""
    script = Path(sys.executable).with_name("shakedown")
    return [str(script)] if script.exists() else [sys.executable, "-m", "driver.cli"]


def _cli_env(root: Path) -> dict[str, str]:
    """As installed: byte-code cached (pip compiles on install). This box may set
    PYTHONDONTWRITEBYTECODE, which would recompile every module on every command."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(root / "pycache")}


def _uncached_env() -> dict[str, str]:
    """The project's modules compiled from source each time, the stdlib's cached: a
    source checkout under PYTHONDONTWRITEBYTECODE (informational)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1"}


ENV: dict[str, str] = {}


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=env or ENV or None)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=None,
                   help="measured rounds, one cycle per side each (default 20, --quick 3)")
    args = p.parse_args(argv)
    pairs = args.pairs or (3 if args.quick else 20)
    helps = 5 if args.quick else 20

    from tests.support.images import ensure_busybox_image

    run_id = new_run_id()
    labels = {RUN_LABEL: run_id}
    dc = docker_client()
    image = ensure_busybox_image(dc)
    cli = _shakedown()
    report = Report("cli", run_id, args.quick)
    log(f"cli: run {run_id}, {' '.join(cli)}, image {image}, {pairs} rounds")
    load_before = os.getloadavg()

    samples: dict[str, list[float]] = {"cli": [], "docker": []}
    try:
        with workdir(run_id) as root, running_agent(run_id, root) as agent:
            ENV.update(_cli_env(root))
            _run([*cli, "--help"])  # warm-up: fills the byte-code cache
            help_times = [_timed(lambda: _run([*cli, "--help"])) for _ in range(helps)]
            cold = _uncached_env()
            uncached = [_timed(lambda: _run([*cli, "--help"], cold)) for _ in range(helps)]
            inv = ["--inventory", str(agent.inventory)]

            def via_cli() -> None:
                cid = _run([*cli, "agent", "run", *inv, "-l", f"{RUN_LABEL}={run_id}",
                            image, *COMMAND]).strip()
                _run([*cli, "agent", "rm", "-f", *inv, cid])

            def via_docker() -> None:
                c = dc.containers.run(image, COMMAND, detach=True, labels=labels)
                c.remove(force=True)

            sides = {"cli": via_cli, "docker": via_docker}
            for fn in sides.values():  # warm-up: image cache, page cache, the session
                fn()
            for i in range(pairs):
                order = ["cli", "docker"] if i % 2 == 0 else ["docker", "cli"]
                for side in order:
                    samples[side].append(_timed(sides[side]))
                if (i + 1) % 5 == 0:
                    log(f"  {i + 1}/{pairs} rounds")
    finally:
        leaked = remove_run_containers(dc, run_id)
        if leaked:
            log(f"removed {leaked} leftover container(s) labelled {RUN_LABEL}={run_id}")
        dc.close()

    h, hu = Summary.of(help_times), Summary.of(uncached)
    c, d = Summary.of(samples["cli"]), Summary.of(samples["docker"])
    report.tables.append(("wall time, ms", ["what", "n", "mean", "p50", "p95", "stdev"], [
        ["shakedown --help", str(h.n), ms(h.mean), ms(h.p50), ms(h.p95), ms(h.stdev)],
        ["  not byte-compiled", str(hu.n), ms(hu.mean), ms(hu.p50), ms(hu.p95), ms(hu.stdev)],
        ["cli run + rm", str(c.n), ms(c.mean), ms(c.p50), ms(c.p95), ms(c.stdev)],
        ["docker SDK run + remove", str(d.n), ms(d.mean), ms(d.p50), ms(d.p95), ms(d.stdev)],
    ]))
    report.metrics += [
        Metric("shakedown --help p50", h.p50, "s", "<", HELP_TARGET_S),
        Metric("shakedown --help p50, project not byte-compiled", hu.p50, "s"),
        Metric("cli/docker run+rm (mean)", ratio(c.mean, d.mean), "x", "<=", RATIO_TARGET),
        Metric("cli/docker run+rm (p50)", ratio(c.p50, d.p50), "x"),
    ]
    report.details.update(help_s=h.scaled(1), help_uncached_s=hu.scaled(1), cli_s=c.scaled(1),
                          docker_s=d.scaled(1),
                          loadavg_1m={"before": load_before[0], "after": os.getloadavg()[0]})
    if max(load_before[0], os.getloadavg()[0]) > 1.5:
        report.notes.append(f"host was busy (1-min load {load_before[0]:.1f} -> "
                            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs): noisy numbers")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
