"""`shakedown grpc`: list, describe and call anyone's gRPC services through reflection.

Like grpcurl, but it can sign: with ``--keys`` every call carries a Shakedown
signature over its exact bytes, so it reaches a Shakedown agent too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from driver.cli import CliError


def _tls(args: argparse.Namespace) -> Any:
    from driver.dynamic import Tls

    if args.plaintext:
        if args.certs or args.ca:
            raise CliError("--plaintext: cannot be combined with --certs or --ca")
        return None
    try:
        if args.certs:
            return Tls.from_certs_dir(args.certs, args.principal, args.server_name)
        if args.ca:
            return Tls.from_files(args.ca, args.cert, args.key, args.server_name)
    except OSError as exc:
        raise CliError(f"--certs/--ca: cannot read {exc.filename}: {exc.strerror}") from None
    raise CliError("say how to connect: --certs DIR, --ca FILE [--cert --key], or --plaintext")


def _headers(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for h in values:
        key, sep, value = h.partition(":")
        if not sep or not key.strip():
            raise CliError(f"-H {h!r}: want key:value")
        out.append((key.strip().lower(), value.strip()))
    return out


def _client(args: argparse.Namespace) -> Any:
    from driver import agentname
    from driver.dynamic import DynamicClient
    from driver.dynamic.signing import agent_signer

    tls = _tls(args)
    signer = None
    if args.keys:
        from shakedown.keyring import KeyringError

        try:
            name = agentname.choose(args.agent_name, None)
        except ValueError as exc:
            raise CliError(f"--agent-name: {exc}") from None
        if name is None and (tls is None or tls.cert is None or tls.key is None):
            raise CliError("--keys without a client certificate: give --agent-name NAME")
        audience = agentname.Audience(name, lambda: agentname.peer_name(
            args.target, ca=tls.ca, cert=tls.cert, key=tls.key, server_name=tls.server_name,
            timeout=args.timeout))
        try:
            signer = agent_signer(args.keys, args.principal, audience=audience)
        except KeyringError as exc:
            raise CliError(f"--keys: {exc}") from None
    return DynamicClient(args.target, tls, signer, metadata=_headers(args.header),
                         timeout=args.timeout)


def _data(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        path = raw[1:]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--data {raw}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError("--data: want a JSON object")
    return data


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        services = c.services()
        if args.json:
            print(json.dumps({"services": services, "reflection": c.reflection.version}))
        else:
            print("\n".join(services))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    with _client(args) as c:
        print(c.describe(args.symbol), end="")
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    data = _data(args.data)
    with _client(args) as c:
        out = c.call(args.method, data)
        if isinstance(out, dict):
            print(json.dumps(out) if args.json else json.dumps(out, indent=2))
        else:
            for item in out:  # server-streaming: one JSON document per line
                print(json.dumps(item), flush=True)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("grpc", help="list, describe and call gRPC services through reflection",
                       description=__doc__)
    cmds = p.add_subparsers(dest="grpc_cmd", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("target", metavar="TARGET", help="HOST:PORT")
        q.add_argument("--certs", type=Path, help="PKI dir (ca.crt, client-PRINCIPAL.crt/.key)")
        q.add_argument("--ca", type=Path, help="CA bundle (with --cert/--key for mTLS)")
        q.add_argument("--cert", type=Path)
        q.add_argument("--key", type=Path)
        q.add_argument("--server-name", help="TLS name to verify instead of the target's host")
        q.add_argument("--plaintext", action="store_true", help="no TLS")
        q.add_argument("--keys", type=Path, help="sign every call with this Shakedown keyring")
        q.add_argument("--agent-name", help="the agent's name the signatures are for "
                       "(default: its certificate's CN)")
        q.add_argument("--principal", default="driver",
                       help="client certificate and signing key to use (default driver)")
        q.add_argument("-H", "--header", action="append", default=[], metavar="KEY:VALUE",
                       help="extra metadata (repeatable)")
        q.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
        q.add_argument("--json", action="store_true", help="machine-readable output")

    q = cmds.add_parser("list", help="the services the target serves")
    common(q)
    q.set_defaults(func=cmd_list)
    q = cmds.add_parser("describe", help="a service, method or message")
    common(q)
    q.add_argument("symbol", metavar="SYMBOL")
    q.set_defaults(func=cmd_describe)
    q = cmds.add_parser("call", help="call a method with a JSON request")
    common(q)
    q.add_argument("method", metavar="METHOD", help="pkg.Service/Method")
    q.add_argument("--data", "-d", help="the request as JSON, or @FILE (@- for stdin)")
    q.set_defaults(func=cmd_call)
