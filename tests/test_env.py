"""`shakedown env`: a real local cluster (etcd, CoreDNS, agents) as detached processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from driver.cli import main as cli_main
from driver.discovery import Resolver
from driver.env import Environment
from driver.types import ContainerSpec
from tests.support.agentproc import AgentProcess, wait_for


def _name() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def _cli(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a separate process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", "env", *args, "--base", str(base)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.getcwd(),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    base = tmp_path_factory.mktemp("envs")
    name = _name()
    # No scheduler here (tests/test_env_scheduler.py has them): --schedulers 0 must work.
    created = _cli(base, "create", name, "--nodes", "2", "--schedulers", "0", "--json")
    if created.returncode != 0:  # a half-started environment: leave nothing running
        if (base / name / "env.json").exists():
            Environment.load(name, base=base).destroy()
        pytest.fail(f"env create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
    env = Environment.load(name, base=base)  # another process made it: persistence
    yield env
    env.close()
    if (base / name).exists():
        Environment.load(name, base=base).destroy()


def _pids(env: Environment) -> list[int]:
    return [
        c.managed().pid
        for c in env.state.components.values()  # type: ignore[union-attr]
        if c.managed() is not None
    ]


def test_created_environment_is_healthy_and_discoverable(env: Environment) -> None:
    st = env.status()
    assert st.healthy, st.problems()
    kinds = sorted(c.kind for c in st.components)
    assert kinds == ["agent", "agent", "coredns", "etcd"]
    assert env.adapter() is None  # no scheduler, no adapter
    assert sorted(env.pids()) == sorted(env.state.components)
    for c in st.components:
        assert c.pid and c.rss_bytes and c.rss_bytes > 0
        assert c.version
    for d in ("config", "data", "logs", "reports", "temp"):
        assert (env.paths.root / d).is_dir()
    assert env.dns and env.etcd
    resolver = Resolver(
        env.domain, ("127.0.0.1", int(env.dns.rsplit(":", 1)[1])), env.etcd, order=("srv",)
    )

    def registered() -> bool:
        try:
            return len(resolver.resolve("shakedown-agent", fresh=True).endpoints) == 2
        except LookupError:
            return False

    wait_for(registered, 15, what="both agents to register in DNS")
    ports = {e.port for e in resolver.resolve("shakedown-agent").endpoints}
    assert ports == {int(n.address.rsplit(":", 1)[1]) for n in env.inventory().nodes}


def test_status_reports_a_killed_agent_and_start_heals_it(env: Environment) -> None:
    agent = env.state.agents()[1]
    proc = agent.managed()
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive(), 10, what="the agent to die")
    out = _cli(env.paths.root.parent, "status", env.name)
    assert out.returncode == 1
    assert f"{agent.name} is down: connection refused on 127.0.0.1:" in out.stdout
    assert "is down: agent" not in out.stdout  # the phrase once, not twice
    assert f"logs/{agent.name}.log" in out.stdout
    healed = _cli(env.paths.root.parent, "start", env.name, "--json")
    assert healed.returncode == 0, healed.stderr
    doc = json.loads(healed.stdout)
    assert doc["started"] == [agent.name]  # only what was down
    assert doc["status"]["healthy"]


def test_containers_are_counted_and_destroy_leaves_nothing(
    tmp_path: Path, busybox_image: str
) -> None:
    base = tmp_path / "envs"
    name = _name()
    env = Environment.create(name, nodes=1, schedulers=0, base=base)
    node = env.state.agents()[0].node
    client = env.clients()[node]
    session = client.open_session(persistent=True, name="keep")
    session.run(ContainerSpec(image=busybox_image, command=["sleep", "300"]))
    assert [c.containers for c in env.status().components if c.kind == "agent"] == [1]
    pids = _pids(env)
    env.close()
    code = cli_main(["env", "destroy", name, "--base", str(base)])
    assert code == 0
    assert not any(Path(f"/proc/{p}").exists() and _is_ours(p) for p in pids)
    engine = docker.from_env()
    try:
        label = {"label": f"io.shakedown.node={node}"}
        assert engine.containers.list(all=True, filters=label) == []
        assert engine.networks.list(filters=label) == []
    finally:
        engine.close()
    assert not (base / name).exists()
    assert cli_main(["env", "destroy", name, "--base", str(base)]) == 0  # idempotent


def _is_ours(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_stop_keeps_data_and_start_restarts_everything(tmp_path: Path) -> None:
    base = tmp_path / "envs"
    env = Environment.create(_name(), nodes=1, schedulers=0, base=base)
    try:
        assert env.etcd is not None
        import pyetcd

        host, port = env.etcd.removeprefix("http://").split(":")
        c = pyetcd.client(host, int(port))
        c.put("/shakedown-test/kept", "yes")
        c.close()
        stopped = env.stop()
        assert sorted(stopped) == sorted(env.state.components)
        st = env.status()
        assert not st.healthy and st.stopped and st.verdict == "stopped"
        out = _cli(base, "status", env.name)
        assert out.returncode == 1  # not running: the check fails, but it is not broken
        assert f"{env.paths.root}): stopped" in out.stdout and "UNHEALTHY" not in out.stdout
        assert "is down" not in out.stdout
        assert f"stopped; start it with `shakedown env start {env.name}`" in out.stdout
        assert sorted(env.start()) == sorted(env.state.components)
        c = pyetcd.client(host, int(port))
        assert c.get("/shakedown-test/kept")[0] == b"yes"
        c.close()
        assert env.status().healthy
    finally:
        env.destroy()


def test_remote_environment_is_config_only(
    tmp_path: Path, agent_proc: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "envs"
    code = cli_main(
        [
            "env",
            "create",
            "remote1",
            "--inventory",
            str(agent_proc.inventory),
            "--base",
            str(base),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["kind"] == "remote" and out["healthy"]
    assert [c["name"] for c in out["components"]] == [agent_proc.name]
    env = Environment.load("remote1", base=base)
    assert env.start() == [] and env.stop() == []  # nothing of ours runs
    env.destroy()
    assert agent_proc.proc is not None and agent_proc.proc.poll() is None  # untouched


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = str(tmp_path / "envs")
    assert cli_main(["env", "status", "nope", "--base", base]) == 2
    assert "create it with `shakedown env create nope`" in capsys.readouterr().err
    assert cli_main(["env", "create", "Bad_Name", "--base", base]) == 2  # a usage error
    assert "lowercase" in capsys.readouterr().err
    assert cli_main(["env", "create", "ok", "--nodes", "0", "--base", base]) == 2
    assert "--nodes 0: must be between 1 and 32" in capsys.readouterr().err
    assert cli_main(["env", "create", "ok", "--schedulers", "-1", "--base", base]) == 2
    assert "--schedulers -1: must be between 0 and 5" in capsys.readouterr().err
    assert not Path(base, "ok").exists()


def test_existing_environment_keeps_its_size(env: Environment) -> None:
    base = env.paths.root.parent
    bigger = _cli(base, "create", env.name, "--nodes", "3")
    assert bigger.returncode == 1
    assert "exists with 2 node(s), not 3" in bigger.stderr
    assert f"`shakedown env destroy {env.name}`" in bigger.stderr
    assert len(Environment.load(env.name, base=base).state.agents()) == 2  # untouched
    more = _cli(base, "create", env.name, "--schedulers", "2")
    assert more.returncode == 1
    assert "exists with 0 scheduler(s), not 2" in more.stderr
    for same in ([], ["--nodes", "2"], ["--schedulers", "0"]):
        again = _cli(base, "create", env.name, *same)
        assert again.returncode == 0, again.stderr
        assert "exists; starting what is down" in again.stderr


def test_logs_follow_prints_what_is_appended(env: Environment) -> None:
    log = env.paths.log("etcd")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driver.cli", "env", "logs", env.name, "etcd", "-f",
         "--tail", "1", "--base", str(env.paths.root.parent)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the last line that was there
        marker = f"appended-{uuid.uuid4().hex}"
        with log.open("a") as f:
            f.write(marker + "\n")
        assert proc.stdout.readline().strip() == marker
    finally:
        proc.kill()  # our own child, by its handle
        proc.wait()


def test_destroy_removes_a_killed_agents_claim_volume(tmp_path: Path) -> None:
    from agent.claim import CLAIM, volume_name

    base = tmp_path / "envs"
    env = Environment.create(_name(), nodes=1, schedulers=0, base=base)
    agent = env.state.agents()[0]
    engine = docker.from_env()
    foreign_node = f"foreign-{uuid.uuid4().hex[:8]}"
    foreign = engine.volumes.create(
        volume_name(foreign_node),
        labels={CLAIM: foreign_node, "io.shakedown.test-foreign": "1"},
    )
    try:
        proc = agent.managed()
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: not proc.alive(), 10, what="the agent to die")
        assert engine.volumes.get(volume_name(agent.node))  # left behind by the SIGKILL
        env.close()
        assert cli_main(["env", "destroy", env.name, "--base", str(base)]) == 0
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(volume_name(agent.node))
        assert engine.volumes.get(foreign.name).attrs["Labels"][CLAIM] == foreign_node
    finally:
        foreign.remove(force=True)
        engine.close()


def test_env_test_prints_the_scenario_table_and_its_reports(env: Environment) -> None:
    out = _cli(env.paths.root.parent, "test", env.name, "--suites", "basic_workflow",
               "-k", "node_info")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    lines = out.stdout.splitlines()
    report = Path(next(ln for ln in lines if ln.startswith("report: ")).split(": ", 1)[1])
    junit = Path(next(ln for ln in lines if ln.startswith("junit: ")).split(":", 1)[1].strip())
    assert report.name == "report.json" and report.is_file() and junit.is_file()
    assert report.parent == junit.parent and report.parent.parent == env.paths.reports
    assert (report.parent / "summary.json").is_file()  # kept
    doc = json.loads(report.read_text())
    assert [s["name"] for s in doc["testRun"]["scenarios"]] == ["basic_workflow"]
    head = next(i for i, ln in enumerate(lines) if ln.startswith("scenario "))
    assert lines[head + 2].split()[:2] == ["basic_workflow", "PASSED"]
    assert "1/1 scenarios passed: PASSED" in out.stdout
