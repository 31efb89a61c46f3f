"""`shakedown certs`: create and inspect the test PKI (a thin layer over `driver.pki`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO, TypeVar

from driver.cli import CliError
from shakedown.pkilayout import ROLES, PkiDir, PkiLayoutError, check_name

DEFAULT_DAYS = 365  # driver.pki.DEFAULT_DAYS (a test keeps them equal)


def _pki() -> ModuleType:
    # cryptography costs ~40 ms to import: only the commands that use it pay.
    from driver import pki

    return pki

T = TypeVar("T")
_AGENT_FORM = "expected NAME=HOST[,HOST...]"
_PRINCIPAL_FORM = f"expected NAME:ROLE with ROLE in {', '.join(ROLES)}"


@contextmanager
def _user_errors(flag: str = "") -> Iterator[None]:
    """Library errors become CliErrors, prefixed with the flag they came from."""
    try:
        yield
    except (_pki().PkiError, PkiLayoutError) as exc:
        raise CliError(f"{flag}: {exc}" if flag else str(exc)) from None


def parse_agent(value: str) -> tuple[str, list[str]]:
    flag = f"--agent {value}"
    name, sep, rest = value.partition("=")
    if not sep or not name:
        raise CliError(f"{flag}: {_AGENT_FORM}")
    hosts = [h.strip() for h in rest.split(",")] if rest.strip() else []
    if not hosts:
        raise CliError(f"{flag}: needs at least one host")
    if "" in hosts:
        raise CliError(f"{flag}: empty host in the list")
    with _user_errors(flag):
        check_name("agent", name)
        for host in hosts:
            _pki().parse_host(host)
    return name, hosts


def parse_principal(value: str) -> tuple[str, str]:
    name, sep, role = value.partition(":")
    if not sep or not name or role not in ROLES:
        raise CliError(f"--principal {value}: {_PRINCIPAL_FORM}")
    with _user_errors(f"--principal {value}"):
        check_name("principal", name)
    return name, role


def _days(args: argparse.Namespace) -> int:
    if args.days < 1:
        raise CliError(f"--days {args.days}: must be at least 1")
    return int(args.days)


def _collect(values: Sequence[str] | None, parse: Callable[[str], tuple[str, T]],
             flag: str) -> dict[str, T]:
    out: dict[str, T] = {}
    for value in values or ():
        name, item = parse(value)
        if name in out:
            raise CliError(f"{flag} {value}: {name!r} given twice")
        out[name] = item
    return out


def _summary(path: Path) -> str:
    info = _pki().inspect(path)
    sans = ", ".join(str(s) for s in info["sans"])
    return f"{path}  SANs: {sans}  expires {str(info['not_after'])[:10]}"


def cmd_init(args: argparse.Namespace) -> int:
    agents = _collect(args.agent, parse_agent, "--agent")
    principals = _collect(args.principal, parse_principal, "--principal") or {"driver": "admin"}
    days = _days(args)
    with _user_errors():
        layout = _pki().init_pki(args.dir, agents, principals, days=days,
                              force=args.force)
    next_cmd = f"shakedown keys init {layout.root / 'keys.json'}"
    # After --force, leftovers signed by the old CA would fail every handshake.
    stale = [c["file"] for c in _pki().inspect(layout.root)["certificates"]
             if c.get("issued_by_ca") is False]
    if args.json:
        doc = {
            "dir": str(layout.root),
            "ca": {"cert": str(layout.ca_cert), "key": str(layout.ca_key),
                   **_pick(_pki().inspect(layout.ca_cert), "subject", "not_after")},
            "agents": {n: {"cert": str(layout.agent_cert(n)), "key": str(layout.agent_key(n)),
                           **_pick(_pki().inspect(layout.agent_cert(n)), "sans")}
                       for n in agents},
            "clients": {p: {"cert": str(layout.client_cert(p)), "key": str(layout.client_key(p)),
                            "role": r} for p, r in principals.items()},
            "principals": str(layout.principals),
            "stale": stale,
            "next": next_cmd,
        }
        print(json.dumps(doc, indent=2))
        return 0
    ca = _pki().inspect(layout.ca_cert)
    print(f"CA          {layout.ca_cert}  ({ca['subject']}, expires {str(ca['not_after'])[:10]})")
    print(f"            {layout.ca_key}  (0600, keep it private)")
    for name in agents:
        print(f"agent {name:<6}{_summary(layout.agent_cert(name))}")
    for principal, role in principals.items():
        print(f"client {principal} ({role})  {layout.client_cert(principal)}")
    print(f"principals  {layout.principals}")
    if stale:
        print(f"warning: not signed by the new CA (re-issue or delete): {', '.join(stale)}")
    print(f"next: {next_cmd}")
    return 0


def _pick(info: dict[str, Any], *keys: str) -> dict[str, object]:
    return {k: info[k] for k in keys}


def cmd_issue(args: argparse.Namespace) -> int:
    days = _days(args)
    layout = PkiDir(Path(args.dir))
    if args.agent is not None:
        name, hosts = parse_agent(args.agent)
        with _user_errors(f"--agent {args.agent}"):
            cert, _ = _pki().issue_agent(args.dir, name, hosts, days=days)
        print(f"agent {name}  {_summary(cert)}")
        return 0
    principal, role = parse_principal(args.principal)
    with _user_errors(f"--principal {args.principal}"):
        cert, _ = _pki().issue_client(args.dir, principal, role, days=days)
    print(f"client {principal} ({role})  {cert}")
    print(f"principals  {layout.principals} (agents reload it on restart)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.reason not in _pki().REASONS:
        raise CliError(f"--reason {args.reason}: choose from {', '.join(_pki().REASONS)}")
    with _user_errors():
        cert = _pki().cert_for_name(args.dir, args.name)
        serial = str(_pki().inspect(cert)["serial"])
        before = _listed(PkiDir(Path(args.dir)).crl, serial)
        crl_path = _pki().revoke(args.dir, args.name, reason=args.reason)
    state = "already revoked" if before else "revoked"
    print(f"{state} {cert.name} serial {serial} -> {crl_path}")
    return 0


def _listed(crl_path: Path, serial: str) -> bool:
    if not crl_path.exists():
        return False
    revoked = _pki().inspect(crl_path)["revoked"]
    return any(r["serial"] == serial for r in revoked)


def cmd_inspect(args: argparse.Namespace) -> int:
    with _user_errors():
        info = _pki().inspect(args.path)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_human(info, sys.stdout)
    return 0


def _status(c: dict[str, Any]) -> str:
    flags = [name for name, on in (("REVOKED", c.get("revoked")), ("EXPIRED", c["expired"]),
                                   ("NOT-YET-VALID", c["not_yet_valid"]),
                                   ("FOREIGN-CA", c.get("issued_by_ca") is False)) if on]
    return ",".join(flags) or "ok"


def _print_human(info: dict[str, Any], out: TextIO) -> None:
    def emit(line: str) -> None:
        print(line, file=out)

    if info["kind"] == "pki-dir":
        emit(f"{'FILE':<24} {'SUBJECT':<28} {'EXPIRES':<10}  {'STATUS':<8}  SANS / ROLE")
        for c in info["certificates"]:
            extra = ", ".join(c["sans"])
            if "role" in c:
                extra += f"  role={c['role'] or 'NOT ALLOWED'}"
            emit(f"{c['file']:<24} {c['subject']:<28} {c['not_after'][:10]:<10}  "
                 f"{_status(c):<8}  {extra}")
        emit(f"principals: {info['principals']}")
        crl = info["crl"]
        if crl:
            emit(f"crl: #{crl['crl_number']} next update {crl['next_update']}, "
                 f"{len(crl['revoked'])} revoked")
        if info["crl_error"]:
            emit(f"crl: UNTRUSTED: {info['crl_error']}")
        return
    for key, value in info.items():
        if key == "revoked" and isinstance(value, list):
            value = ", ".join(r["serial"] for r in value) or "(none)"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        emit(f"{key:<19} {value}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("certs", help="create and inspect the test PKI")
    sub = parser.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create a CA, agent and client certificates")
    p.add_argument("dir", metavar="DIR", type=Path)
    p.add_argument("--agent", action="append", required=True, metavar="NAME=HOST[,HOST...]",
                   help="an agent's server certificate (repeatable)")
    p.add_argument("--principal", action="append", metavar="NAME:ROLE",
                   help="a client certificate + allow-list entry (default driver:admin)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS)
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("issue", help="issue one more certificate with the existing CA")
    p.add_argument("dir", metavar="DIR", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--agent", metavar="NAME=HOST[,HOST...]")
    which.add_argument("--principal", metavar="NAME:ROLE")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS)
    p.set_defaults(func=cmd_issue)

    p = sub.add_parser("revoke", help="add a certificate to DIR/crl.pem")
    p.add_argument("dir", metavar="DIR", type=Path)
    p.add_argument("name", metavar="NAME", help="principal (client-NAME.crt) or agent name")
    p.add_argument("--reason", default="unspecified",
                   help="an RFC 5280 reason: unspecified, key_compromise, superseded, ...")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("inspect", help="describe a certificate, a CRL or a PKI directory")
    p.add_argument("path", metavar="PATH", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)
