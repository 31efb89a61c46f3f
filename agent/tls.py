"""Server TLS material: mandatory client certificates, reload on change, CRL.

gRPC's Python API has no CRL hook, so revocation is enforced by the guard on
every RPC (before any handler runs) against a CRL whose signature we verify
with the CA. Certificates are re-read when their files change, through gRPC's
dynamic credentials: the fetcher runs on each new handshake, so a rotated
certificate takes effect on the next connection with no restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from shakedown.secretfile import SecretFileError, read_secret

log = logging.getLogger("shakedown.agent.tls")
CRL_CHECK_INTERVAL = 0.25  # seconds


class TlsConfigError(ValueError):
    pass


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except FileNotFoundError:
        return None


def _read(path: Path, flag: str, secret: bool = False) -> bytes:
    try:
        # A private key others can read is refused, as ssh does (shakedown.secretfile).
        return read_secret(path, f"{flag} private key") if secret else path.read_bytes()
    except SecretFileError as exc:
        raise TlsConfigError(str(exc)) from None
    except OSError as exc:
        raise TlsConfigError(f"{flag} {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class _Material:
    ca: bytes
    cert: bytes
    key: bytes
    stamp: tuple[float | None, ...]


class CertStore:
    """Holds the current server certificate, CA bundle and CRL, reloading on change."""

    def __init__(self, ca: Path, cert: Path, key: Path, crl: Path | None = None) -> None:
        self.ca_path, self.cert_path, self.key_path, self.crl_path = ca, cert, key, crl
        self._lock = threading.Lock()
        self._material = self._load()
        self._crl_stamp: float | None = None
        self._revoked: frozenset[int] = frozenset()
        self._revoked_cache: dict[bytes, bool] = {}
        self._crl_checked, self._crl_failed = time.monotonic(), False
        self._refresh_crl()

    # -- certificates ---------------------------------------------------------

    def _stamp(self) -> tuple[float | None, ...]:
        return (_mtime(self.ca_path), _mtime(self.cert_path), _mtime(self.key_path))

    def _load(self) -> _Material:
        stamp = self._stamp()
        ca = _read(self.ca_path, "--ca")
        cert = _read(self.cert_path, "--cert")
        key = _read(self.key_path, "--key", secret=True)
        for blob, flag, marker in (
            (ca, "--ca", b"CERTIFICATE"),
            (cert, "--cert", b"CERTIFICATE"),
            (key, "--key", b"PRIVATE KEY"),
        ):
            if marker not in blob:
                raise TlsConfigError(f"{flag}: not a PEM {marker.decode().lower()}")
        return _Material(ca, cert, key, stamp)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        m = self._material
        return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=True
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs on gRPC's handshake path: must be cheap and must never raise.
        try:
            if self._stamp() == self._material.stamp:
                return None
            with self._lock:
                material = self._load()
                if material.stamp == self._material.stamp:
                    return None
                self._material = material
            log.info("reloaded TLS certificates", extra={"fields": {"cert": str(self.cert_path)}})
            return self._configuration()
        except Exception as exc:  # keep serving with the previous material
            log.warning(
                "TLS reload failed; keeping the previous certificates",
                extra={"fields": {"error": str(exc)}},
            )
            return None

    @property
    def ca_pem(self) -> bytes:
        return self._material.ca

    # -- revocation -------------------------------------------------------------

    def _refresh_crl(self) -> None:
        stamp = _mtime(self.crl_path)
        if stamp == self._crl_stamp:
            return
        with self._lock:
            if stamp == self._crl_stamp:
                return
            revoked: frozenset[int] = frozenset()
            if stamp is not None and self.crl_path is not None:
                revoked = self._parse_crl(self.crl_path)
            self._revoked, self._revoked_cache, self._crl_stamp = revoked, {}, stamp
            log.info(
                "loaded CRL",
                extra={"fields": {"path": str(self.crl_path), "revoked": len(revoked)}},
            )

    def _parse_crl(self, path: Path) -> frozenset[int]:
        # Imported only when a CRL exists: x509 costs ~8 MB of idle RSS otherwise.
        from cryptography import x509

        data = path.read_bytes()
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_crl(data)
            )
            issuers = [
                c
                for c in x509.load_pem_x509_certificates(self._material.ca)
                if c.subject == crl.issuer
            ]
            if not any(crl.is_signature_valid(c.public_key()) for c in issuers):  # type: ignore[arg-type]
                raise TlsConfigError("CRL signature does not verify against the CA")
        except (ValueError, TlsConfigError) as exc:
            # A broken CRL must not silently let revoked certificates in.
            raise TlsConfigError(f"--crl {path}: {exc}") from None
        return frozenset(entry.serial_number for entry in crl)

    def is_revoked(self, peer_cert_pem: bytes) -> bool:
        """True when the peer's certificate serial is on the current CRL.

        The CRL file is stat()ed at most every CRL_CHECK_INTERVAL (a stat per
        call was a measurable share of a signed call), so a revocation takes
        effect within that; after a failed load it is re-read on every call,
        so an unreadable CRL keeps failing closed.
        """
        if self.crl_path is None:
            return False
        now = time.monotonic()
        if self._crl_failed or now - self._crl_checked >= CRL_CHECK_INTERVAL:
            self._crl_failed = True
            self._refresh_crl()
            self._crl_failed, self._crl_checked = False, now
        if not self._revoked:
            return False
        digest = hashlib.sha256(peer_cert_pem).digest()
        cached = self._revoked_cache.get(digest)
        if cached is None:
            from cryptography import x509

            serial = x509.load_pem_x509_certificate(peer_cert_pem).serial_number
            cached = serial in self._revoked
            self._revoked_cache[digest] = cached
        return cached
