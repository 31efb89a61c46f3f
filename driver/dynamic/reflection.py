"""A server-reflection client speaking v1, falling back to v1alpha.

grpcio-reflection ships only the v1alpha messages; v1 uses the very same
messages under another package, so one set of classes serves both, and only
the method path differs. A v1-only server answers v1alpha with UNIMPLEMENTED,
an older one answers v1 so: the first call finds out, and the session keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from shakedown.errors import NotFound, Unimplemented, from_status

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


class Reflection:
    def __init__(self, channel: grpc.Channel, metadata: Sequence[tuple[str, str]] = (),
                 timeout: float = 10.0) -> None:
        self._calls = {m: channel.stream_stream(
            m, request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString) for m in (V1, V1ALPHA)}
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self.version: str | None = None  # "v1" or "v1alpha" once known

    def _ask(self, request: rpb.ServerReflectionRequest) -> rpb.ServerReflectionResponse:
        order = [V1, V1ALPHA] if self.version != "v1alpha" else [V1ALPHA]
        if self.version == "v1":
            order = [V1]
        last: grpc.RpcError | None = None
        for method in order:
            try:
                responses = self._calls[method](iter([request]), timeout=self._timeout,
                                                metadata=self._metadata)
                response: rpb.ServerReflectionResponse = next(iter(responses))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED and self.version is None:
                    last = exc
                    continue
                raise from_status(exc.code(), exc.details()) from None
            self.version = "v1" if method == V1 else "v1alpha"
            if response.HasField("error_response"):
                err = response.error_response
                code = {5: NotFound, 12: Unimplemented}.get(err.error_code, NotFound)
                raise code(f"reflection: {err.error_message}")
            return response
        assert last is not None
        raise Unimplemented("the server does not serve reflection (neither v1 nor v1alpha): "
                            f"{last.details()}")

    def services(self) -> list[str]:
        resp = self._ask(rpb.ServerReflectionRequest(list_services=""))
        return sorted(s.name for s in resp.list_services_response.service)

    def files_containing(self, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
        resp = self._ask(rpb.ServerReflectionRequest(file_containing_symbol=symbol))
        return _files(resp)

    def file_by_name(self, name: str) -> list[descriptor_pb2.FileDescriptorProto]:
        resp = self._ask(rpb.ServerReflectionRequest(file_by_filename=name))
        return _files(resp)


def _files(resp: rpb.ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    return [descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in resp.file_descriptor_response.file_descriptor_proto]
