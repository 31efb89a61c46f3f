"""`shakedown agent ...`: talk to node agents by hand (info, ps, run, logs, exec ...).

Agents come from an inventory (``--inventory FILE [--node NAME]``) or one
explicit target (``--target HOST:PORT --certs DIR --keys FILE``). ``info`` and
``ps`` default to every node; the others need exactly one node.

Sessions: by default ``run`` puts containers in the caller's persistent
session ``cli``, which the agent never reaps (remove them with ``rm``);
``run --ttl N`` opens a fresh session that the agent reaps N seconds after
its last keep-alive (at once after a detached ``run`` returns, plus N s).
"""

from __future__ import annotations

import argparse
import codecs
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from driver.cli import CliError
from driver.cli.agentconn import call, connected, connection_parent, explain, one, report_failures
from driver.cli.output import (
    container_doc,
    dumps,
    jsonable,
    log_record,
    ports,
    print_json,
    size,
    table,
)

if TYPE_CHECKING:
    from driver.client import AgentClient
    from driver.types import Container, ContainerSpec

DEFAULT_SESSION = "cli"


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise CliError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


# ---------------------------------------------------------------- commands

def cmd_info(args: argparse.Namespace) -> int:
    from driver.fanout import fan_out

    with connected(args, single=False) as clients:
        results = fan_out(clients, lambda c: c.node_info(), timeout=args.timeout + 5)
        infos = results.succeeded
        if args.json:
            print_json([{"node": n, "address": clients[n].address, **jsonable(i)}
                        for n, i in infos.items()])
        elif infos:
            print(table(
                ("NODE", "ADDRESS", "AGENT", "DOCKER", "OS/ARCH", "CPUS", "MEMORY", "PRINCIPAL"),
                [(i.name or n, clients[n].address, i.agent_version, i.docker_version,
                  f"{i.operating_system}/{i.architecture}", i.cpus, size(i.memory_bytes),
                  f"{i.principal} ({i.role})") for n, i in infos.items()]))
        return report_failures(clients, results.failed, args.timeout)


def _full(client: AgentClient, summaries: list[Container]) -> list[Container]:
    """Inspect each listed container: a list entry lacks pid, start time and argv."""
    from shakedown.errors import NotFound

    out = []
    for c in summaries:
        try:
            out.append(client.inspect(c.id))
        except NotFound:
            continue  # removed between the list and the inspect
    return out


def cmd_ps(args: argparse.Namespace) -> int:
    from driver.fanout import fan_out

    selector = list(args.label or ())

    def listing(c: AgentClient) -> list[Container]:
        found = c.list(selector, all=args.all, session=args.session or None)
        return _full(c, found) if args.json else found

    with connected(args, single=False) as clients:
        results = fan_out(clients, listing, timeout=args.timeout + 5)
        found = [(n, c) for n, cs in results.succeeded.items() for c in cs]
        if args.json:
            print_json([container_doc(c, n) for n, c in found])
        else:
            print(table(("NODE", "ID", "NAME", "IMAGE", "STATE", "STATUS", "SESSION", "PORTS"),
                        [(c.node or n, c.short_id, c.name, c.image, c.state, c.status,
                          c.session_id, ports(c)) for n, c in found]))
        return report_failures(clients, results.failed, args.timeout)


def _spec(args: argparse.Namespace) -> ContainerSpec:
    from driver.types import ContainerSpec, PortMapping, parse_size

    try:
        mapped = [PortMapping.parse(p) for p in args.publish or ()]
        memory = parse_size(args.memory) if args.memory else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    restart, _, retries = (args.restart or "").partition(":")
    return ContainerSpec(
        image=args.image, command=list(args.command), name=args.name or "",
        env=_pairs(args.env, "-e"), labels=_pairs(args.label, "-l"), ports=mapped,
        cpus=args.cpus, memory=memory, restart=restart or None,
        restart_max_retries=int(retries) if retries.isdigit() else 0,
        network=args.network or "", user=args.user or "", working_dir=args.workdir or "",
        pull=args.pull,
    )


def cmd_run(args: argparse.Namespace) -> int:
    if args.rm and not args.attach:
        raise CliError("--rm needs --attach (a detached container is left running)")
    if args.ttl is not None and args.ttl < 1:
        raise CliError(f"--ttl {args.ttl}: must be at least 1 second")
    spec = _spec(args)
    reaped = args.ttl is not None
    with connected(args, single=True) as clients:
        client = one(clients)
        session = call(args, client, lambda: client.open_session(
            ttl=args.ttl or 0, persistent=not reaped,
            name=args.session or ("" if reaped else DEFAULT_SESSION),
            keepalive=reaped and args.attach))
        try:
            if session.session.persistent == reaped:
                kind = "persistent" if session.session.persistent else "reaped"
                raise CliError(f"--session {args.session}: that session is {kind}; "
                               "choose another name")
            c = call(args, client, lambda: client.run(spec, session=session.id))
            if reaped:
                print(f"shakedown: session {session.id} has a {args.ttl} s TTL: the agent "
                      "removes the container once nothing keeps the session alive",
                      file=sys.stderr)
            if not args.attach:
                if args.json:
                    print_json(container_doc(c))
                else:
                    print(c.id)
                return 0
            _stream_logs(args, client, c.id, follow=True, tail=0)
            # The follow stream ends when the container exits, so this wait is short.
            code = call(args, client, lambda: client.wait(c.id, timeout=args.timeout))
            if args.rm:
                call(args, client, lambda: client.remove(c.id, force=True))
            return int(code)
        finally:
            session.stop_keepalive()


