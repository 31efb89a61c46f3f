"""driver.pki with real crypto: layout, chains, SANs, real TLS handshakes, CRLs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from driver import pki
from shakedown.pkilayout import PkiDir

HOSTS = ["127.0.0.1", "localhost", "n1.lab"]


@pytest.fixture
def tree(tmp_path: Path) -> PkiDir:
    return pki.init_pki(tmp_path / "pki", {"n1": HOSTS, "n2": ["10.0.0.2"]},
                        {"driver": "admin", "viewer": "observer"}, days=30)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ layout


def test_init_layout_and_modes(tree: PkiDir) -> None:
    names = sorted(p.name for p in tree.root.iterdir())
    assert names == sorted([
        "ca.crt", "ca.key", "agent-n1.crt", "agent-n1.key", "agent-n2.crt", "agent-n2.key",
        "client-driver.crt", "client-driver.key", "client-viewer.crt", "client-viewer.key",
        "principals.json",
    ])  # and no temporary files left behind
    for path in tree.root.glob("*.key"):
        assert mode(path) == 0o600, path
    for path in tree.root.glob("*.crt"):
        assert mode(path) == 0o644, path
    doc = json.loads(tree.principals.read_text())
    assert doc == {"version": 1, "principals": {"driver": "admin", "viewer": "observer"}}


def test_ca_extensions(tree: PkiDir) -> None:
    ca = cert(tree.ca_cert)
    assert ca.subject.rfc4514_string().startswith("CN=Shakedown CA ")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.verify_directly_issued_by(ca)


def test_agent_cert_sans_chain_and_hosts(tree: PkiDir) -> None:
    ca, leaf = cert(tree.ca_cert), cert(tree.agent_cert("n1"))
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1", "localhost", "n1.lab"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)

    policy = PolicyBuilder().store(Store([ca]))
    for host in ["n1", *HOSTS]:
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        policy.build_server_verifier(name).verify(leaf, [])  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        policy.build_server_verifier(x509.DNSName("n2")).verify(leaf, [])


def test_client_cert_eku_and_identity(tree: PkiDir) -> None:
    ca, leaf = cert(tree.ca_cert), cert(tree.client_cert("driver"))
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=driver"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verified = PolicyBuilder().store(Store([ca])).build_client_verifier().verify(leaf, [])
    assert verified.subjects == [x509.DNSName("driver")]
    with pytest.raises(VerificationError):  # a server cert is no client cert
        PolicyBuilder().store(Store([ca])).build_client_verifier().verify(
            cert(tree.agent_cert("n1")), [])


def test_refuses_existing_ca_unless_forced(tree: PkiDir) -> None:
    old = tree.ca_cert.read_bytes()
    with pytest.raises(pki.PkiError, match=r"ca\.crt: a CA already exists"):
        pki.init_pki(tree.root, {"n1": ["127.0.0.1"]})
    assert tree.ca_cert.read_bytes() == old
    pki.revoke(tree.root, "viewer")
    pki.init_pki(tree.root, {"n1": ["127.0.0.1"]}, force=True)
    assert tree.ca_cert.read_bytes() != old
    assert not tree.crl.exists()  # an old-CA CRL would fail verification
    assert json.loads(tree.principals.read_text())["principals"] == {"driver": "admin"}


@pytest.mark.parametrize(
    ("agents", "principals", "days", "message"),
    [
        ({"n1": []}, None, 1, "agent 'n1': needs at least one host"),
        ({"n1": ["bad host"]}, None, 1, "host 'bad host'"),
        ({"bad/name": ["h"]}, None, 1, "agent name 'bad/name'"),
        ({"n1": ["h"]}, {"bob": "root"}, 1, "principal 'bob': unknown role 'root'"),
        ({"n1": ["h"]}, None, 0, "days 0"),
    ],
)
def test_init_validates_before_writing(tmp_path: Path, agents: dict[str, list[str]],
                                       principals: dict[str, str] | None, days: int,
                                       message: str) -> None:
    with pytest.raises(pki.PkiError, match=message.replace("(", r"\(")):
        pki.init_pki(tmp_path / "p", agents, principals, days=days)
    assert not (tmp_path / "p").exists()


def test_issue_agent_and_client(tree: PkiDir) -> None:
    crt, key = pki.issue_agent(tree.root, "n3", ["::1"])
    assert (crt, key) == (tree.agent_cert("n3"), tree.agent_key("n3")) and mode(key) == 0o600
    assert pki.inspect(crt)["sans"] == ["DNS:n3", "IP:::1"]
    pki.issue_client(tree.root, "ci", "observer")
    pki.issue_client(tree.root, "stranger", None)
    allowed = json.loads(tree.principals.read_text())["principals"]
    assert allowed == {"driver": "admin", "viewer": "observer", "ci": "observer"}
    assert tree.client_cert("stranger").exists()
    with pytest.raises(pki.PkiError, match="missing; run `shakedown certs init"):
        pki.issue_client(tree.root.parent / "empty", "x")


def test_in_memory_helpers(tmp_path: Path) -> None:
    ca_key, ca_pem = pki.make_ca("Other CA")
    key_pem, leaf_pem = pki.make_leaf(ca_key, ca_pem, "driver", sans=["admin", "10.1.1.1"])
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    assert b"PRIVATE KEY" in key_pem
    assert pki.describe_cert(leaf)["sans"] == ["DNS:admin", "IP:10.1.1.1"]
    (tmp_path / "c.crt").write_bytes(leaf_pem)
    (tmp_path / "c.key").write_bytes(key_pem)
    assert pki.load_pem_pair(tmp_path / "c.crt", tmp_path / "c.key") == (key_pem, leaf_pem)


# ------------------------------------------------------------------ real TLS


def _contexts(ca: Path, server: tuple[Path, Path], client: tuple[Path, Path]
              ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*server)
    sctx.load_verify_locations(cafile=ca)
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    cctx.load_cert_chain(*client)
    cctx.load_verify_locations(cafile=ca)
    for ctx in (sctx, cctx):  # RFC 5280 strictness, as newer OpenSSL/Python default to
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return sctx, cctx


def handshake(sctx: ssl.SSLContext, cctx: ssl.SSLContext, host: str) -> str | None:
    """Echo one byte over TLS on a socketpair; the server's error, if any."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.settimeout(5)
    errors: dict[str, str] = {}

    def serve() -> None:
        try:
            with sctx.wrap_socket(a, server_side=True) as tls:
                tls.sendall(tls.recv(1))
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = str(exc)
        finally:
            a.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with cctx.wrap_socket(b, server_hostname=host) as tls:
            tls.sendall(b"x")
            if tls.recv(1) != b"x":
                errors.setdefault("client", "no echo")
    except (ssl.SSLError, OSError) as exc:
        errors.setdefault("client", str(exc))
    finally:
        b.close()
        thread.join(10)
    assert not thread.is_alive()
    if errors:
        return errors.get("server") or errors["client"]
    return None


