"""The compose stack: `up` -> first suite passing, in seconds.

(a) `shakedown env create --compose` of a fresh stack (certificates, keys, Corefile,
    `compose up -d`, every health check healthy), then the in-cluster test runner
    (`compose run --rm test-runner`) running the basic_workflow suite until it passes.
    Reported: up -> healthy, and up -> first suite passing.
(b) Baseline, same run: the process-based local environment of the same shape (3 agents,
    2 scheduler replicas) created, then the same suite run against it from this host.
    Ratio (a)/(b): what the containers cost; target <= 3x.

Needs the images (`make images`); without them the metrics are n/a and a note says so.
Everything is named after the run and destroyed in `finally`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from common import Metric, Report, log, new_run_id, parser, ratio, workdir

from driver.env import Environment
from driver.env.compose import ComposeEnvironment, project_version
from driver.env.compose_runner import main as compose_runner
from driver.images import ensure_busybox_image
from driver.suites.runner import run_suites

SUITE = "basic_workflow"


def images_present() -> bool:
    import docker

    client = docker.from_env()
    try:
        for name in ("python", "scheduler", "coredns"):
            client.images.get(f"shakedown/{name}:{project_version()}")
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def compose_round(root: Path, run_id: str) -> tuple[float, float, bool]:
    started = time.perf_counter()
    env = ComposeEnvironment.create_compose(f"{run_id}c", base=root)
    try:
        healthy = time.perf_counter() - started
        reports = root / "compose-reports"
        os.environ["SHAKEDOWN_E2E_SUITES"] = SUITE
        # The runner's output is progress: to stderr, so stdout stays the report (--json).
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            code = compose_runner(["runner", env.name, "--base", str(root), "--reports",
                                   str(reports)])
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        passed = time.perf_counter() - started
        totals = json.loads((reports / "summary.json").read_text()).get("totals", {})
        return healthy, passed, code == 0 and totals.get("failed", 1) == 0
    finally:
        os.environ.pop("SHAKEDOWN_E2E_SUITES", None)
        env.destroy()


def local_round(root: Path, run_id: str) -> tuple[float, float, bool]:
    started = time.perf_counter()
    env = Environment.create(f"{run_id}l", nodes=3, schedulers=2, base=root)
    try:
        healthy = time.perf_counter() - started
        run = run_suites(env.name, base=root, suites=[SUITE], keyword=None,
                         reports_dir=root / "local-reports")
        return healthy, time.perf_counter() - started, run.ok
    finally:
        env.destroy()


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    run_id = new_run_id()
    report = Report("compose", run_id, args.quick)
    if not images_present():
        report.notes.append("the images are not built (make images): nothing measured")
        for name in ("compose_up_healthy_s", "compose_up_to_first_suite_s", "ratio_vs_local"):
            report.metrics.append(Metric(name, float("nan"), "s" if name.endswith("_s") else "x"))
        report.emit(args.json)
        return 0
    ensure_busybox_image()
    with workdir(run_id) as root:
        log(f"compose: run {run_id}, (a) the compose stack")
        c_healthy, c_passed, c_ok = compose_round(root, run_id)
        log(f"compose: healthy {c_healthy:.1f}s, {SUITE} passed {c_passed:.1f}s ({c_ok})")
        log("compose: (b) the local environment")
        l_healthy, l_passed, l_ok = local_round(root, run_id)
        log(f"compose: local healthy {l_healthy:.1f}s, {SUITE} passed {l_passed:.1f}s ({l_ok})")
    report.metrics += [
        Metric("compose_up_healthy_s", c_healthy, "s"),
        Metric("compose_up_to_first_suite_s", c_passed if c_ok else float("nan"), "s"),
        Metric("local_create_to_first_suite_s", l_passed if l_ok else float("nan"), "s"),
        Metric("ratio_vs_local", ratio(c_passed, l_passed) if c_ok and l_ok else float("nan"),
               "x", "<=", 3.0),
    ]
    report.tables.append(("up -> first suite passing", ["", "healthy s", f"{SUITE} passed s",
                                                         "passed"],
                          [["compose", f"{c_healthy:.1f}", f"{c_passed:.1f}", str(c_ok)],
                           ["local", f"{l_healthy:.1f}", f"{l_passed:.1f}", str(l_ok)]]))
    report.notes.append("images prebuilt (make images): the build is not timed; the compose "
                        "side runs its suite in the in-cluster runner, the local one from here")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
