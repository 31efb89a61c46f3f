"""Secret files (keyrings, private keys) others could read are refused, as ssh does."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from driver.client import AgentClient
from shakedown import keyring
from shakedown.secretfile import SecretFileError, read_secret
from tests.support.agentproc import AgentProcess, make_pki, wait_for

NAME = f"t{uuid.uuid4().hex[:8]}-sec"  # unique per run: a real agent may start


def _secret(tmp_path: Path, mode: int) -> Path:
    p = tmp_path / "secret"
    p.write_bytes(b"s3cret")
    p.chmod(mode)
    return p


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o007])
def test_group_or_world_access_is_refused_naming_path_and_mode(tmp_path: Path, mode: int) -> None:
    p = _secret(tmp_path, mode)
    with pytest.raises(SecretFileError) as err:
        read_secret(p, "keyring")
    assert f"permissions {mode:04o} for keyring '{p}' are too open" in str(err.value)
    assert "chmod 600" in str(err.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_is_accepted(tmp_path: Path, mode: int) -> None:
    assert read_secret(_secret(tmp_path, mode)) == b"s3cret"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    p = _secret(tmp_path, 0o600)
    os.chown(p, 4242, -1)
    with pytest.raises(SecretFileError, match="owned by uid 4242"):
        read_secret(p)


def test_keyring_load_refuses_a_readable_keyring(tmp_path: Path) -> None:
    p = tmp_path / "keys.json"
    keyring.save(keyring.new_keyring(["driver"]), p)
    assert (p.stat().st_mode & 0o777) == 0o600  # what `keys init` writes
    keyring.load(p)
    p.chmod(0o644)
    with pytest.raises(keyring.KeyringError, match=r"permissions 0644 for keyring '.*keys.json'"):
        keyring.load(p)


def test_certs_init_writes_private_keys_0600(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "certs", (NAME,))
    keys = [pki.dir.ca_key, pki.dir.agent_key(NAME), pki.dir.client_key("driver"), pki.keys]
    assert {oct(k.stat().st_mode & 0o777) for k in keys} == {"0o600"}


def _agent_cmd(pki_root: Path, keys: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "agent", "--name", NAME, "--listen", "127.0.0.1:0",
            "--certs", str(pki_root), "--keys", str(keys), "--state-dir", str(tmp_path / "st")]


def test_agent_refuses_to_start_with_a_0644_keyring(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "certs", (NAME,))
    pki.keys.chmod(0o644)
    out = subprocess.run(_agent_cmd(pki.root, pki.keys, tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert f"permissions 0644 for keyring '{pki.keys}' are too open" in out.stderr, out.stderr


def test_agent_refuses_to_start_with_a_readable_private_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "certs", (NAME,))
    key = pki.dir.agent_key(NAME)
    key.chmod(0o640)
    out = subprocess.run(_agent_cmd(pki.root, pki.keys, tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert f"permissions 0640 for --key private key '{key}' are too open" in out.stderr, out.stderr


def test_driver_refuses_a_readable_client_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "certs", (NAME,))
    pki.dir.client_key("driver").chmod(0o644)
    with pytest.raises(PermissionError, match="permissions 0644 for client key"):
        AgentClient.from_certs_dir("127.0.0.1:1", pki.root, pki.keys)
    pki.dir.client_key("driver").chmod(0o600)
    pki.keys.chmod(0o604)
    with pytest.raises(keyring.KeyringError, match="permissions 0604"):
        AgentClient.from_certs_dir("127.0.0.1:1", pki.root, pki.keys)


def test_a_reload_of_a_too_open_keyring_keeps_the_previous_one(fresh_agent: AgentProcess) -> None:
    from shakedown.errors import AuthError

    agent = fresh_agent.start()
    ring = keyring.load(agent.keys)
    old = ring.signing_key("driver")
    new = keyring.generate_key("driver", key_id="driver-added-open")
    keyring.save(keyring.Keyring((*ring.keys, new)), agent.keys)
    agent.keys.chmod(0o644)  # the new key arrives in a file anyone may read
    pki = agent.pki.dir

    def client(key: keyring.Key) -> AgentClient:
        # Key material given directly: the driver would refuse the 0644 file itself.
        return AgentClient(agent.address, ca=pki.ca_cert, cert=pki.client_cert("driver"),
                           key=pki.client_key("driver"), key_id=key.id, secret=key.secret,
                           retries=0, agent_name=agent.name)

    with client(new) as c, pytest.raises(AuthError, match="unknown key id"):
        c.node_info()
    wait_for(lambda: "too open" in agent.log_path.read_text(errors="replace"), 10,
             what="the agent to log the refused reload")
    with client(old) as c:  # the previous keyring still verifies
        assert c.node_info().name == agent.name
    agent.keys.chmod(0o600)  # fixed: the next reload takes the new key
    with client(new) as c:
        assert c.node_info().name == agent.name
