"""Is an endpoint alive? A TCP connect, then the standard gRPC health check.

The health check is tried in plaintext, then with mTLS when certificates are
given, because discovery records rarely say which the service speaks.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shakedown.pkilayout import PkiDir


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    detail: str
    # tcp-refused | tcp-timeout | not-serving | no-health | tls-needed | serving
    verdict: str


def tcp_connect(host: str, port: int, timeout: float) -> str | None:
    """None when the port accepts a connection; else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)


def _health(channel: grpc.Channel, timeout: float) -> tuple[str, str]:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as err:
        code = err.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return "no-health", "no gRPC health service"
        return "error", f"{code.name}: {err.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return ("serving" if status == "SERVING" else "not-serving"), status


def probe(
    host: str,
    port: int,
    *,
    timeout: float = 2.0,
    certs: Path | None = None,
    principal: str = "driver",
    grpc_health: bool = True,
) -> Probe:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    refused = tcp_connect(host, port, timeout)
    if refused is not None:
        verdict = "tcp-timeout" if "within" in refused else "tcp-refused"
        return Probe(False, f"{target}: {refused}", verdict)
    if not grpc_health:
        return Probe(True, f"{target}: accepts connections", "serving")
    with grpc.insecure_channel(target) as channel:
        verdict, detail = _health(channel, timeout)
    if verdict == "error" and certs is not None:
        pki = PkiDir(certs)
        creds = grpc.ssl_channel_credentials(
            pki.ca_cert.read_bytes(),
            pki.client_key(principal).read_bytes(),
            pki.client_cert(principal).read_bytes(),
        )
        with grpc.secure_channel(target, creds) as channel:
            verdict, detail = _health(channel, timeout)
    if verdict == "error":
        return Probe(
            True,
            f"{target}: accepts connections, but no plaintext gRPC health "
            "answer (TLS? give --certs)",
            "tls-needed",
        )
    return Probe(verdict in ("serving", "no-health"), f"{target}: {detail}", verdict)
