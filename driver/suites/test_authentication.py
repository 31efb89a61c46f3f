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
