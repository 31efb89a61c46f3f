"""The raw TLS probe against a grpc-go server (tools/authtestserver), whose TLS stack
is not ours: each refusal is reported with its real TLS alert, and a
valid client certificate is not flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

from driver.verify.tlsprobe import handshake, plaintext
from tests.support.agentproc import make_pki
from tests.support.authserver import auth_test_server


def _read(p: Path) -> bytes:
    return p.read_bytes()


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tlsprobe")
    ours = make_pki(root / "ours", ("srv",)).root
    other = make_pki(root / "other", ("srv",)).root  # another CA, same names
    return ours, other


def outcomes(target: str, ours: Path, other: Path) -> dict[str, tuple[str, str]]:
    ca = _read(ours / "ca.crt")

    def probe(root: Path | None) -> tuple[str, str]:
        key = _read(root / "client-driver.key") if root else None
        cert = _read(root / "client-driver.crt") if root else None
        h = handshake(target, ca, key, cert, server_name="localhost")
        return h.outcome, h.reason

    return {"valid": probe(ours), "none": probe(None), "foreign": probe(other)}


def test_probe_reports_alerts_from_grpc_go(pkis: tuple[Path, Path], tmp_path: Path) -> None:
    ours, other = pkis
    with auth_test_server(ours, "srv", tmp_path) as target:
        got = outcomes(target, ours, other)
        assert got["valid"][0] == "accepted"  # not flagged
        assert got["none"] == ("refused", "certificate required (TLS alert)")
        assert got["foreign"][0] == "refused" and "unknown ca" in got["foreign"][1]
        assert plaintext(target).outcome == "refused"


def test_our_refusal_of_the_server_is_not_the_servers_refusal(
    pkis: tuple[Path, Path], tmp_path: Path
) -> None:
    """A server certificate we do not trust says nothing about the server's own checks."""
    ours, other = pkis
    key, cert = _read(ours / "client-driver.key"), _read(ours / "client-driver.crt")
    with auth_test_server(ours, "srv", tmp_path) as target:
        good = handshake(target, _read(ours / "ca.crt"), key, cert, server_name="localhost")
        wrong_name = handshake(target, _read(ours / "ca.crt"), key, cert, server_name="elsewhere")
        wrong_ca = handshake(target, _read(other / "ca.crt"), key, cert, server_name="localhost")
    assert (good.outcome, good.server_cn) == ("accepted", "srv")
    assert wrong_name.outcome == "untrusted" and "we do not trust" in wrong_name.reason
    assert wrong_ca.outcome == "untrusted" and wrong_ca.server_cn == ""
