"""`shakedown verify ...`: check that an endpoint's security and discovery really work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from driver.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "verify", help="verify the authentication or the discovery of a system"
    )
    vsub = parser.add_subparsers(dest="verify_command", metavar="WHAT", required=True)
    auth = vsub.add_parser(
        "auth",
        help="run the authentication matrix against a gRPC endpoint",
        description="Checks that TARGET rejects every bad credential: plaintext, no or foreign or "
        "expired or revoked client certificates, principals off the allow-list and, against a "
        "Shakedown agent, the wrong role and (with --keys) unsigned, mis-signed, tampered, stale "
        "and replayed calls. Each case calls one probe method the server really serves: --method "
        "if given, else one found through server reflection (unary, empty request, not named like "
        "a change), else the health service if served. A case is 'rejected' only on a TLS "
        "refusal, UNAUTHENTICATED or PERMISSION_DENIED; 'accepted' on OK or an error from the "
        "method itself; anything else (UNIMPLEMENTED, UNAVAILABLE after a good handshake, "
        "deadlines) is 'inconclusive'. Role and HMAC cases are 'not applicable' where no "
        "Shakedown agent service is served. "
        "Exit status: 0 every case as expected (not applicable and skipped allowed), "
        "1 a case that should be rejected was accepted, 2 inconclusive only: some case proved "
        "nothing, or the valid control call was not accepted (also 2: a usage error).",
    )
    auth.add_argument("--target", required=True, metavar="HOST:PORT")
    auth.add_argument("--certs", required=True, metavar="DIR", help="PKI directory (certs init)")
    auth.add_argument("--keys", metavar="FILE", help="HMAC keyring: also run the signature cases")
    auth.add_argument("--principal", default="driver", help="the valid identity (default driver)")
    auth.add_argument("--agent-name", metavar="NAME",
                      help="the agent's name, which HMAC v2 signatures are bound to "
                           "(default: the CN of its certificate)")
    auth.add_argument("--server-name", metavar="NAME", help="TLS name to expect from the server")
    auth.add_argument(
        "--agent-name",
        metavar="NAME",
        help="the agent HMAC v2 signatures are for (default: the server certificate's CN)",
    )
    auth.add_argument(
        "--crl", metavar="FILE", help="CRL listing a revoked client cert (default DIR/crl.pem)"
    )
    auth.add_argument(
        "--method",
        metavar="/PKG.SVC/METHOD",
        help="the unary method to probe (default: found through reflection)",
    )
    auth.add_argument(
        "--data",
        metavar="JSON",
        help="the probe's request as JSON (protobuf JSON mapping; needs --method and reflection)",
    )
    auth.add_argument("--timeout", type=float, default=5.0, help="per-call deadline, seconds")
    auth.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: every case with its expectation, verdict, result, "
        "status code, reason and the method called",
    )
    auth.set_defaults(func=run_auth)

    disc = vsub.add_parser(
        "discovery",
        help="check CoreDNS + etcd discovery for flaws",
        description="Reads the registrations under the etcd prefix and checks each against "
        "DNS as its clients would query it (SRV for _svc._tcp.ZONE instances, A/AAAA/CNAME for "
        "other keys), expecting what CoreDNS serves for the etcd values (its defaults: priority "
        "0 or missing is 10, weights rescaled per priority). Reports: records DNS does not serve "
        "or serves differently, records outside every served zone (DNS answers REFUSED: an "
        "error in a --domain zone, else a warning), keys without a lease or without a _tcp/_udp "
        "label, dead or unhealthy endpoints, keys several instances overwrite, DNS TTLs longer "
        "than leases, and (with --static) a fallback that fails while DNS is down. "
        "Exit status: 0 no error-severity finding (warnings may be printed), 1 at least one "
        "error (including --service with no registration), 2 usage error.",
    )
    disc.add_argument("--dns", required=True, metavar="HOST:PORT", help="the CoreDNS to query")
    disc.add_argument("--etcd", required=True, metavar="URL", help="its etcd, http://HOST:PORT")
    disc.add_argument(
        "--domain",
        required=True,
        action="append",
        metavar="ZONE",
        help="a zone the DNS server serves; repeatable",
    )
    disc.add_argument(
        "--service", help="only this service: scheduler or _scheduler (none found is an error)"
    )
    disc.add_argument("--prefix", default="/skydns", help="etcd key prefix (default /skydns)")
    disc.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help="a configured static fallback to check with DNS down; repeatable",
    )
    disc.add_argument("--certs", metavar="DIR", help="client certs for gRPC health over mTLS")
    disc.add_argument("--no-probe", action="store_true", help="do not connect to endpoints")
    disc.add_argument("--timeout", type=float, default=2.0)
    disc.add_argument("--json", action="store_true")
    disc.set_defaults(func=run_discovery)


def run_auth(args: argparse.Namespace) -> int:
    from driver.verify.auth import verify_auth
    from driver.verify.authreport import render_table

    host, sep, port = args.target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--target {args.target!r}: expected HOST:PORT")
    certs = Path(args.certs)
    for flag, path in (
        ("--certs", certs),
        ("--keys", Path(args.keys) if args.keys else None),
        ("--crl", Path(args.crl) if args.crl else None),
    ):
        if path is not None and not path.exists():
            raise CliError(f"{flag} {path}: does not exist")
    client_cert = certs / f"client-{args.principal}.crt"
    if not client_cert.exists():
        raise CliError(
            f"--principal {args.principal}: no {client_cert} (see `shakedown certs issue`)"
        )
    data = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise CliError(f"--data: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CliError("--data: must be a JSON object (the request message)")
    if args.timeout <= 0:
        raise CliError(f"--timeout {args.timeout:g}: must be > 0")
    try:
        report = verify_auth(
            args.target,
            certs,
            args.keys,
            principal=args.principal,
            server_name=args.server_name,
            crl=args.crl,
            timeout=args.timeout,
            method=args.method,
            data=data,
            agent_name=args.agent_name,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.to_json(), indent=2) if args.json else render_table(report))
    return report.exit_code


def run_discovery(args: argparse.Namespace) -> int:
    from driver.verify.discovery import render, verify_discovery

    static: dict[str, list[str]] = {}
    for item in args.static:
        service, sep, endpoint = item.partition("=")
        if not sep or not service or ":" not in endpoint:
            raise CliError(f"--static {item!r}: expected SERVICE=HOST:PORT")
        static.setdefault(service, []).append(endpoint)
    try:
        report = verify_discovery(
            args.dns,
            args.etcd,
            args.domain,
            service=args.service,
            prefix=args.prefix,
            static=static,
            certs=Path(args.certs) if args.certs else None,
            check_endpoints=not args.no_probe,
            timeout=args.timeout,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1
