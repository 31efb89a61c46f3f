"""Faults: inject and heal latency per kind, and the fault proxy against a direct path.

Against a real ``shakedown-agent`` and real containers (busybox) on a session network:

* (a) inject + heal, per kind (kill, stop, pause, restart, partition, proxy), as
  the driver sees them (``inject_fault`` / ``heal_fault``, signed mTLS round trips
  included), over N rounds: p50/p99 of each;
* (b) the proxy with no toxics against a direct connection to the same echo
  container (``nc -ll -e cat``) from this process, on the host: small
  request/response round trips (p50/p99, interleaved rounds, so both sides see
  the same load) and the throughput of a bulk download (``head -c N /dev/zero``
  served by the container) through the proxy over direct, in the same run.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from common import (
    RUN_LABEL,
    Metric,
    Report,
    Summary,
    log,
    ms,
    new_run_id,
    parser,
    ratio,
    running_agent,
    workdir,
)

ECHO_PORT, BULK_PORT = 7000, 7001
KINDS = ("kill", "stop", "pause", "restart", "partition", "proxy")


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _ready(host: str, port: int) -> socket.socket:
    """A connection whose echo answers (nc forks cat per connection)."""
    deadline = time.monotonic() + 15
    while True:
        sock = None
        try:
            sock = _connect(host, port)
            _round_trip(sock, b"x" * 8)
            return sock
        except OSError:
            if sock is not None:
                sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _round_trip(sock: socket.socket, msg: bytes) -> float:
    t0 = time.perf_counter()
    sock.sendall(msg)
    got = 0
    while got < len(msg):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the echo closed")
        got += len(chunk)
    return time.perf_counter() - t0


def _download(host: str, port: int) -> tuple[int, float]:
    sock = _connect(host, port)
    buf = bytearray(1 << 20)
    total, t0 = 0, time.perf_counter()
    with sock:
        while n := sock.recv_into(buf):
            total += n
    return total, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="inject/heal rounds per kind (20)")
    p.add_argument("--trips", type=int, default=None,
                   help="round trips per side per interleaved round (1000; 4 rounds)")
    p.add_argument("--mib", type=int, default=None, help="MiB per bulk download (64)")
    args = p.parse_args(argv)
    rounds = max(1, min(args.rounds or (3 if args.quick else 20), 200))
    trips = max(10, min(args.trips or (200 if args.quick else 1000), 20000))
    mib = max(1, min(args.mib or (8 if args.quick else 64), 1024))

    from driver.faults import FaultSpec, heal_fault, inject_fault
    from driver.types import ContainerSpec
    from tests.support.images import ensure_busybox_image

    run_id = new_run_id()
    report = Report("faults", run_id, args.quick)
    image = ensure_busybox_image()
    log(f"faults: run {run_id}, {rounds} inject/heal rounds per kind, {trips} trips x 4 "
        f"rounds, {mib} MiB bulk")
    with workdir(run_id) as root, running_agent(run_id, root) as agent, \
            agent.client() as client, client.open_session(ttl=120) as s:
        net = s.create_network(f"{run_id}-net").name

        def box(tag: str, cmd: list[str]) -> Any:
            spec = ContainerSpec(image, cmd, name=f"{run_id}-{tag}-{uuid.uuid4().hex[:4]}",
                                 network=net, labels={RUN_LABEL: run_id})
            return client.inspect(s.run(spec))
        a, b = box("a", ["sleep", "600"]), box("b", ["sleep", "600"])
        echo = box("echo", ["nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat"])
        bulk = box("bulk", ["nc", "-ll", "-p", str(BULK_PORT), "-e", "head", "-c",
                            str(mib << 20), "/dev/zero"])
        specs: dict[str, Callable[[], Any]] = {
            "kill": lambda: FaultSpec.kill(a.id),
            "stop": lambda: FaultSpec.stop(a.id, timeout=0),
            "pause": lambda: FaultSpec.pause(a.id),
            "restart": lambda: FaultSpec.restart(a.id, timeout=0),
            "partition": lambda: FaultSpec.partition({a.name: [b.name]}),
            "proxy": lambda: FaultSpec.proxy(echo.name, ECHO_PORT),
        }
        inject: dict[str, list[float]] = {k: [] for k in KINDS}
        heal: dict[str, list[float]] = {k: [] for k in KINDS}
        for r in range(rounds):
            for kind in KINDS:
                t0 = time.perf_counter()
                fault = inject_fault(client, s, specs[kind](), timeout=60)
                t1 = time.perf_counter()
                heal_fault(client, fault, timeout=60)
                inject[kind].append(t1 - t0)
                heal[kind].append(time.perf_counter() - t1)
            if r == 0 or (r + 1) % 5 == 0:
                log(f"  inject/heal round {r + 1}/{rounds}")

        fault = inject_fault(client, s, FaultSpec.proxy(echo.name, ECHO_PORT))
        bulk_fault = inject_fault(client, s, FaultSpec.proxy(bulk.name, BULK_PORT))
        direct_addr = (next(iter(echo.ip_addresses.values())), ECHO_PORT)
        sides = {"direct": direct_addr, "proxy": fault.listen}
        conns = {k: _ready(*v) for k, v in sides.items()}
        msg = b"m" * 64
        lat: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(min(200, trips)):  # warm-up
            for sock in conns.values():
                _round_trip(sock, msg)
        for r in range(4):
            for side in (("direct", "proxy") if r % 2 == 0 else ("proxy", "direct")):
                lat[side] += [_round_trip(conns[side], msg) for _ in range(trips)]
        for sock in conns.values():
            sock.close()
        log(f"  {4 * trips} round trips per side done")
        bulk_sides = {"direct": (next(iter(bulk.ip_addresses.values())), BULK_PORT),
                      "proxy": bulk_fault.listen}
        rate: dict[str, list[float]] = {k: [] for k in bulk_sides}
        for r in range(3):
            for side in (("direct", "proxy") if r % 2 == 0 else ("proxy", "direct")):
                got, took = _download(*bulk_sides[side])
                if got != mib << 20:
                    raise RuntimeError(f"{side}: downloaded {got} bytes, not {mib << 20}")
                rate[side].append(got / took)
        log("  bulk downloads done")
        heal_fault(client, fault)
        heal_fault(client, bulk_fault)

    _fill(report, inject, heal, lat, rate, mib)
    report.emit(args.json)
    return 0


def _fill(report: Report, inject: dict[str, list[float]], heal: dict[str, list[float]],
          lat: dict[str, list[float]], rate: dict[str, list[float]], mib: int) -> None:
    rows = []
    for kind in KINDS:
        i, h = Summary.of(inject[kind]), Summary.of(heal[kind])
        rows.append([kind, str(i.n), ms(i.p50), ms(i.p99), ms(h.p50), ms(h.p99)])
    report.tables.append(("inject and heal, as the driver sees them (ms)",
                          ["kind", "rounds", "inject p50", "inject p99", "heal p50", "heal p99"],
                          rows))
    d, px = Summary.of(lat["direct"]), Summary.of(lat["proxy"])
    best = {k: max(v) for k, v in rate.items()}
    report.tables.append(("64-byte echo round trips on loopback; bulk download "
                          f"({mib} MiB, best of 3)",
                          ["side", "trips", "p50 ms", "p99 ms", "vs direct p50", "MB/s",
                           "vs direct MB/s"],
                          [[k, str(s.n), ms(s.p50), ms(s.p99),
                            f"{ratio(s.p50, d.p50):.2f}x", f"{best[k] / 1e6:.0f}",
                            f"{ratio(best[k], best['direct']):.2f}x"]
                           for k, s in (("direct", d), ("proxy", px))]))
    for kind in ("proxy", "partition", "kill"):
        report.metrics.append(Metric(f"faults {kind} inject p50",
                                     Summary.of(inject[kind]).p50 * 1000, "ms"))
        report.metrics.append(Metric(f"faults {kind} heal p50",
                                     Summary.of(heal[kind]).p50 * 1000, "ms"))
    report.metrics += [
        Metric("proxy added latency p50", (px.p50 - d.p50) * 1000, "ms", "<", 1.0),
        Metric("proxy added latency p99", (px.p99 - d.p99) * 1000, "ms"),
        Metric("proxy/direct throughput", ratio(best["proxy"], best["direct"]), "x"),
    ]
    report.details = {
        "inject_ms": {k: Summary.of(v).scaled(1000) for k, v in inject.items()},
        "heal_ms": {k: Summary.of(v).scaled(1000) for k, v in heal.items()},
        "round_trip_ms": {"direct": d.scaled(1000), "proxy": px.scaled(1000)},
        "bulk_bytes_per_s": rate,
    }
    report.notes.append("added latency = proxy p50 - direct p50 of the same echo container, "
                        "measured interleaved in the same run")


if __name__ == "__main__":
    sys.exit(main())
