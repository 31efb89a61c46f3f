"""The second system of docs/fuzzing.md (SpecStore + SpecStoreMachine), run as written.

Against real agents, a system that is not the reference scheduler: with no faults, and
with container kills injected and healed, the fuzzer finds nothing (no false alarm).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from driver.env import Environment
from driver.fuzz.runner import FuzzConfig, run_fuzz
from tests.support.envs import module_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DOC = Path(__file__).resolve().parents[1] / "docs" / "fuzzing.md"


def example() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    ns: dict[str, Any] = {}
    exec(compile(next(b for b in blocks if "class SpecStore" in b), str(DOC), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2)


def _leftover(env: Environment) -> list[str]:
    return [c.name for client in env.clients().values()
            for c in client.list(["example.io/workload"], all=True)]


def test_no_faults_no_false_alarm(env: Environment) -> None:
    ns = example()
    system = ns["SpecStore"](env.clients())
    try:
        r = run_fuzz(env, FuzzConfig(budget_s=30, seed=3, steps=5, examples=6,
                                     kinds=frozenset(), window=10),
                     machine=ns["SpecStoreMachine"], system=system)
    finally:
        system.close()
    assert r.valid is True, r.summary
    assert _leftover(env) == []


def test_kills_against_the_second_system_are_injected_healed_and_pass(env: Environment) -> None:
    ns = example()
    system = ns["SpecStore"](env.clients())
    try:
        r = run_fuzz(env, FuzzConfig(budget_s=70, seed=4, steps=8, examples=40,
                                     kinds=frozenset({"kill"}), window=10),
                     machine=ns["SpecStoreMachine"], system=system)
    finally:
        system.close()
    assert r.valid is True, r.summary
    events = [json.loads(line) for line in
              (r.reports_dir / "history.jsonl").read_text().splitlines()]
    kills = [e["value"]["fault"] for e in events if e["f"] == "inject" and e["type"] == "ok"
             and e["value"]["kind"] == "kill"]
    assert kills, "no kill was injected: the run proved nothing"
    assert any(e["f"] == "apply_twice" or (e["f"] == "update" and e["type"] == "ok")
               for e in events)
    assert _leftover(env) == []
