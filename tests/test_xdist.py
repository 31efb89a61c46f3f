"""`pytest -n 4` with the plugin: isolated contexts per worker, one merged report, no leaks.

An inner pytest (a subprocess, 4 xdist workers) runs 12 generated tests against
the session's test agent. Each test opens a context, runs a container and checks,
while the other workers do the same, that the containers carrying its worker's
label are exactly its own context's. The outer test then checks the records, the
controller's merged summary and report, and that nothing of the run is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from driver.client import AgentClient
from tests.support.agentproc import AgentProcess

pytestmark = pytest.mark.docker

PER_MODULE = 6
WORKERS = 4

INNER = """
import json, os
from pathlib import Path
import pytest
from driver.types import ContainerSpec

WORKER = os.environ["PYTEST_XDIST_WORKER"]
{marker}

@pytest.mark.parametrize("i", range({n}))
def test_isolated(ctx, agents, shakedown_image, scenario_metric, i):
    node = ctx.nodes[0]
    agent = agents[node]
    run = ctx.labels["shakedown.run"]
    assert ctx.labels["shakedown.worker"] == WORKER
    c = ctx.run(node, ContainerSpec(shakedown_image, ["sleep", "300"], stop_signal="SIGKILL"))
    assert c.labels["shakedown.worker"] == WORKER
    # This worker's containers are this context's only (its earlier contexts left nothing),
    # and every other context's container of the run belongs to another worker.
    mine = agent.list({{"shakedown.worker": WORKER, "shakedown.run": run}}, all=True)
    assert [x.id for x in mine] == [c.id]
    for other in agent.list({{"shakedown.run": run}}, all=True):
        if other.id != c.id:
            assert other.labels["shakedown.context"] != ctx.id
            assert other.labels["shakedown.worker"] != WORKER
    scenario_metric(f"{{WORKER}}-{{__name__}}-{{i}}", i)
    record = {{"worker": WORKER, "context": ctx.id, "run": run, "container": c.id,
              "session": ctx.session(node).id, "temp_dir": str(ctx.temp_dir)}}
    out = Path(os.environ["XDIST_RECORDS"]) / f"{{ctx.id}}.json"
    out.write_text(json.dumps(record))
"""


def run_inner(tmp_path: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "none.ini").write_text("[pytest]\n")
    # A `suite` marker (which only the workers collect) and a module-named suite.
    (tmp_path / "test_one.py").write_text(
        INNER.format(marker='pytestmark = pytest.mark.suite("alpha")', n=PER_MODULE))
    (tmp_path / "test_beta.py").write_text(INNER.format(marker="", n=PER_MODULE))
    (tmp_path / "records").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "PYTHONPATH": f"{tmp_path}:{Path.cwd()}", "XDIST_RECORDS": str(tmp_path / "records")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "none.ini"), "--rootdir", str(tmp_path), "-n", str(WORKERS),
         "--shakedown-inventory", str(inventory), "--shakedown-missing", "error",
         "--shakedown-summary", str(tmp_path / "summary.json"),
         "--shakedown-report", str(tmp_path / "report.json"),
         str(tmp_path / "test_one.py"), str(tmp_path / "test_beta.py")],
        capture_output=True, text=True, timeout=150, cwd=tmp_path, env=env)


def test_xdist_workers_isolated_report_merged_nothing_left(
        agent_proc: AgentProcess, client: AgentClient, tmp_path: Path,
        docker_client: docker.DockerClient, busybox_image: str) -> None:
    out = run_inner(tmp_path, agent_proc.inventory)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert f"{2 * PER_MODULE} passed" in out.stdout, out.stdout[-2000:]

    records = [json.loads(p.read_text()) for p in (tmp_path / "records").iterdir()]
    assert len(records) == 2 * PER_MODULE
    assert {r["worker"] for r in records} == {f"gw{i}" for i in range(WORKERS)}
    assert len({r["context"] for r in records}) == len(records)  # unique per test
    assert len({r["session"] for r in records}) == len(records)
    runs = {r["run"] for r in records}
    assert len(runs) == 1, f"the workers of one run must share its run id: {runs}"

    # The controller's summary and report have every test, from every worker.
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["passed"] == 2 * PER_MODULE and summary["totals"]["failed"] == 0
    assert {k: v["passed"] for k, v in summary["suites"].items()} == {
        "alpha": PER_MODULE, "beta": PER_MODULE}
    scenarios = {s["name"]: s for s in json.loads(
        (tmp_path / "report.json").read_text())["testRun"]["scenarios"]}
    assert set(scenarios) == {"alpha", "beta"}
    for name, module in (("alpha", "test_one"), ("beta", "test_beta")):
        s = scenarios[name]
        assert s["status"] == "passed" and s["metrics"]["tests"]["passed"] == PER_MODULE
        recorded = {k for k in s["metrics"] if k not in ("tests", "success_rate")}
        assert len(recorded) == PER_MODULE and all(module in k for k in recorded), recorded
        assert s["duration"] > 0

    # Nothing of the run is left: containers, sessions, temp dirs.
    (run,) = runs
    assert not docker_client.api.containers(
        all=True, filters={"label": f"shakedown.run={run}"})
    open_sessions = {s.id for s in client.sessions()}
    assert not open_sessions & {r["session"] for r in records}
    assert not any(Path(r["temp_dir"]).exists() for r in records)
