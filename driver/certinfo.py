"""Reading and describing PKI files: what `shakedown certs inspect` prints."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from driver import crl as _crl
from shakedown.pkilayout import PkiDir, load_principals

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


class PkiError(ValueError):
    """Bad input or an unusable PKI directory; the message names the offending input."""


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise PkiError(f"{path}: not a PEM certificate") from None


def describe_cert(cert: x509.Certificate) -> dict[str, Any]:
    exts = cert.extensions
    sans: list[str] = []
    eku: list[str] = []
    is_ca = False
    for ext in exts:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            sans += [f"DNS:{v}" for v in ext.value.get_values_for_type(x509.DNSName)]
            sans += [f"IP:{v}" for v in ext.value.get_values_for_type(x509.IPAddress)]
        elif isinstance(ext.value, x509.ExtendedKeyUsage):
            eku = [_EKU_NAMES.get(oid, oid.dotted_string) for oid in ext.value]
        elif isinstance(ext.value, x509.BasicConstraints):
            is_ca = ext.value.ca
    pub = cert.public_key()
    key_type = f"EC {pub.curve.name}" if isinstance(pub, ec.EllipticCurvePublicKey) \
        else type(pub).__name__
    now = dt.datetime.now(dt.UTC)
    return {
        "kind": "certificate",
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sans": sans,
        "eku": eku,
        "is_ca": is_ca,
        "key_type": key_type,
        "fingerprint_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER))
        .hexdigest(),
        "expired": cert.not_valid_after_utc < now,
        "not_yet_valid": cert.not_valid_before_utc > now,
    }


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able description of a cert, a CRL, or a whole PKI directory."""
    p = Path(path)
    if p.is_dir():
        return _inspect_dir(PkiDir(p))
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {p}: {exc.strerror}") from None
    if b"-----BEGIN X509 CRL-----" in data:
        try:
            return {"path": str(p), **_crl.describe(_crl.load_crl(p))}
        except _crl.CrlError as exc:
            raise PkiError(str(exc)) from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        return {"path": str(p), **describe_cert(load_cert(p))}
    if b"PRIVATE KEY-----" in data:
        raise PkiError(f"{p}: a private key; inspect its .crt instead")
    raise PkiError(f"{p}: not a PEM certificate or CRL")


def _inspect_dir(pki: PkiDir) -> dict[str, Any]:
    ca = load_cert(pki.ca_cert) if pki.ca_cert.exists() else None
    crl = None
    crl_error = None
    if pki.crl.exists():
        try:
            crl = _crl.load_crl(pki.crl)
            if ca is not None:
                _crl.check_signed_by(crl, ca, str(pki.crl))
        except _crl.CrlError as exc:
            crl, crl_error = None, str(exc)
    principals = load_principals(pki.principals) if pki.principals.exists() else None
    certs: list[dict[str, Any]] = []
    for path in sorted(pki.root.glob("*.crt")):
        cert = load_cert(path)
        info: dict[str, Any] = {"file": path.name, **describe_cert(cert)}
        if path.name.startswith("client-"):
            # None: a cert the agent will refuse because the principal is not allowed.
            info["role"] = (principals or {}).get(path.name[len("client-"):-len(".crt")])
        if ca is not None and path != pki.ca_cert:
            info["issued_by_ca"] = _issued_by(cert, ca)
            info["revoked"] = bool(crl is not None and ca is not None
                                   and _crl.cert_is_revoked(crl, ca, cert))
        certs.append(info)
    return {
        "kind": "pki-dir",
        "path": str(pki.root),
        "certificates": certs,
        "principals": principals,
        "crl": _crl.describe(crl) if crl is not None else None,
        "crl_error": crl_error,
    }


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
