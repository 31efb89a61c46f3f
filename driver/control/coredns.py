"""CoreDNS (our minimal build, tools/coredns) serving zones from etcd.

Records use CoreDNS's etcd plugin layout (the SkyDNS one): the name is
reversed into a key under path_prefix, and the value is JSON:

    x.shakedown.test.              -> /skydns/test/shakedown/x  {"host": "127.0.0.9"}
    _grpc._tcp.svc.shakedown.test. -> /skydns/test/shakedown/svc/_tcp/_grpc/<instance>
                                      {"host": ..., "port": ..., "priority": ..., "weight": ...}

See `skydns_key`. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from driver.control.process import ManagedProcess, free_port, spawn

HOST = "127.0.0.1"
DEFAULT_CACHE_TTL = 5
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-coredns.sh"

# Plugin order inside a block does not matter to CoreDNS (the binary fixes the
# chain order); this order just reads like the chain: bind, probes, logging,
# cache, then the etcd backend.
_TEMPLATE = """\
{keys} {{
    bind {host}
    ready {host}:{ready_port}
    health {host}:{health_port}
    errors
{log}{cache}    etcd {{
        path {path_prefix}
        endpoint {endpoints}
    }}
}}
"""

_ZONE_RE = re.compile(r"^(?:[A-Za-z0-9_-]+\.)+$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9_./-]*$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\[\]:-]+$")


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def render_corefile(
    zones: Sequence[str],
    *,
    dns_port: int,
    etcd_endpoints: Sequence[str],
    health_port: int,
    ready_port: int,
    path_prefix: str = "/skydns",
    cache_ttl: int = DEFAULT_CACHE_TTL,
    log: bool = True,
    host: str = HOST,
) -> str:
    """A Corefile with one server block for all zones on host:dns_port (UDP+TCP).

    cache_ttl caps how long any answer (positive or negative) is cached *and*
    the TTL reported to clients: the cache rewrites every TTL in a reply to
    min(max(smallest TTL in it, 5), cache_ttl), i.e. to cache_ttl when <= 5. Keep
    it short: discovery tests register or remove an instance in etcd and expect
    resolvers to see it within seconds, not after the etcd plugin's 300 s
    default TTL. cache_ttl=0 leaves the cache plugin out (etcd TTLs pass through).
    """
    if not zones:
        raise ValueError("at least one zone is required")
    if not etcd_endpoints:
        raise ValueError("at least one etcd endpoint is required")
    if cache_ttl < 0:
        raise ValueError("cache_ttl must be >= 0 (0: no cache)")
    fqdns = [_fqdn(z) for z in zones]
    # Values go verbatim into the Corefile: refuse anything that could break
    # out of its token (whitespace, braces, quotes).
    for z in fqdns:
        if not _ZONE_RE.match(z):
            raise ValueError(f"invalid zone {z!r}")
    for e in etcd_endpoints:
        if not _URL_RE.match(e):
            raise ValueError(f"invalid etcd endpoint {e!r}")
    if not _PATH_RE.match(path_prefix):
        raise ValueError(f"invalid path prefix {path_prefix!r}")
    return _TEMPLATE.format(
        keys=" ".join(f"{z}:{dns_port}" for z in fqdns),
        host=host,
        ready_port=ready_port,
        health_port=health_port,
        log="    log\n" if log else "",
        cache=f"    cache {cache_ttl}\n" if cache_ttl else "",
        path_prefix=path_prefix.rstrip("/") or "/",
        endpoints=" ".join(etcd_endpoints),
    )


def skydns_key(name: str, path_prefix: str = "/skydns") -> str:
    """The etcd key for a DNS name: labels reversed under the prefix.

    "x.shakedown.test." -> "/skydns/test/shakedown/x". For several records at
    one name (e.g. SRV instances) append "/<id>" to the key; CoreDNS answers
    for a name with every key under it.
    """
    labels = [label for label in _fqdn(name).lower().split(".") if label]
    return "/".join([path_prefix.rstrip("/"), *reversed(labels)])


@dataclass(frozen=True)
class CoreDNSServer:
    process: ManagedProcess
    zones: tuple[str, ...]
    dns_port: int
    health_port: int
    ready_port: int
    corefile: Path
    host: str = HOST

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) for DNS queries, UDP or TCP."""
        return self.host, self.dns_port

    @classmethod
    def start(
        cls,
        binary: str | Path,
        workdir: Path,
        log_path: Path,
        *,
        zones: Sequence[str],
        etcd_endpoints: Sequence[str],
        dns_port: int = 0,
        health_port: int = 0,
        ready_port: int = 0,
        path_prefix: str = "/skydns",
        cache_ttl: int = DEFAULT_CACHE_TTL,
        log: bool = True,
        detach: bool = False,
        timeout: float = 20.0,
    ) -> CoreDNSServer:
        """Write workdir/Corefile, start CoreDNS and wait for /ready == 200.

        Port 0 picks a free port (CoreDNS cannot report one it chose itself).
        """
        dns_port = dns_port or free_port(HOST, udp=True)
        health_port = health_port or free_port(HOST)
        ready_port = ready_port or free_port(HOST)
        workdir.mkdir(parents=True, exist_ok=True)
        corefile = workdir / "Corefile"
        corefile.write_text(
            render_corefile(
                zones,
                dns_port=dns_port,
                etcd_endpoints=etcd_endpoints,
                health_port=health_port,
                ready_port=ready_port,
                path_prefix=path_prefix,
                cache_ttl=cache_ttl,
                log=log,
            ),
            encoding="utf-8",
        )
        argv = [str(binary), "-conf", str(corefile)]
        proc = spawn("coredns", argv, log_path, cwd=workdir, detach=detach)
        server = cls(
            proc, tuple(_fqdn(z) for z in zones), dns_port, health_port, ready_port, corefile
        )

        proc.wait_ready(server.ready, timeout, f"coredns to be ready on {HOST}:{ready_port}")
        return server

    def _get_ok(self, port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{port}{path}", timeout=2.0) as r:
                return bool(r.status == 200)
        except OSError:  # URLError/HTTPError (e.g. 503 while not ready) are OSErrors
            return False

    def ready(self) -> bool:
        """GET /ready == 200: the server is up and serving."""
        return self._get_ok(self.ready_port, "/ready")

    def healthy(self) -> bool:
        """GET /health == 200: the process is alive (says nothing about etcd)."""
        return self._get_ok(self.health_port, "/health")

    def stop(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        return self.process.stop(timeout=timeout, sig=sig)


def cache_dir() -> Path:
    """Where scripts/build-coredns.sh puts builds (keep the two in sync)."""
    env = os.environ.get("SHAKEDOWN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "shakedown"


def find_coredns_binary(*, build_first: bool = False) -> Path:
    """Locate our CoreDNS build.

    Order: $SHAKEDOWN_COREDNS; the stable symlink ${cache}/coredns left by
    scripts/build-coredns.sh; running that script (repo checkouts only).
    build_first=True runs the script first when it exists: it is a no-op
    (milliseconds) when the build is current, and guards against a symlink to
    a build of an older tools/coredns.
    """
    env = os.environ.get("SHAKEDOWN_COREDNS")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"SHAKEDOWN_COREDNS={env} is not an executable file")
        return path
    link = cache_dir() / "coredns"
    if not (build_first and BUILD_SCRIPT.is_file()) and link.exists():
        return link.resolve()
    if not BUILD_SCRIPT.is_file():
        raise FileNotFoundError(
            f"no CoreDNS binary: {link} does not exist and the build script is not here. "
            "From a Shakedown checkout run scripts/build-coredns.sh (needs Go), "
            "or set SHAKEDOWN_COREDNS to a binary built from tools/coredns."
        )
    # stderr passes through: a cold build takes minutes and go prints progress.
    out = subprocess.run(
        [str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    if not out:
        raise RuntimeError(f"{BUILD_SCRIPT} printed no binary path")
    return Path(out.splitlines()[-1])
