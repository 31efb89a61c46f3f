"""The test PKI: a CA, one server cert per agent, one client cert per principal, a CRL.

Everything is EC P-256 signed with SHA-256. File names come from
`shakedown.pkilayout.PkiDir` so the agent and the driver find the files from the
directory alone. Private keys are written 0600 atomically (created 0600 under a
temporary name, then renamed), so no reader ever sees a partial or loose key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from driver import crl as _crl
from driver.certinfo import PkiError, describe_cert, inspect, load_cert
from shakedown.pkilayout import (
    ROLES,
    PkiDir,
    PkiLayoutError,
    check_name,
    load_principals,
    save_principals,
)

REASONS = _crl.REASONS
DEFAULT_DAYS = 365
# Backdate notBefore so a node whose clock lags a little still accepts fresh certs.
CLOCK_SKEW = dt.timedelta(minutes=5)
_DNS_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_RE = re.compile(rf"^(\*|{_DNS_LABEL})(\.{_DNS_LABEL})*$")

__all__ = [
    "DEFAULT_DAYS",
    "REASONS",
    "PkiError",
    "cert_for_name",
    "describe_cert",
    "init_pki",
    "inspect",
    "is_revoked",
    "issue_agent",
    "issue_client",
    "load_pem_pair",
    "make_ca",
    "make_leaf",
    "parse_host",
    "revoke",
]

CaPair = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


# ---------------------------------------------------------------- primitives


def _name(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except PkiLayoutError as exc:
        raise PkiError(str(exc)) from None


def _role(principal: str, role: str) -> str:
    if role not in ROLES:
        raise PkiError(f"principal {principal!r}: unknown role {role!r} (use {', '.join(ROLES)})")
    return role


def parse_host(host: str) -> x509.GeneralName:
    """An IP address SAN if ``host`` parses as one, else a DNS name SAN."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return x509.IPAddress(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if len(host) > 253 or not _DNS_RE.match(host):
        raise PkiError(f"host {host!r}: not an IP address or a DNS name")
    return x509.DNSName(host)


