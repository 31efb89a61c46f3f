"""`shakedown agent ...`: talk to node agents by hand (info, ps, run, logs, exec ...).

Agents come from an inventory (``--inventory FILE [--node NAME]``) or one
explicit target (``--target HOST:PORT --certs DIR --keys FILE``). ``info`` and
``ps`` default to every node; the others need exactly one node.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from driver.cli import CliError
from driver.client import AgentClient
from driver.fanout import fan_out
from driver.inventory import InventoryError, check_address, load_inventory
from driver.types import Container, ContainerSpec, PortMapping, parse_size
from shakedown.errors import (
    AuthError,
    DeadlineExceeded,
    ImagePullError,
    PolicyError,
    ShakedownError,
    Unavailable,
)
from shakedown.keyring import KeyringError
from shakedown.pkilayout import NAME_RE, PkiLayoutError

DEFAULT_SESSION = "cli"


# ---------------------------------------------------------------- connecting

def _clients(args: argparse.Namespace, *, single: bool) -> dict[str, AgentClient]:
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
def _connected(args: argparse.Namespace, *, single: bool) -> Iterator[dict[str, AgentClient]]:
    clients = _clients(args, single=single)
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


def _one(clients: dict[str, AgentClient]) -> AgentClient:
    return next(iter(clients.values()))


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


# `agent run`/`create`: the agent answered but could not pull the image (a registry
# problem, not a dead agent: that one is 1 with "is unreachable").
EXIT_PULL_FAILED = 3


def explain(client: AgentClient, exc: ShakedownError, timeout: float | None = None) -> str:
    """An actionable one-line message naming the agent and what went wrong."""
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


def _call(args: argparse.Namespace, client: AgentClient, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ShakedownError as exc:
        code = EXIT_PULL_FAILED if isinstance(exc, ImagePullError) else 1
        raise CliError(explain(client, exc, args.timeout), exit_code=code) from None


# ---------------------------------------------------------------- output

def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:g} {unit}"
        n = round(n / 1024, 1)  # type: ignore[assignment]
    return f"{n:g} TiB"


def _ports(c: Container) -> str:
    return ",".join(f"{p.host_ip or '127.0.0.1'}:{p.host_port}->{p.container_port}/{p.protocol}"
                    for p in c.ports if p.host_port)


def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise CliError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _report_failures(clients: dict[str, AgentClient], failed: dict[str, BaseException],
                     timeout: float) -> int:
    for name, exc in failed.items():
        msg = (explain(clients[name], exc, timeout) if isinstance(exc, ShakedownError)
               else f"agent {clients[name].describe()}: {exc}")
        print(f"shakedown: {msg}", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------- commands

def cmd_info(args: argparse.Namespace) -> int:
    with _connected(args, single=False) as clients:
        results = fan_out(clients, lambda c: c.node_info(), timeout=args.timeout + 5)
        infos = results.succeeded
        if args.json:
            print_json([{"node": n, "address": clients[n].address, **jsonable(i)}
                        for n, i in infos.items()])
        elif infos:
            print(table(
                ("NODE", "ADDRESS", "AGENT", "DOCKER", "OS/ARCH", "CPUS", "MEMORY", "PRINCIPAL"),
                [(i.name or n, clients[n].address, i.agent_version, i.docker_version,
                  f"{i.operating_system}/{i.architecture}", i.cpus, _size(i.memory_bytes),
                  f"{i.principal} ({i.role})") for n, i in infos.items()]))
        return _report_failures(clients, results.failed, args.timeout)


def cmd_ps(args: argparse.Namespace) -> int:
    selector = list(args.label or ())
    with _connected(args, single=False) as clients:
        results = fan_out(clients, lambda c: c.list(selector, all=args.all,
                                                    session=args.session or None),
                          timeout=args.timeout + 5)
        found = [(n, c) for n, cs in results.succeeded.items() for c in cs]
        if args.json:
            print_json([{"node": n, **jsonable(c)} for n, c in found])
        else:
            print(table(("NODE", "ID", "NAME", "IMAGE", "STATE", "STATUS", "SESSION", "PORTS"),
                        [(c.node or n, c.short_id, c.name, c.image, c.state, c.status,
                          c.session_id, _ports(c)) for n, c in found]))
        return _report_failures(clients, results.failed, args.timeout)


def _spec(args: argparse.Namespace) -> ContainerSpec:
    try:
        ports = [PortMapping.parse(p) for p in args.publish or ()]
        memory = parse_size(args.memory) if args.memory else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    restart, _, retries = (args.restart or "").partition(":")
    return ContainerSpec(
        image=args.image, command=list(args.command), name=args.name or "",
        env=_pairs(args.env, "-e"), labels=_pairs(args.label, "-l"), ports=ports,
        cpus=args.cpus, memory=memory, restart=restart or None,
        restart_max_retries=int(retries) if retries.isdigit() else 0,
        network=args.network or "", user=args.user or "", working_dir=args.workdir or "",
        pull=args.pull,
    )


def cmd_run(args: argparse.Namespace) -> int:
    if args.rm and not args.attach:
        raise CliError("--rm needs --attach (a detached container is left running)")
    spec = _spec(args)
    with _connected(args, single=True) as clients:
        client = _one(clients)
        session = _call(args, client, lambda: client.open_session(
            persistent=True, name=args.session, keepalive=False))
        c = _call(args, client, lambda: client.run(spec, session=session.id))
        if not args.attach:
            if args.json:
                print_json(c)
            else:
                print(c.id)
            return 0
        _stream_logs(args, client, c.id, follow=True, tail=0)
        # The follow stream ends when the container exits, so this wait is short.
        code = _call(args, client, lambda: client.wait(c.id, timeout=args.timeout))
        if args.rm:
            _call(args, client, lambda: client.remove(c.id, force=True))
        return int(code)


def _stream_logs(args: argparse.Namespace, client: AgentClient, container: str, *,
                 follow: bool, tail: int) -> None:
    # One incremental decoder per stream: a chunk may end inside a UTF-8 character.
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}
    stream = client.logs(container, follow=follow, tail=tail,
                         timeout=None if follow else args.timeout)
    try:
        for chunk in stream:
            out = sys.stderr if chunk.stream == "stderr" else sys.stdout
            out.write(decoders[chunk.stream].decode(chunk.data))
            out.flush()
    except ShakedownError as exc:
        raise CliError(explain(client, exc, args.timeout), exit_code=1) from None
    finally:
        stream.cancel()


def cmd_logs(args: argparse.Namespace) -> int:
    with _connected(args, single=True) as clients:
        _stream_logs(args, _one(clients), args.container, follow=args.follow, tail=args.tail)
    return 0


def _print_container(args: argparse.Namespace, c: Container) -> None:
    if args.json:
        print_json(c)
    else:
        print(c.id)


def cmd_stop(args: argparse.Namespace) -> int:
    with _connected(args, single=True) as clients:
        client = _one(clients)
        _print_container(args, _call(args, client, lambda: client.stop(args.container, args.t)))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    with _connected(args, single=True) as clients:
        client = _one(clients)
        _print_container(args, _call(args, client, lambda: client.kill(args.container, args.s)))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with _connected(args, single=True) as clients:
        client = _one(clients)
        cid = _call(args, client, lambda: client.remove(args.container, force=args.force,
                                                        volumes=args.volumes))
        if args.json:
            print_json({"id": cid})
        else:
            print(cid)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    with _connected(args, single=True) as clients:
        client = _one(clients)
        print_json(_call(args, client, lambda: client.inspect(args.container)))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise CliError("exec: give the command to run after the container")
    with _connected(args, single=True) as clients:
        client = _one(clients)
        res = _call(args, client, lambda: client.exec(
            args.container, args.command, env=_pairs(args.env, "-e"),
            working_dir=args.workdir or "", user=args.user or "", timeout=args.timeout))
    if args.json:
        print_json({"exit_code": res.exit_code, "stdout": res.stdout, "stderr": res.stderr})
    else:
        sys.stdout.write(res.stdout.decode("utf-8", "replace"))
        sys.stderr.write(res.stderr.decode("utf-8", "replace"))
    return int(res.exit_code)


# ---------------------------------------------------------------- parsers

def _connection_parent() -> argparse.ArgumentParser:
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


def register(subparsers: Any) -> None:
    conn = _connection_parent()
    agent = subparsers.add_parser("agent", help="talk to node agents",
                                  description=__doc__.splitlines()[0] if __doc__ else None)
    sub = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)

    def leaf(name: str, func: Callable[[argparse.Namespace], int], help: str,
             ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[conn], help=help, description=help)
        p.set_defaults(func=func)
        return p

    leaf("info", cmd_info, "node, engine and caller identity of each agent")

    p = leaf("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-l", "--label", action="append", metavar="K[=V]", help="label selector")
    p.add_argument("--session", metavar="ID", help="only this session's containers")

    p = leaf("run", cmd_run, "create and start a container (detached by default)")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", metavar="K=V")
    p.add_argument("-l", "--label", action="append", metavar="K=V")
    p.add_argument("-p", "--publish", action="append", metavar="[IP:]HOST:CONTAINER[/PROTO]")
    p.add_argument("--cpus", type=float)
    p.add_argument("--memory", "-m", metavar="SIZE", help="e.g. 64m, 1g")
    p.add_argument("--restart", metavar="POLICY[:N]", help="no, always, unless-stopped, "
                   "on-failure[:N]")
    p.add_argument("--network")
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("--pull", default="if-not-present", choices=("if-not-present", "always",
                                                                 "never"))
    p.add_argument("--session", default=DEFAULT_SESSION, metavar="NAME",
                   help=f"persistent session to own it (default {DEFAULT_SESSION!r})")
    p.add_argument("--attach", action="store_true",
                   help="stream its output, wait, and exit with its exit code")
    p.add_argument("--rm", action="store_true", help="with --attach: remove it afterwards")

    p = leaf("logs", cmd_logs, "print a container's output")
    p.add_argument("container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="last N lines (0: all)")

    p = leaf("stop", cmd_stop, "stop a container (signal, then SIGKILL after -t seconds)")
    p.add_argument("container")
    p.add_argument("-t", "--time", dest="t", type=int, metavar="SECS")

    p = leaf("kill", cmd_kill, "send a signal (default SIGKILL)")
    p.add_argument("container")
    p.add_argument("-s", "--signal", dest="s", default="", metavar="SIGNAL")

    p = leaf("rm", cmd_rm, "remove a container")
    p.add_argument("container")
    p.add_argument("-f", "--force", action="store_true", help="even when running")
    p.add_argument("-v", "--volumes", action="store_true", help="and its anonymous volumes")

    p = leaf("exec", cmd_exec, "run a command in a container; exits with its exit code")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("-e", "--env", action="append", metavar="K=V")
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")

    p = leaf("inspect", cmd_inspect, "a container's full state, as JSON")
    p.add_argument("container")

