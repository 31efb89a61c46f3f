"""Assembles the agent: gRPC server, guard, health, reflection, sessions; graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent import __version__, reflection
from agent.auth import AGENT_SERVICE, Authenticator
from agent.claim import EngineClaim, instance_id
from agent.config import AgentConfig
from agent.faults.manager import FaultManager
from agent.guard import Guard
from agent.registration import Registrar
from agent.runtime import DockerRuntime
from agent.service import AgentService
from agent.sessions import SessionManager
from agent.tls import CertStore
from shakedown.agent.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger("shakedown.agent")

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC turns SO_REUSEPORT on by default: a second agent on a port in use would
    # share it and "listen". Off, a port in use fails the start.
    ("grpc.so_reuseport", 0),
]


def _bind_error(listen: str) -> OSError:
    """Why ``listen`` could not be bound, in words (gRPC only says it failed)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return OSError(errno.EADDRINUSE, f"--listen {listen}: address in use (port {port})")
        return OSError(exc.errno, f"--listen {listen}: cannot bind: {exc.strerror}")
    return OSError(f"--listen {listen}: cannot bind")


def _advertised(listen: str, port: int, registered: str | None) -> str:
    host = registered or listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, path)


class AgentServer:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.certs = CertStore(config.ca, config.cert, config.key, config.crl)
        self.auth = Authenticator(
            config.keys,
            config.principals,
            config.principals_file,
            name=config.name,
            max_skew=config.max_clock_skew,
            accept_v1=config.accept_hmac_v1,
            state_dir=config.state_dir,
        )
        self.instance = instance_id(config.state_dir)
        self.runtime = DockerRuntime(config.name, config.adopt, docker_host=config.docker_host,
                                     instance=self.instance)
        self.claim: EngineClaim | None = None
        self.sessions = SessionManager(
            self.runtime,
            default_ttl=config.default_session_ttl,
            reap_interval=config.reap_interval,
            state_dir=config.state_dir,
        )
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[Guard(self.auth, self.certs)], options=SERVER_OPTIONS
        )
        self.faults = FaultManager(self.runtime, self.sessions, config.state_dir)
        agent_pb2_grpc.add_AgentServicer_to_server(
            AgentService(config, self.runtime, self.sessions, __version__, self.faults),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable((agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name,
                           health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                          self.server)
        self.port = 0
        self.registrar: Registrar | None = None

    async def start(self) -> int:
        try:
            self.port = self.server.add_secure_port(self.config.listen,
                                                    self.certs.server_credentials())
        except RuntimeError:  # grpcio >= 1.60 raises instead of returning 0
            self.port = 0
        if self.port == 0:
            raise _bind_error(self.config.listen)
        # Hold this name on the engine before recovering its sessions: recovery and
        # reaping are only safe while no other live instance uses the name.
        reg = self.config.registration
        self.claim = EngineClaim(self.runtime.api, self.config.name, self.instance,
                                 _advertised(self.config.listen, self.port,
                                             reg.host if reg else None))
        await asyncio.to_thread(self.claim.acquire)
        self.faults.load()  # before sessions start: reaping one heals its faults
        await self.sessions.start()
        await self.faults.start()
        await self.server.start()
        for service in ("", AGENT_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.config.registration is not None:
            self.registrar = Registrar(self.config.registration, self.config.name, self.port)
            self.registrar.start()
        if self.config.port_file is not None:
            _write_port_file(self.config.port_file, self.port)
        host = self.config.listen.rsplit(":", 1)[0]
        log.info(
            "listening",
            extra={
                "fields": {
                    "address": f"{host}:{self.port}",
                    "instance": self.instance,
                    "version": __version__,
                    "principals": sorted(self.auth.principals()),
                    "adopt": list(self.config.adopt),
                }
            },
        )
        return self.port

    async def stop(self) -> None:
        # Leave discovery and report NOT_SERVING first, so clients drain away.
        if self.registrar is not None:
            await asyncio.to_thread(self.registrar.stop)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace_period)
        await self.faults.stop()
        await self.sessions.stop()
        if self.claim is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.claim.release)
        self.runtime.close()
        log.info("stopped")


async def serve(config: AgentConfig) -> None:
    server = AgentServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(server.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down", extra={"fields": {"grace_s": config.grace_period}})
    await server.stop()
    for task in (waiter, stopper):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
