"""Registering a service instance in etcd for CoreDNS, bound to a kept-alive lease.

A record written without a lease outlives its registrant: the commonest
discovery flaw. Here the record is attached to a lease that a daemon thread
refreshes every ttl/3; if the process dies, etcd drops the record once the
lease's TTL passes, and DNS stops answering for it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import pyetcd

from shakedown import etcdclient
from shakedown.skydns import DEFAULT_PREFIX, Record, check_label, service_path

log = logging.getLogger("shakedown.discovery")
MIN_TTL = 2  # etcd's minimum lease TTL with default election settings


class RegistrationError(RuntimeError):
    pass


@dataclass
class Registration:
    """A live registration; `deregister()` (or leaving the `with` block) removes it."""

    service: str
    instance: str
    key: str
    record: Record
    lease_ttl: int
    etcd_url: str
    lease_id: int = 0
    lost: threading.Event = field(default_factory=threading.Event)
    _client: pyetcd.Etcd3Client | None = field(default=None, repr=False)
    _lease: object | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _keepalive(self) -> None:
        interval = max(self.lease_ttl / 3, 0.5)
        refreshed = time.monotonic()
        while not self._stop.wait(interval):
            try:
                assert self._lease is not None
                responses = list(self._lease.refresh())  # type: ignore[attr-defined]
                if responses and getattr(responses[0], "TTL", 1) <= 0:
                    # The lease expired (e.g. we were partitioned past the TTL): the
                    # record is gone. Re-registering silently would hide that; report it.
                    log.warning("lease expired", extra={"fields": {"key": self.key}})
                    self.lost.set()
                    return
                if responses:  # an empty answer proves nothing about the lease
                    refreshed = time.monotonic()
            except Exception as exc:  # etcd briefly unreachable: try again next tick
                log.warning(
                    "lease refresh failed", extra={"fields": {"key": self.key, "error": str(exc)}}
                )
                # Not refreshed for a whole TTL: etcd has expired the lease and the record
                # with it, and this client may never recover ("failed node"). Say so, so
                # the owner registers again on a fresh connection.
                if time.monotonic() - refreshed > self.lease_ttl:
                    log.warning("lease expired while etcd was unreachable",
                                extra={"fields": {"key": self.key}})
                    self.lost.set()
                    return

    def deregister(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._client is not None:
            try:
                self._client.delete(self.key)
                if self._lease is not None:
                    self._lease.revoke()  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning(
                    "deregister failed; the lease will expire on its own",
                    extra={"fields": {"key": self.key, "error": str(exc)}},
                )
            finally:
                self._client.close()
                self._client = None

    def __enter__(self) -> Registration:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deregister()


def register(
    service: str,
    instance: str,
    host: str,
    port: int,
    ttl: int = 10,
    priority: int = 10,
    weight: int = 10,
    *,
    etcd: str,
    domain: str,
    proto: str = "_tcp",
    prefix: str = DEFAULT_PREFIX,
    dns_ttl: int | None = None,
) -> Registration:
    """Write `/skydns/<reversed domain>/<proto>/_<service>/<instance>` on a kept-alive lease.

    The DNS TTL defaults to the lease TTL, never longer, so resolvers do not
    cache an answer past the moment the record can vanish.
    """
    check_label("instance", instance)
    if not 0 < port < 65536:
        raise RegistrationError(f"port {port}: must be 1-65535")
    if ttl < MIN_TTL:
        raise RegistrationError(f"ttl {ttl}: etcd leases need at least {MIN_TTL} s")
    for name, value in (("priority", priority), ("weight", weight)):
        if not 0 <= value <= 65535:
            raise RegistrationError(f"{name} {value}: must be 0-65535")
    record = Record(
        host=host,
        port=port,
        priority=priority,
        weight=weight,
        ttl=ttl if dns_ttl is None else dns_ttl,
    )
    key = f"{service_path(service, domain, proto, prefix)}/{instance}"
    client = etcdclient.connect(etcd)
    try:
        lease = client.lease(ttl)
        client.put(key, record.to_json(), lease=lease)
    except Exception as exc:
        client.close()
        raise RegistrationError(etcdclient.describe_error(etcd, exc)) from None
    reg = Registration(
        service, instance, key, record, ttl, etcd, lease_id=lease.id, _client=client, _lease=lease
    )
    reg._thread = threading.Thread(
        target=reg._keepalive, daemon=True, name=f"shakedown-lease-{instance}"
    )
    reg._thread.start()
    log.info("registered", extra={"fields": {"key": key, "lease": lease.id, "ttl": ttl}})
    return reg
