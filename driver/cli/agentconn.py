"""Reaching agents from `shakedown agent ...`: selection flags, clients, actionable errors.

grpc, the stubs and the client are imported inside the functions that connect,
so building the parser (and `shakedown --help`) never pays for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driver.cli import CliError

if TYPE_CHECKING:
    from driver.client import AgentClient
    from shakedown.errors import ShakedownError

# `agent run`/`create`: the agent answered but could not pull the image (a registry
# problem, not a dead agent: that one is 1 with "is unreachable").
EXIT_PULL_FAILED = 3

_REASONS = (
    ("connection refused", "connection refused"),
    ("hostname verification", "the agent's certificate does not name this address "
     "(pass --server-name / server_name = the agent's name)"),
    ("handshake", "TLS handshake failed (wrong CA, certificate or --server-name?)"),
    ("certificate", "TLS certificate problem (wrong CA or --server-name?)"),
    ("dns resolution", "cannot resolve the host name"),
    ("name resolution", "cannot resolve the host name"),
    ("no route", "no route to host"),
    ("timed out", "connection timed out"),
)


def connection_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("agent selection")
    g.add_argument("--inventory", type=Path, metavar="FILE", help="TOML inventory of agents")
    g.add_argument("--node", action="append", metavar="NAME",
                   help="inventory node to act on (repeatable for info/ps; default: all)")
    g.add_argument("--target", metavar="HOST:PORT", help="one agent, without an inventory")
    g.add_argument("--certs", type=Path, metavar="DIR", help="PKI dir for --target")
    g.add_argument("--keys", type=Path, metavar="FILE", help="HMAC keyring for --target")
    g.add_argument("--principal", default="driver", help="identity for --target (driver)")
    g.add_argument("--server-name", help="TLS name to expect from the agent (--target)")
    g.add_argument("--agent-name", help="the agent's --name, the audience of the signatures "
                   "(--target; default: its certificate's CN)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="SECS",
                   help="per-call deadline (default 30)")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _clients(args: argparse.Namespace, *, single: bool) -> dict[str, AgentClient]:
    from driver.client import AgentClient
    from driver.inventory import InventoryError, check_address, load_inventory
    from shakedown.keyring import KeyringError
    from shakedown.pkilayout import NAME_RE, PkiLayoutError

    kw: dict[str, Any] = {"timeout": args.timeout}
    try:
        if args.target:
            if args.inventory:
                raise CliError("give either --inventory or --target, not both")
            if reason := check_address(args.target):
                raise CliError(f"--target: {reason}")
            if not args.certs or not args.keys:
                raise CliError("--target needs --certs DIR and --keys FILE")
            if args.agent_name and not NAME_RE.match(args.agent_name):
                raise CliError(f"--agent-name {args.agent_name!r}: use letters, digits, '.', '_' "
                               "or '-'")
            client = AgentClient.from_certs_dir(
                args.target, args.certs, args.keys, principal=args.principal,
                server_name=args.server_name, agent_name=args.agent_name, **kw)
            return {args.target: client}
        if not args.inventory:
            raise CliError("which agent? give --inventory FILE [--node NAME], or "
                           "--target HOST:PORT --certs DIR --keys FILE")
        inv = load_inventory(args.inventory)
        names = args.node or None
        if single and names is None and len(inv.nodes) > 1:
            raise CliError(f"{args.inventory} has {len(inv.nodes)} nodes "
                           f"({', '.join(inv.names)}): choose one with --node")
        if single and names is not None and len(names) > 1:
            raise CliError("this command acts on one node: give --node once")
        return inv.clients(names, **kw)
    except (InventoryError, KeyringError, PkiLayoutError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None


@contextmanager
def connected(args: argparse.Namespace, *, single: bool) -> Iterator[dict[str, AgentClient]]:
    clients = _clients(args, single=single)
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


def one(clients: dict[str, AgentClient]) -> AgentClient:
    return next(iter(clients.values()))


def explain(client: AgentClient, exc: ShakedownError, timeout: float | None = None) -> str:
    """An actionable one-line message naming the agent and what went wrong."""
    from shakedown.errors import (
        AuthError,
        DeadlineExceeded,
        ImagePullError,
        PolicyError,
        Unavailable,
    )

    who = f"agent {client.describe()}"
    if isinstance(exc, Unavailable):
        low = exc.reason.lower()
        reason = next((r for needle, r in _REASONS if needle in low), exc.reason)
        return f"{who} is unreachable: {reason}"
    if isinstance(exc, ImagePullError):
        return f"{who} could not pull the image: {exc}"
    if isinstance(exc, AuthError):
        return f"{who} rejected our credentials: UNAUTHENTICATED: {exc}"
    if isinstance(exc, PolicyError):
        return f"{who} refused: PERMISSION_DENIED: {exc}"
    if isinstance(exc, DeadlineExceeded):
        limit = f" within {timeout:g} s" if timeout else ""
        return f"{who} did not answer{limit} (raise --timeout?)"
    return f"{who}: {type(exc).__name__}: {exc}"


def call(args: argparse.Namespace, client: AgentClient, fn: Callable[[], Any]) -> Any:
    """Run one RPC; a failure becomes a CliError (1, or 3 for an image pull)."""
    from shakedown.errors import ImagePullError, ShakedownError

    try:
        return fn()
    except ShakedownError as exc:
        code = EXIT_PULL_FAILED if isinstance(exc, ImagePullError) else 1
        raise CliError(explain(client, exc, args.timeout), exit_code=code) from None


def report_failures(clients: dict[str, AgentClient], failed: dict[str, BaseException],
                    timeout: float) -> int:
    from shakedown.errors import ShakedownError

    for name, exc in failed.items():
        msg = (explain(clients[name], exc, timeout) if isinstance(exc, ShakedownError)
               else f"agent {clients[name].describe()}: {exc}")
        print(f"shakedown: {msg}", file=sys.stderr)
    return 1 if failed else 0
