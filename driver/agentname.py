"""Which agent a driver is talking to: the audience its HMAC v2 signatures name.

In order: an explicit name (``agent_name=``, ``--agent-name``, an inventory
node's ``agent_name``) wins; else the node name from the inventory or
environment; else the CN of the agent's server certificate, learnt by one
verified TLS handshake (``shakedown certs init`` puts the agent name there).
A wrong guess is safe: the agent refuses a signature for another audience,
naming both.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from shakedown import signing
from shakedown.errors import FailedPrecondition, Unavailable


def _host(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def peer_name(
    address: str, *, ca: bytes, cert: bytes, key: bytes, server_name: str | None = None,
    timeout: float = 10.0,
) -> str:
    """The CN of the certificate the agent at ``address`` presents, verified against ``ca``."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    host, port = _host(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca.decode("ascii"))
    # ssl loads a client identity only from files: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="shakedown-peer-") as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert)
        key_file.touch(0o600)
        key_file.write_bytes(key)
        ctx.load_cert_chain(cert_file, key_file)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(
            sock, server_hostname=server_name or host
        ) as tls:
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise Unavailable(f"TLS handshake with {address} failed: {exc}") from None
    except OSError as exc:
        raise Unavailable(f"cannot reach agent at {address}: {exc.strerror or exc}") from None
    assert der is not None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME
    )
    cn = str(names[0].value) if names else ""
    try:
        return signing.check_audience(cn)
    except signing.SignatureFormatError:
        raise FailedPrecondition(
            f"agent at {address}: its certificate's CN {cn!r} is not an agent name; "
            "give the agent's name explicitly (agent_name=, --agent-name)"
        ) from None


def choose(explicit: str | None, node: str | None) -> str | None:
    """The name when known without asking the agent; None means: read its certificate."""
    for candidate in (explicit, node):
        if candidate:
            return signing.check_audience(candidate)
    return None


class Audience:
    """The audience, resolved at most once and only when first needed (a lazy handshake)."""

    def __init__(self, name: str | None, resolve: Callable[[], str] | None = None) -> None:
        if name is None and resolve is None:
            raise ValueError("an audience needs a name or a way to learn it")
        self._name, self._resolve = name, resolve
        self._lock = threading.Lock()

    @property
    def known(self) -> str | None:
        return self._name

    def __call__(self) -> str:
        if self._name is None:
            with self._lock:
                if self._name is None:
                    assert self._resolve is not None
                    self._name = self._resolve()
        return self._name
