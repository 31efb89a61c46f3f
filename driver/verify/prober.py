"""One `verify auth` call as a case sees it: the handshake first, then the gRPC call.

Every TLS call first repeats its handshake with Python's ssl
(driver.verify.tlsprobe): a refusal is reported with the server's alert, and
gRPC never attempts a handshake that fails (gRPC core would log that to
stderr, in lines that look like crashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from driver.verify import tlsprobe
from driver.verify.verdicts import INCONCLUSIVE, Observation, from_handshake, from_status


@dataclass(frozen=True, slots=True)
class Identity:
    key_pem: bytes | None
    cert_pem: bytes | None


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret: bytes


class Prober:
    def __init__(self, target: str, ca_pem: bytes, server_name: str | None, timeout: float) -> None:
        self.target, self.ca_pem, self.timeout = target, ca_pem, timeout
        self.server_name = server_name
        self.options = [("grpc.ssl_target_name_override", server_name)] if server_name else []

    def channel(self, identity: Identity) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(self.ca_pem, identity.key_pem, identity.cert_pem)
        return grpc.secure_channel(self.target, creds, options=self.options)

    def handshake(self, identity: Identity) -> tlsprobe.Handshake:
        return tlsprobe.handshake(
            self.target,
            self.ca_pem,
            identity.key_pem,
            identity.cert_pem,
            server_name=self.server_name,
            timeout=self.timeout,
        )

    def call(
        self,
        identity: Identity | None,
        method: str,
        body: bytes,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Observation:
        """The handshake first (its refusal is the answer), then the gRPC call."""
        if identity is None:
            settled = from_handshake(
                tlsprobe.plaintext(self.target, timeout=self.timeout), plaintext=True
            )
            channel = grpc.insecure_channel(self.target) if settled is None else None
        else:
            settled = from_handshake(self.handshake(identity))
            channel = self.channel(identity) if settled is None else None
        if settled is not None or channel is None:
            assert settled is not None
            return settled
        if not method:
            channel.close()
            return Observation(
                INCONCLUSIVE,
                "TLS",
                "TLS accepted; no method to call (the valid identity's own handshake failed)",
            )
        try:
            stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            stub(body, timeout=self.timeout, metadata=list(metadata))
            return from_status("OK", "")
        except grpc.RpcError as err:
            return from_status(err.code().name, err.details() or "")
        finally:
            channel.close()