def _sans(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        general = parse_host(name)
        if general not in out:
            out.append(general)
    return out


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exact mode regardless of umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pair(cert_path: Path, key_path: Path, key: ec.EllipticCurvePrivateKey,
                cert: x509.Certificate) -> None:
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise PkiError(f"days {days}: must be at least 1")
    now = dt.datetime.now(dt.UTC)
    start = not_before or now - CLOCK_SKEW
    end = not_after or now + dt.timedelta(days=days)
    if end <= start:
        raise PkiError(f"not_after {end.isoformat()}: must be after not_before {start.isoformat()}")
    return start, end


def _new_ca(common_name: str, days: int = DEFAULT_DAYS) -> CaPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(days, None, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_leaf(
    ca: CaPair,
    common_name: str,
    *,
    client: bool,
    sans: Sequence[str],
    days: int = DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CaPair:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, not_before, not_after)
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName(_sans(sans or (common_name,))), critical=False
    )
    return key, builder.sign(ca_key, hashes.SHA256())


def _load_ca(pki: PkiDir) -> CaPair:
    for path in (pki.ca_cert, pki.ca_key):
        if not path.exists():
            raise PkiError(f"{path}: missing; run `shakedown certs init {pki.root}` first")
    try:
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except ValueError as exc:
        raise PkiError(f"{pki.root}: cannot load the CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pki.ca_key}: expected an EC private key")
    if key.public_key() != cert.public_key():
        raise PkiError(f"{pki.ca_key}: does not match {pki.ca_cert}")
    return key, cert


# ---------------------------------------------------------------- in-memory API


def make_ca(common_name: str) -> tuple[bytes, bytes]:
    """A fresh CA as ``(key_pem, cert_pem)``, for auth tests that need a foreign CA."""
    key, cert = _new_ca(common_name)
    return _key_pem(key), _cert_pem(cert)


def make_leaf(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    common_name: str,
    *,
    client: bool = True,
    sans: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = DEFAULT_DAYS,
) -> tuple[bytes, bytes]:
    """A client (or server) cert signed by the given CA, as ``(key_pem, cert_pem)``.

    SANs are exactly ``sans`` (default: DNS ``common_name``), so a test can mint
    a cert whose CN and SAN disagree.
    """
    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("ca_key_pem: expected an EC private key")
    ca = (key, x509.load_pem_x509_certificate(ca_cert_pem))
    leaf_key, leaf = _new_leaf(ca, common_name, client=client, sans=sans, days=days,
                               not_before=not_before, not_after=not_after)
    return _key_pem(leaf_key), _cert_pem(leaf)


def load_pem_pair(cert_path: str | os.PathLike[str],
                  key_path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(key_pem, cert_pem)`` read from disk: the same order as `make_leaf`."""
    paths = (Path(key_path), Path(cert_path))
    try:
        key_pem, cert_pem = (p.read_bytes() for p in paths)
    except OSError as exc:
        raise PkiError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return key_pem, cert_pem


# ---------------------------------------------------------------- the directory


def init_pki(
    root: str | os.PathLike[str],
    agents: Mapping[str, Sequence[str]],
    principals: Mapping[str, str] | None = None,
    *,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> PkiDir:
    """Create the CA, agent and client certs and principals.json under ``root``."""
    pki = PkiDir(Path(root))
    wanted = dict(principals) if principals is not None else {"driver": "admin"}
    # Validate everything before writing anything, so a typo leaves no half-made PKI.
    for name, hosts in agents.items():
        _name("agent", name)
        if not hosts:
            raise PkiError(f"agent {name!r}: needs at least one host")
        _sans(hosts)
    for principal, role in wanted.items():
        _role(_name("principal", principal), role)
    _validity(days, None, None)
    if not force:
        for path in (pki.ca_cert, pki.ca_key):
            if path.exists():
                raise PkiError(f"{path}: a CA already exists; pass --force to replace it "
                               "(every certificate it issued stops working)")

    ca = _new_ca(f"Shakedown CA {secrets.token_hex(4)}", days)
    pki.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A CRL signed by the old CA would fail verification and lock everyone out.
    pki.crl.unlink(missing_ok=True)
    _write_pair(pki.ca_cert, pki.ca_key, *ca)
    for name, hosts in agents.items():
        _write_pair(pki.agent_cert(name), pki.agent_key(name),
                    *_new_leaf(ca, name, client=False, sans=[name, *hosts], days=days))
    for principal in wanted:
        _write_pair(pki.client_cert(principal), pki.client_key(principal),
                    *_new_leaf(ca, principal, client=True, sans=[principal], days=days))
    save_principals(pki.principals, wanted)
    return pki


def issue_agent(
    root: str | os.PathLike[str], name: str, hosts: Sequence[str], *, days: int = DEFAULT_DAYS
) -> tuple[Path, Path]:
    """(Re)issue ``agent-<name>.crt/.key`` with the existing CA."""
    pki = PkiDir(Path(root))
    _name("agent", name)
    if not hosts:
        raise PkiError(f"agent {name!r}: needs at least one host")
    ca = _load_ca(pki)
    key, cert = _new_leaf(ca, name, client=False, sans=[name, *hosts], days=days)
    _write_pair(pki.agent_cert(name), pki.agent_key(name), key, cert)
    return pki.agent_cert(name), pki.agent_key(name)


def issue_client(
    root: str | os.PathLike[str],
    principal: str,
    role: str | None = "admin",
    *,
    days: int = DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """(Re)issue ``client-<principal>.crt/.key``; ``role=None`` keeps it off the allow-list."""
    pki = PkiDir(Path(root))
    _name("principal", principal)
    if role is not None:
        _role(principal, role)
    ca = _load_ca(pki)
    key, cert = _new_leaf(ca, principal, client=True, sans=[principal], days=days,
                          not_before=not_before, not_after=not_after)
    _write_pair(pki.client_cert(principal), pki.client_key(principal), key, cert)
    if role is not None:
        allowed = load_principals(pki.principals) if pki.principals.exists() else {}
        allowed[principal] = role
        save_principals(pki.principals, allowed)
    return pki.client_cert(principal), pki.client_key(principal)


def cert_for_name(root: str | os.PathLike[str], name: str) -> Path:
    """``client-<name>.crt``, else ``agent-<name>.crt``: what `revoke` acts on."""
    pki = PkiDir(Path(root))
    _name("certificate", name)
    for path in (pki.client_cert(name), pki.agent_cert(name)):
        if path.exists():
            return path
    raise PkiError(f"{name!r}: neither {pki.client_cert(name).name} nor "
                   f"{pki.agent_cert(name).name} exists in {pki.root}")


def revoke(
    root: str | os.PathLike[str],
    name: str,
    *,
    reason: str = "unspecified",
    next_update: dt.timedelta = _crl.DEFAULT_NEXT_UPDATE,
) -> Path:
    """Add the cert's serial to ``crl.pem`` (re-signed, CRL number + 1). Idempotent."""
    pki = PkiDir(Path(root))
    try:
        _crl.check_reason(reason)
    except _crl.CrlError as exc:
        raise PkiError(str(exc)) from None
    cert_path = cert_for_name(root, name)
    ca_key, ca_cert = _load_ca(pki)
    cert = load_cert(cert_path)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(f"{cert_path}: not issued by {pki.ca_cert}") from None
    try:
        existing = _crl.load_crl(pki.crl) if pki.crl.exists() else None
        new = _crl.with_revoked(existing, ca_key, ca_cert, cert.serial_number, reason,
                                next_update)
    except _crl.CrlError as exc:
        raise PkiError(f"{pki.crl}: {exc}") from None
    if new is not None:
        _write_atomic(pki.crl, new.public_bytes(serialization.Encoding.PEM), 0o644)
    return pki.crl


def is_revoked(crl_path: str | os.PathLike[str], ca_cert_path: str | os.PathLike[str],
               cert_pem: bytes) -> bool:
    """Whether the CRL lists the cert; raises `PkiError` if the CA did not sign the CRL."""
    ca_cert = load_cert(Path(ca_cert_path))
    try:
        crl = _crl.load_crl(Path(crl_path))
        return _crl.cert_is_revoked(crl, ca_cert, x509.load_pem_x509_certificate(cert_pem))
    except _crl.CrlError as exc:
        raise PkiError(str(exc)) from None
