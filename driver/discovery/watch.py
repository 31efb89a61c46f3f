"""Discovery changes as an iterator, from etcd's watch stream.

Starts with the current records (as `added`), then follows from the revision
after that snapshot, so no change between the two is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyetcd

from shakedown import etcdclient
from shakedown.skydns import (
    DEFAULT_PREFIX,
    LayoutError,
    Record,
    domain_path,
    key_to_name,
    service_path,
)


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # added | updated | removed
    key: str
    name: str
    record: Record | None
    revision: int


class DiscoveryWatch:
    """Iterate changes; `cancel()` (or leaving the `with` block) ends the iteration."""

    def __init__(
        self,
        etcd: str,
        domain: str,
        service: str | None = None,
        *,
        proto: str = "_tcp",
        prefix: str = DEFAULT_PREFIX,
        snapshot: bool = True,
    ) -> None:
        self.prefix = prefix
        self.key_prefix = (
            service_path(service, domain, proto, prefix) if service else domain_path(domain, prefix)
        ) + "/"
        self._client = etcdclient.connect(etcd)
        self._snapshot: list[Change] = []
        start = None
        if snapshot:
            resp = self._client.get_prefix_response(self.key_prefix)
            for kv in resp.kvs:
                self._snapshot.append(
                    self._change("added", kv.key.decode(), kv.value, kv.mod_revision)
                )
            start = resp.header.revision + 1
        self._events, self._cancel = self._client.watch_prefix(
            self.key_prefix, start_revision=start
        )

    def _change(self, kind: str, key: str, value: bytes | None, revision: int) -> Change:
        record = None
        if value:
            try:
                record = Record.from_json(value, key)
            except LayoutError:
                record = None
        return Change(kind, key, key_to_name(key, self.prefix), record, revision)

    def __iter__(self) -> Iterator[Change]:
        yield from self._snapshot
        self._snapshot = []
        for event in self._events:
            key = event.key.decode()
            if isinstance(event, pyetcd.events.DeleteEvent):
                yield self._change("removed", key, None, event.mod_revision)
            else:
                kind = "added" if event.version == 1 else "updated"
                yield self._change(kind, key, event.value, event.mod_revision)

    def cancel(self) -> None:
        self._cancel()
        self._client.close()

    def __enter__(self) -> DiscoveryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def watch(etcd: str, domain: str, service: str | None = None, **kw: object) -> DiscoveryWatch:
    return DiscoveryWatch(etcd, domain, service, **kw)  # type: ignore[arg-type]
