"""The bundled suites and their runner, against an environment created in this process
and tested by a pytest subprocess that finds it by name (persistence across processes)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from driver.env import Environment
from driver.reports.summary import build_summary
from driver.suites import SUITES_DIR, known_suites
from driver.suites.runner import SuiteRun, run_suites
from tests.support.envs import module_env

pytestmark = pytest.mark.docker
SUITES = ["async_execution", "authentication", "basic_workflow", "error_handling",
          "performance", "reconciliation", "service_discovery"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, busybox_image: str,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    # The seven suites need the system under test: the reference scheduler, 2 replicas.
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2, schedulers=2)


def run(env: Environment, reports: Path, **kwargs: object) -> SuiteRun:
    args: dict[str, object] = {"suites": None, "keyword": None, **kwargs}
    return run_suites(env.name, base=env.paths.root.parent, reports_dir=reports,
                      timeout=600, **args)  # type: ignore[arg-type]


def junit_cases(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


def test_known_suites_and_unknown_name() -> None:
    assert known_suites() == SUITES
    with pytest.raises(ValueError, match=r"unknown suite.*nope.*known: async_execution, "
                                         r"authentication, basic_workflow, error_handling, "
                                         r"performance, reconciliation, service_discovery"):
        run_suites("x", base=None, suites=["nope"], keyword=None, reports_dir=Path("/nonexistent"))


def test_all_suites_pass_with_reports(env: Environment, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    # Poison: the run must use neither an ini file nor a conftest.py of its working dir.
    (reports / "pytest.ini").write_text("[pytest]\naddopts = --no-such-option\n")
    (reports / "conftest.py").write_text("raise RuntimeError('conftest leaked in')\n")
    result = run(env, reports)
    log = result.log_path.read_text()
    assert result.ok and result.exit_code == 0, log[-3000:]
    assert result.junit_path == reports / "junit.xml"
    assert result.summary_path == reports / "summary.json"

    doc = json.loads(result.summary_path.read_text())
    assert doc["env"] == env.name and doc["exit_code"] == 0
    assert doc["junit"] == str(result.junit_path)
    assert doc["duration_s"] > 0 and doc["started_at"].endswith("+00:00")
    assert sorted(doc["suites"]) == SUITES
    for name, counts in doc["suites"].items():
        assert counts["success_rate"] == 1.0, (name, counts)
        assert counts["passed"] > 0 and counts["failed"] == counts["errors"] == 0
    assert doc["totals"]["success_rate"] == 1.0 == result.success_rate
    assert doc["totals"]["passed"] == sum(c["passed"] for c in doc["suites"].values())
    assert result.totals == doc["totals"] and result.suites == doc["suites"]

    cases = junit_cases(result.junit_path)
    assert len(cases) == doc["totals"]["passed"] + doc["totals"]["skipped"]
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    # Per-node tests ran on every node of the environment.
    for node in env.inventory().names:
        assert any(f"[{node}]" in c.get("name", "") for c in cases), node

    # The scenario report: seven scenarios, all passed, with the metrics they measure.
    run_doc = json.loads((reports / "report.json").read_text())["testRun"]
    assert [s["name"] for s in run_doc["scenarios"]] == SUITES
    assert run_doc["summary"] == {"totalScenarios": 7, "passed": 7, "failed": 0,
                                  "overallStatus": "passed"}
    metrics = {s["name"]: s["metrics"] for s in run_doc["scenarios"]}
    assert set(metrics["reconciliation"]["recover_s"]) >= {"stop", "kill", "remove", "p50", "max"}
    assert metrics["performance"]["success_rate"] > 0.95
    assert metrics["performance"]["throughput_per_min"] > 10


def test_selection_by_suite_and_keyword(env: Environment, tmp_path: Path) -> None:
    result = run(env, tmp_path, suites=["error_handling"], keyword="not_found and inspect")
    doc = json.loads(result.summary_path.read_text())
    assert result.ok, result.log_path.read_text()[-3000:]
    assert list(doc["suites"]) == ["error_handling"]
    assert doc["totals"]["passed"] == len(env.inventory().names)  # one per node
    assert all("inspect" in c.get("name", "") for c in junit_cases(result.junit_path))
    header = result.log_path.read_text()
    assert "dev/null" not in header
    config = result.reports_dir / "pytest.ini"
    assert config.read_text().rstrip().endswith("[pytest]")  # a real, empty config
    assert f"configfile: {os.path.relpath(config, SUITES_DIR)}" in header


def test_isolated_from_the_repos_conftest(env: Environment, tmp_path: Path) -> None:
    result = run(env, tmp_path, suites=["basic_workflow"], extra_args=["--fixtures"])
    out = result.log_path.read_text()
    assert result.exit_code == 0, out[-3000:]
    assert "shakedown_env" in out and "ctx" in out
    for theirs in ("agent_proc", "docker_client", "fresh_agent"):  # tests/conftest.py's
        assert theirs not in out


def test_build_summary_counts_and_rates() -> None:
    outcomes = {
        "a::1": ("s1", "passed"), "a::2": ("s1", "failed"), "a::3": ("s1", "skipped"),
        "b::1": ("s2", "errors"), "b::2": ("s2", "passed"), "c::1": ("s3", "skipped"),
    }
    doc = build_summary(outcomes, env="e", started_at=0.0, duration_s=1.0, junit=None,
                        exit_code=1)
    assert doc["suites"]["s1"] == {"passed": 1, "failed": 1, "skipped": 1, "errors": 0,
                                   "success_rate": 0.5}
    assert doc["suites"]["s3"]["success_rate"] is None  # nothing ran
    assert doc["totals"] == {"passed": 2, "failed": 1, "skipped": 2, "errors": 1,
                             "success_rate": 0.5}


def test_failures_are_counted_when_the_env_is_down(env: Environment, tmp_path: Path) -> None:
    env.stop()
    try:
        result = run(env, tmp_path, suites=["basic_workflow"])
    finally:
        env.start()
    doc = json.loads(result.summary_path.read_text())
    assert result.exit_code == 1 and not result.ok and doc["exit_code"] == 1
    counts = doc["suites"]["basic_workflow"]
    assert counts["passed"] == 0 and counts["failed"] + counts["errors"] > 0
    assert counts["success_rate"] == 0.0
    assert any(c.find("failure") is not None or c.find("error") is not None
               for c in junit_cases(result.junit_path))
