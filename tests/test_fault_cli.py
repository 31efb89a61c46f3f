"""`shakedown fault inject|list|heal|heal-all` (issue 11 §6) against a real environment,
each command in its own process as a user runs it, and the README's Faults section run
as written (only the environment's name and home and the containers' names are made
this run's).

One environment (2 agents, 1 scheduler replica) for the module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from driver.control.process import wait_for
from driver.env import Environment
from driver.session import SessionHandle
from driver.types import Container, ContainerSpec
from tests.conftest import RUN_ID
from tests.support.envs import module_env

pytestmark = pytest.mark.docker
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    home = tmp_path_factory.mktemp("home")  # $SHAKEDOWN_HOME: environments in home/envs
    yield from module_env(home / "envs", docker_client, nodes=2, schedulers=1)


def run(env: Environment, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driver.cli", *argv], capture_output=True,
                          text=True, timeout=180, cwd=os.getcwd(),
                          env={**os.environ, "SHAKEDOWN_HOME": str(env.paths.root.parents[1])})


def fault(env: Environment, *argv: str, code: int = 0) -> str:
    out = run(env, "fault", *argv, "--env", env.name)
    assert out.returncode == code, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout if code == 0 else out.stderr


def listed(env: Environment) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(fault(env, "list", "--json"))
    return docs


@pytest.fixture
def boxes(env: Environment, busybox_image: str) -> Iterator[tuple[SessionHandle, list[Container]]]:
    node = env.state.agents()[0].node
    client = env.clients()[node]
    with client.open_session(ttl=60, labels={"test-run": RUN_ID}) as s:
        net = s.create_network(f"t{RUN_ID}-net-{uuid.uuid4().hex[:4]}").name
        yield s, [s.run(ContainerSpec(busybox_image, ["sleep", "600"], network=net,
                                      name=f"t{RUN_ID}-{uuid.uuid4().hex[:6]}"))
                  for _ in range(3)]


def test_inject_list_heal_and_heal_all_a_kill_and_a_partition(
        env: Environment, boxes: tuple[SessionHandle, list[Container]]) -> None:
    s, (a, b, c) = boxes
    node = env.state.agents()[0].node
    kill = json.loads(fault(env, "inject", "kill", c.name, "--json"))
    assert kill["scope"] == "agent" and kill["node"] == node and kill["kind"] == "kill"
    assert kill["id"].startswith("f-") and kill["targets"] == [c.id]
    cli_session = next(x for x in s.client.sessions() if x.name == "cli-faults")
    assert kill["session_id"] == cli_session.id and cli_session.persistent  # outlives the CLI
    wait_for(lambda: not s.client.inspect(c.id).running, 10, what="the kill")
    part = fault(env, "inject", "partition", "halves", a.name, b.name).strip()
    assert re.fullmatch(r"f-[0-9a-f]{12}", part)  # plain output: the id
    docs = listed(env)
    assert sorted((d["id"], d["scope"], d["kind"]) for d in docs) == sorted(
        [(kill["id"], "agent", "kill"), (part, "agent", "partition")])
    table = fault(env, "list")
    assert kill["id"] in table and part in table and "SCOPE" in table
    healed = json.loads(fault(env, "heal", kill["id"], "--json"))
    assert healed["healed"] and healed["id"] == kill["id"]
    wait_for(lambda: s.client.inspect(c.id).running, 10, what="the kill's heal")
    assert [d["id"] for d in listed(env)] == [part]
    assert fault(env, "heal", kill["id"]).strip() == f"healed {kill['id']}"  # idempotent
    out = json.loads(fault(env, "heal-all", "--json"))
    assert [d["id"] for d in out] == [part]
    assert listed(env) == []
    inv = run(env, "fault", "list", "--inventory", str(env.paths.inventory), "--json")
    assert inv.returncode == 0 and json.loads(inv.stdout) == []


def test_bad_input_exits_2_naming_it_and_records_nothing(
        env: Environment, boxes: tuple[SessionHandle, list[Container]]) -> None:
    _, (a, _b, _c) = boxes
    assert "no agent holds a container 'nosuch-" in fault(
        env, "inject", "kill", f"nosuch-{RUN_ID}", code=2)
    assert "--duration -1: must not be negative" in fault(
        env, "inject", "kill", a.name, "--duration", "-1", code=2)
    assert "shape: shape 'circle'" in fault(env, "inject", "partition", "circle", a.name,
                                           code=2)
    assert "component: component 'nope'" in fault(env, "inject", "agent-stop", "nope", code=2)
    assert "invalid choice: 'melt'" in fault(env, "inject", "melt", a.name, code=2)
    assert "no fault 'f-000000000000'" in fault(env, "heal", "f-000000000000", code=2)
    assert "--signal: only for kill" in fault(env, "inject", "pause", a.name, "-s", "TERM",
                                              code=2)
    assert "that is a component, not a container" in fault(env, "inject", "stop", "etcd",
                                                           code=2)
    out = run(env, "fault", "inject", "pause", "etcd", "--inventory", str(env.paths.inventory))
    assert out.returncode == 2 and "no agent holds a container 'etcd'" in out.stderr
    out = run(env, "fault", "inject", "coredns-stop", "--inventory", str(env.paths.inventory))
    assert out.returncode == 2 and "needs --env" in out.stderr
    out = run(env, "fault", "list")
    assert out.returncode == 2 and "give --env NAME or --inventory FILE" in out.stderr
    assert listed(env) == [] and env.faults.list() == []


def readme_faults() -> str:
    section = README.read_text(encoding="utf-8").split("## Faults", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_readme_faults_section_runs_as_written(env: Environment, tmp_path: Path,
                                               busybox_image: str) -> None:
    script = readme_faults()
    assert "--env demo" in script and "INV=~/.local/share/shakedown/envs/demo/" in script
    home = env.paths.root.parents[1]
    script = script.replace("~/.local/share/shakedown", str(home))
    script = re.sub(r"\bdemo\b", env.name, script)
    script = re.sub(r"\b(web|db|cache)\b", rf"t{RUN_ID}-\1", script)
    (tmp_path / "faults.sh").write_text("set -euo pipefail\n" + script)
    environ = {**os.environ, "SHAKEDOWN_HOME": str(home),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        out = subprocess.run(["bash", "faults.sh"], cwd=tmp_path, env=environ, timeout=300,
                             capture_output=True, text=True)
    finally:
        for name in ("web", "db", "cache"):  # if a step failed before the script removed them
            for c in env.clients()[f"{env.name}-n1"].list(all=True):
                if c.name == f"t{RUN_ID}-{name}":
                    env.clients()[f"{env.name}-n1"].remove(c.id, force=True)
        env.faults.heal_all()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("component") >= 3  # fault list: the three component faults
    assert "healed fault c-" in out.stdout  # env start says what it healed
    assert "healed 1 fault(s)" in out.stdout  # heal-all: the partition was left
    assert env.faults.list() == [] and listed(env) == []
    assert Environment.load(env.name, base=env.paths.root.parent).status().healthy
