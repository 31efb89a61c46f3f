"""``AgentClient``: the synchronous, typed client of one node agent.

Every call runs over mutual TLS, is HMAC-signed (scheme v2, ``RequestSigner``) and
has a deadline. Failures surface as ``shakedown.errors`` types (``NotFound``,
``PolicyError``, ``AuthError``, ``Unavailable`` ...), never as ``grpc.RpcError``.

Retries are deliberately narrow: only calls that are safe to repeat (reads,
KeepAlive, Start, Stop, forced Remove of a container), only on UNAVAILABLE, with jittered
exponential backoff inside the call's deadline. Create, Exec and OpenSession
are never retried: a lost response would otherwise create twice.
"""

from __future__ import annotations

import builtins
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from driver import agentname
from driver.signer import RequestSigner, SigningInterceptor
from driver.streams import LogStream, Stream
from driver.types import (
    Container,
    ContainerSpec,
    Event,
    ExecResult,
    LogChunk,
    Network,
    NodeInfo,
    Selector,
    Session,
    selector_to_pb,
)
from shakedown import keyring
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import NotFound, ShakedownError, UnknownError, from_rpc_error
from shakedown.pkilayout import PkiDir
from shakedown.secretfile import SecretFileError, read_secret

if TYPE_CHECKING:
    from driver.inventory import NodeConfig
    from driver.session import SessionHandle

T = TypeVar("T")
SERVICE = "shakedown.agent.v1.Agent"
__all__ = ["AgentClient", "LogStream", "Stream", "backoff_delay"]
ContainerRef = str | Container
NetworkRef = str | Network
# A session id, a Session or a SessionHandle.
SessionLike: TypeAlias = "str | Session | SessionHandle"

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
# Agents are stopped and started again on purpose (faults, `env start`). gRPC's default
# reconnect backoff grows to 120 s, and a channel in backoff fails calls at once: an
# agent back for a minute would still look down. Cap it at 1 s (plus gRPC's 20 %
# jitter), and keep retrying an idempotent call for RECONNECT_S, so a call made just
# after the agent returned sees the channel's next connect. (Not
# grpc.min_reconnect_backoff_ms: despite its name it is the connect timeout, 20 s by
# default, and a short one fails TLS handshakes on a loaded machine.)
RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
RECONNECT_S = 1.5
# Extra deadline on calls whose own timeout argument bounds a server-side wait
# (stop, restart, wait, exec), so the server's answer can still arrive.
DEADLINE_MARGIN = 10.0

_RESPONSES: dict[str, type[Message]] = {
    "GetNodeInfo": pb.NodeInfo, "CreateContainer": pb.Container,
    "StartContainer": pb.Container, "StopContainer": pb.Container,
    "KillContainer": pb.Container, "PauseContainer": pb.Container,
    "UnpauseContainer": pb.Container, "RestartContainer": pb.Container,
    "RemoveContainer": pb.RemoveContainerResponse, "InspectContainer": pb.Container,
    "ListContainers": pb.ListContainersResponse, "WaitContainer": pb.WaitContainerResponse,
    "Exec": pb.ExecResponse, "OpenSession": pb.Session, "KeepAlive": pb.Session,
    "CloseSession": pb.CloseSessionResponse, "ListSessions": pb.ListSessionsResponse,
    "CreateNetwork": pb.Network, "RemoveNetwork": pb.RemoveNetworkResponse,
    "InspectNetwork": pb.Network, "ListNetworks": pb.ListNetworksResponse,
    "ConnectNetwork": pb.Container, "DisconnectNetwork": pb.Container,
}
_STREAMS: dict[str, type[Message]] = {"Logs": pb.LogChunk, "Events": pb.Event}


def _read(source: Path | str | bytes, what: str, secret: bool = False) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        # A private key others can read is refused, as ssh does (PermissionError).
        return read_secret(source, what) if secret else Path(source).read_bytes()
    except SecretFileError:
        raise
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {what} {source}: {exc.strerror}") from None


def _cid(container: ContainerRef) -> str:
    return container.id if isinstance(container, Container) else container


def _nid(network: NetworkRef) -> str:
    return network.id if isinstance(network, Network) else network


