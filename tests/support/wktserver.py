"""A small plaintext gRPC server built from descriptors at run time, for the dynamic client.

Its one service, ``wkt.v1.Probe``, takes and returns well-known types
(Timestamp, Duration, Struct, Any, Empty), and its reflection can be limited
to v1 or v1alpha. Like many real servers, it does not serve
``google/protobuf/*.proto`` over reflection: clients must bring their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from google.protobuf import (
    any_pb2,  # noqa: F401  (registers the WKT files in the default pool)
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,  # noqa: F401
    empty_pb2,  # noqa: F401
    message_factory,
    struct_pb2,  # noqa: F401
    timestamp_pb2,  # noqa: F401
)
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as rgrpc

WKT = {"ts": "google.protobuf.Timestamp", "d": "google.protobuf.Duration",
       "s": "google.protobuf.Struct", "a": "google.protobuf.Any", "e": "google.protobuf.Empty"}
FILES = ["timestamp", "duration", "struct", "any", "empty"]


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for name in FILES:
        fdp = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(f"google/protobuf/{name}.proto").CopyToProto(fdp)
        pool.Add(fdp)
    f = descriptor_pb2.FileDescriptorProto(
        name="wkt/v1/probe.proto", package="wkt.v1", syntax="proto3",
        dependency=[f"google/protobuf/{n}.proto" for n in FILES])
    msg = f.message_type.add(name="Probe")
    fd = descriptor_pb2.FieldDescriptorProto
    for i, (fname, tname) in enumerate(WKT.items(), 1):
        msg.field.add(name=fname, number=i, type=fd.TYPE_MESSAGE, type_name=f".{tname}",
                      label=fd.LABEL_OPTIONAL)
    msg.field.add(name="count", number=9, type=fd.TYPE_INT32, label=fd.LABEL_OPTIONAL)
    svc = f.service.add(name="ProbeService")
    svc.method.add(name="Echo", input_type=".wkt.v1.Probe", output_type=".wkt.v1.Probe")
    svc.method.add(name="Repeat", input_type=".wkt.v1.Probe", output_type=".wkt.v1.Probe",
                   server_streaming=True)
    pool.Add(f)
    return pool


class _NoWellKnownFiles(reflection.ReflectionServicer):
    """Answers NOT_FOUND for google/protobuf/*, as servers without those files do."""

    def _file_by_filename(self, request, filename):  # type: ignore[no-untyped-def]
        if filename.startswith("google/protobuf/"):
            return reflection_pb2.ServerReflectionResponse(
                error_response=reflection_pb2.ErrorResponse(
                    error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message=b"not found"),
                original_request=request)
        return super()._file_by_filename(request, filename)


@dataclass
class WktServer:
    address: str
    calls: list[str] = field(default_factory=list)


@contextmanager
def wkt_server(reflection_versions: tuple[str, ...] = ("v1", "v1alpha")) -> Iterator[WktServer]:
    pool = _pool()
    probe = message_factory.GetMessageClass(pool.FindMessageTypeByName("wkt.v1.Probe"))
    server = grpc.server(futures.ThreadPoolExecutor(4))
    port = server.add_insecure_port("127.0.0.1:0")
    state = WktServer(f"127.0.0.1:{port}")

    def echo(req, ctx):  # type: ignore[no-untyped-def]
        state.calls.append("Echo")
        return req

    def repeat(req, ctx):  # type: ignore[no-untyped-def]
        state.calls.append("Repeat")
        for i in range(req.count):
            out = probe()
            out.CopyFrom(req)
            out.count = i
            yield out

    codec = {"request_deserializer": probe.FromString,
             "response_serializer": probe.SerializeToString}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("wkt.v1.ProbeService", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, **codec),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat, **codec),
    }),))
    names = ["wkt.v1.ProbeService"]
    servicer = _NoWellKnownFiles(names + [f"grpc.reflection.{v}.ServerReflection"
                                          for v in reflection_versions], pool=pool)
    for version in reflection_versions:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            f"grpc.reflection.{version}.ServerReflection", {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    servicer.ServerReflectionInfo,
                    request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                    response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
            }),))
    _ = rgrpc  # the stock registration is v1alpha-only; both go through generic handlers
    server.start()
    try:
        yield state
    finally:
        server.stop(grace=None)
