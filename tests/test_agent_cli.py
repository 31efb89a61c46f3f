"""`shakedown agent ...` end to end through driver.cli.main against a real agent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driver import AgentClient
from driver.cli import main
from tests.support.agentproc import AgentProcess

pytestmark = pytest.mark.docker

TEST_LABEL = "shakedown-test"


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], inventory: Path) -> None:
        self.capsys = capsys
        self.inventory = inventory

    def __call__(self, *argv: str, code: int = 0) -> str:
        """Run `shakedown agent CMD --inventory INV ARGS...`; return stdout."""
        cmd, *rest = argv
        self.capsys.readouterr()
        got = main(["agent", cmd, "--inventory", str(self.inventory), *rest])
        out, err = self.capsys.readouterr()
        assert got == code, f"exit {got} != {code}\nstdout: {out}\nstderr: {err}"
        self.last_err = err
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self(*argv[:1], "--json", *argv[1:]))


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], agent_proc: AgentProcess) -> Cli:
    return Cli(capsys, agent_proc.inventory)


@pytest.fixture()
def label() -> str:
    return f"{TEST_LABEL}={uuid.uuid4().hex[:12]}"


@pytest.fixture()
def session_name(client: AgentClient, label: str) -> Iterator[str]:
    name = f"cli-test-{uuid.uuid4().hex[:8]}"
    yield name
    key, _, value = label.partition("=")
    for c in client.list({key: value}, all=True):
        client.remove(c, force=True)
    for s in client.sessions():
        if s.name == name:
            client.close_session(s.id)


def test_info_table_and_json(cli: Cli, agent_proc: AgentProcess) -> None:
    out = cli("info")
    header, row = out.splitlines()
    assert header.split()[:3] == ["NODE", "ADDRESS", "AGENT"]
    assert row.startswith(agent_proc.name) and agent_proc.address in row
    assert "driver (admin)" in row
    (info,) = cli.json("info")
    assert info["name"] == agent_proc.name
    assert (info["principal"], info["role"]) == ("driver", "admin")
    assert info["address"] == agent_proc.address


def test_info_with_explicit_target(capsys: pytest.CaptureFixture[str],
                                   agent_proc: AgentProcess) -> None:
    assert main(["agent", "info", "--target", agent_proc.address, "--certs",
                 str(agent_proc.certs), "--keys", str(agent_proc.keys), "--principal",
                 "viewer", "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert (info["principal"], info["role"]) == ("viewer", "observer")


def test_container_lifecycle(cli: Cli, busybox_image: str, label: str,
                             session_name: str) -> None:
    cid = cli("run", "--session", session_name, "-l", label, "-e", "WHO=cli", "--memory", "64m",
              "--name", f"cli-{uuid.uuid4().hex[:8]}", busybox_image,
              "sh", "-c", "echo hello $WHO; echo warn >&2; exec sleep 300").strip()
    assert len(cid) == 64

    (row,) = cli.json("ps", "-l", label)
    assert row["id"] == cid and row["state"] == "running"
    assert row["labels"][label.split("=")[0]] == label.split("=")[1]
    table = cli("ps", "-l", label).splitlines()
    assert table[0].split()[:3] == ["NODE", "ID", "NAME"] and cid[:12] in table[1]

    info = cli.json("inspect", cid)
    assert info["id"] == cid and info["state"] == "running"

    def logs_ready() -> bool:
        return cli("logs", cid) == "hello cli\n"
    _poll(logs_ready, 15, "container output")
    assert "warn" in cli.last_err  # stderr goes to stderr

    assert cli("exec", cid, "sh", "-c", "echo in-container; exit 4", code=4) == "in-container\n"
    assert cli.json("exec", cid, "cat", "/etc/passwd")["exit_code"] == 0

    assert cli("stop", cid, "-t", "1").strip() == cid
    assert cli.json("ps", "-l", label) == []
    (stopped,) = cli.json("ps", "-a", "-l", label)
    assert stopped["state"] == "exited"

    assert cli.json("rm", cid) == {"id": cid}
    assert cli.json("ps", "-a", "-l", label) == []
    cli("inspect", cid, code=1)
    assert "NotFound" in cli.last_err


def test_kill_and_follow(cli: Cli, busybox_image: str, label: str, session_name: str) -> None:
    cid = cli("run", "--session", session_name, "-l", label, busybox_image,
              "sh", "-c", "for i in 1 2 3; do echo tick $i; done; sleep 1; echo done").strip()
    # -f ends when the container exits, so this returns all of it.
    assert cli("logs", cid, "-f") == "tick 1\ntick 2\ntick 3\ndone\n"
    assert cli("logs", cid, "--tail", "1") == "done\n"
    cid2 = cli("run", "--session", session_name, "-l", label, busybox_image,
               "sleep", "300").strip()
    killed = cli.json("kill", cid2, "-s", "KILL")
    assert killed["id"] == cid2
    cli("rm", "-f", cid2)


def test_attach_rm_returns_exit_code(cli: Cli, busybox_image: str, label: str,
                                     session_name: str) -> None:
    out = cli("run", "--session", session_name, "-l", label, "--attach", "--rm",
              busybox_image, "sh", "-c", "echo attached; exit 5", code=5)
    assert out == "attached\n"
    assert cli.json("ps", "-a", "-l", label) == []


def test_errors_are_actionable(capsys: pytest.CaptureFixture[str], agent_proc: AgentProcess,
                               tmp_path: Path, cli: Cli, session_name: str) -> None:
    base = ["--certs", str(agent_proc.certs), "--keys", str(agent_proc.keys)]
    assert main(["agent", "info", "--target", "127.0.0.1:1", "--timeout", "5", *base]) == 1
    err = capsys.readouterr().err
    assert "agent 127.0.0.1:1 is unreachable: connection refused" in err

    assert main(["agent", "ps"]) == 2
    assert "--inventory FILE" in capsys.readouterr().err

    assert main(["agent", "info", "--inventory", str(agent_proc.inventory),
                 "--node", "nope"]) == 2
    assert f"known: {agent_proc.name}" in capsys.readouterr().err

    # The observer may read but not create: the message says which refusal and why.
    assert main(["agent", "run", "--target", agent_proc.address, *base, "--principal",
                 "viewer", "busybox"]) == 1
    err = capsys.readouterr().err
    assert f"agent {agent_proc.address} refused: PERMISSION_DENIED" in err

    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nname = "x"\naddress = "nope"\n')
    assert main(["agent", "info", "--inventory", str(bad)]) == 2
    assert "bad.toml: nodes[0].address: expected HOST:PORT" in capsys.readouterr().err

    cli("run", "--session", session_name, "-l", "io.shakedown.x=1", "busybox", code=1)
    assert "InvalidArgument" in cli.last_err and "spec.labels" in cli.last_err


def _poll(predicate: Any, timeout: float, what: str) -> None:
    import threading
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.2)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("shakedown 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "later" not in out and "exit codes: 0 success, 1 a failed call" in out
    with pytest.raises(SystemExit) as exit_:
        main(["agent", "nope"])
    assert exit_.value.code == 2  # a usage error


def test_run_ps_and_inspect_print_the_same_container(cli: Cli, busybox_image: str, label: str,
                                                     session_name: str) -> None:
    ran = cli.json("run", "--session", session_name, "-l", label, busybox_image, "sleep", "60")
    (listed,) = cli.json("ps", "-l", label)
    inspected = cli.json("inspect", ran["id"])
    assert ran["command"] == listed["command"] == ["sleep", "60"]
    assert listed["pid"] > 0 and listed["started_at"] is not None
    for doc in (ran, listed):  # state may only move forward between the calls
        assert {k: v for k, v in doc.items() if k != "status"} == {
            k: v for k, v in inspected.items() if k != "status"}
    cli("rm", "-f", ran["id"])


def test_pause_unpause_restart(cli: Cli, busybox_image: str, label: str,
                               session_name: str) -> None:
    cid = cli("run", "--session", session_name, "-l", label, busybox_image,
              "sleep", "300").strip()
    assert cli.json("pause", cid)["state"] == "paused"
    assert cli.json("unpause", cid)["state"] == "running"
    before = cli.json("inspect", cid)["started_at"]
    restarted = cli.json("restart", cid, "-t", "0")
    assert restarted["state"] == "running" and restarted["started_at"] > before
    assert cli("pause", cid).strip() == cid
    cli("rm", "-f", cid)


def test_logs_json_lines(cli: Cli, busybox_image: str, label: str, session_name: str) -> None:
    cid = cli("run", "--session", session_name, "-l", label, busybox_image,
              "sh", "-c", "echo one; echo two >&2; echo three").strip()
    cli("logs", cid, "-f")  # returns once the container has exited
    records = [json.loads(line) for line in cli("logs", cid, "--json").splitlines()]
    assert sorted((r["stream"], r["data"]) for r in records) == [
        ("stderr", "two"), ("stdout", "one"), ("stdout", "three")]
    assert all(r["timestamp"].startswith("20") for r in records)
    cli("rm", "-f", cid)


def test_run_session_labels_are_truthful_and_ttl_reaps(cli: Cli, busybox_image: str,
                                                        label: str, session_name: str) -> None:
    kept = cli.json("run", "--session", session_name, "-l", label, busybox_image, "sleep", "60")
    assert kept["labels"]["io.shakedown.session.persistent"] == "true"
    assert kept["labels"]["io.shakedown.session.ttl"] == "0"  # never reaped: no TTL claimed
    reaped = cli.json("run", "--ttl", "2", "-l", label, busybox_image, "sleep", "60")
    assert "2 s TTL" in cli.last_err
    assert reaped["labels"]["io.shakedown.session.persistent"] == "false"
    assert reaped["labels"]["io.shakedown.session.ttl"] == "2"
    assert reaped["session_id"] != kept["session_id"]

    def gone() -> bool:
        return [c["id"] for c in cli.json("ps", "-a", "-l", label)] == [kept["id"]]
    _poll(gone, 20, "the --ttl container to be reaped")
    cli("run", "--ttl", "0", busybox_image, code=2)
    assert "--ttl 0: must be at least 1" in cli.last_err
    cli("run", "--ttl", "5", "--session", session_name, busybox_image, code=2)
    assert "that session is persistent" in cli.last_err


def _python(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_grpc_core_logging_is_off_in_both_entry_points_unless_the_user_set_it() -> None:
    # Both set GRPC_VERBOSITY before grpc is first imported (gRPC core reads it then).
    driver = ("import sys, os, driver.cli; driver.cli.quiet_grpc_core(); "
              "print('grpc' in sys.modules, os.environ['GRPC_VERBOSITY'])")
    assert _python(driver) == "False NONE"
    assert _python(driver, GRPC_VERBOSITY="ERROR") == "False ERROR"
    agent = "import os, agent.cli; print(os.environ['GRPC_VERBOSITY'])"
    assert _python(agent) == "NONE"
    assert _python(agent, GRPC_VERBOSITY="DEBUG") == "DEBUG"


def test_help_imports_no_heavy_dependency() -> None:
    code = ("import sys, contextlib, io, driver.cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    driver.cli.main(['--help'])\n"
            "print(sorted(m for m in ('grpc', 'docker', 'cryptography', 'google.protobuf',"
            " 'shakedown.agent.v1.agent_pb2') if m in sys.modules))")
    assert _python(code) == "[]"


def test_group_stand_ins_match_what_each_group_registers() -> None:
    import argparse

    from driver.cli import GROUP_HELP, build_parser

    full = build_parser()  # every group built in full
    (sub,) = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps == GROUP_HELP
