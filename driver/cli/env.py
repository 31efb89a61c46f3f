"""`shakedown env ...`: create, inspect, heal and destroy test environments."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from driver.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("env", help="local and remote test environments")
    esub = parser.add_subparsers(dest="env_command", metavar="ACTION", required=True)

    def add(
        name: str,
        help: str,
        func: Callable[[argparse.Namespace], int],
        *,
        env_name: bool = True,
        json_out: bool = False,
    ) -> argparse.ArgumentParser:
        p = esub.add_parser(name, help=help, description=help)
        if env_name:
            p.add_argument("name", metavar="NAME")
        p.add_argument(
            "--base",
            type=Path,
            metavar="DIR",
            help="where environments live (default $SHAKEDOWN_HOME/envs or "
            "~/.local/share/shakedown/envs)",
        )
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    create = add(
        "create",
        "create (or heal) an environment and start it, detached",
        run_create,
        json_out=True,
    )
    create.add_argument(
        "--nodes",
        type=int,
        help="agents to run (default 3); an existing environment keeps its size: to change "
        "it, `env destroy` it first",
    )
    create.add_argument(
        "--schedulers",
        type=int,
        help="reference scheduler replicas to run (default 2; 0: none)",
    )
    create.add_argument(
        "--scheduler-bug",
        action="append",
        metavar="NAME",
        dest="scheduler_bugs",
        help="start every scheduler replica with this planted bug (repeatable; e.g. "
        "skip-orphan-gc, dual-leader, blind-write): a deliberately wrong system, for testing "
        "that checkers find bugs",
    )
    create.add_argument(
        "--inventory",
        type=Path,
        metavar="FILE",
        help="remote nodes whose agents already run: record the config only",
    )
    create.add_argument(
        "--compose",
        action="store_true",
        help="run the stack of docker-compose.e2e.yml (locally built images: "
        "scripts/build-images.sh) instead of local processes",
    )
    add("list", "list environments", run_list, env_name=False, json_out=True)
    add(
        "status",
        "health, CPU/RSS and container counts of every component",
        run_status,
        json_out=True,
    )
    add("start", "start what is down (heals a half-broken environment)", run_start, json_out=True)
    add("stop", "stop every component; data is kept", run_stop, json_out=True)
    add(
        "destroy",
        "stop everything and remove its processes, containers, networks and files",
        run_destroy,
        json_out=True,
    )
    logs = add("logs", "print a component's log (or list the logs)", run_logs)
    logs.add_argument("component", nargs="?", help="etcd, coredns, or an agent's node name")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing what is appended (Ctrl-C ends)"
    )
    test = add(
        "test",
        "run the bundled suites against the environment; reports in reports/",
        run_test,
        json_out=True,
    )
    test.add_argument("--suites", help="comma-separated suite names (default: all)")
    test.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A live status line on a terminal; plain lines otherwise; silent for --json."""
    if not enabled:
        yield lambda _msg: None
        return
    if not sys.stderr.isatty():
        yield lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)
        return
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("working...") as status:
        started = time.monotonic()

        def update(msg: str) -> None:
            console.log(msg)
            status.update(f"{msg} ({time.monotonic() - started:.1f}s)")

        yield update


def _load(args: argparse.Namespace) -> Any:
    from driver.env import EnvError, Environment

    try:
        return Environment.load(args.name, base=args.base)
    except EnvError as exc:
        raise CliError(str(exc)) from None


def _emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if getattr(args, "json", False) else text)


