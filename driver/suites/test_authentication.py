"""Suite authentication: every agent rejects every negative case of `verify auth`.

The matrix needs the node's PKI directory (to forge foreign and expired
identities next to the real CA) and its keyring: both come from the
environment's inventory (`NodeConfig.certs` / `.keys`).
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from driver.inventory import NodeConfig
from driver.verify.auth import verify_auth

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("authentication")]


def node_config(env: Any, node: str) -> NodeConfig:
    config: NodeConfig = env.inventory().node(node)
    return config


def test_auth_matrix(shakedown_env: Any, shakedown_node: str) -> None:
    node = node_config(shakedown_env, shakedown_node)
    if node.certs is None:
        pytest.skip(f"node {shakedown_node}: the inventory names no certs directory, "
                    "which the matrix needs to forge identities")
    report = verify_auth(
        node.address, node.certs, node.keys, principal=node.principal,
        server_name=node.server_name, ca=node.ca, cert=node.cert, key=node.key,
    )
    failures = [f"{c.name}: expected {c.expected}, observed {c.observed}" for c in report.failures]
    assert not failures, f"{node.address}:\n" + "\n".join(failures)
    negatives = [c for c in report.cases if c.expected == "reject"]
    assert negatives and all(c.verdict in ("pass", "skip") for c in negatives)
    # The known-good control must have been accepted, or the rejections prove nothing.
    assert any(c.expected == "accept" and c.verdict == "pass" for c in report.cases)
    # mTLS and HMAC negatives actually ran (not all skipped).
    ran = {c.category for c in negatives if c.verdict == "pass"}
    assert {"mtls", "hmac"} <= ran, ran


def test_scheduler_mtls_matrix(system: Any, shakedown_env: Any) -> None:
    """The mTLS matrix on every replica of the system's API (not an agent: the
    role and HMAC cases are not applicable there)."""
    endpoints = getattr(system, "endpoints", None)
    if endpoints is None:
        pytest.skip("the system's adapter does not say where its API is (no endpoints())")
    node = node_config(shakedown_env, shakedown_env.inventory().names[0])
    if node.certs is None:
        pytest.skip("the inventory names no certs directory, which the matrix needs")
    targets = endpoints()
    assert targets, "discovery returned no replica of the system's API"
    for target in targets:
        report = verify_auth(target, node.certs, None, principal=node.principal,
                             server_name=node.server_name)
        bad = [f"{c.name}: {c.verdict} ({c.observed})" for c in report.cases
               if c.verdict in ("accepted", "FAIL") and c.expected == "reject"]
        assert not bad, f"{target}:\n" + "\n".join(bad)
        assert report.exit_code in (0, 2), (target, report.exit_code)
        assert any(c.expected == "accept" and c.verdict == "pass" for c in report.cases), target


def test_scheduler_calls_to_agents_are_signed(system: Any, shakedown_env: Any,
                                              tmp_path: Path) -> None:
    """An agent whose keyring holds another secret for the scheduler refuses its calls,
    and the scheduler reports that node failing, while the real nodes stay healthy."""
    env = shakedown_env
    if getattr(system, "endpoints", None) is None or not getattr(env, "etcd", None) \
            or not hasattr(env, "paths"):
        pytest.skip("needs a local environment running a system that calls agents")
    from driver.control.process import spawn, wait_for
    from driver.pki import issue_agent
    from shakedown import keyring

    name = f"{env.name}-rogue{secrets.token_hex(2)}"
    # Where the scheduler can reach an agent of ours: loopback locally, this side's
    # address on the stack's network in a compose environment.
    host = getattr(env, "local_agent_host", "127.0.0.1")
    cert, key = issue_agent(env.paths.certs, name, sorted({host, "127.0.0.1", "localhost"}))
    ring = keyring.load(env.paths.keys)
    forged = keyring.Keyring(tuple(dataclasses.replace(k, secret=secrets.token_bytes(32))
                                   if k.principal == "scheduler" else k for k in ring.keys))
    keys = tmp_path / "keys.json"
    keyring.save(forged, keys)
    port_file = tmp_path / "port"
    proc = spawn(name, [sys.executable, "-m", "agent", "--name", name, "--listen", f"{host}:0",
                        "--certs", str(env.paths.certs), "--keys", str(keys),
                        "--state-dir", str(tmp_path / "state"), "--port-file", str(port_file),
                        "--register-etcd", env.etcd, "--register-domain", env.domain],
                 tmp_path / "agent.log", detach=False)
    try:
        def refused() -> bool:
            node = next((n for n in system.nodes() if n.name == name), None)
            return node is not None and not node.healthy and (
                "signature" in node.reason.lower() or "unauthenticated" in node.reason.lower())
        wait_for(refused, 60, interval=0.5, what=f"the scheduler to report {name} refusing it")
        real = {n.name: n.healthy for n in system.nodes() if n.name in env.inventory().names}
        assert real and all(real.values()), real
    finally:
        proc.stop()
        cert.unlink(missing_ok=True)
        key.unlink(missing_ok=True)