def pair(tree: PkiDir, kind: str, name: str) -> tuple[Path, Path]:
    if kind == "agent":
        return tree.agent_cert(name), tree.agent_key(name)
    return tree.client_cert(name), tree.client_key(name)


@pytest.mark.parametrize("host", ["n1", *HOSTS])
def test_tls_mutual_auth_succeeds_for_each_host(tree: PkiDir, host: str) -> None:
    sctx, cctx = _contexts(tree.ca_cert, pair(tree, "agent", "n1"), pair(tree, "client", "driver"))
    assert handshake(sctx, cctx, host) is None


def test_tls_rejects_wrong_hostname(tree: PkiDir) -> None:
    sctx, cctx = _contexts(tree.ca_cert, pair(tree, "agent", "n2"), pair(tree, "client", "driver"))
    error = handshake(sctx, cctx, "n1")
    assert error is not None


def test_tls_rejects_client_from_other_ca(tree: PkiDir, tmp_path: Path) -> None:
    ca_key, ca_pem = pki.make_ca("Rogue CA")
    key_pem, cert_pem = pki.make_leaf(ca_key, ca_pem, "driver")
    (tmp_path / "rogue.crt").write_bytes(cert_pem)
    (tmp_path / "rogue.key").write_bytes(key_pem)
    sctx, cctx = _contexts(tree.ca_cert, pair(tree, "agent", "n1"),
                           (tmp_path / "rogue.crt", tmp_path / "rogue.key"))
    error = handshake(sctx, cctx, "n1")
    assert error is not None and "certificate verify failed" in error


