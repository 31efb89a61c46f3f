"""`shakedown grpc list|describe|call` against the agent (signed) and the grpc-go server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.agentproc import AgentProcess
from tests.support.authserver import auth_test_server

AGENT = "shakedown.agent.v1.Agent"


def shakedown(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driver.cli", "grpc", *args],
                          capture_output=True, text=True, timeout=60)


def test_list_describe_and_signed_call_to_the_agent(agent_proc: AgentProcess) -> None:
    conn = [agent_proc.address, "--certs", str(agent_proc.pki.root)]
    out = shakedown("list", *conn, "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert AGENT in listed["services"] and listed["reflection"] == "v1"

    out = shakedown("describe", *conn, f"{AGENT}.GetNodeInfo")
    assert out.returncode == 0, out.stderr
    assert "GetNodeInfoRequest" in out.stdout

    out = shakedown("call", *conn, "--keys", str(agent_proc.pki.keys), f"{AGENT}/GetNodeInfo",
                    "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == agent_proc.name
    assert out.stderr == ""  # no gRPC core chatter

    unsigned = shakedown("call", *conn, f"{AGENT}/GetNodeInfo")
    assert unsigned.returncode == 1
    assert "AuthError" in unsigned.stderr and "x-shakedown" in unsigned.stderr


def test_wrong_method_and_wrong_field_are_named(agent_proc: AgentProcess) -> None:
    conn = [agent_proc.address, "--certs", str(agent_proc.pki.root), "--keys",
            str(agent_proc.pki.keys)]
    out = shakedown("call", *conn, f"{AGENT}/GetNodeInfoo")
    assert out.returncode == 1
    assert "has no method 'GetNodeInfoo'" in out.stderr and "GetNodeInfo," in out.stderr

    out = shakedown("call", *conn, f"{AGENT}/ListContainers", "--data", '{"sesion_id": "x"}')
    assert out.returncode == 1
    assert "data.sesion_id" in out.stderr and "session_id" in out.stderr

    out = shakedown("describe", *conn, "shakedown.agent.v1.Nope")
    assert out.returncode == 1 and "symbol" in out.stderr

    out = shakedown("call", *conn, f"{AGENT}/GetNodeInfo", "--data", "[1]")
    assert out.returncode == 2 and "--data: want a JSON object" in out.stderr
    out = shakedown("call", agent_proc.address, f"{AGENT}/GetNodeInfo")
    assert out.returncode == 2 and "--certs" in out.stderr
    out = shakedown("call", *conn, f"{AGENT}/GetNodeInfo", "-H", "nocolon")
    assert out.returncode == 2 and "key:value" in out.stderr


def test_call_the_grpc_go_server(pki, agent_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with auth_test_server(pki.root, agent_name, tmp_path) as target:
        conn = [target, "--certs", str(pki.root), "--server-name", "localhost"]
        out = shakedown("call", *conn, "grpc.testing.TestService/UnaryCall", "-d",
                        '{"response_size": 2}', "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"payload": {"body": "AAA="}}
        out = shakedown("call", *conn, "--principal", "viewer",
                        "grpc.testing.TestService/EmptyCall")
        assert out.returncode == 1 and "PolicyError" in out.stderr  # the allow-list holds
