"""Descriptors learnt through reflection, in a private pool.

The pool is seeded with the runtime's own well-known types (Timestamp,
Duration, Struct, Any, Empty, wrappers ...): many servers do not serve
`google/protobuf/*.proto`, and their messages must resolve anyway. Files are
added dependencies first; a file is fetched once per client.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

# Imported so the default pool holds them: dependencies on them are copied from there.
from google.protobuf import (  # noqa: F401  isort: skip
    any_pb2, duration_pb2, empty_pb2, field_mask_pb2, struct_pb2, timestamp_pb2, wrappers_pb2)

from driver.dynamic.reflection import Reflection
from shakedown.errors import NotFound

WELL_KNOWN_PREFIX = "google/protobuf/"


class Descriptors:
    def __init__(self, reflection: Reflection) -> None:
        self._reflection = reflection
        self.pool = descriptor_pool.DescriptorPool()
        self._added: set[str] = set()
        self._known: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def _add(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        if fdp.name in self._added:
            return
        for dep in fdp.dependency:
            self._add(self._file(dep))
        self.pool.Add(fdp)
        self._added.add(fdp.name)

    def _file(self, name: str) -> descriptor_pb2.FileDescriptorProto:
        if name in self._known:
            return self._known[name]
        if name.startswith(WELL_KNOWN_PREFIX):
            try:  # the runtime's copy, whether or not the server serves it
                fdp = descriptor_pb2.FileDescriptorProto()
                descriptor_pool.Default().FindFileByName(name).CopyToProto(fdp)
                self._known[name] = fdp
                return fdp
            except KeyError:
                pass
        for fdp in self._reflection.file_by_name(name):
            self._known.setdefault(fdp.name, fdp)
        return self._known[name]

    def load_symbol(self, symbol: str) -> None:
        """Make symbol (a service, message or method's service) and its deps resolvable."""
        if self.find(symbol) is not None:
            return
        try:
            files = self._reflection.files_containing(symbol)
        except NotFound:
            parent = symbol.rpartition(".")[0]
            if not parent:  # a method or nested symbol: servers may know only its parent
                raise
            self.load_symbol(parent)
            return
        for fdp in files:
            self._known.setdefault(fdp.name, fdp)
        for fdp in files:
            self._add(fdp)

    def find(self, symbol: str) -> Any:
        """The service, message, enum or method named symbol, if loaded."""
        for finder in (self.pool.FindServiceByName, self.pool.FindMessageTypeByName,
                       self.pool.FindEnumTypeByName, self.pool.FindMethodByName):
            try:
                return finder(symbol)
            except KeyError:
                continue
        return None

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        self.load_symbol(name)
        return self.pool.FindServiceByName(name)

    def message_class(self, desc: descriptor.Descriptor) -> type[Message]:
        return message_factory.GetMessageClass(desc)
