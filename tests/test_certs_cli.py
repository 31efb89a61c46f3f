"""`shakedown certs ...` through driver.cli.main, with real files in tmp_path."""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pytest

import driver.cli as cli
from shakedown.pkilayout import PkiDir


@pytest.fixture(autouse=True)
def _importable_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command groups are built in parallel; don't let a missing one break these tests.
    groups = tuple(g for g in cli.GROUPS if importlib.util.find_spec(f"driver.cli.{g}"))
    monkeypatch.setattr(cli, "GROUPS", groups)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pki_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    root = tmp_path / "pki"
    code, _, err = run(capsys, "certs", "init", root, "--agent", "n1=127.0.0.1,localhost",
                       "--agent", "n2=10.0.0.2", "--principal", "driver:admin",
                       "--principal", "viewer:observer", "--days", "10")
    assert code == 0, err
    return root


def test_init_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "certs", "init", tmp_path / "p", "--agent", "n1=127.0.0.1")
    assert code == 0 and err == ""
    assert "agent-n1.crt" in out and "DNS:n1, IP:127.0.0.1" in out
    assert "client driver (admin)" in out  # the default principal
    assert f"next: shakedown keys init {tmp_path / 'p' / 'keys.json'}" in out
    pki = PkiDir(tmp_path / "p")
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600
    assert json.loads(pki.principals.read_text())["principals"] == {"driver": "admin"}


def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "certs", "init", tmp_path / "p", "--agent", "n1=::1,n1.lab",
                       "--principal", "ci:observer", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["agents"]["n1"]["sans"] == ["DNS:n1", "DNS:n1.lab", "IP:::1"]
    assert doc["clients"] == {"ci": {"cert": str(tmp_path / "p" / "client-ci.crt"),
                                     "key": str(tmp_path / "p" / "client-ci.key"),
                                     "role": "observer"}}
    assert doc["stale"] == [] and doc["next"].startswith("shakedown keys init")


def test_init_refuses_existing_ca(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "certs", "init", pki_dir, "--agent", "n1=127.0.0.1")
    assert code == 2 and f"{pki_dir / 'ca.crt'}: a CA already exists" in err
    code, out, err = run(capsys, "certs", "init", pki_dir, "--agent", "n1=127.0.0.1", "--force")
    assert code == 0, err
    # The leftovers from the old CA are named, not silently kept.
    assert "agent-n2.crt" in out and "client-viewer.crt" in out and "warning" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "n1="], "--agent n1=: needs at least one host"),
        (["--agent", "n1"], "--agent n1: expected NAME=HOST[,HOST...]"),
        (["--agent", "n1=a,,b"], "--agent n1=a,,b: empty host"),
        (["--agent", "n1=bad host"], "--agent n1=bad host: host 'bad host'"),
        (["--agent", "n/1=h"], "--agent n/1=h: agent name 'n/1'"),
        (["--agent", "n1=h", "--agent", "n1=g"], "--agent n1=g: 'n1' given twice"),
        (["--agent", "n1=h", "--principal", "bob"],
         "--principal bob: expected NAME:ROLE with ROLE in admin, observer"),
        (["--agent", "n1=h", "--principal", "bob:root"], "--principal bob:root: expected"),
        (["--agent", "n1=h", "--days", "0"], "--days 0: must be at least 1"),
    ],
)
def test_init_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    code, out, err = run(capsys, "certs", "init", tmp_path / "p", *args)
    assert code == 2 and out == ""
    assert err.startswith(f"shakedown: {message}"), err
    assert not (tmp_path / "p").exists()


def test_issue(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "certs", "issue", pki_dir, "--agent", "n3=10.0.0.3")
    assert code == 0 and "DNS:n3, IP:10.0.0.3" in out
    code, out, _ = run(capsys, "certs", "issue", pki_dir, "--principal", "ci:observer")
    assert code == 0 and "client ci (observer)" in out
    principals = json.loads((pki_dir / "principals.json").read_text())["principals"]
    assert principals["ci"] == "observer"
    code, _, err = run(capsys, "certs", "issue", pki_dir, "--principal", "ci")
    assert code == 2 and "--principal ci: expected NAME:ROLE" in err
    code, _, err = run(capsys, "certs", "issue", pki_dir.parent / "none", "--agent", "x=h")
    assert code == 2 and "ca.crt: missing" in err


def test_revoke_and_inspect(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "certs", "inspect", pki_dir / "client-viewer.crt", "--json")
    serial = json.loads(out)["serial"]
    code, out, _ = run(capsys, "certs", "revoke", pki_dir, "viewer")
    assert code == 0 and out.startswith(f"revoked client-viewer.crt serial {serial}")
    assert (pki_dir / "crl.pem").exists()
    code, out, _ = run(capsys, "certs", "revoke", pki_dir, "viewer")
    assert code == 0 and out.startswith("already revoked")

    code, out, _ = run(capsys, "certs", "inspect", pki_dir)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("client-viewer.crt"))
    assert "REVOKED" in line and "role=observer" in line
    assert "crl: #1" in out

    code, out, _ = run(capsys, "certs", "inspect", pki_dir, "--json")
    doc = json.loads(out)
    assert doc["kind"] == "pki-dir" and doc["principals"]["viewer"] == "observer"
    assert [r["serial"] for r in doc["crl"]["revoked"]] == [serial]

    code, out, _ = run(capsys, "certs", "inspect", pki_dir / "crl.pem")
    assert code == 0 and serial in out

    code, _, err = run(capsys, "certs", "revoke", pki_dir, "ghost")
    assert code == 2 and "'ghost': neither client-ghost.crt nor agent-ghost.crt" in err


def test_inspect_errors(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "certs", "inspect", pki_dir / "ca.key")
    assert code == 2 and "a private key" in err
    code, _, err = run(capsys, "certs", "inspect", pki_dir / "nope.crt")
    assert code == 2 and "cannot read" in err
    assert b"PRIVATE" not in err.encode()
