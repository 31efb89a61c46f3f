"""The plugin's dynamic_client and system fixtures, in a pytest subprocess against a real agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.agentproc import AgentProcess

USES_FIXTURES = """
import pytest
from shakedown.errors import AuthError

def test_signed_by_node_name(dynamic_client, agents):
    node = sorted(agents)[0]
    c = dynamic_client(node)
    assert c.call("shakedown.agent.v1.Agent/GetNodeInfo", {})["name"] == node

def test_unsigned_when_asked(dynamic_client, agents):
    c = dynamic_client(sorted(agents)[0], sign=False)
    with pytest.raises(AuthError):
        c.call("shakedown.agent.v1.Agent/GetNodeInfo", {})

def test_system_needs_an_adapter(system):
    pass
"""

ADAPTER = """
class Tiny:
    name = "tiny"
    def __init__(self, env): self.env = env; self.closed = False
    def apply(self, spec): raise NotImplementedError
    def get(self, name): return None
    def list(self): return []
    def delete(self, name): pass
    def nodes(self): return []
    def converged(self, w): return False
    def container_labels(self, w): return {}
    def close(self): pass

def make(env):
    return Tiny(env)
"""


def run_pytest(tmp_path: Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_it.py").write_text(USES_FIXTURES)
    (tmp_path / "tinyadapter.py").write_text(ADAPTER)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "none.ini"), "--rootdir", str(tmp_path),
         "--shakedown-inventory", str(inventory), *extra, str(tmp_path / "test_it.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{Path.cwd()}"})


def test_dynamic_client_fixture_and_system_skip(agent_proc: AgentProcess,
                                               tmp_path: Path) -> None:
    (tmp_path / "none.ini").write_text("[pytest]\n")
    out = run_pytest(tmp_path, agent_proc.inventory)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed, 1 skipped" in out.stdout, out.stdout
    assert "runs no system under test" in out.stdout


def test_adapter_factory_option(agent_proc: AgentProcess, tmp_path: Path) -> None:
    (tmp_path / "none.ini").write_text("[pytest]\n")
    out = run_pytest(tmp_path, agent_proc.inventory, "--shakedown-adapter", "tinyadapter:make")
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout + out.stderr
    bad = run_pytest(tmp_path, agent_proc.inventory, "--shakedown-adapter", "tinyadapter")
    assert bad.returncode != 0 and "want MODULE:FUNCTION" in bad.stdout + bad.stderr
