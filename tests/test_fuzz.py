"""shakedown fuzz against a real local environment (etcd, CoreDNS, 2 schedulers, 2 agents).

A correct system gives a valid verdict with a report and leaves nothing behind; a
system that lies (an adapter that acknowledges a scale it never sends) is found,
shrunk to the steps that matter, and its replay fails every time.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from driver.adapters import WorkloadSpec
from driver.adapters.scheduler import MANAGED_LABEL
from driver.env import Environment
from driver.faults.client import list_faults
from driver.fuzz.harness import Step
from driver.fuzz.machine import ClusterMachine
from driver.fuzz.program import Artifact
from driver.fuzz.replay import replay
from driver.fuzz.runner import FuzzConfig, run_fuzz
from tests.support.envs import module_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2,
                          schedulers=2)


def _left(env: Environment) -> list[str]:
    """The scheduler's containers still on the agents (this env's only: its own engine
    labels), and faults still in force: after a run, both must be none."""
    out = [f"container {c.name}" for client in env.clients().values()
           for c in client.list({MANAGED_LABEL: "true"}, all=True)]
    out += [f"fault {f.id}" for client in env.clients().values() for f in list_faults(client)]
    from driver.env.faults import active

    out += [f"component fault {f.id}" for f in active(env)]
    return out


class ShortScale:
    """A system that lies: it acknowledges a scale to 2 but never sends it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.name = "short-scale"

    def apply(self, spec: WorkloadSpec) -> Any:
        sent = dataclasses.replace(spec, replicas=1) if spec.replicas == 2 else spec
        return dataclasses.replace(self.real.apply(sent), spec=spec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_correct_system_is_valid_with_a_report_and_nothing_left(env: Environment) -> None:
    r = run_fuzz(env, FuzzConfig(budget_s=50, seed=11, steps=6, examples=8))
    s = r.summary
    assert r.valid is True and r.exit_code == 0, s
    assert s["examples"] >= 2 and s["steps"] >= 6 and s["violations"] == []
    assert r.artifact is None and r.program is None
    results = json.loads((r.reports_dir / "results.json").read_text())
    assert results["valid"] is True
    assert set(results["checkers"]) == {"convergence", "linearizable"}
    assert results["checkers"]["linearizable"]["operations"] > 0
    events = [json.loads(line) for line in
              (r.reports_dir / "history.jsonl").read_text().splitlines()]
    assert {e["type"] for e in events} >= {"invoke", "ok"}
    assert any(e["f"] == "apply" and e["type"] == "ok" for e in events)
    assert r.report is not None and r.report.stat().st_size > 1000
    assert r.reports_dir.parent == env.paths.root / "reports"
    assert _left(env) == []


def test_a_lying_system_is_found_shrunk_and_replays(env: Environment) -> None:
    system = ShortScale(env.adapter())
    try:
        r = run_fuzz(env, FuzzConfig(budget_s=150, seed=5, steps=8, examples=30,
                                     kinds=frozenset()), system=system)
        s = r.summary
        assert r.valid is False and r.exit_code == 1, s
        assert any(v.startswith("lost-write w") for v in s["violations"]), s["violations"]
        assert r.artifact is not None and r.program is not None
        art = Artifact.load(r.artifact)
        # Shrunk to what matters: a write of 2 replicas, then nothing that hides it.
        assert len(art.steps) <= 4, r.program
        assert any(st.args.get("replicas") == 2 or "ops" in st.args for st in art.steps)
        assert "state.teardown()" in r.program and "machine_for(" in r.program
        results = json.loads((r.reports_dir / "results.json").read_text())
        assert results["valid"] is False
        assert results["checkers"]["convergence"]["anomalies"][0]["ops"]
        assert _left(env) == []

        again = replay(env, art, times=2, out=r.reports_dir, system=ShortScale(env.adapter()))
        assert (again.failed, again.flake_rate, again.errors) == (2, 0.0, [])
        # Without the lie the same program passes: the failure is the system's, not ours.
        clean = replay(env, art, times=1, out=r.reports_dir)
        assert (clean.failed, clean.errors) == (0, [])

        # The next run starts from the saved failure, as Hypothesis's database would: found
        # in its first example, no search; against the honest system it is tried, passes,
        # and the search runs as usual.
        again_run = run_fuzz(env, FuzzConfig(budget_s=60, seed=6, steps=8, examples=30,
                                             kinds=frozenset()), system=system)
        s2 = again_run.summary
        assert again_run.valid is False and s2["resumed"] is True, s2
        assert s2["found_steps"] <= len(art.steps) and s2["found_at_s"] < 30, s2
        honest = run_fuzz(env, FuzzConfig(budget_s=30, seed=6, steps=4, examples=3,
                                          kinds=frozenset()))
        assert honest.valid is True and honest.summary["resumed"] is False, honest.summary
        assert honest.summary["examples"] >= 2, honest.summary  # the saved one, then a search
    finally:
        system.close()
    assert _left(env) == []


def test_replay_of_a_saved_artifact_that_passes(env: Environment, tmp_path: Path) -> None:
    path = Artifact(env=env.name, seed=1, kinds=["kill"], steps=[
        Step("start", {"replicas": 1}), Step("fault_container",
                                              {"kind": "kill", "name": "w0", "index": 0}),
        Step("apply", {"name": "w0", "replicas": 2}), Step("converge", {})]).save(
        tmp_path / "replay.json")
    out = _cli(env, "--replay", str(path), "--times", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["runs"], doc["failed"], doc["still_fails"], doc["errors"]) == (1, 0, False, [])
    assert _left(env) == []


def _cli(env: Environment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driver.cli", "fuzz", "--env", env.name,
                           "--base", str(env.paths.root.parent), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "0s"], "--budget '0s': want a positive duration"),
    (["--budget", "soon"], "--budget 'soon'"),
    (["--steps", "-1"], "--steps '-1': want a positive integer"),
    (["--faults", "kill,partiton"], "--faults: unknown kind partiton"),
    (["--window", "0"], "--window 0: want a positive number of seconds"),
    (["--search-share", "1.5"], "--search-share: '1.5': want a fraction in (0, 1]"),
    (["--search-share", "half"], "--search-share: 'half': want a fraction in (0, 1]"),
])
def test_bad_arguments_name_the_flag(env: Environment, args: list[str], message: str) -> None:
    out = _cli(env, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_bad_replay_file_and_unknown_env_are_usage_errors(env: Environment,
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "replay.json"
    bad.write_text(json.dumps({"format": "shakedown-fuzz-replay/1", "env": env.name}))
    out = _cli(env, "--replay", str(bad))
    assert out.returncode == 2 and "field 'steps' is missing" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "driver.cli", "fuzz", "--env", "nosuch-env",
                          "--base", str(env.paths.root.parent)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and "nosuch-env" in out.stderr, out.stderr


def test_a_container_of_an_id_never_returned_is_swept_as_a_leak(env: Environment,
                                                                tmp_path: Path) -> None:
    """An apply whose answer was lost can leave a workload whose id the run never learned.
    Planted as the scheduler labels its containers: this example's name, an unknown id;
    another name's container (no example of this run) is neither reported nor removed."""
    from driver.adapters.scheduler import NAME_LABEL, WORKLOAD_LABEL
    from driver.fuzz.budget import Budget
    from driver.fuzz.model import Model
    from driver.fuzz.rig import rig_for
    from driver.images import ensure_busybox_image
    from driver.types import ContainerSpec

    image = ensure_busybox_image()
    with rig_for(env, tmp_path / "history.jsonl", kinds=frozenset()) as rig:
        h = rig.harness(Budget(120), window=5)
        model = Model(prefix=h.begin_example())
        model.indeterminate("w0", "v1")  # the apply that may have happened
        node = rig.nodes[0]
        client, session = env.clients()[node], rig.ctx.sessions[node]

        def plant(name: str) -> Any:
            labels = {MANAGED_LABEL: "true", NAME_LABEL: name, WORKLOAD_LABEL: "0123456789ab"}
            return client.run(ContainerSpec(image, ["sleep", "300"], labels=labels),
                              session=session)

        ours, theirs = plant(model.real("w0")), plant(f"{model.prefix}x-w0")
        try:
            left = h.end_example(model, wait=2.0)
            assert left == ours.name, left
            assert client.list({NAME_LABEL: model.real("w0")}, all=True) == []
            assert [c.id for c in client.list({NAME_LABEL: f"{model.prefix}x-w0"})] == [
                theirs.id]
        finally:
            client.remove(theirs, force=True)
    assert _left(env) == []


def test_an_agent_that_had_to_move_ports_leaves_the_rig_working(env: Environment,
                                                                 tmp_path: Path) -> None:
    """An agent stopped by a fault comes back on another port when its own was taken
    meanwhile: the nemesis then heals through its new client (the old one is closed), and
    the run's context closes without an error about the session the restart ended."""
    import socket

    from driver.fuzz.rig import rig_for

    with rig_for(env, tmp_path / "history.jsonl", kinds=frozenset()) as rig:
        node = rig.nodes[-1]
        name = env.component_of(node) or ""
        old_port, old_client = env.state.components[name].ports["grpc"], env.clients()[node]
        fault = env.faults.inject("agent-stop", node)
        with socket.socket() as squatter:  # no SO_REUSEPORT: the agent's bind fails
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen()
            env.faults.heal(fault.id)
        assert env.state.components[name].ports["grpc"] != old_port  # (state is reloaded)
        assert env.clients()[node] is not old_client
        assert rig.nemesis.heal_all() == []  # through the new client: no closed channel
        assert env.clients()[node].node_info(timeout=10).name == node
        ours = {h.id for h in rig.ctx.sessions.values()}
    # Every session of the run is gone, the moved agent's and the other one's.
    assert not ours & {s.id for c in env.clients().values() for s in c.sessions()}
    assert _left(env) == []


def test_a_replay_after_the_replicas_restart_reaches_them(env: Environment) -> None:
    """A replay whose artifact allows process faults starts the scheduler's replicas afresh,
    on new ports. Its first write used to go out before discovery had them, came back
    Unavailable (indeterminate, so the model allowed anything) and the replay "passed"
    having tested nothing: the lie below must be caught in every run."""
    art = Artifact(env=env.name, seed=1, kinds=["leader-kill"],
                   steps=[Step("start", {"replicas": 2})])
    system = ShortScale(env.adapter())
    try:
        again = replay(env, art, times=2, system=system)
    finally:
        system.close()
    assert (again.failed, again.inconclusive, again.errors) == (2, 0, []), again
    assert _left(env) == []


class Unreachable:
    """A system whose writes never get an answer: every apply is Unavailable."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.name = "unreachable"

    def apply(self, spec: WorkloadSpec) -> Any:
        from shakedown.errors import Unavailable

        raise Unavailable("connection refused (planted)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class StartOnly(ClusterMachine):
    """Writes only by ``start`` (a delete of nothing would get an answer, which is one)."""

    MIX = (("converge", 1),)


def test_writes_that_never_got_an_answer_are_no_verdict(env: Environment) -> None:
    """Not a pass: a replay whose every write was indeterminate is inconclusive (and the
    CLI's exit would be 2), and a run whose every example was is "unknown", not valid."""
    art = Artifact(env=env.name, seed=1, kinds=[],
                   steps=[Step("start", {"replicas": 1}), Step("converge", {})])
    system = Unreachable(env.adapter())
    try:
        again = replay(env, art, times=1, system=system)
        assert (again.failed, again.inconclusive, again.still_fails) == (0, 1, False), again
        assert again.errors and "no verdict" in again.errors[0], again.errors
        r = run_fuzz(env, FuzzConfig(budget_s=40, seed=2, steps=2, examples=2,
                                     kinds=frozenset()), system=system, machine=StartOnly)
    finally:
        system.close()
    assert r.valid == "unknown" and r.exit_code == 2, r.summary
    assert r.summary["inconclusive"] == r.summary["examples"] >= 1
    assert "never tested" in (r.summary["error"] or ""), r.summary
    # The control: the same steps against the real system are a conclusive pass.
    clean = replay(env, art, times=1)
    assert (clean.failed, clean.inconclusive, clean.errors) == (0, 0, []), clean
    assert _left(env) == []
