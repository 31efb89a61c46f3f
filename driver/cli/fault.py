"""`shakedown fault ...`: inject, list and heal faults in an environment.

    shakedown fault inject kill web --env dev            # prints the fault id
    shakedown fault inject partition halves a b c d --env dev --duration 30
    shakedown fault inject pause scheduler-leader --env dev --duration 10
    shakedown fault list --env dev --json
    shakedown fault heal f-0123456789ab --env dev
    shakedown fault heal-all --env dev

Agent faults (kill, stop, pause, restart, partition, latency) go to the agent that
holds the container (``--node`` narrows the search), in the caller's persistent
session ``cli-faults`` on that node: it has no TTL and is never reaped, so a fault
from the CLI lasts until ``fault heal``/``heal-all`` or its ``--duration``.
Component faults (agent-stop, pause/kill of a component, coredns-stop) need
``--env`` of a local environment; ``kill`` and ``pause`` act on a component when
the name is one (etcd, coredns, scheduler-leader, a node or component name),
otherwise on a container.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driver.cli import CliError
from driver.cli.output import jsonable, print_json, table

if TYPE_CHECKING:
    from driver.client import AgentClient
    from driver.env import Environment
    from driver.faults.types import Fault, FaultSpec

SESSION = "cli-faults"
AGENT_KINDS = ("kill", "stop", "pause", "restart", "partition", "latency")
COMPONENT_KINDS = ("agent-stop", "coredns-stop")


@dataclass
class Target:
    env: Environment | None
    clients: dict[str, AgentClient]


@contextmanager
def _target(args: argparse.Namespace) -> Iterator[Target]:
    from driver.env import EnvError, Environment
    from driver.inventory import InventoryError, load_inventory

    if bool(args.env) == bool(args.inventory):
        raise CliError("give --env NAME or --inventory FILE (one of them)")
    env = None
    try:
        if args.env:
            env = Environment.load(args.env, base=args.base)
            inv = env.inventory()
        else:
            inv = load_inventory(args.inventory)
        if args.node and args.node not in inv.names:
            raise CliError(f"--node {args.node!r}: not in the inventory "
                           f"({', '.join(inv.names)})")
        clients = inv.clients([args.node] if args.node else None, timeout=args.timeout)
    except (EnvError, InventoryError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    try:
        yield Target(env, clients)
    finally:
        for c in clients.values():
            c.close()
        if env is not None:
            env.close()


@contextmanager
def _errors() -> Iterator[None]:
    """Bad input (a field named) exits 2; an agent or environment that failed exits 1."""
    from driver.env import EnvError
    from driver.env.faults import FaultError
    from shakedown.errors import InvalidArgument, NotFound, ShakedownError

    try:
        yield
    except FaultError as exc:
        raise CliError(f"{exc.field}: {exc}") from None
    except (InvalidArgument, NotFound) as exc:
        raise CliError(str(exc)) from None
    except (EnvError, TimeoutError, OSError) as exc:
        raise CliError(str(exc), exit_code=1) from None
    except ShakedownError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}", exit_code=1) from None


def agent_doc(fault: Fault, node: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"scope": "agent", "node": node, **jsonable(fault)}
    return doc


def _is_component(t: Target, name: str) -> bool:
    from driver.env.faults import LEADER

    env = t.env
    return (env is not None and env.state.kind == "local"
            and (name == LEADER or name in env.state.components or bool(env.component_of(name))))


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CliError(f"{field} {value!r}: not a whole number") from None


def _spec(args: argparse.Namespace, t: Target) -> tuple[str, FaultSpec]:
    from driver.faults.context import locate, place, shape
    from driver.faults.types import FaultSpec

    kind, rest, d = args.kind, args.args, args.duration
    if kind == "partition":
        if len(rest) < 2:
            raise CliError("partition SHAPE CONTAINER...: give a shape (isolate, halves, "
                           "bridge, ring) and the containers")
        node, grudge = place(t.clients, shape(rest[0], rest[1:]))
        return node, FaultSpec.partition(grudge, duration=d)
    if kind == "latency":
        if len(rest) != 3:
            raise CliError("latency CONTAINER PORT MS: three arguments")
        if not hasattr(FaultSpec, "latency"):
            raise CliError("latency: this build has no proxy faults", exit_code=1)
        port, ms = _int(rest[1], "PORT"), _int(rest[2], "MS")
        return locate(t.clients, rest[0]), FaultSpec.latency(
            rest[0], port, ms, jitter_ms=args.jitter, duration=d)
    if len(rest) != 1:
        raise CliError(f"{kind} CONTAINER: one container name or id")
    name = rest[0]
    node = locate(t.clients, name)
    if kind == "kill":
        return node, FaultSpec.kill(name, args.signal or "", duration=d)
    if kind == "stop":
        return node, FaultSpec.stop(name, duration=d)
    if kind == "pause":
        return node, FaultSpec.pause(name, duration=d)
    if d:
        raise CliError("--duration: restart has nothing to undo")
    return node, FaultSpec.restart(name)


def cmd_inject(args: argparse.Namespace) -> int:
    from driver.faults.client import inject_fault

    if args.duration < 0:
        raise CliError(f"--duration {args.duration}: must not be negative")
    if args.signal and args.kind != "kill":
        raise CliError(f"--signal: only for kill, not {args.kind}")
    with _target(args) as t, _errors():
        name = args.args[0] if args.args else ""
        component = args.kind in COMPONENT_KINDS or (
            args.kind in ("kill", "pause") and len(args.args) == 1 and _is_component(t, name))
        if args.kind in ("stop", "restart") and len(args.args) == 1 and _is_component(t, name):
            raise CliError(f"{args.kind} {name!r}: that is a component, not a container; use "
                           "agent-stop NODE, coredns-stop, or pause/kill COMPONENT")
        if component:
            if t.env is None:
                raise CliError(f"{args.kind}: a component fault needs --env (a local "
                               "environment)")
            if len(args.args) > 1 or (args.kind != "coredns-stop" and not name):
                raise CliError(f"{args.kind} COMPONENT: one component name")
            fault = t.env.faults.inject(args.kind, name, duration=args.duration,
                                        signal=args.signal or "")
            print_json(fault.doc()) if args.json else print(fault.id)
            return 0
        node, spec = _spec(args, t)
        client = t.clients[node]
        session = client.open_session(persistent=True, name=SESSION)
        got = inject_fault(client, session, spec)
    print_json(agent_doc(got, node)) if args.json else print(got.id)
    return 0


def _components(t: Target) -> list[Any]:
    return t.env.faults.list() if t.env is not None and t.env.state.kind == "local" else []


def _reachable(t: Target, components: list[Any]) -> dict[str, AgentClient]:
    """The nodes whose agent no component fault holds down or frozen (asking a frozen agent
    would wait out the deadline); the others are named on stderr."""
    comps = t.env.state.components if t.env is not None else {}
    held = {comps[f.component].node: f for f in components
            if f.component in comps and comps[f.component].kind == "agent"}
    for node, f in held.items():
        if node in t.clients:
            print(f"shakedown: node {node}: its agent is under fault {f.id} ({f.kind}); "
                  "its agent faults are not listed", file=sys.stderr)
    return {n: c for n, c in t.clients.items() if n not in held}


def cmd_list(args: argparse.Namespace) -> int:
    from driver.fanout import fan_out
    from driver.faults.client import list_faults

    with _target(args) as t, _errors():
        components = _components(t)
        results = fan_out(_reachable(t, components), lambda c: list_faults(c))
        docs = [agent_doc(f, n) for n, fs in results.succeeded.items() for f in fs or ()]
        docs += [f.doc() for f in components]
        failed = results.failed
    if args.json:
        print_json(docs)
    elif docs:
        print(table(("ID", "SCOPE", "KIND", "WHERE", "TARGETS", "STARTED", "EXPIRES"),
                    [(d["id"], d["scope"], d["kind"], d.get("node") or d.get("component"),
                      ",".join(x[:12] for x in d.get("targets", ())) or d.get("requested", ""),
                      (d["started_at"] or "")[:19], (d["expires_at"] or "-")[:19])
                     for d in docs]))
    else:
        print("no active faults")
    for node, exc in failed.items():
        print(f"shakedown: node {node}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_heal(args: argparse.Namespace) -> int:
    from driver.faults.client import heal_fault
    from shakedown.errors import NotFound

    fid = args.id
    with _target(args) as t, _errors():
        if fid.startswith("c-"):
            if t.env is None:
                raise CliError(f"{fid}: a component fault; give --env")
            doc = t.env.faults.heal(fid).doc()
        else:
            doc = None
            for node, client in _reachable(t, _components(t)).items():
                try:
                    doc = agent_doc(heal_fault(client, fid), node)
                    break
                except NotFound:
                    continue
            if doc is None:
                raise CliError(f"no fault {fid!r} on {', '.join(t.clients)}")
    print_json(doc) if args.json else print(f"healed {fid}")
    return 0


def cmd_heal_all(args: argparse.Namespace) -> int:
    from driver.fanout import fan_out
    from driver.faults.client import heal_all

    with _target(args) as t, _errors():
        # Components first: an agent that was stopped or frozen answers again after.
        healed = ([f.doc() for f in t.env.faults.heal_all()]
                  if t.env is not None and _components(t) else [])
        results = fan_out(t.clients, lambda c: heal_all(c))  # every session's, on each node
        docs = [agent_doc(f, n) for n, fs in results.succeeded.items() for f in fs or ()]
        docs += healed
    if args.json:
        print_json(docs)
    else:
        print(f"healed {len(docs)} fault(s)" + "".join(f"\n  {d['id']} ({d['kind']})"
                                                        for d in docs))
    for node, exc in results.failed.items():
        print(f"shakedown: node {node}: {exc}", file=sys.stderr)
    return 1 if results.failed else 0


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("where")
    g.add_argument("--env", metavar="NAME", help="an environment (shakedown env create)")
    g.add_argument("--base", type=Path, metavar="DIR", help="where environments live")
    g.add_argument("--inventory", type=Path, metavar="FILE", help="agents of an inventory "
                   "(agent faults only)")
    g.add_argument("--node", metavar="NAME", help="only this node's agent")
    g.add_argument("--timeout", type=float, default=30.0, metavar="SECS",
                   help="per-call deadline (default 30)")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    parser = subparsers.add_parser("fault", help="inject, list and heal faults",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="fault_command", metavar="COMMAND", required=True)
    kinds = (*AGENT_KINDS, *COMPONENT_KINDS)
    p = sub.add_parser("inject", parents=[common], help="inject one fault; prints its id",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=kinds, metavar="KIND", help=", ".join(kinds))
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="CONTAINER | COMPONENT | NODE | SHAPE CONTAINER... | CONTAINER PORT MS")
    p.add_argument("--duration", type=int, default=0, metavar="SECS",
                   help="heal after SECS (default: only when healed)")
    p.add_argument("--signal", "-s", metavar="SIG", help="kill: the signal (default KILL)")
    p.add_argument("--jitter", type=int, default=0, metavar="MS", help="latency: jitter")
    p.set_defaults(func=cmd_inject)
    p = sub.add_parser("list", parents=[common], help="active agent and component faults")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("heal", parents=[common], help="heal one fault by id")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_heal)
    p = sub.add_parser("heal-all", parents=[common],
                       help="heal every fault: all sessions' on the nodes, and the components'")
    p.set_defaults(func=cmd_heal_all)
