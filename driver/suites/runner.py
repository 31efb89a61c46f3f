"""Run bundled suites against an environment in a pytest subprocess; JUnit XML + JSON summary.

    run = run_suites("dev", base=None, suites=["basic_workflow"], keyword=None,
                     reports_dir=Path("reports/dev"))
    run.exit_code, run.totals["success_rate"], run.junit_path, run.summary_path

A subprocess, so a crashing test cannot take the caller down, and so the
environment is reached exactly as any other process would: by name, from disk.
The run is isolated from whatever project it is started in: `-c <reports>/pytest.ini`,
an empty config written for the run (no project ini, no addopts; the header names
it truthfully), `--rootdir`/`--confcutdir` at the suites directory
(no conftest.py from above it), no cache dir, cwd = the suites directory
(so test ids print as `test_basic_workflow.py::...`; it holds no ini or conftest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any

from driver.suites import SUITES_DIR, known_suites

PLUGIN_ENTRY_POINT = "shakedown"
PLUGIN_MODULE = "driver.pytest_plugin"
RUN_CONFIG = "pytest.ini"
RUN_CONFIG_TEXT = """\
# Written by `shakedown env test` for this run: the bundled suites run with no other
# pytest config (no project ini or addopts); every option is on the command line.
[pytest]
"""


REPORT_NAME = "report.json"


@dataclass
class SuiteRun:
    env: str
    exit_code: int
    reports_dir: Path
    junit_path: Path
    summary_path: Path
    log_path: Path
    duration_s: float
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def report_path(self) -> Path:
        """The scenario report (driver.reports.testrun), written by the summary plugin."""
        return self.reports_dir / REPORT_NAME

    @property
    def success_rate(self) -> float | None:
        rate = self.totals.get("success_rate")
        return None if rate is None else float(rate)


def resolve_suites(suites: Sequence[str] | None) -> list[str]:
    known = known_suites()
    if not suites:
        return known
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(dict.fromkeys(suites))


def _plugin_args() -> list[str]:
    # An installed plugin is already registered under its entry-point name; loading the
    # module again by its own name would register it twice (pluggy refuses).
    installed = any(ep.name == PLUGIN_ENTRY_POINT and ep.value == PLUGIN_MODULE
                    for ep in entry_points(group="pytest11"))
    return ["-p", PLUGIN_ENTRY_POINT if installed else PLUGIN_MODULE]


def build_command(env_name: str, *, base: Path | None, suites: Sequence[str],
                  keyword: str | None, reports_dir: Path, extra_args: Sequence[str] = ()
                  ) -> list[str]:
    cmd = [
        sys.executable, "-m", "pytest",
        *[str(SUITES_DIR / f"test_{s}.py") for s in suites],
        "-c", str(reports_dir / RUN_CONFIG),
        "--rootdir", str(SUITES_DIR), "--confcutdir", str(SUITES_DIR),
        "-p", "no:cacheprovider", *_plugin_args(), "-p", "driver.reports.summary",
        "--shakedown-env", env_name, "--shakedown-missing", "error",
        f"--junitxml={reports_dir / 'junit.xml'}", "-o", "junit_suite_name=shakedown",
        "-o", "junit_family=xunit2",
        f"--shakedown-summary={reports_dir / 'summary.json'}",
        f"--shakedown-report={reports_dir / REPORT_NAME}", "-rfEs",
    ]
    if base is not None:
        cmd += ["--shakedown-base", str(base)]
    if keyword:
        cmd += ["-k", keyword]
    return [*cmd, *extra_args]


def _pump(stream: IO[str], log: IO[str], echo: IO[str] | None) -> None:
    for line in stream:
        log.write(line)
        if echo is not None:
            echo.write(line)
            echo.flush()


def run_suites(
    env_name: str, *, base: Path | None, suites: Sequence[str] | None, keyword: str | None,
    reports_dir: Path, extra_args: Sequence[str] = (), echo: IO[str] | None = None,
    timeout: float | None = None,
) -> SuiteRun:
    """Run the suites (all when None) against `env_name`; see the module docstring.

    The output goes to `<reports_dir>/pytest.log` and, when given, to `echo`.
    """
    from driver.reports.summary import build_summary, write_json

    chosen = resolve_suites(suites)
    reports_dir = Path(reports_dir).resolve()
    reports_dir.mkdir(parents=True, exist_ok=True)
    junit, summary, log_path = (reports_dir / n for n in ("junit.xml", "summary.json",
                                                          "pytest.log"))
    for stale in (junit, summary, reports_dir / REPORT_NAME):
        stale.unlink(missing_ok=True)
    (reports_dir / RUN_CONFIG).write_text(RUN_CONFIG_TEXT, encoding="utf-8")
    cmd = build_command(env_name, base=base, suites=chosen, keyword=keyword,
                        reports_dir=reports_dir, extra_args=extra_args)
    started, t0 = time.time(), time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SHAKEDOWN_INVENTORY", None)  # the named environment is the one under test
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
        cmd, cwd=SUITES_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, echo), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            code = proc.wait()
            log.write(f"\n[shakedown] timed out after {timeout} s; killed pytest\n")
        pump.join(timeout=10)
    duration = time.monotonic() - t0
    doc = _read_summary(summary)
    if doc is None:  # pytest died before its session end (or a usage error): say so
        doc = build_summary({}, env=env_name, started_at=started, duration_s=duration,
                            junit=str(junit) if junit.exists() else None, exit_code=code)
    doc.update(env=env_name, exit_code=code, junit=str(junit) if junit.exists() else None)
    write_json(summary, doc)
    return SuiteRun(env=env_name, exit_code=code, reports_dir=reports_dir, junit_path=junit,
                    summary_path=summary, log_path=log_path, duration_s=duration,
                    suites=doc.get("suites", {}), totals=doc.get("totals", {}), command=cmd)


def _read_summary(path: Path) -> dict[str, Any] | None:
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


__all__ = ["SuiteRun", "build_command", "known_suites", "resolve_suites", "run_suites"]
