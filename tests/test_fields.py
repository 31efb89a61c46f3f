"""Out-of-range Timestamp and Duration values in every request that has them are
INVALID_ARGUMENT naming the field, never INTERNAL. The fields are found by walking
the proto descriptors, so a new message is covered without a new test."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import AgentClient
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import FIELD_METADATA

pytestmark = pytest.mark.docker
SERVICE = pb.DESCRIPTOR.services_by_name["Agent"]
WELL_KNOWN = ("google.protobuf.Timestamp", "google.protobuf.Duration")


def paths(desc: Descriptor, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(dotted path, well-known type) of every singular Timestamp/Duration field."""
    for fd in desc.fields:
        if fd.message_type is None or fd.is_repeated:
            continue
        where = f"{prefix}{fd.name}"
        if fd.message_type.full_name in WELL_KNOWN:
            yield where, fd.message_type.full_name
        elif depth < 4:
            yield from paths(fd.message_type, where + ".", depth + 1)


CASES = [(m, path, kind) for m in SERVICE.methods
         for path, kind in paths(m.input_type)]


def test_the_walk_finds_the_known_fields() -> None:
    found = {(m.name, path) for m, path, _ in CASES}
    assert ("Logs", "since") in found  # the reported INTERNAL


def out_of_range(kind: str) -> st.SearchStrategy[tuple[int, int]]:
    limit = 253402300799 if kind.endswith("Timestamp") else 315576000000
    secs = st.one_of(st.integers(limit + 1, 2**62), st.integers(-(2**62), -limit - 1))
    nanos = st.one_of(st.integers(1_000_000_000, 2**31 - 1), st.integers(-(2**31), -1_000_000_000))
    return st.one_of(st.tuples(secs, st.integers(0, 999_999_999)),
                     st.tuples(st.integers(0, 1000), nanos))


def request_with(method: object, path: str, seconds: int, nanos: int) -> bytes:
    msg = method.input_type._concrete_class()  # type: ignore[attr-defined]
    target = msg
    *parents, leaf = path.split(".")
    for name in parents:
        target = getattr(target, name)
    value = getattr(target, leaf)
    value.seconds, value.nanos = seconds, nanos
    return msg.SerializeToString()


@pytest.mark.parametrize(("method", "path", "kind"), CASES,
                         ids=[f"{m.name}.{p}" for m, p, _ in CASES])
def test_out_of_range_names_the_field(client: AgentClient, method: object, path: str,
                                      kind: str) -> None:
    full = f"/{SERVICE.full_name}/{method.name}"  # type: ignore[attr-defined]
    server_streaming = method.server_streaming  # type: ignore[attr-defined]
    channel = client._raw_channel  # signed per call below: the call must pass auth to be judged

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(out_of_range(kind))
    def check(value: tuple[int, int]) -> None:
        body = request_with(method, path, *value)
        md = client._signer.metadata(full, body)
        with pytest.raises(grpc.RpcError) as err:
            if server_streaming:
                list(channel.unary_stream(full, request_serializer=None)(
                    body, timeout=10, metadata=md))
            else:
                channel.unary_unary(full, request_serializer=None)(body, timeout=10, metadata=md)
        rpc = err.value
        assert rpc.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc.details()
        trailing = dict(rpc.trailing_metadata() or ())
        assert trailing.get(FIELD_METADATA) == path, (rpc.details(), trailing)

    check()
