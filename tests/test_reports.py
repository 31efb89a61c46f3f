"""The testRun scenario report, written by the summary plugin from a real pytest run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from driver.reports.testrun import build_report, scenario_status, summary_table

SUITE_FILES = {
    "test_alpha.py": """
import pytest
pytestmark = pytest.mark.suite("alpha")

def test_one(scenario_metric):
    scenario_metric("recover_s", {"p50": 1.5, "max": 2.0})
    scenario_metric("runs", 3)

def test_two():
    pass
""",
    "test_beta.py": """
def test_fails():
    assert 1 == 2

def test_passes():
    pass
""",
    "test_gamma.py": """
import pytest

@pytest.mark.skip(reason="not applicable here")
def test_skipped():
    pass
""",
}


def test_report_has_exactly_the_documented_shape(tmp_path: Path) -> None:
    for name, text in SUITE_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'suite(name): scenario')\n")
    summary, report = tmp_path / "summary.json", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "driver.reports.summary", f"--shakedown-summary={summary}",
         f"--shakedown-report={report}", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "SHAKEDOWN_RUN_ID": "run-1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # beta fails
    doc = json.loads(report.read_text())
    assert list(doc) == ["testRun"]
    run = doc["testRun"]
    assert set(run) == {"id", "timestamp", "duration", "scenarios", "summary"}
    assert run["id"] == "run-1" and run["timestamp"].endswith("+00:00")
    assert run["summary"] == {"totalScenarios": 3, "passed": 1, "failed": 1,
                              "overallStatus": "failed"}
    by_name = {s["name"]: s for s in run["scenarios"]}
    assert {n: s["status"] for n, s in by_name.items()} == {
        "alpha": "passed", "beta": "failed", "gamma": "skipped"}
    for s in run["scenarios"]:
        assert set(s) == {"name", "status", "duration", "metrics"}
        assert isinstance(s["duration"], float) and s["duration"] >= 0
    assert by_name["alpha"]["metrics"] == {
        "tests": {"passed": 2, "failed": 0, "skipped": 0, "errors": 0}, "success_rate": 1.0,
        "recover_s": {"p50": 1.5, "max": 2.0}, "runs": 3}
    assert by_name["beta"]["metrics"]["tests"]["failed"] == 1
    assert "recover_s" not in by_name["beta"]["metrics"]  # metrics stay with their scenario


def test_status_and_table() -> None:
    assert scenario_status({"passed": 0, "failed": 0, "errors": 0, "skipped": 2}) == "skipped"
    assert scenario_status({"passed": 5, "errors": 1}) == "failed"
    doc = build_report({"a": {"passed": 2, "failed": 0, "skipped": 0, "errors": 0,
                              "success_rate": 1.0}},
                       started_at=0, duration_s=1.0, durations={"a": 0.5},
                       metrics={"a": {"p95_s": 0.25}})
    assert doc["testRun"]["summary"]["overallStatus"] == "passed"
    table = summary_table(doc)
    assert "a" in table and "PASSED" in table and "p95_s=0.25" in table and "2/2 tests" in table
    assert table.splitlines()[-1] == "1/1 scenarios passed: PASSED"
    empty = build_report({}, started_at=0, duration_s=0, durations={}, metrics={})
    assert empty["testRun"]["summary"]["overallStatus"] == "failed"  # nothing ran is no pass
