"""`env create --scheduler-bug NAME`: every scheduler replica runs with that planted bug.

One small environment (1 node, 1 replica, skip-orphan-gc): the record, `env status`,
the replica's own command line and /metrics say so, and the bug does what it says
(a scaled-away replica's container stays behind), which a correct scheduler never does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest

from driver.adapters.base import WorkloadSpec
from driver.env import Environment
from driver.images import ensure_busybox_image
from tests.support.agentproc import wait_for
from tests.support.envs import assert_env_gone

BUG = "skip-orphan-gc"


def _cli(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", "env", *args, "--base", str(base)],
        capture_output=True, text=True, timeout=180, cwd=os.getcwd(),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    base = tmp_path_factory.mktemp("envs")
    name = f"t{uuid.uuid4().hex[:6]}"
    created = _cli(base, "create", name, "--nodes", "1", "--schedulers", "1",
                   "--scheduler-bug", BUG, "--json")
    if created.returncode != 0:
        if (base / name / "env.json").exists():
            Environment.load(name, base=base).destroy()
        pytest.fail(f"env create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
    assert json.loads(created.stdout)["scheduler_bugs"] == [BUG]
    env = Environment.load(name, base=base)
    yield env
    env.close()
    nodes = [c.node for c in env.state.agents()]
    pids = list(env.pids().values())
    env.destroy()
    assert_env_gone(docker_client, nodes, pids, env.paths.root)


def test_an_unknown_bug_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    out = _cli(tmp_path, "create", "tbad", "--scheduler-bug", "dual-leaders")
    assert out.returncode == 2, out.stderr
    assert "--scheduler-bug" in out.stderr and '"dual-leaders"' in out.stderr
    assert "dual-leader," in out.stderr  # the known names are listed
    assert not (tmp_path / "tbad").exists()


def test_the_replica_runs_with_the_bug_and_says_so(env: Environment) -> None:
    assert env.state.scheduler_bugs == [BUG]
    (sched,) = env.state.schedulers()
    proc = sched.managed()
    assert proc is not None
    cmdline = psutil.Process(proc.pid).cmdline()
    assert cmdline[cmdline.index("-bug") + 1] == BUG
    url = f"http://127.0.0.1:{sched.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert f'scheduler_planted_bug{{bug="{BUG}"}} 1' in resp.read().decode()
    assert f"PLANTED BUG ENABLED: {BUG}" in env.paths.log(sched.name).read_text()
    status = _cli(env.paths.root.parent, "status", env.name)
    assert f"PLANTED SCHEDULER BUGS: {BUG}" in status.stdout, status.stdout


def test_a_scaled_away_replica_is_left_running(env: Environment) -> None:
    adapter = env.adapter()
    assert adapter is not None
    name = f"w{uuid.uuid4().hex[:8]}"
    spec = WorkloadSpec(name=name, image=ensure_busybox_image(), command=("sleep", "300"),
                        replicas=2)
    clients = env.clients()
    w = adapter.apply(spec)
    labels = adapter.container_labels(w)

    def containers() -> list[object]:
        return [c for cl in clients.values() for c in cl.list(labels)]

    try:
        wait_for(lambda: adapter.converged(w), 60, what="2 replicas running")
        scaled = adapter.apply(dataclasses.replace(spec, replicas=1))
        # Converged at the new generation: the pass that decided it has acted (removes come
        # before the status write), so a correct scheduler would have removed replica 1.
        wait_for(lambda: adapter.converged(scaled), 60, what="the scale to 1 to be reported")
        assert len(containers()) == 2, "the planted bug did not leave the orphan"
    finally:
        adapter.delete(name)
        adapter.close()
    wait_for(lambda: not containers(), 60, what="a deleted workload's containers to go")
