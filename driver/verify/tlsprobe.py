"""What did the TLS handshake say? A raw `ssl` handshake with given credentials.

gRPC reports every TLS refusal as UNAVAILABLE with an opaque detail
("Unwrap failed (TSI_DATA_CORRUPTED)"); the alert the server sent (certificate
required, unknown CA, certificate expired...) only reaches gRPC core's log. We
repeat the handshake with Python's `ssl`, which raises the alert by name.

With TLS 1.3 the client finishes its side of the handshake before the server
has checked the client certificate, so a refusal arrives on the first read: we
read until the server's SETTINGS frame (accepted) or an alert (refused),
sending the HTTP/2 preface only if the server waits for it.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME_TYPE = 4
# gRPC core servers end a refused handshake without sending the alert.
CLOSED_AFTER_TLS = "the server closed the connection after the TLS handshake, no alert"


@dataclass(frozen=True, slots=True)
class Handshake:
    # accepted: TLS done and the server spoke HTTP/2; refused: the server
    # ended the handshake (or the connection), `reason` says why; untrusted:
    # WE refused the server's certificate (says nothing about the server's
    # checks); unreachable: no TCP.
    outcome: str
    reason: str
    server_cn: str = ""  # the server certificate's CN, when the handshake got that far


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        # "TLSV13_ALERT_CERTIFICATE_REQUIRED" -> "certificate required (TLS alert)"
        name = exc.reason or ""
        for prefix in ("TLSV13_ALERT_", "TLSV1_ALERT_", "SSLV3_ALERT_"):
            if name.startswith(prefix):
                return name.removeprefix(prefix).replace("_", " ").lower() + " (TLS alert)"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"we do not trust the server certificate: {exc.verify_message}"
        if name:
            return name.replace("_", " ").lower()
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "connection closed by the server during the handshake"
    return f"{type(exc).__name__}: {exc}"


def _common_name(cert: object) -> str:
    if not isinstance(cert, dict):
        return ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def handshake(
    target: str,
    ca_pem: bytes,
    key_pem: bytes | None,
    cert_pem: bytes | None,
    *,
    server_name: str | None = None,
    timeout: float = 5.0,
) -> Handshake:
    """TLS-connect to target presenting (key, cert) (or none) and report the outcome."""
    host, port = _split(target)
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    if key_pem and cert_pem:
        # load_cert_chain takes files only; a private temp dir, removed at once.
        with tempfile.TemporaryDirectory(prefix="shakedown-verify-") as tmp:
            cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
            with open(cert_path, "wb") as f:
                f.write(cert_pem)
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(key_pem)
            ctx.load_cert_chain(cert_path, key_path)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Handshake("unreachable", exc.strerror or str(exc))
    try:
        with ctx.wrap_socket(raw, server_hostname=server_name or host) as tls:
            # Read before writing: a refusal is an alert followed by a close,
            # and bytes we sent after it make the server's kernel answer with
            # a reset that discards the unread alert.
            cn = _common_name(tls.getpeercert())
            tls.settimeout(min(timeout, 1.0))
            try:
                head = tls.recv(9)
                if not head:
                    return Handshake("refused", CLOSED_AFTER_TLS)
            except TimeoutError:  # a server that waits for the client preface
                head = b""
                tls.settimeout(timeout)
                tls.sendall(PREFACE)
            tls.settimeout(timeout)
            while len(head) < 9:
                chunk = tls.recv(9 - len(head))
                if not chunk:
                    return Handshake("refused", CLOSED_AFTER_TLS)
                head += chunk
            if head[3] == SETTINGS_FRAME_TYPE:
                return Handshake("accepted", "TLS and HTTP/2 accepted", cn)
            return Handshake("accepted", "TLS accepted (unexpected first HTTP/2 frame)", cn)
    except TimeoutError:
        return Handshake("refused", f"no answer within {timeout:g}s")
    except ssl.SSLCertVerificationError as exc:
        return Handshake("untrusted", _reason(exc))
    except (ssl.SSLError, OSError) as exc:
        return Handshake("refused", _reason(exc))
    finally:
        raw.close()


def plaintext(target: str, *, timeout: float = 5.0) -> Handshake:
    """Send the HTTP/2 preface in clear: does the server speak plaintext gRPC?"""
    host, port = _split(target)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(PREFACE)
            head = sock.recv(9)
    except TimeoutError:
        return Handshake("refused", f"no answer to plaintext within {timeout:g}s")
    except ConnectionRefusedError as exc:
        return Handshake("unreachable", exc.strerror or str(exc))
    except OSError as exc:
        return Handshake("refused", f"plaintext refused: {exc.strerror or exc}")
    if len(head) == 9 and head[3] == SETTINGS_FRAME_TYPE:
        return Handshake("accepted", "plaintext HTTP/2 accepted")
    if head[:1] == b"\x15":
        return Handshake("refused", "TLS required (the server answered with a TLS alert)")
    return Handshake("refused", "TLS required (the server closed the plaintext connection)")