def _status_table(st: Any) -> str:
    rows = [("COMPONENT", "STATE", "ADDRESS", "PID", "CPU%", "RSS", "CONTAINERS", "VERSION")]
    for c in st.components:
        rows.append(
            (
                c.name,
                c.state + (f" ({c.role})" if c.role else ""),
                c.address,
                str(c.pid or "-"),
                "-" if c.cpu_percent is None else f"{c.cpu_percent:.1f}",
                "-" if c.rss_bytes is None else f"{c.rss_bytes / 2**20:.0f} MiB",
                "-" if c.containers is None else str(c.containers),
                c.version[:30],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    head = f"environment {st.name} ({st.kind}, {st.root}): {st.verdict}"
    if any(c.kind == "scheduler" for c in st.components):
        head += f"; scheduler leader: {', '.join(st.leaders) or 'none'}"
    if st.scheduler_bugs:
        head += f"\nPLANTED SCHEDULER BUGS: {', '.join(st.scheduler_bugs)}"
    return "\n".join([head, *lines, *(f"! {p}" for p in st.problems())])


def run_create(args: argparse.Namespace) -> int:
    from driver.env import EnvError, Environment
    from driver.env.environment import MAX_NODES, MAX_SCHEDULERS
    from driver.env.state import check_name

    try:  # usage errors (2) before anything is touched
        check_name(args.name)
    except EnvError as exc:
        raise CliError(str(exc)) from None
    if args.nodes is not None and not 1 <= args.nodes <= MAX_NODES:
        raise CliError(f"--nodes {args.nodes}: must be between 1 and {MAX_NODES}")
    if args.schedulers is not None and not 0 <= args.schedulers <= MAX_SCHEDULERS:
        raise CliError(f"--schedulers {args.schedulers}: must be between 0 and {MAX_SCHEDULERS}")
    if args.schedulers is not None and args.inventory:
        raise CliError("--schedulers: not with --inventory (a remote environment is config only)")
    if args.nodes is not None and args.inventory:
        raise CliError("--nodes: not with --inventory (the inventory names the nodes)")
    if args.scheduler_bugs and (args.inventory or args.schedulers == 0):
        raise CliError("--scheduler-bug: needs local scheduler replicas "
                       "(not with --inventory or --schedulers 0)")
    if args.scheduler_bugs:
        from driver.env.local import check_scheduler_bugs

        try:
            check_scheduler_bugs(args.scheduler_bugs)
        except EnvError as exc:
            raise CliError(str(exc)) from None
    if args.compose and (args.inventory or args.nodes is not None or args.schedulers is not None
                         or args.scheduler_bugs):
        raise CliError("--compose: not with --inventory, --nodes, --schedulers or --scheduler-bug "
                       "(docker-compose.e2e.yml fixes 3 agents and 2 scheduler replicas)")
    env: Environment
    try:
        with _progress(not args.json) as progress:
            if args.compose:
                from driver.env.compose import ComposeEnvironment

                env = ComposeEnvironment.create_compose(args.name, base=args.base,
                                                        progress=progress)
            elif args.inventory:
                env = Environment.create_remote(args.name, args.inventory, base=args.base)
            else:
                env = Environment.create(
                    args.name, nodes=args.nodes, schedulers=args.schedulers, base=args.base,
                    progress=progress, scheduler_bugs=args.scheduler_bugs,
                )
    except (EnvError, TimeoutError, OSError, ValueError) as exc:
        raise CliError(f"env create {args.name}: {exc}", exit_code=1) from None
    st = env.status()
    env.close()
    text = _status_table(st)
    if env.dns:
        text += (
            f"\n\ninventory: {env.paths.inventory}\ndiscovery: --dns {env.dns} "
            f"--etcd {env.etcd} --domain {env.domain}"
        )
    _emit(args, st.to_json(), text)
    return 0 if st.healthy else 1


def run_list(args: argparse.Namespace) -> int:
    from driver.env import Environment

    envs = Environment.all(args.base)
    docs = [
        {
            "name": e.name,
            "kind": e.state.kind,
            "root": str(e.paths.root),
            "created_at": e.state.created_at,
            "components": len(e.state.components),
            "running": e.running_count() if hasattr(e, "running_count") else sum(
                1
                for c in e.state.components.values()
                if (p := c.managed()) is not None and p.alive()
            ),
        }
        for e in envs
    ]
    lines = [
        f"{d['name']:<20} {d['kind']:<7} {d['running']}/{d['components']} running  {d['root']}"
        for d in docs
    ] or ["no environments"]
    _emit(args, docs, "\n".join(lines))
    return 0


def run_status(args: argparse.Namespace) -> int:
    env = _load(args)
    st = env.status()
    env.close()
    _emit(args, st.to_json(), _status_table(st))
    return 0 if st.healthy else 1


def run_start(args: argparse.Namespace) -> int:
    from driver.env import EnvError

    env = _load(args)
    try:
        with _progress(not args.json) as progress:
            started = env.start(progress)
    except (EnvError, TimeoutError, OSError) as exc:
        raise CliError(f"env start {args.name}: {exc}", exit_code=1) from None
    st = env.status()
    env.close()
    healed = "".join(f"healed fault {f.id} ({f.kind} {f.component}): {f.heal_note}\n"
                     for f in env.healed)
    _emit(
        args,
        {"started": started, "healed": [f.doc() for f in env.healed], "status": st.to_json()},
        healed + (f"started: {', '.join(started)}\n" if started else "nothing was down\n")
        + _status_table(st),
    )
    return 0 if st.healthy else 1


def run_stop(args: argparse.Namespace) -> int:
    env = _load(args)
    with _progress(not args.json) as progress:
        stopped = env.stop(progress)
    _emit(
        args,
        {"stopped": stopped},
        f"stopped: {', '.join(stopped)}" if stopped else "nothing was running",
    )
    return 0


def run_destroy(args: argparse.Namespace) -> int:
    from driver.env import Environment, EnvNotFound

    try:
        env = Environment.load(args.name, base=args.base)
    except EnvNotFound:
        _emit(args, {"destroyed": False}, f"no environment {args.name}: nothing to do")
        return 0
    with _progress(not args.json) as progress:
        env.destroy(progress)
    _emit(
        args,
        {"destroyed": True, "root": str(env.paths.root)},
        f"destroyed {args.name} ({env.paths.root})",
    )
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from driver.env import EnvError

    env = _load(args)
    if not args.component:
        for name in sorted(env.state.components):
            print(f"{name:<24} {env.paths.log(name)}")
        return 0
    try:
        path = env.log_path(args.component)
    except EnvError as exc:
        raise CliError(str(exc)) from None
    if not path.exists():
        raise CliError(f"{path}: no log yet", exit_code=1)
    with path.open("rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
        shown = lines[-args.tail :] if args.tail else lines
        if shown:
            print("\n".join(shown), flush=True)
        if args.follow:
            _follow(f)
    return 0


FOLLOW_POLL_S = 0.25  # how often `logs -f` looks for appended lines


def _follow(f: Any) -> None:
    """Print what is appended to an open log, like `tail -f`, until interrupted."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        chunk = f.read(65536)
        if chunk:
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
        else:
            time.sleep(FOLLOW_POLL_S)  # a file has no change notification we can rely on


def run_test(args: argparse.Namespace) -> int:
    from driver.suites.runner import run_suites

    env = _load(args)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports = env.paths.reports / stamp
    suites = [s.strip() for s in args.suites.split(",") if s.strip()] if args.suites else None
    try:
        run = run_suites(
            args.name,
            base=args.base,
            suites=suites,
            keyword=args.keyword,
            reports_dir=reports,
            echo=None if args.json else sys.stdout,
        )
    except ValueError as exc:
        raise CliError(f"--suites: {exc}") from None
    summary = json.loads(run.summary_path.read_text()) if run.summary_path.exists() else {}
    totals = summary.get("totals", {})
    table = ""
    if run.report_path.exists():
        from driver.reports.testrun import summary_table

        table = "\n" + summary_table(json.loads(run.report_path.read_text())) + "\n"
    text = (
        f"{table}\nsuccess rate {totals.get('success_rate') or 0:.0%} "
        f"({totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed, "
        f"{totals.get('skipped', 0)} skipped)\n"
        f"report: {run.report_path if run.report_path.exists() else '(none)'}\n"
        f"summary: {run.summary_path}\njunit:  {run.junit_path}"
    )
    _emit(args, summary, text)
    return int(run.exit_code)
