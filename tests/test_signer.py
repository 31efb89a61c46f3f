"""SigningInterceptor against a real in-process gRPC server that sees the raw bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from driver.signer import SigningInterceptor
from shakedown import signing
from shakedown.agent.v1 import agent_pb2 as pb

SECRET = b"0123456789abcdef0123456789abcdef"
KEY_ID = "driver-test"
AGENT = "n1"
SERVICE = "shakedown.agent.v1.Agent"


@dataclass
class Seen:
    method: str
    body: bytes
    headers: signing.SignedHeaders
    metadata: dict[str, str]


@dataclass
class Recorder:
    calls: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Fail this many calls with UNAVAILABLE before answering (to drive retries).
    fail_next: int = 0

    def record(self, method: str, body: bytes, context: grpc.ServicerContext) -> bool:
        md = {m.key: m.value for m in context.invocation_metadata()}
        headers = signing.parse_metadata(list(md.items()))
        with self.lock:
            self.calls.append(Seen(method, body, headers, md))
            if self.fail_next > 0:
                self.fail_next -= 1
                return False
        return True


class RawHandler(grpc.GenericRpcHandler):
    """Every method, with request_deserializer=None: the servicer gets wire bytes."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method.endswith("/Logs"):
            def stream(body: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
                self.rec.record(method, body, ctx)
                for i in range(3):
                    yield pb.LogChunk(stream=pb.LogChunk.STREAM_STDOUT,
                                      data=f"line {i}\n".encode()).SerializeToString()
            return grpc.unary_stream_rpc_method_handler(stream)

        def unary(body: bytes, ctx: grpc.ServicerContext) -> bytes:
            if not self.rec.record(method, body, ctx):
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return pb.NodeInfo(name="fake").SerializeToString()
        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture()
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    srv.add_generic_rpc_handlers((RawHandler(rec),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", rec
    srv.stop(grace=None)


@pytest.fixture()
def channel(server: tuple[str, Recorder]) -> Iterator[grpc.Channel]:
    raw = grpc.insecure_channel(server[0])
    yield grpc.intercept_channel(raw, SigningInterceptor(KEY_ID, SECRET, audience=AGENT))
    raw.close()


def _unary(channel: grpc.Channel, name: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=None,
                               response_deserializer=pb.NodeInfo.FromString)


def test_signature_covers_exact_wire_bytes(server: tuple[str, Recorder],
                                          channel: grpc.Channel) -> None:
    _, rec = server
    body = pb.ListContainersRequest(label_selector=["a=b", "c"], all=True).SerializeToString()
    resp = _unary(channel, "ListContainers")(body, timeout=5,
                                            metadata=[("x-trace", "keep-me")])
    assert resp.name == "fake"
    (seen,) = rec.calls
    assert seen.body == body
    assert seen.headers.key_id == KEY_ID
    assert seen.headers.scheme == signing.SCHEME_V2
    assert seen.metadata[signing.AUDIENCE] == AGENT
    assert seen.metadata["x-trace"] == "keep-me"  # caller metadata survives
    method = f"/{SERVICE}/ListContainers"
    assert signing.signature_matches(SECRET, method, seen.body, seen.headers)
    # ... and only those bytes, for only that method.
    assert not signing.signature_matches(SECRET, method, seen.body + b"\x00", seen.headers)
    assert not signing.signature_matches(SECRET, f"/{SERVICE}/Exec", seen.body, seen.headers)
    # ... and only for that agent: another audience (or none: v1) does not verify.
    for other in ("n2", None):
        moved = signing.SignedHeaders(seen.headers.key_id, seen.headers.timestamp,
                                      seen.headers.nonce, seen.headers.signature, other)
        assert not signing.signature_matches(SECRET, method, seen.body, moved)


def test_empty_request_is_signed(server: tuple[str, Recorder], channel: grpc.Channel) -> None:
    _, rec = server
    _unary(channel, "GetNodeInfo")(b"", timeout=5)
    (seen,) = rec.calls
    assert signing.signature_matches(SECRET, f"/{SERVICE}/GetNodeInfo", b"", seen.headers)


def test_fresh_nonce_per_call(server: tuple[str, Recorder], channel: grpc.Channel) -> None:
    _, rec = server
    call = _unary(channel, "InspectContainer")
    body = pb.InspectContainerRequest(container="x").SerializeToString()
    for _ in range(20):
        call(body, timeout=5)
    nonces = {s.headers.nonce for s in rec.calls}
    assert len(nonces) == 20
    assert all(signing.signature_matches(SECRET, s.method, s.body, s.headers) for s in rec.calls)


def test_streaming_request_is_signed(server: tuple[str, Recorder],
                                     channel: grpc.Channel) -> None:
    _, rec = server
    body = pb.LogsRequest(container="abc", follow=False, tail=3).SerializeToString()
    call = channel.unary_stream(f"/{SERVICE}/Logs", request_serializer=None,
                                response_deserializer=pb.LogChunk.FromString)
    chunks = list(call(body, timeout=5))
    assert [c.data for c in chunks] == [b"line 0\n", b"line 1\n", b"line 2\n"]
    (seen,) = rec.calls
    assert seen.body == body
    assert signing.signature_matches(SECRET, f"/{SERVICE}/Logs", body, seen.headers)


def test_clock_sets_timestamp(server: tuple[str, Recorder]) -> None:
    addr, rec = server
    with grpc.insecure_channel(addr) as raw:
        ch = grpc.intercept_channel(raw, SigningInterceptor(KEY_ID, SECRET, audience=AGENT,
                                                     clock=lambda: 1234.9))
        _unary(ch, "GetNodeInfo")(b"", timeout=5)
    assert rec.calls[0].headers.timestamp == 1234


def test_message_objects_are_refused(channel: grpc.Channel) -> None:
    # A channel that serializes after the interceptor could not sign the wire bytes.
    call = channel.unary_unary(f"/{SERVICE}/GetNodeInfo",
                               request_serializer=pb.GetNodeInfoRequest.SerializeToString,
                               response_deserializer=pb.NodeInfo.FromString)
    with pytest.raises(TypeError, match="serialized request bytes"):
        call(pb.GetNodeInfoRequest(), timeout=5)


def test_client_retries_are_resigned(server: tuple[str, Recorder]) -> None:
    """AgentClient's retry loop re-enters the interceptor: each attempt has its own nonce."""
    from driver.client import AgentClient

    addr, rec = server
    rec.fail_next = 2
    client = AgentClient.over_channel(grpc.insecure_channel(addr), key_id=KEY_ID,
                                      secret=SECRET, timeout=10, retries=3,
                                      agent_name=AGENT)
    try:
        assert client.node_info().name == "fake"
    finally:
        client.close()
    assert len(rec.calls) == 3
    assert len({s.headers.nonce for s in rec.calls}) == 3
    assert all(signing.signature_matches(SECRET, s.method, s.body, s.headers) for s in rec.calls)


def test_non_idempotent_calls_are_not_retried(server: tuple[str, Recorder]) -> None:
    from driver.client import AgentClient
    from shakedown.errors import Unavailable

    addr, rec = server
    rec.fail_next = 1
    client = AgentClient.over_channel(grpc.insecure_channel(addr), key_id=KEY_ID,
                                      secret=SECRET, timeout=10, retries=3,
                                      agent_name=AGENT)
    try:
        with pytest.raises(Unavailable):
            client.open_session(ttl=10)
    finally:
        client.close()
    assert len(rec.calls) == 1


def test_bad_key_id_is_rejected_early() -> None:
    with pytest.raises(ValueError, match="key id"):
        SigningInterceptor("bad key!", SECRET, audience=AGENT)


def test_bad_audience_is_rejected_early() -> None:
    with pytest.raises(ValueError, match="audience"):
        SigningInterceptor(KEY_ID, SECRET, audience="n1:7701")


def test_lazy_audience_is_asked_per_call(server: tuple[str, Recorder]) -> None:
    """A callable audience (agentname.Audience) is resolved when the call is made."""
    from driver.agentname import Audience

    addr, rec = server
    asked: list[int] = []

    def learn() -> str:
        asked.append(1)
        return "late-name"

    with grpc.insecure_channel(addr) as raw:
        ch = grpc.intercept_channel(raw, SigningInterceptor(KEY_ID, SECRET,
                                                            audience=Audience(None, learn)))
        assert asked == []
        _unary(ch, "GetNodeInfo")(b"", timeout=5)
        _unary(ch, "GetNodeInfo")(b"", timeout=5)
    assert asked == [1]  # once, then remembered
    assert {c.headers.audience for c in rec.calls} == {"late-name"}


def test_over_channel_needs_the_agent_name(server: tuple[str, Recorder]) -> None:
    from driver.client import AgentClient

    with pytest.raises(ValueError, match="agent_name"):
        AgentClient.over_channel(grpc.insecure_channel(server[0]), key_id=KEY_ID, secret=SECRET)
    with AgentClient.over_channel(grpc.insecure_channel(server[0]), key_id=KEY_ID, secret=SECRET,
                                  node="n7") as c:  # an inventory node name is the agent name
        c.node_info()
    assert server[1].calls[-1].headers.audience == "n7"
