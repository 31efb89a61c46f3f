"""`shakedown discover register|resolve|watch`: the discovery library from a shell."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import asdict
from types import FrameType

from driver.cli import CliError

DEFAULT_DOMAIN = "shakedown.test"


def _common(p: argparse.ArgumentParser, *, etcd_required: bool) -> None:
    p.add_argument(
        "--etcd",
        required=etcd_required,
        metavar="URL",
        help="etcd client URL, e.g. http://127.0.0.1:2379",
    )
    p.add_argument("--domain", default=DEFAULT_DOMAIN, help=f"DNS zone (default {DEFAULT_DOMAIN})")
    p.add_argument(
        "--prefix", default="/skydns", help="etcd key prefix of the zone (default /skydns)"
    )
    p.add_argument("--proto", default="_tcp", choices=("_tcp", "_udp"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "discover", help="register, resolve and watch services (CoreDNS + etcd)"
    )
    dsub = parser.add_subparsers(dest="discover_command", metavar="ACTION", required=True)

    reg = dsub.add_parser(
        "register", help="register an instance; holds its lease until SIGINT/SIGTERM"
    )
    reg.add_argument("service")
    reg.add_argument("instance")
    reg.add_argument("--host", required=True)
    reg.add_argument("--port", required=True, type=int)
    reg.add_argument("--ttl", type=int, default=10, help="lease TTL, seconds (default 10)")
    reg.add_argument("--priority", type=int, default=10)
    reg.add_argument("--weight", type=int, default=10)
    _common(reg, etcd_required=True)
    reg.set_defaults(func=run_register)

    res = dsub.add_parser("resolve", help="resolve a service, falling back along --order")
    res.add_argument("service")
    res.add_argument("--dns", metavar="HOST:PORT", help="CoreDNS to query")
    _common(res, etcd_required=False)
    res.add_argument(
        "--order",
        default="srv,a,etcd,static",
        help="paths to try, in order (default srv,a,etcd,static)",
    )
    res.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="static fallback endpoint; repeatable",
    )
    res.add_argument("--default-port", type=int, help="port for A records and static hosts")
    res.add_argument("--timeout", type=float, default=2.0, help="per-query timeout, seconds")
    res.add_argument("--json", action="store_true")
    res.set_defaults(func=run_resolve)

    wat = dsub.add_parser("watch", help="print discovery changes from etcd as they happen")
    wat.add_argument("service", nargs="?")
    _common(wat, etcd_required=True)
    wat.add_argument("--json", action="store_true", help="one JSON object per line")
    wat.set_defaults(func=run_watch)


def run_register(args: argparse.Namespace) -> int:
    from driver.discovery import RegistrationError, register

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        reg = register(
            args.service,
            args.instance,
            args.host,
            args.port,
            args.ttl,
            args.priority,
            args.weight,
            etcd=args.etcd,
            domain=args.domain,
            proto=args.proto,
            prefix=args.prefix,
        )
    except (RegistrationError, ValueError) as exc:
        raise CliError(str(exc)) from None
    with reg:
        print(
            f"registered {reg.key} -> {args.host}:{args.port} "
            f"(lease {reg.lease_id:x}, ttl {args.ttl}s); Ctrl-C to deregister",
            flush=True,
        )
        while not stop.wait(0.5):
            if reg.lost.is_set():
                raise CliError(f"lease of {reg.key} expired; the record is gone", exit_code=1)
    print(f"deregistered {reg.key}", flush=True)
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    from driver.discovery import DiscoveryError, Resolver
    from driver.discovery.resolver import parse_hostport

    try:
        dns = parse_hostport(args.dns, "--dns") if args.dns else None
        order = [p.strip() for p in args.order.split(",") if p.strip()]
        resolver = Resolver(
            args.domain,
            dns,
            args.etcd,
            order,
            {args.service: args.static} if args.static else {},
            args.default_port,
            args.timeout,
            args.prefix,
            args.proto,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        res = resolver.resolve(args.service)
    except DiscoveryError as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "service": args.service,
                        "ok": False,
                        "attempts": [asdict(a) for a in exc.attempts],
                    },
                    indent=2,
                )
            )
            return 1
        raise CliError(str(exc), exit_code=1) from None
    if args.json:
        print(
            json.dumps(
                {
                    "service": res.service,
                    "ok": True,
                    "path": res.path,
                    "ttl": res.ttl,
                    "endpoints": [asdict(e) for e in res.endpoints],
                    "attempts": [asdict(a) for a in res.attempts],
                },
                indent=2,
            )
        )
        return 0
    for a in res.attempts:
        if not a.ok:
            print(f"# {a.path}: {a.error}")
    print(f"# answered by {res.path} (ttl {res.ttl:g}s)")
    for e in res.endpoints:
        print(f"{e.address}\tpriority={e.priority} weight={e.weight}\t{e.target}")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    from driver.discovery import watch

    try:
        w = watch(args.etcd, args.domain, args.service, proto=args.proto, prefix=args.prefix)
    except Exception as exc:
        raise CliError(f"cannot watch {args.etcd}: {exc}", exit_code=1) from None
    signal.signal(signal.SIGTERM, lambda *_: w.cancel())
    with w:
        try:
            for ch in w:
                rec = ch.record.to_json() if ch.record else ""
                if args.json:
                    print(
                        json.dumps(
                            {
                                "kind": ch.kind,
                                "name": ch.name,
                                "key": ch.key,
                                "record": json.loads(rec) if rec else None,
                                "revision": ch.revision,
                            }
                        ),
                        flush=True,
                    )
                else:
                    print(f"{ch.kind:8} {ch.name}  {rec}", flush=True)
        except KeyboardInterrupt:
            pass
    return 0