def _sid(session: object) -> str:
    sid = session if isinstance(session, str) else getattr(session, "id", None)
    if not isinstance(sid, str) or not sid:
        raise TypeError(f"session must be a session id, Session or SessionHandle, not {session!r}")
    return sid


def backoff_delay(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class AgentClient:
    def __init__(
        self, address: str, *, ca: Path | str | bytes, cert: Path | str | bytes,
        key: Path | str | bytes, key_id: str, secret: bytes, server_name: str | None = None,
        timeout: float = 30.0, retries: int = 3, node: str | None = None,
        agent_name: str | None = None,
    ) -> None:
        """``agent_name``: the audience of every signature; default ``node``, else the CN
        of the agent's certificate, read by one TLS handshake before the first call.
        ``retries``: attempts of an idempotent call on UNAVAILABLE, and for RECONNECT_S
        at least (0: never retried)."""
        ca_pem, cert_pem = _read(ca, "CA certificate"), _read(cert, "client certificate")
        key_pem = _read(key, "client key", secret=True)
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 << 20),
                                          *RECONNECT_OPTIONS]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))

        def learn() -> str:
            try:
                return agentname.peer_name(address, ca=ca_pem, cert=cert_pem, key=key_pem,
                                           server_name=server_name, timeout=self.timeout)
            except ShakedownError as exc:
                exc.add_note(f"learning the name of agent {self.describe()} (its certificate's "
                             "CN); give agent_name= to skip that")
                raise

        audience = agentname.Audience(agentname.choose(agent_name, node), learn)
        self._setup(grpc.secure_channel(address, creds, options=options), address,
                    key_id=key_id, secret=secret, timeout=timeout, retries=retries, node=node,
                    audience=audience)

    def _setup(self, channel: grpc.Channel, address: str, *, key_id: str, secret: bytes,
               timeout: float, retries: int, node: str | None,
               audience: agentname.Audience) -> None:
        self.address = address
        self.node = node or address
        self.timeout = timeout
        self.retries = max(0, retries)
        self.audience = audience
        self._raw_channel = channel
        self._signer = RequestSigner(key_id, secret, audience=audience)
        # A signing channel for ad-hoc calls (tests build raw multicallables on it);
        # the typed methods below sign directly, without the interceptor's cost.
        self._channel = grpc.intercept_channel(
            channel, SigningInterceptor(key_id, secret, audience=audience))
        # request_serializer=None: the signer must see (and sign) the wire bytes.
        self._unary = {
            name: channel.unary_unary(
                f"/{SERVICE}/{name}", request_serializer=None,
                response_deserializer=resp.FromString,
            )
            for name, resp in _RESPONSES.items()
        }
        self._stream = {
            name: channel.unary_stream(
                f"/{SERVICE}/{name}", request_serializer=None,
                response_deserializer=resp.FromString,
            )
            for name, resp in _STREAMS.items()
        }

    # ------------------------------------------------------------ constructors

    @classmethod
    def from_certs_dir(
        cls, address: str, certs_dir: Path | str, keys_file: Path | str,
        principal: str = "driver", server_name: str | None = None, **kwargs: Any,
    ) -> AgentClient:
        """Client cert ``client-<principal>.crt`` of a ``certs init`` dir; key from the keyring."""
        pki = PkiDir(Path(certs_dir))
        key = keyring.load(keys_file).signing_key(principal)
        return cls(address, ca=pki.ca_cert, cert=pki.client_cert(principal),
                   key=pki.client_key(principal), key_id=key.id, secret=key.secret,
                   server_name=server_name, **kwargs)

    @classmethod
    def over_channel(cls, channel: grpc.Channel, *, key_id: str, secret: bytes,
                     address: str = "", timeout: float = 30.0, retries: int = 3,
                     node: str | None = None, agent_name: str | None = None) -> AgentClient:
        """A client over a channel you built (custom transports, fakes in unit tests).

        A real agent accepts only mutual TLS; the client takes ownership of ``channel``.
        The channel's peer is opaque here, so the agent's name must be given
        (``agent_name``, or ``node`` when that is the agent's name).
        """
        name = agentname.choose(agent_name, node)
        if name is None:
            raise ValueError("over_channel: give agent_name= (the audience of the signatures)")
        self = cls.__new__(cls)
        self._setup(channel, address or node or "channel", key_id=key_id, secret=secret,
                    timeout=timeout, retries=retries, node=node,
                    audience=agentname.Audience(name))
        return self

    @classmethod
    def from_node(cls, node: NodeConfig, **kwargs: Any) -> AgentClient:
        key = keyring.load(node.keys).signing_key(node.principal)
        kwargs.setdefault("agent_name", node.agent_name)
        return cls(node.address, ca=node.ca_path, cert=node.cert_path, key=node.key_path,
                   key_id=key.id, secret=key.secret, server_name=node.server_name,
                   node=node.name, **kwargs)

    # ------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        return f"AgentClient({self.node!r}, {self.address!r})"

    def describe(self) -> str:
        return self.address if self.node == self.address else f"{self.node} ({self.address})"

    def _error(self, err: grpc.RpcError, method: str) -> ShakedownError:
        exc = from_rpc_error(err)
        exc.add_note(f"calling {method} on agent {self.describe()}")
        return exc

    def _call(self, method: str, request: Message, timeout: float | None = None, *,
              retry: bool = False, extra: float = 0.0) -> Any:
        body = request.SerializeToString()
        started = time.monotonic()
        deadline = started + (self.timeout if timeout is None else timeout) + extra
        attempt = 0
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                # Signed per attempt: a retry gets its own timestamp and nonce.
                md = self._signer.metadata(f"/{SERVICE}/{method}", body)
                return self._unary[method](body, timeout=remaining, metadata=md)
            except grpc.RpcError as err:
                if retry and self.retries and err.code() == grpc.StatusCode.UNAVAILABLE and (
                        attempt < self.retries or time.monotonic() - started < RECONNECT_S):
                    delay = backoff_delay(attempt)
                    if time.monotonic() + delay < deadline:
                        attempt += 1
                        time.sleep(delay)  # backoff, not synchronisation
                        continue
                exc = self._error(err, method)
                if attempt and method == "RemoveContainer" and isinstance(exc, NotFound):
                    # An earlier attempt removed it but its answer was lost.
                    return pb.RemoveContainerResponse(id=getattr(request, "container", ""))
                raise exc from None

    def _open_stream(self, method: str, request: Message, timeout: float | None,
                     convert: Callable[[Any], T], kind: type[Stream[T]]) -> Stream[T]:
        body = request.SerializeToString()
        call = self._stream[method](body, timeout=timeout,
                                    metadata=self._signer.metadata(f"/{SERVICE}/{method}", body))
        return kind(call, convert, lambda err: self._error(err, method))

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ node

    def node_info(self, *, timeout: float | None = None) -> NodeInfo:
        return NodeInfo.from_pb(
            self._call("GetNodeInfo", pb.GetNodeInfoRequest(), timeout, retry=True))

    # ------------------------------------------------------------ containers

    def create(self, spec: ContainerSpec, *, session: SessionLike, start: bool = False,
               timeout: float | None = None) -> Container:
        """Create (and optionally start) a container owned by ``session``. Never retried."""
        req = pb.CreateContainerRequest(session_id=_sid(session), spec=spec.to_pb(), start=start)
        return Container.from_pb(self._call("CreateContainer", req, timeout))

    def run(self, spec: ContainerSpec, *, session: SessionLike,
            timeout: float | None = None) -> Container:
        return self.create(spec, session=session, start=True, timeout=timeout)

    def start(self, container: ContainerRef, *, timeout: float | None = None) -> Container:
        req = pb.StartContainerRequest(container=_cid(container))
        return Container.from_pb(self._call("StartContainer", req, timeout, retry=True))

    def stop(self, container: ContainerRef, timeout: int | None = None, *,
             call_timeout: float | None = None) -> Container:
        """Stop signal, then SIGKILL after ``timeout`` seconds (agent default 10)."""
        req = pb.StopContainerRequest(container=_cid(container))
        if timeout is not None:
            req.timeout_seconds = timeout
        return Container.from_pb(self._call("StopContainer", req, call_timeout, retry=True,
                                            extra=timeout if timeout is not None else 10))

    def kill(self, container: ContainerRef, signal: str | int = "", *,
             timeout: float | None = None) -> Container:
        """Send ``signal`` ("SIGTERM", "TERM", 15); the agent's default is SIGKILL."""
        req = pb.KillContainerRequest(container=_cid(container), signal=str(signal))
        return Container.from_pb(self._call("KillContainer", req, timeout))

    def pause(self, container: ContainerRef, *, timeout: float | None = None) -> Container:
        req = pb.PauseContainerRequest(container=_cid(container))
        return Container.from_pb(self._call("PauseContainer", req, timeout))

    def unpause(self, container: ContainerRef, *, timeout: float | None = None) -> Container:
        req = pb.UnpauseContainerRequest(container=_cid(container))
        return Container.from_pb(self._call("UnpauseContainer", req, timeout))

    def restart(self, container: ContainerRef, timeout: int | None = None, *,
                call_timeout: float | None = None) -> Container:
        req = pb.RestartContainerRequest(container=_cid(container))
        if timeout is not None:
            req.timeout_seconds = timeout
        return Container.from_pb(self._call("RestartContainer", req, call_timeout,
                                            extra=timeout if timeout is not None else 10))

    def remove(self, container: ContainerRef, *, force: bool = False, volumes: bool = False,
               timeout: float | None = None) -> str:
        """Remove; returns the id. Only a forced remove is retried (it cannot half-fail)."""
        req = pb.RemoveContainerRequest(container=_cid(container), force=force,
                                        remove_volumes=volumes)
        return str(self._call("RemoveContainer", req, timeout, retry=force).id)

    def inspect(self, container: ContainerRef, *, timeout: float | None = None) -> Container:
        req = pb.InspectContainerRequest(container=_cid(container))
        return Container.from_pb(self._call("InspectContainer", req, timeout, retry=True))

    def list(self, selector: Selector = None, *, all: bool = False,
             session: SessionLike | None = None,
             timeout: float | None = None) -> builtins.list[Container]:
        """Containers matching every ``key``/``key=value`` of ``selector`` (running only
        unless ``all``)."""
        req = pb.ListContainersRequest(label_selector=selector_to_pb(selector), all=all,
                                       session_id=_sid(session) if session else "")
        resp = self._call("ListContainers", req, timeout, retry=True)
        return [Container.from_pb(c) for c in resp.containers]

    def wait(self, container: ContainerRef, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code.

        ``timeout`` bounds the wait (default: the client's timeout).
        """
        limit = self.timeout if timeout is None else timeout
        req = pb.WaitContainerRequest(container=_cid(container),
                                      timeout_seconds=max(1, math.ceil(limit)))
        resp = self._call("WaitContainer", req, limit, retry=True, extra=DEADLINE_MARGIN)
        if resp.error:
            raise UnknownError(f"wait for {_cid(container)}: {resp.error}")
        return int(resp.exit_code)

    def logs(self, container: ContainerRef, *, follow: bool = False, tail: int = 0,
             stdout: bool = True, stderr: bool = True, since: datetime | None = None,
             timestamps: bool = False, timeout: float | None = None) -> LogStream:
        """Log chunks; with ``follow`` the stream has no deadline unless ``timeout`` is given."""
        req = pb.LogsRequest(container=_cid(container), follow=follow, stdout=stdout,
                             stderr=stderr, tail=tail, timestamps=timestamps)
        if since is not None:
            req.since.FromDatetime(since)
        if timeout is None and not follow:
            timeout = self.timeout
        stream = self._open_stream("Logs", req, timeout, LogChunk.from_pb, LogStream)
        assert isinstance(stream, LogStream)
        return stream

    def exec(self, container: ContainerRef, command: Sequence[str], *,
             env: Mapping[str, str] | None = None, working_dir: str = "", user: str = "",
             timeout: float | None = None) -> ExecResult:
        """Run ``command`` in the container and collect its output. Never retried."""
        limit = self.timeout if timeout is None else timeout
        req = pb.ExecRequest(container=_cid(container), command=list(command), env=env or {},
                             working_dir=working_dir, user=user,
                             timeout_seconds=max(1, math.ceil(limit)))
        return ExecResult.from_pb(self._call("Exec", req, limit, extra=DEADLINE_MARGIN))

    def events(self, selector: Selector = None, *, session: SessionLike | None = None,
               timeout: float | None = None) -> Stream[Event]:
        """Lifecycle events until cancelled (``with client.events() as ev: ...``)."""
        req = pb.EventsRequest(label_selector=selector_to_pb(selector),
                               session_id=_sid(session) if session else "")
        return self._open_stream("Events", req, timeout, Event.from_pb, Stream)

    # ------------------------------------------------------------ sessions

    def open_session(self, ttl: int = 30, *, persistent: bool = False, name: str = "",
                     labels: Mapping[str, str] | None = None, keepalive: bool = True,
                     timeout: float | None = None) -> SessionHandle:
        """Open a session; the handle keeps it alive in the background until closed.

        Persistent sessions are never reaped, so they get no keep-alive thread.
        """
        from driver.session import SessionHandle

        req = pb.OpenSessionRequest(ttl_seconds=ttl, persistent=persistent, name=name,
                                    labels=labels or {})
        session = Session.from_pb(self._call("OpenSession", req, timeout))
        return SessionHandle(self, session, keepalive=keepalive and not persistent)

    def keep_alive(self, session: SessionLike, *, timeout: float | None = None) -> Session:
        req = pb.KeepAliveRequest(session_id=_sid(session))
        return Session.from_pb(self._call("KeepAlive", req, timeout, retry=True))

    def close_session(self, session: SessionLike, *, timeout: float | None = None) -> int:
        """Close the session and remove its containers; returns how many were removed."""
        req = pb.CloseSessionRequest(session_id=_sid(session))
        return int(self._call("CloseSession", req, timeout).removed_containers)

    def sessions(self, *, timeout: float | None = None) -> builtins.list[Session]:
        resp = self._call("ListSessions", pb.ListSessionsRequest(), timeout, retry=True)
        return [Session.from_pb(s) for s in resp.sessions]

    # ------------------------------------------------------------ networks

    def create_network(self, name: str, *, session: SessionLike, internal: bool = False,
                       labels: Mapping[str, str] | None = None, driver: str = "",
                       timeout: float | None = None) -> Network:
        """Create a network owned by ``session`` (removed with it, after its containers).
        Agents create only bridge networks (``driver`` "" or "bridge"). Never retried."""
        req = pb.CreateNetworkRequest(session_id=_sid(session), name=name, internal=internal,
                                      labels=labels or {}, driver=driver)
        return Network.from_pb(self._call("CreateNetwork", req, timeout))

    def remove_network(self, network: NetworkRef, *, timeout: float | None = None) -> str:
        """Remove a network this agent manages (no container may be attached); returns its id."""
        req = pb.RemoveNetworkRequest(network=_nid(network))
        return str(self._call("RemoveNetwork", req, timeout).id)

    def inspect_network(self, network: NetworkRef, *, timeout: float | None = None) -> Network:
        req = pb.InspectNetworkRequest(network=_nid(network))
        return Network.from_pb(self._call("InspectNetwork", req, timeout, retry=True))

    def networks(self, selector: Selector = None, *, session: SessionLike | None = None,
                 timeout: float | None = None) -> builtins.list[Network]:
        """Managed and adopted networks matching every ``key``/``key=value`` of ``selector``."""
        req = pb.ListNetworksRequest(label_selector=selector_to_pb(selector),
                                     session_id=_sid(session) if session else "")
        resp = self._call("ListNetworks", req, timeout, retry=True)
        return [Network.from_pb(n) for n in resp.networks]

    def connect(self, network: NetworkRef, container: ContainerRef, aliases: Sequence[str] = (),
                *, timeout: float | None = None) -> Container:
        """Attach ``container`` to ``network`` (with extra DNS ``aliases``); returns it."""
        req = pb.ConnectNetworkRequest(network=_nid(network), container=_cid(container),
                                       aliases=list(aliases))
        return Container.from_pb(self._call("ConnectNetwork", req, timeout))

    def disconnect(self, network: NetworkRef, container: ContainerRef, force: bool = False, *,
                   timeout: float | None = None) -> Container:
        req = pb.DisconnectNetworkRequest(network=_nid(network), container=_cid(container),
                                          force=force)
        return Container.from_pb(self._call("DisconnectNetwork", req, timeout))
