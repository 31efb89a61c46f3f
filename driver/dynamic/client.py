"""``DynamicClient``: call any gRPC service by name, learning it through reflection.

No generated stubs: requests are built from JSON-like dicts against the
server's own descriptors and answers come back as dicts. Given a signer, it
signs the exact serialized bytes, so it can call a Shakedown agent (grpcurl
cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, json_format, text_format
from google.protobuf.message import Message

from driver.dynamic.descriptors import Descriptors
from driver.dynamic.reflection import Reflection
from shakedown.errors import InvalidArgument, NotFound, ShakedownError, from_status

# (full method name, serialized request) -> metadata carrying its signature
BodySigner = Callable[[str, bytes], Sequence[tuple[str, str]]]
Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Tls:
    """Mutual (or server-only) TLS material, PEM bytes."""
    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None

    @classmethod
    def from_files(cls, ca: str | Path, cert: str | Path | None = None,
                   key: str | Path | None = None, server_name: str | None = None) -> Tls:
        def read(p: str | Path | None) -> bytes | None:
            return Path(p).read_bytes() if p else None
        return cls(Path(ca).read_bytes(), read(cert), read(key), server_name)

    @classmethod
    def from_certs_dir(cls, certs: str | Path, principal: str = "driver",
                       server_name: str | None = None) -> Tls:
        d = Path(certs)
        return cls.from_files(d / "ca.crt", d / f"client-{principal}.crt",
                              d / f"client-{principal}.key", server_name)


@dataclass(frozen=True)
class Method:
    full_name: str  # /pkg.Svc/Method
    input: descriptor.Descriptor
    output: descriptor.Descriptor
    server_streaming: bool
    client_streaming: bool


class DynamicClient:
    def __init__(self, target: str, tls: Tls | None = None, signer: BodySigner | None = None,
                 *, metadata: Metadata = (), timeout: float = 10.0) -> None:
        if tls is None:
            self._channel = grpc.insecure_channel(target)
        else:
            options = ([("grpc.ssl_target_name_override", tls.server_name)]
                       if tls.server_name else [])
            creds = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            self._channel = grpc.secure_channel(target, creds, options=options)
        self.target = target
        self._signer = signer
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self.reflection = Reflection(self._channel, self._metadata, timeout)
        self._descriptors = Descriptors(self.reflection)
        self._methods: dict[str, Method] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DynamicClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- schema

    def services(self) -> list[str]:
        return self.reflection.services()

    def describe(self, symbol: str) -> str:
        """A service, method or message in protobuf text form, its fields or methods listed."""
        name = symbol.lstrip("/").replace("/", ".")
        try:
            self._descriptors.load_symbol(name)
        except (KeyError, NotFound):
            found = None
        else:
            found = self._descriptors.find(name)
        if found is None:
            raise NotFound(f"symbol {symbol!r} is not known to {self.target}",
                           field="symbol")
        proto = _to_proto(found)
        return f"{type(found).__name__} {name}\n{text_format.MessageToString(proto)}"

    def method(self, name: str) -> Method:
        """``pkg.Svc/Method`` or ``/pkg.Svc/Method`` (a dot before the method works too)."""
        key = name.lstrip("/")
        if key in self._methods:
            return self._methods[key]
        svc_name, sep, meth_name = key.rpartition("/")
        if not sep:
            svc_name, _, meth_name = key.rpartition(".")
        if not svc_name or not meth_name:
            raise InvalidArgument(f"method {name!r}: want pkg.Service/Method", field="method")
        try:
            svc = self._descriptors.service(svc_name)
        except (KeyError, NotFound):
            raise NotFound(f"method {name!r}: service {svc_name!r} is not served by "
                           f"{self.target} (it serves: {', '.join(self.services())})",
                           field="method") from None
        m = svc.methods_by_name.get(meth_name)
        if m is None:
            raise NotFound(f"method {name!r}: {svc_name} has no method {meth_name!r} "
                           f"(it has: {', '.join(sorted(svc.methods_by_name))})", field="method")
        found = Method(f"/{svc.full_name}/{m.name}", m.input_type, m.output_type,
                       m.server_streaming, m.client_streaming)
        self._methods[key] = found
        return found

    def request(self, method: str | Method, data: Mapping[str, Any] | None = None) -> Message:
        """The request message of method built from data, naming any field it lacks."""
        m = method if isinstance(method, Method) else self.method(method)
        msg = self._descriptors.message_class(m.input)()
        _check_fields(m.input, data or {}, "data")
        try:
            json_format.ParseDict(dict(data or {}), msg, descriptor_pool=self._descriptors.pool)
        except json_format.ParseError as exc:
            raise InvalidArgument(f"{m.input.full_name}: {exc}", field="data") from None
        return msg

    # ---------------------------------------------------------------- calls

    def call(self, method: str, data: Mapping[str, Any] | None = None, *,
             timeout: float | None = None, metadata: Metadata = ()) -> Any:
        """A unary call's answer as a dict; a server-streaming call's as an iterator of dicts."""
        m = self.method(method)
        if m.client_streaming:
            raise InvalidArgument(f"method {method!r} is client-streaming: not supported",
                                  field="method")
        body = self.request(m, data).SerializeToString()
        md = (*self._metadata, *metadata,
              *(self._signer(m.full_name, body) if self._signer else ()))
        out_cls = self._descriptors.message_class(m.output)
        deadline = timeout if timeout is not None else self._timeout
        if m.server_streaming:
            stream = self._channel.unary_stream(m.full_name, request_serializer=_identity,
                                                response_deserializer=out_cls.FromString)
            return self._iterate(stream(body, timeout=deadline, metadata=md))
        unary = self._channel.unary_unary(m.full_name, request_serializer=_identity,
                                          response_deserializer=out_cls.FromString)
        try:
            return self._to_dict(unary(body, timeout=deadline, metadata=md))
        except grpc.RpcError as exc:
            raise _typed(exc) from None

    def _iterate(self, responses: Any) -> Iterator[dict[str, Any]]:
        try:
            for r in responses:
                yield self._to_dict(r)
        except grpc.RpcError as exc:
            raise _typed(exc) from None

    def _to_dict(self, msg: Message) -> dict[str, Any]:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                         descriptor_pool=self._descriptors.pool)


def _identity(b: bytes) -> bytes:
    return b


def _typed(exc: grpc.RpcError) -> ShakedownError:
    field = next((v for k, v in (exc.trailing_metadata() or ()) if k == "x-shakedown-field"),
                 None)
    return from_status(exc.code(), exc.details(), field if isinstance(field, str) else None)


def _check_fields(desc: descriptor.Descriptor, data: Mapping[str, Any], path: str) -> None:
    """Unknown keys are refused before sending, naming the field and the valid ones."""
    if desc.full_name.startswith("google.protobuf."):
        return  # well-known types have their own JSON forms
    names = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
    for key, value in data.items():
        f = names.get(key)
        if f is None:
            valid = ", ".join(sorted(x.name for x in desc.fields)) or "none"
            raise InvalidArgument(f"{desc.full_name} has no field {key!r} (its fields: {valid})",
                                  field=f"{path}.{key}")
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            items = value if f.is_repeated and isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, Mapping):
                    sub = f"{path}.{key}[{i}]" if f.is_repeated else f"{path}.{key}"
                    _check_fields(f.message_type, item, sub)


def _to_proto(found: Any) -> Message:
    from google.protobuf import descriptor_pb2 as d

    kinds: list[tuple[type, type[Message]]] = [
        (descriptor.ServiceDescriptor, d.ServiceDescriptorProto),
        (descriptor.Descriptor, d.DescriptorProto),
        (descriptor.EnumDescriptor, d.EnumDescriptorProto),
    ]
    for kind, proto_cls in kinds:
        if isinstance(found, kind):
            proto = proto_cls()
            found.CopyToProto(proto)  # type: ignore[attr-defined]
            return proto
    if isinstance(found, descriptor.MethodDescriptor):
        proto = d.MethodDescriptorProto(name=found.name,
                                        input_type=f".{found.input_type.full_name}",
                                        output_type=f".{found.output_type.full_name}",
                                        client_streaming=found.client_streaming,
                                        server_streaming=found.server_streaming)
        return proto
    return d.FileDescriptorProto(name=str(getattr(found, "full_name", found)))
