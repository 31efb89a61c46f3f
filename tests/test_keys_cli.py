"""`shakedown keys ...` through driver.cli.main: real keyring files, no secrets printed."""

from __future__ import annotations

import base64
import importlib.util
import json
import stat
from pathlib import Path

import pytest

import driver.cli as cli
from shakedown import keyring


@pytest.fixture(autouse=True)
def _importable_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command groups are built in parallel; don't let a missing one break these tests.
    groups = tuple(g for g in cli.GROUPS if importlib.util.find_spec(f"driver.cli.{g}"))
    monkeypatch.setattr(cli, "GROUPS", groups)


class Runner:
    def __init__(self, capsys: pytest.CaptureFixture[str], file: Path) -> None:
        self.capsys, self.file, self.seen = capsys, file, ""

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = cli.main(["keys", *argv])
        out, err = self.capsys.readouterr()
        self.seen += out + err
        return code, out, err

    def assert_no_secret_printed(self) -> None:
        for key in keyring.load(self.file).keys:
            for text in (base64.b64encode(key.secret).decode(), key.secret.hex()):
                assert text not in self.seen


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(capsys, tmp_path / "keys.json")


def test_init_list_rotate_retire(keys: Runner) -> None:
    f = str(keys.file)
    code, out, _ = keys("init", f, "--principal", "driver", "--principal", "viewer")
    assert code == 0 and "mode 0600" in out
    assert stat.S_IMODE(keys.file.stat().st_mode) == 0o600
    ring = keyring.load(keys.file)
    assert sorted(k.principal for k in ring.keys) == ["driver", "viewer"]
    old = ring.signing_key("driver")
    assert old.id in out

    code, out, _ = keys("rotate", f, "--principal", "driver")
    assert code == 0 and f"still active for overlap: {old.id}" in out
    ring = keyring.load(keys.file)
    new = ring.signing_key("driver")  # strictly newer, even within the same second
    assert new.id != old.id and new.id in out
    assert [k.active for k in ring.keys if k.principal == "driver"] == [True, True]

    code, out, _ = keys("retire", f, old.id)
    assert code == 0 and out == f"retired {old.id}\n"
    assert keyring.load(keys.file).get(old.id).active is False  # type: ignore[union-attr]
    code, out, _ = keys("retire", f, old.id)
    assert code == 0 and "already retired" in out

    code, out, _ = keys("list", f, "--json")
    doc = json.loads(out)
    assert [(k["id"], k["active"]) for k in doc["keys"] if k["principal"] == "driver"] == [
        (old.id, False), (new.id, True)]
    assert all(set(k) == {"id", "principal", "active", "created"} for k in doc["keys"])

    code, out, _ = keys("list", f)
    assert code == 0 and "retired" in out and "active" in out
    assert stat.S_IMODE(keys.file.stat().st_mode) == 0o600
    keys.assert_no_secret_printed()


def test_default_principal_add_and_force(keys: Runner) -> None:
    f = str(keys.file)
    assert keys("init", f)[0] == 0
    assert [k.principal for k in keyring.load(keys.file).keys] == ["driver"]
    code, _, err = keys("init", f)
    assert code == 2 and "exists; pass --force" in err
    code, out, _ = keys("add", f, "--principal", "ci", "--key-id", "ci-1")
    assert code == 0 and "ci-1" in out
    code, _, err = keys("add", f, "--principal", "ci", "--key-id", "ci-1")
    assert code == 2 and "--key-id ci-1: key id already in the keyring" in err
    before = keys.file.read_text()
    assert keys("init", f, "--force")[0] == 0
    assert keys.file.read_text() != before
    keys.assert_no_secret_printed()


def test_errors(keys: Runner) -> None:
    f = str(keys.file)
    code, _, err = keys("list", f)
    assert code == 2 and "no keyring; create one with `shakedown keys init" in err
    keys("init", f)
    code, _, err = keys("rotate", f, "--principal", "zed")
    assert code == 2 and "--principal zed: no active key" in err
    code, _, err = keys("retire", f, "nope")
    assert code == 2 and "KEY_ID nope: not in" in err
    code, _, err = keys("add", f, "--principal", "bad name")
    assert code == 2 and "--principal bad name:" in err
    code, _, err = keys("add", f, "--principal", "ci", "--key-id", "bad id")
    assert code == 2 and "--key-id: key id 'bad id'" in err
    keys.file.write_text("{}")
    code, _, err = keys("list", f)
    assert code == 2 and "expected an object" in err
