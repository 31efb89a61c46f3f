"""Certificate revocation lists: build, extend and check them against the CA.

Kept free of file-layout knowledge (that is `driver.pki`): every function takes
the CA and the certificates explicitly, so the checks are easy to reuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_NEXT_UPDATE = dt.timedelta(days=7)
# Names accepted for `reason`; "unspecified" means no reasonCode (RFC 5280 5.3.1).
# removeFromCRL belongs to delta CRLs only.
REASONS = tuple(r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl)


class CrlError(ValueError):
    """A CRL is unreadable, or not signed by the CA it claims."""


def load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CrlError(f"cannot read CRL {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError:
        raise CrlError(f"{path}: not a PEM CRL") from None


def check_signed_by(
    crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, source: str = "CRL"
) -> None:
    """Refuse a CRL the CA did not sign: a forged one could un-revoke anything."""
    pub = ca_cert.public_key()
    if crl.issuer != ca_cert.subject or not isinstance(pub, ec.EllipticCurvePublicKey):
        raise CrlError(f"{source}: issuer {crl.issuer.rfc4514_string()} is not the CA")
    if not crl.is_signature_valid(pub):
        raise CrlError(f"{source}: signature does not verify against the CA")


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[x509.RevokedCertificate],
    number: int,
    *,
    now: dt.datetime | None = None,
    next_update: dt.timedelta = DEFAULT_NEXT_UPDATE,
) -> x509.CertificateRevocationList:
    now = now or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        builder = builder.add_extension(aki, critical=False)
    except x509.ExtensionNotFound:
        pass
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256())


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise CrlError(f"reason {reason!r}: use one of {', '.join(REASONS)}")
    return reason


def revoked_entry(serial: int, reason: str = "unspecified") -> x509.RevokedCertificate:
    check_reason(reason)
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(dt.datetime.now(dt.UTC))
    )
    if reason != "unspecified":
        builder = builder.add_extension(x509.CRLReason(x509.ReasonFlags(reason)), critical=False)
    return builder.build()


def with_revoked(
    existing: x509.CertificateRevocationList | None,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    serial: int,
    reason: str = "unspecified",
    next_update: dt.timedelta = DEFAULT_NEXT_UPDATE,
) -> x509.CertificateRevocationList | None:
    """A re-signed CRL that also lists ``serial``; None if it is already listed."""
    entry = revoked_entry(serial, reason)  # validates reason even when idempotent
    if existing is not None:
        check_signed_by(existing, ca_cert)
        if existing.get_revoked_certificate_by_serial_number(serial) is not None:
            return None
    entries = [*(existing or ()), entry]
    number = crl_number(existing) + 1 if existing is not None else 1
    return build_crl(ca_key, ca_cert, entries, number, next_update=next_update)


def cert_is_revoked(
    crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, cert: x509.Certificate
) -> bool:
    check_signed_by(crl, ca_cert)
    # A serial is only unique per issuer: a foreign cert never matches this CRL.
    if cert.issuer != crl.issuer:
        return False
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def describe(crl: x509.CertificateRevocationList) -> dict[str, Any]:
    next_update = crl.next_update_utc
    return {
        "kind": "crl",
        "issuer": crl.issuer.rfc4514_string(),
        "crl_number": crl_number(crl),
        "last_update": crl.last_update_utc.isoformat(),
        "next_update": next_update.isoformat() if next_update else None,
        "stale": bool(next_update and next_update < dt.datetime.now(dt.UTC)),
        "revoked": [
            {
                "serial": f"{r.serial_number:x}",
                "revocation_date": r.revocation_date_utc.isoformat(),
                "reason": _reason(r),
            }
            for r in crl
        ],
    }


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return "unspecified"
