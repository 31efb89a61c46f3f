"""Suite authentication: every agent rejects every negative case of `verify auth`.

The matrix needs the node's PKI directory (to forge foreign and expired
identities next to the real CA) and its keyring: both come from the
environment's inventory (`NodeConfig.certs` / `.keys`).
"""

from __future__ import annotations

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