def _stream_logs(args: argparse.Namespace, client: AgentClient, container: str, *,
                 follow: bool, tail: int) -> None:
    from shakedown.errors import ShakedownError

    as_json = bool(getattr(args, "json", False)) and args.agent_command == "logs"
    stream = client.logs(container, follow=follow, tail=tail, timestamps=as_json,
                         timeout=None if follow else args.timeout)
    try:
        if as_json:
            from driver.types import log_lines

            for line in log_lines(stream):
                print(log_record(line.stream, line.text), flush=True)
            return
        # One incremental decoder per stream: a chunk may end inside a UTF-8 character.
        decoders = {s: codecs.getincrementaldecoder("utf-8")("replace")
                    for s in ("stdout", "stderr")}
        for chunk in stream:
            out = sys.stderr if chunk.stream == "stderr" else sys.stdout
            out.write(decoders[chunk.stream].decode(chunk.data))
            out.flush()
    except ShakedownError as exc:
        raise CliError(explain(client, exc, args.timeout), exit_code=1) from None
    finally:
        stream.cancel()


def cmd_logs(args: argparse.Namespace) -> int:
    with connected(args, single=True) as clients:
        _stream_logs(args, one(clients), args.container, follow=args.follow, tail=args.tail)
    return 0


def _acting(action: Callable[[argparse.Namespace, AgentClient], Container],
            ) -> Callable[[argparse.Namespace], int]:
    """A command that changes one container and prints it (its id, or JSON)."""
    def run(args: argparse.Namespace) -> int:
        with connected(args, single=True) as clients:
            client = one(clients)
            c = call(args, client, lambda: action(args, client))
        print(dumps(container_doc(c)) if args.json else c.id)
        return 0
    return run


cmd_stop = _acting(lambda a, c: c.stop(a.container, a.t))
cmd_kill = _acting(lambda a, c: c.kill(a.container, a.s))
cmd_pause = _acting(lambda a, c: c.pause(a.container))
cmd_unpause = _acting(lambda a, c: c.unpause(a.container))
cmd_restart = _acting(lambda a, c: c.restart(a.container, a.t))


def cmd_rm(args: argparse.Namespace) -> int:
    with connected(args, single=True) as clients:
        client = one(clients)
        cid = call(args, client, lambda: client.remove(args.container, force=args.force,
                                                       volumes=args.volumes))
        if args.json:
            print_json({"id": cid})
        else:
            print(cid)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    with connected(args, single=True) as clients:
        client = one(clients)
        print_json(container_doc(call(args, client, lambda: client.inspect(args.container))))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise CliError("exec: give the command to run after the container")
    with connected(args, single=True) as clients:
        client = one(clients)
        res = call(args, client, lambda: client.exec(
            args.container, args.command, env=_pairs(args.env, "-e"),
            working_dir=args.workdir or "", user=args.user or "", timeout=args.timeout))
    if args.json:
        print_json({"exit_code": res.exit_code, "stdout": res.stdout, "stderr": res.stderr})
    else:
        sys.stdout.write(res.stdout.decode("utf-8", "replace"))
        sys.stderr.write(res.stderr.decode("utf-8", "replace"))
    return int(res.exit_code)


# ---------------------------------------------------------------- parsers

def register(subparsers: Any) -> None:
    conn = connection_parent()
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
    p.add_argument("--session", metavar="NAME",
                   help=f"session to own it (default: the persistent {DEFAULT_SESSION!r}, "
                   "never reaped; with --ttl a new anonymous one)")
    p.add_argument("--ttl", type=int, metavar="SECS",
                   help="own it by a reaped session: the agent removes it SECS after the "
                   "last keep-alive (detached: after this command returns)")
    p.add_argument("--attach", action="store_true",
                   help="stream its output, wait, and exit with its exit code")
    p.add_argument("--rm", action="store_true", help="with --attach: remove it afterwards")

    p = leaf("logs", cmd_logs, "print a container's output (--json: one JSON object a line)")
    p.add_argument("container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="last N lines (0: all)")

    p = leaf("stop", cmd_stop, "stop a container (signal, then SIGKILL after -t seconds)")
    p.add_argument("container")
    p.add_argument("-t", "--time", dest="t", type=int, metavar="SECS")

    p = leaf("restart", cmd_restart, "stop (SIGKILL after -t seconds) and start a container")
    p.add_argument("container")
    p.add_argument("-t", "--time", dest="t", type=int, metavar="SECS")

    p = leaf("kill", cmd_kill, "send a signal (default SIGKILL)")
    p.add_argument("container")
    p.add_argument("-s", "--signal", dest="s", default="", metavar="SIGNAL")

    p = leaf("pause", cmd_pause, "freeze every process of a container (cgroup freezer)")
    p.add_argument("container")
    p = leaf("unpause", cmd_unpause, "thaw a paused container")
    p.add_argument("container")

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
