"""A pytest plugin writing a JSON summary per suite (load with `-p driver.reports.summary`).

    pytest -p driver.reports.summary --shakedown-summary out/summary.json ...

{"env", "started_at", "duration_s", "suites": {name: counts}, "totals": counts,
 "junit", "exit_code"} where counts = {passed, failed, skipped, errors, success_rate}.
A test's suite is its `suite(name)` marker, else its module's name without
`test_`. `success_rate` = passed / (passed + failed + errors): skips do not
count, and it is null when nothing ran. An xfail counts as skipped, an xpass
as passed; a failing setup or teardown is an error (one outcome per test).

Under pytest-xdist (`-n 4`) the controller writes the one report: every test's
outcome reaches it as the workers' reports do, and what only a worker knows (the
`suite` markers it collected, the metrics its tests recorded) comes back in
`workeroutput` when the worker finishes and is merged then.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

OUTCOMES = ("passed", "failed", "skipped", "errors")


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0

    @property
    def success_rate(self) -> float | None:
        ran = self.passed + self.failed + self.errors
        return round(self.passed / ran, 4) if ran else None

    def add(self, other: Counts) -> None:
        for k in OUTCOMES:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "success_rate": self.success_rate}


def suite_of_path(path: str) -> str:
    stem = Path(path.split("::", 1)[0]).stem
    return stem.removeprefix("test_")


def build_summary(outcomes: dict[str, tuple[str, str]], *, env: str, started_at: float,
                  duration_s: float, junit: str | None, exit_code: int) -> dict[str, Any]:
    """`outcomes`: nodeid -> (suite, outcome); the JSON document described above."""
    suites: dict[str, Counts] = {}
    for suite, outcome in outcomes.values():
        counts = suites.setdefault(suite, Counts())
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    totals = Counts()
    for c in suites.values():
        totals.add(c)
    return {
        "env": env,
        "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
        "duration_s": round(duration_s, 3),
        "suites": {name: suites[name].to_json() for name in sorted(suites)},
        "totals": totals.to_json(),
        "junit": junit,
        "exit_code": exit_code,
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see half a file


WORKER_OUTPUT_KEY = "shakedown_summary"


class _Recorder:
    """Suite of each collected test and the metrics its tests record (both ends of xdist)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.suite: dict[str, str] = {}
        self.metrics: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("suite")
            name = str(marker.args[0]) if marker and marker.args else suite_of_path(item.nodeid)
            self.suite[item.nodeid] = name

    def record(self, nodeid: str, name: str, value: Any) -> None:
        suite = self.suite.get(nodeid) or suite_of_path(nodeid)
        self.metrics.setdefault(suite, {})[name] = value


class WorkerRecorder(_Recorder):
    """On an xdist worker: hands its suites and metrics to the controller at the end."""

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Runs inside xdist's own sessionfinish wrapper, before workeroutput is sent.
        self.config.workeroutput[WORKER_OUTPUT_KEY] = {  # type: ignore[attr-defined]
            "suite": self.suite, "metrics": self.metrics}


class SummaryCollector(_Recorder):
    def __init__(self, config: pytest.Config, path: Path) -> None:
        super().__init__(config)
        self.path = path
        self.started = time.time()
        self.t0 = time.monotonic()
        self.outcomes: dict[str, tuple[str, str]] = {}
        self.test_durations: dict[str, float] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist: a worker finished (or died); merge what it sent, if anything."""
        data = (getattr(node, "workeroutput", None) or {}).get(WORKER_OUTPUT_KEY)
        if not isinstance(data, dict):
            return
        self.suite.update(data.get("suite", {}))
        for suite, metrics in data.get("metrics", {}).items():
            self.metrics.setdefault(suite, {}).update(metrics)

    @property
    def durations(self) -> dict[str, float]:
        """Seconds per suite (resolved at the end: a worker's markers arrive last)."""
        out: dict[str, float] = {}
        for nodeid, seconds in self.test_durations.items():
            suite = self.suite.get(nodeid) or suite_of_path(nodeid)
            out[suite] = out.get(suite, 0.0) + seconds
        return out

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a module that does not even import is an error of its suite
            self.outcomes[report.nodeid] = (suite_of_path(report.nodeid), "errors")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        suite = self.suite.get(report.nodeid) or suite_of_path(report.nodeid)
        self.test_durations[report.nodeid] = (self.test_durations.get(report.nodeid, 0.0)
                                              + float(report.duration or 0.0))
        previous = self.outcomes.get(report.nodeid, (suite, ""))[1]
        outcome = previous
        if report.when == "setup":
            outcome = "errors" if report.failed else "skipped" if report.skipped else ""
        elif report.when == "call":
            if hasattr(report, "wasxfail"):
                outcome = "passed" if report.passed else "skipped"
            else:
                outcome = {"passed": "passed", "failed": "failed"}.get(report.outcome, "skipped")
        elif report.when == "teardown" and report.failed:
            outcome = "errors"
        if outcome:
            self.outcomes[report.nodeid] = (suite, outcome)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        opt = self.config.getoption
        env = opt("shakedown_env", default=None) or opt("shakedown_inventory", default=None)
        junit = opt("xmlpath", default=None)
        outcomes = {nodeid: (self.suite.get(nodeid, suite), outcome)
                    for nodeid, (suite, outcome) in self.outcomes.items()}
        doc = build_summary(
            outcomes, env=str(env or os.environ.get("SHAKEDOWN_ENV", "")),
            started_at=self.started, duration_s=time.monotonic() - self.t0,
            junit=str(Path(junit).resolve()) if junit else None, exit_code=int(exitstatus),
        )
        write_json(self.path, doc)
        report_path = opt("shakedown_report", default=None)
        if report_path:
            from driver.reports.testrun import build_report

            write_json(Path(report_path), build_report(
                doc["suites"], started_at=self.started, duration_s=doc["duration_s"],
                durations=self.durations, metrics=self.metrics,
                run_id=os.environ.get("SHAKEDOWN_RUN_ID")))


@pytest.fixture
def scenario_metric(request: pytest.FixtureRequest) -> Any:
    """``scenario_metric(name, value)`` records a metric of this test's scenario (its suite)
    in the JSON report; a no-op when no report is being written."""
    collector = request.config.pluginmanager.get_plugin("shakedown-summary")

    def record(name: str, value: Any) -> None:
        if isinstance(collector, _Recorder):
            collector.record(request.node.nodeid, name, value)

    return record


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("shakedown").addoption(
        "--shakedown-summary", metavar="FILE", default=None,
        help="write a JSON summary of the outcomes per suite to FILE")
    parser.getgroup("shakedown").addoption(
        "--shakedown-report", metavar="FILE", default=None,
        help="with --shakedown-summary: also write the testRun scenario report to FILE")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("shakedown_summary", default=None)
    if not path:
        return
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes the files
        config.pluginmanager.register(WorkerRecorder(config), "shakedown-summary")
    else:
        config.pluginmanager.register(SummaryCollector(config, Path(path)), "shakedown-summary")
