"""Server reflection, v1 and v1alpha, from one servicer.

grpcio-reflection serves only `grpc.reflection.v1alpha.ServerReflection`, and
clients that speak only v1 (newer grpcurl, grpc-go's own) get UNIMPLEMENTED.
The two versions are the same messages under two package names, so the v1
service is the v1alpha servicer registered under the v1 name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as rpb

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection of service_names (plus both reflection services) on server."""
    servicer = reflection.aio.ReflectionServicer(
        (*service_names, V1_SERVICE, V1ALPHA_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=rpb.ServerReflectionRequest.FromString,
            response_serializer=rpb.ServerReflectionResponse.SerializeToString,
        ),
    }),))