def test_tls_rejects_expired_client(tree: PkiDir) -> None:
    now = dt.datetime.now(dt.UTC)
    pki.issue_client(tree.root, "late", "admin", not_before=now - dt.timedelta(days=2),
                     not_after=now - dt.timedelta(days=1))
    assert pki.inspect(tree.client_cert("late"))["expired"] is True
    sctx, cctx = _contexts(tree.ca_cert, pair(tree, "agent", "n1"), pair(tree, "client", "late"))
    error = handshake(sctx, cctx, "n1")
    assert error is not None and "expired" in error


# ------------------------------------------------------------------ CRL


def test_revoke_writes_signed_crl_and_is_idempotent(tree: PkiDir) -> None:
    viewer = tree.client_cert("viewer").read_bytes()
    serial = x509.load_pem_x509_certificate(viewer).serial_number
    assert pki.revoke(tree.root, "viewer", reason="keyCompromise") == tree.crl
    crl = x509.load_pem_x509_crl(tree.crl.read_bytes())
    assert crl.is_signature_valid(cert(tree.ca_cert).public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert mode(tree.crl) == 0o644
    assert pki.is_revoked(tree.crl, tree.ca_cert, viewer)
    assert not pki.is_revoked(tree.crl, tree.ca_cert, tree.client_cert("driver").read_bytes())

    before = tree.crl.read_bytes()
    pki.revoke(tree.root, "viewer")
    assert tree.crl.read_bytes() == before

    pki.revoke(tree.root, "n2")  # no client-n2: falls back to the agent cert
    crl = x509.load_pem_x509_crl(tree.crl.read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert len(list(crl)) == 2
    assert pki.is_revoked(tree.crl, tree.ca_cert, tree.agent_cert("n2").read_bytes())

    info = pki.inspect(tree.root)
    revoked = {c["file"]: c.get("revoked") for c in info["certificates"]}
    assert revoked["client-viewer.crt"] and revoked["agent-n2.crt"]
    assert not revoked["client-driver.crt"]


def test_is_revoked_distrusts_crl_from_other_ca(tree: PkiDir, tmp_path: Path) -> None:
    other = pki.init_pki(tmp_path / "other", {"n1": ["127.0.0.1"]})
    pki.revoke(other.root, "driver")
    with pytest.raises(pki.PkiError, match="is not the CA"):
        pki.is_revoked(other.crl, tree.ca_cert, tree.client_cert("driver").read_bytes())


def test_revoke_errors(tree: PkiDir) -> None:
    with pytest.raises(pki.PkiError, match=r"neither client-ghost\.crt nor agent-ghost\.crt"):
        pki.revoke(tree.root, "ghost")
    with pytest.raises(pki.PkiError, match=r"^reason 'bored': use one of unspecified, keyComp"):
        pki.revoke(tree.root, "viewer", reason="bored")


def test_inspect_crl_and_key(tree: PkiDir) -> None:
    pki.revoke(tree.root, "viewer", reason="superseded")
    info = pki.inspect(tree.crl)
    assert info["kind"] == "crl" and info["crl_number"] == 1 and not info["stale"]
    assert info["revoked"][0]["reason"] == "superseded"
    assert info["revoked"][0]["serial"] == pki.inspect(tree.client_cert("viewer"))["serial"]
    with pytest.raises(pki.PkiError, match="a private key"):
        pki.inspect(tree.ca_key)
    ca_info = pki.inspect(tree.ca_cert)
    assert ca_info["is_ca"] and ca_info["key_type"] == "EC secp256r1"
