"""Service discovery: registration-to-DNS latency and Resolver throughput vs raw dnspython.

Starts a real etcd + our CoreDNS on loopback (``tests/support/dns.py``) in the
run's temp dir, then measures:

1. **registration -> first DNS answer**: ``shakedown.registry.register()`` (a
   leased SkyDNS record) until an SRV query to CoreDNS lists the new instance.
   Every registration uses a fresh instance under a fresh subdomain of the
   zone, and the SRV name is first queried only after the write, so neither a
   cached answer nor a cached NXDOMAIN of an earlier name can interfere. The
   query is polled every 1 ms (deadline 5 s). Baseline: a raw etcd put (no
   lease, one long-lived client) polled the same way. Informational.
2. **resolution throughput**: ``Resolver.resolve()`` (a) with its cache, the
   product's normal use, and (b) ``fresh=True``, one SRV round trip plus
   address handling, against a raw ``dns.query.udp`` SRV query (message built
   per call) to the same server. Fixed count per side, interleaved in blocks
   whose order rotates every round, single thread. Target (b): >= 0.80x.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import dns.message
import dns.query
import dns.rdatatype
from common import (
    Metric,
    Report,
    Summary,
    log,
    ms,
    new_run_id,
    parser,
    ratio,
    workdir,
)

from driver.discovery.resolver import Resolver
from shakedown.registry import Registration, register
from shakedown.skydns import Record, service_name, service_path
from tests.support.dns import DnsStack, start_dns_stack

SERVICE = "bench"
HOST = "127.0.0.1"
PORT = 7000
POLL_INTERVAL = 0.001
POLL_DEADLINE = 5.0
FRESH_TARGET = 0.80
MAX_REGISTRATIONS = 2000
MAX_CALLS = 1_000_000


# ------------------------------------------------------------------ 1. registration latency


def srv_has(host: str, port: int, name: str, instance: str) -> bool:
    """One SRV query: does the answer name ``instance``? (raw dnspython, no resolver cache)"""
    reply = dns.query.udp(dns.message.make_query(name, "SRV"), host, port=port, timeout=1.0)
    prefix = f"{instance}."
    return any(
        rr.target.to_text().startswith(prefix)
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for rr in rrset
    )


def poll_visible(stack: DnsStack, name: str, instance: str) -> tuple[float, int]:
    """Poll the SRV name until ``instance`` appears; (time it appeared, queries made)."""
    host, port = stack.coredns.address
    deadline = time.perf_counter() + POLL_DEADLINE
    queries = 0
    while True:
        queries += 1
        if srv_has(host, port, name, instance):
            return time.perf_counter(), queries
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{instance} not in SRV {name} after {POLL_DEADLINE:g}s")
        time.sleep(POLL_INTERVAL)


def registration_latency(stack: DnsStack, run_id: str, n: int) -> dict[str, dict[str, list]]:
    """n rounds of (leased register(), raw put), order alternating; all records removed."""
    sides: dict[str, dict[str, list]] = {
        side: {"total": [], "write": [], "queries": []} for side in ("register", "etcd put")
    }
    etcd_url = stack.etcd.endpoint
    zone = stack.zone.rstrip(".")
    client = stack.client
    record = Record(host=HOST, port=PORT, ttl=5).to_json()

    def one(side: str, i: int) -> None:
        domain = f"{'l' if side == 'register' else 'p'}{i}.{run_id}.{zone}"
        instance = f"i{i}"
        name = service_name(SERVICE, domain)
        reg: Registration | None = None
        key = f"{service_path(SERVICE, domain)}/{instance}"
        try:
            start = time.perf_counter()
            if side == "register":
                reg = register(SERVICE, instance, HOST, PORT, ttl=10, etcd=etcd_url,
                               domain=domain)
            else:
                client.put(key, record)
            written = time.perf_counter()
            seen, queries = poll_visible(stack, name, instance)
        finally:
            if reg is not None:
                reg.deregister()
            else:
                with contextlib.suppress(Exception):
                    client.delete(key)
        sides[side]["total"].append(seen - start)
        sides[side]["write"].append(written - start)
        sides[side]["queries"].append(queries)

    for i in range(n):
        order = ("register", "etcd put") if i % 2 == 0 else ("etcd put", "register")
        for side in order:
            one(side, i)
    return sides


# ------------------------------------------------------------------ 2. throughput


def throughput(stack: DnsStack, run_id: str, rounds: int, block: int,
               warmup: int) -> dict[str, dict[str, float]]:
    """Interleaved blocks of raw SRV queries, resolve(fresh=True) and resolve()."""
    domain = f"tp.{run_id}.{stack.zone.rstrip('.')}"
    host, port = stack.coredns.address
    name = service_name(SERVICE, domain)
    with register(SERVICE, "tp0", HOST, PORT, ttl=10, etcd=stack.etcd.endpoint,
                  domain=domain):
        poll_visible(stack, name, "tp0")
        resolver = Resolver(domain, (host, port), order=("srv",))
        check = resolver.resolve(SERVICE, fresh=True)
        if [(e.host, e.port) for e in check.endpoints] != [(HOST, PORT)]:
            raise RuntimeError(f"unexpected resolution: {check}")

        def raw() -> None:
            dns.query.udp(dns.message.make_query(name, "SRV"), host, port=port, timeout=2.0)

        def fresh() -> None:
            resolver.resolve(SERVICE, fresh=True)

        def cached() -> None:
            resolver.resolve(SERVICE)

        calls: dict[str, Callable[[], None]] = {
            "raw dns.query.udp": raw, "resolve(fresh=True)": fresh, "resolve()": cached,
        }
        wall = dict.fromkeys(calls, 0.0)
        cpu = dict.fromkeys(calls, 0.0)
        count = dict.fromkeys(calls, 0)
        for fn in calls.values():
            for _ in range(warmup):
                fn()
        names = list(calls)
        for r in range(rounds):
            shift = r % len(names)
            order = names[shift:] + names[:shift]
            if r % 2:
                order.reverse()
            for side in order:
                fn = calls[side]
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(block):
                    fn()
                wall[side] += time.perf_counter() - t0
                cpu[side] += time.process_time() - c0
                count[side] += block
    return {side: {"calls": count[side], "seconds": wall[side],
                   "per_s": ratio(count[side], wall[side]),
                   "us_per_call": ratio(wall[side], count[side]) * 1e6,
                   "cpu_us_per_call": ratio(cpu[side], count[side]) * 1e6}
            for side in calls}


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--registrations", type=int, default=None,
                   help="registrations per side (200; --quick 20)")
    p.add_argument("--rounds", type=int, default=None,
                   help="throughput rounds (20; --quick 4)")
    p.add_argument("--block", type=int, default=None,
                   help="calls per side per round (250; --quick 100)")
    args = p.parse_args(argv)
    n = min(args.registrations or (20 if args.quick else 200), MAX_REGISTRATIONS)
    rounds = args.rounds or (4 if args.quick else 20)
    block = args.block or (100 if args.quick else 250)
    if rounds * block > MAX_CALLS:
        p.error(f"--rounds x --block must be <= {MAX_CALLS}")
    warmup = 50 if args.quick else 300

    run_id = new_run_id()
    report = Report("discovery", run_id, args.quick)
    log(f"discovery: run {run_id}, {n} registrations/side, {rounds}x{block} calls/side")
    with workdir(run_id) as root:
        stack = start_dns_stack(root)
        try:
            log(f"etcd {stack.etcd.endpoint}, CoreDNS {stack.dns}")
            lat = registration_latency(stack, run_id, n)
            log("registration latency done; throughput")
            tp = throughput(stack, run_id, rounds, block, warmup)
        finally:
            stack.stop()

    # ---- tables
    summ = {side: Summary.of(v["total"]) for side, v in lat.items()}
    write = {side: Summary.of(v["write"]) for side, v in lat.items()}
    rows = []
    for side in lat:
        s, w = summ[side], write[side]
        q = lat[side]["queries"]
        rows.append([side, str(s.n), ms(s.p50), ms(s.p99), ms(s.max), ms(s.mean),
                     ms(w.p50), f"{sum(q) / len(q):.2f}", str(max(q))])
    report.tables.append((
        "1. write -> first SRV answer listing the instance (ms; poll every 1 ms)",
        ["side", "n", "p50", "p99", "max", "mean", "write p50", "queries avg", "max"], rows))
    raw_rate = tp["raw dns.query.udp"]["per_s"]
    report.tables.append((
        "2. SRV resolution, single thread, interleaved blocks",
        ["side", "calls", "calls/s", "us/call", "client CPU us/call", "vs raw"],
        [[side, str(v["calls"]), f"{v['per_s']:.0f}", f"{v['us_per_call']:.1f}",
          f"{v['cpu_us_per_call']:.1f}", f"{ratio(v['per_s'], raw_rate):.3f}x"]
         for side, v in tp.items()]))

    reg, put = summ["register"], summ["etcd put"]
    report.metrics += [
        Metric("register -> DNS p50", reg.p50 * 1000, " ms"),
        Metric("register -> DNS p99", reg.p99 * 1000, " ms"),
        Metric("register -> DNS max", reg.max * 1000, " ms"),
        Metric("etcd put -> DNS p50", put.p50 * 1000, " ms"),
        Metric("etcd put -> DNS p99", put.p99 * 1000, " ms"),
        Metric("register / etcd put (p50)", ratio(reg.p50, put.p50), "x"),
        Metric("resolve() cached / raw SRV query", ratio(tp["resolve()"]["per_s"], raw_rate),
               "x"),
        Metric("resolve(fresh) / raw SRV query",
               ratio(tp["resolve(fresh=True)"]["per_s"], raw_rate), "x", ">=", FRESH_TARGET),
    ]
    report.details = {
        "unit": "ms for latencies, calls/s for throughput",
        "registration": {side: {"total": summ[side].scaled(1000),
                                "write": write[side].scaled(1000),
                                "queries_mean": sum(v["queries"]) / len(v["queries"]),
                                "queries_max": max(v["queries"])}
                         for side, v in lat.items()},
        "throughput": tp,
        "registrations_per_side": n, "rounds": rounds, "block": block, "warmup": warmup,
    }
    report.notes.append(
        "register() includes a new etcd connection, a lease grant and the put; "
        "the baseline put reuses one connection (see 'write p50')")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
