"""A real etcd + our CoreDNS for tests: start, write records, query, stop by PID.

Use `start_dns_stack(tmpdir)` from a session-scoped fixture (etcd starts in
about half a second, CoreDNS in well under one); `DnsStack.stop()` stops both
by PID. The CoreDNS binary comes from scripts/build-coredns.sh (a no-op when
the cached build is current; minutes on a cold machine).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pyetcd

from driver.control.coredns import DEFAULT_CACHE_TTL, CoreDNSServer, find_coredns_binary, skydns_key
from driver.control.etcd import EtcdServer

ZONE = "shakedown.test."


@dataclass
class DnsStack:
    etcd: EtcdServer
    coredns: CoreDNSServer
    zone: str
    _client: Any = field(default=None, repr=False)

    @property
    def dns(self) -> str:
        """CoreDNS as HOST:PORT, the form the CLI takes."""
        host, port = self.coredns.address
        return f"{host}:{port}"

    @property
    def client(self) -> Any:
        """A pyetcd (etcd3 API) client for this etcd."""
        if self._client is None:
            self._client = pyetcd.client(self.etcd.host, self.etcd.port)
        return self._client

    def put(self, name_or_key: str, record: Mapping[str, Any], lease: Any = None) -> str:
        """Write a SkyDNS record; a DNS name is turned into its key. Returns the key."""
        key = name_or_key if name_or_key.startswith("/") else skydns_key(name_or_key)
        self.client.put(key, json.dumps(dict(record)), lease=lease)
        return key

    def etcdctl(self, *args: str) -> str:
        """Run etcdctl (v3 API) against this etcd; returns stdout."""
        env = {**os.environ, "ETCDCTL_API": "3"}
        cmd = ["etcdctl", "--endpoints", self.etcd.endpoint, *args]
        return subprocess.run(
            cmd, check=True, capture_output=True, text=True, env=env, timeout=10
        ).stdout

    def etcdctl_put(self, key: str, record: Mapping[str, Any], lease: str | None = None) -> str:
        """Plant a record with etcdctl, the independent writer; `lease` from etcdctl_lease."""
        self.etcdctl("put", *([f"--lease={lease}"] if lease else []), key, json.dumps(dict(record)))
        return key

    def etcdctl_lease(self, ttl: int) -> str:
        """`etcdctl lease grant`: the lease ID in hex, as `put --lease` takes it."""
        out = self.etcdctl("lease", "grant", str(ttl))  # "lease 694d... granted with TTL(60s)"
        words = out.split()
        if len(words) < 2 or words[0] != "lease":
            raise RuntimeError(f"etcdctl lease grant: unexpected output {out!r}")
        return words[1]

    def dig(self, name: str, rdtype: str) -> tuple[str, list[str]]:
        """A second reading of what DNS serves: `dig`'s status and its answer records."""
        host, port = self.coredns.address
        out = subprocess.run(
            ["dig", f"@{host}", "-p", str(port), "+norecurse", "+time=2", "+tries=1",
             "+noall", "+comments", "+answer", name, rdtype],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        heads = [ln for ln in out.splitlines() if "status:" in ln]
        status = heads[0].split("status:")[1].split(",")[0].strip() if heads else ""
        answer = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
        return status, answer

    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        server: CoreDNSServer | None = None,
    ) -> dns.message.Message:
        srv = server or self.coredns
        q = dns.message.make_query(name, rdtype)
        host, port = srv.address
        if tcp:
            return dns.query.tcp(q, host, port=port, timeout=2.0)
        return dns.query.udp(q, host, port=port, timeout=2.0)

    def start_coredns(self, workdir: Path, **kw: Any) -> CoreDNSServer:
        """Another CoreDNS on the same etcd (e.g. with a different cache_ttl)."""
        return CoreDNSServer.start(
            find_coredns_binary(),
            workdir,
            workdir / "coredns.log",
            zones=[self.zone],
            etcd_endpoints=[self.etcd.endpoint],
            **kw,
        )

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            self.coredns.stop()
        finally:
            self.etcd.stop()


def start_dns_stack(
    workdir: Path, zone: str = ZONE, cache_ttl: int = DEFAULT_CACHE_TTL
) -> DnsStack:
    binary = find_coredns_binary(build_first=True)
    etcd = EtcdServer.start(workdir / "etcd-data", workdir / "etcd.log")
    try:
        coredns = CoreDNSServer.start(
            binary,
            workdir / "coredns",
            workdir / "coredns.log",
            zones=[zone],
            etcd_endpoints=[etcd.endpoint],
            cache_ttl=cache_ttl,
        )
    except BaseException:
        etcd.stop()
        raise
    return DnsStack(etcd, coredns, zone)


@contextmanager
def dns_stack(workdir: Path, **kw: Any) -> Iterator[DnsStack]:
    stack = start_dns_stack(workdir, **kw)
    try:
        yield stack
    finally:
        stack.stop()
