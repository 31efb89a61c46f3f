"""The compose stack's test runner: the seven suites from inside the stack, reports out.

    python -m driver.env.compose_runner run-suites --config /env-config --reports /reports
        (the test-runner service's command, in its container)
    python -m driver.env.compose_runner runner NAME [--reports DIR]
        (on the host: `compose run --rm test-runner` for environment NAME)

SHAKEDOWN_E2E_SUITES (comma-separated) narrows the suites, SHAKEDOWN_E2E_PYTEST_ARGS adds
pytest arguments; both pass through the compose file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from driver.env.compose import (
    AGENT_PORT,
    CONFIG_NAME,
    RUNNER,
    ComposeConfig,
    ComposeEnvironment,
    components,
)
from driver.env.environment import Environment
from driver.env.state import EnvPaths, new_state, save_state


def run_in_cluster(config: Path, reports: Path, suites: Sequence[str] | None,
                   extra_args: Sequence[str]) -> int:
    """In the test-runner container: the host's environment record rebuilt from its
    config (a writable copy: suites issue certificates next to the CA), then the suites."""
    from driver.reports.testrun import summary_table
    from driver.suites.runner import run_suites

    cfg = ComposeConfig.load(config / CONFIG_NAME)
    base = Path(os.environ.get("SHAKEDOWN_HOME", "/tmp/shakedown")) / "envs"
    paths = EnvPaths(base / cfg.env)
    shutil.rmtree(paths.root, ignore_errors=True)
    shutil.copytree(config, paths.config)
    state = new_state(cfg.env, "compose", cfg.domain)
    state.components = components(cfg)
    from driver.inventory import NodeConfig, write_inventory

    write_inventory(paths.inventory, [
        NodeConfig(c.node, f"{cfg.ip(c.name)}:{AGENT_PORT}", paths.keys, certs=paths.certs)
        for c in state.agents()], {"certs": paths.certs, "keys": paths.keys, "principal": "driver"})
    paths.make()
    save_state(paths, state)
    try:
        run = run_suites(cfg.env, base=base, suites=suites or None, keyword=None,
                         reports_dir=reports, extra_args=extra_args, echo=sys.stdout)
    except ValueError as exc:  # an unknown suite name: a usage error, nothing ran
        print(f"SHAKEDOWN_E2E_SUITES: {exc}", file=sys.stderr)
        return 2
    if run.report_path.exists():
        print("\n" + summary_table(json.loads(run.report_path.read_text())))
    totals = run.totals
    print(f"\nsuccess rate {totals.get('success_rate') or 0:.0%} ({totals.get('passed', 0)} "
          f"passed, {totals.get('failed', 0)} failed, {totals.get('skipped', 0)} skipped) "
          f"in {run.duration_s:.0f} s")
    return run.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import shlex

    p = argparse.ArgumentParser(prog="python -m driver.env.compose_runner")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run-suites", help="(in the test-runner container) run the suites")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--reports", type=Path, required=True)
    t = sub.add_parser("runner", help="(on the host) `compose run test-runner` for an env")
    t.add_argument("name")
    t.add_argument("--base", type=Path)
    t.add_argument("--reports", type=Path, help="where the reports go (default: reports/)")
    args = p.parse_args(argv)
    suites = [s for s in os.environ.get("SHAKEDOWN_E2E_SUITES", "").split(",") if s]
    extra = shlex.split(os.environ.get("SHAKEDOWN_E2E_PYTEST_ARGS", ""))
    if args.cmd == "run-suites":
        return run_in_cluster(args.config, args.reports, suites, extra)
    env = Environment.load(args.name, base=args.base)
    if not isinstance(env, ComposeEnvironment):
        print(f"environment {args.name} is not a compose one", file=sys.stderr)
        return 2
    reports = (args.reports or env.paths.reports).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    proc = env.compose("run", "--rm", RUNNER, check=False, timeout=3600, capture=False,
                       env={"SHAKEDOWN_E2E_REPORTS": str(reports)})
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
