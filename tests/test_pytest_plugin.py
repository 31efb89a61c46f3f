"""The pytest plugin, driven through pytester (a pytest subprocess) against a real env."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from driver.env import Environment
from driver.env.context import CONTEXT_LABEL
from shakedown.labels import SESSION_LABEL_PREFIX
from tests.support.envs import module_env

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.docker

USES_CTX = """
import json, os
from pathlib import Path
import pytest
from driver.types import ContainerSpec

def test_ctx(ctx, agents, shakedown_env, shakedown_image):
    assert sorted(agents) == ctx.nodes and ctx.labels["shakedown.env"] == shakedown_env.name
    c = ctx.run(ctx.nodes[0], ContainerSpec(shakedown_image, ["sleep", "300"]))
    assert c.labels["shakedown.context"] == ctx.id and ctx.temp_dir.is_dir()
    assert "test-ctx" in ctx.id
    Path(os.environ["CTX_RECORD"]).write_text(json.dumps([ctx.id, str(ctx.temp_dir)]))

def test_per_node(agents, shakedown_node):
    assert agents[shakedown_node].node_info().name == shakedown_node

@pytest.mark.shakedown
def test_marked():
    pass

def test_plain():
    pass
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, busybox_image: str,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=2)


@pytest.fixture()
def clean_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHAKEDOWN_ENV", raising=False)
    monkeypatch.delenv("SHAKEDOWN_INVENTORY", raising=False)


def env_args(env: Environment) -> list[str]:
    return ["--shakedown-env", env.name, "--shakedown-base", str(env.paths.root.parent)]


@pytest.mark.usefixtures("clean_env_vars")
def test_ctx_fixture_works_and_cleans_up(pytester: pytest.Pytester, env: Environment,
                                         monkeypatch: pytest.MonkeyPatch,
                                         docker_client: docker.DockerClient) -> None:
    record = pytester.path / "ctx.json"
    monkeypatch.setenv("CTX_RECORD", str(record))
    pytester.makepyfile(test_uses_ctx=USES_CTX)
    result = pytester.runpytest_subprocess(*env_args(env), "-v")
    result.assert_outcomes(passed=5)  # test_per_node runs once per node
    for node in env.inventory().names:
        result.stdout.fnmatch_lines([f"*test_per_node?{node}? PASSED*"])
    ctx_id, temp_dir = json.loads(record.read_text())
    label = f"{SESSION_LABEL_PREFIX}{CONTEXT_LABEL}={ctx_id}"
    assert not docker_client.api.containers(all=True, filters={"label": label})
    assert not Path(temp_dir).exists()


@pytest.mark.usefixtures("clean_env_vars")
def test_env_var_selects_the_environment(pytester: pytest.Pytester, env: Environment,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHAKEDOWN_ENV", env.name)
    pytester.makepyfile("def test_a(agents, shakedown_node):\n"
                        "    assert shakedown_node in agents\n")
    result = pytester.runpytest_subprocess("--shakedown-base", str(env.paths.root.parent))
    result.assert_outcomes(passed=2)


@pytest.mark.usefixtures("clean_env_vars")
def test_inventory_option(pytester: pytest.Pytester, env: Environment,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTX_RECORD", str(pytester.path / "ctx.json"))
    pytester.makepyfile(test_uses_ctx=USES_CTX)
    result = pytester.runpytest_subprocess("--shakedown-inventory", str(env.paths.inventory))
    result.assert_outcomes(passed=5)


@pytest.mark.usefixtures("clean_env_vars")
def test_no_env_skips_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_uses_ctx=USES_CTX)
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=3)  # only test_plain runs; per-node: one skip
    result.stdout.fnmatch_lines(["*no Shakedown environment: pass --shakedown-env NAME or "
                                 "--shakedown-inventory FILE*"])


@pytest.mark.usefixtures("clean_env_vars")
def test_missing_error_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_uses_ctx=USES_CTX)
    result = pytester.runpytest_subprocess("--shakedown-missing", "error")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*need an environment*--shakedown-env NAME*"
                                 "--shakedown-inventory FILE*"])


@pytest.mark.usefixtures("clean_env_vars")
def test_unknown_env_and_conflicting_options(pytester: pytest.Pytester, env: Environment,
                                             tmp_path: Path) -> None:
    pytester.makepyfile("def test_a(agents):\n    pass\n"
                        "def test_b(agents, shakedown_node):\n    pass\n")
    result = pytester.runpytest_subprocess("--shakedown-env", "nosuchenv",
                                           "--shakedown-base", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: environment nosuchenv*no environment 'nosuchenv'*"])
    result = pytester.runpytest_subprocess(*env_args(env), "--shakedown-inventory",
                                           str(env.paths.inventory))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *exclusive*"])


@pytest.mark.usefixtures("clean_env_vars")
def test_no_option_changes_nothing(pytester: pytest.Pytester) -> None:
    # A repo's own fixtures named like ours win, and plain tests are untouched.
    pytester.makeconftest("import pytest\n@pytest.fixture\ndef agents():\n    return 'mine'\n")
    pytester.makepyfile("def test_a(agents):\n    assert agents == 'mine'\n"
                        "def test_b():\n    pass\n")
    for extra in ((), ("--shakedown-missing", "error")):
        result = pytester.runpytest_subprocess(*extra)
        result.assert_outcomes(passed=2)


def test_plugin_imports_lazily() -> None:
    code = ("import sys, driver.pytest_plugin; "
            "print(sorted(m for m in ('docker', 'driver.env', 'driver.images', 'psutil') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


ONE_NODE_DOWN = """
from driver.types import ContainerSpec

def test_per_node(ctx, shakedown_node, shakedown_image):
    c = ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["sleep", "300"]))
    assert ctx.clients[shakedown_node].exec(c, ["echo", "ok"]).output == "ok\\n"

def test_whole_env(ctx, agents):
    assert len(ctx.nodes) == len(agents) - 1  # the dead node is left out

def test_plain_agents(agents):
    assert len(agents) == 2
"""


@pytest.mark.usefixtures("clean_env_vars")
def test_one_dead_node_fails_only_its_own_tests(pytester: pytest.Pytester,
                                                env: Environment) -> None:
    import os
    import signal

    from tests.support.agentproc import wait_for

    dead = env.state.agents()[1]
    proc = dead.managed()
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive(), 10, what="the agent to die")
    try:
        pytester.makepyfile(test_one_down=ONE_NODE_DOWN)
        result = pytester.runpytest_subprocess(*env_args(env), "--shakedown-missing", "error",
                                               "-rE", "-v")
        result.assert_outcomes(passed=3, errors=1)
        out = result.stdout.str()
        result.stdout.fnmatch_lines([f"*test_per_node?{env.state.agents()[0].node}? PASSED*"])
        line = f"agent {dead.node} (127.0.0.1:*) is unreachable: connection refused"
        result.stdout.fnmatch_lines([f"*ERROR at setup of test_per_node?{dead.node}?*", line,
                                     f"ERROR test_one_down.py::test_per_node?{dead.node}?*"])
        assert "Traceback" not in out and "grpc" not in out and len(out.splitlines()) < 40
        skipped = pytester.runpytest_subprocess(*env_args(env), "-rs")  # default: skip
        skipped.assert_outcomes(passed=3, skipped=1)
        skipped.stdout.fnmatch_lines([f"SKIPPED*{line}"])
    finally:
        env.start()
