"""`shakedown fuzz`: generated workloads and faults against an environment, shrunk failures.

Exit codes as Jepsen's: 0 valid, 1 invalid (a failure, shrunk and saved), 2
unknown (a checker ran out of time, or the run broke before a verdict) — and
2 for a usage error, which is printed as one. ``--replay FILE`` runs a saved
artifact 5 times: 1 if it still fails, 0 if it no longer does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from driver.cli import CliError

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def budget_seconds(text: str) -> float:
    """"90", "90s", "5m", "1.5h" -> seconds."""
    m = _BUDGET_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"--budget {text!r}: want a positive duration such as 90s, 5m or 1h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def _positive(flag: str) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n <= 0:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: want a positive integer")
        return n
    return parse


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want a fraction in (0, 1], e.g. 0.7")
    return share


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fuzz", help="generated workloads and faults, checked and shrunk",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--env", required=True, metavar="NAME", help="the environment to fuzz")
    p.add_argument("--base", type=Path, metavar="DIR", help="where environments live")
    p.add_argument("--budget", type=budget_seconds, default=120.0, metavar="DURATION",
                   help="wall time for search and shrink together (default 2m)")
    p.add_argument("--search-share", type=_share, default=0.5, metavar="FRACTION",
                   help="the share of the budget the search may use; shrinking gets the "
                   "rest once a failure is found (default 0.5; 1 for a search-only run)")
    p.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    p.add_argument("--steps", type=_positive("--steps"), default=10,
                   help="steps per example at most (default 10)")
    p.add_argument("--examples", type=_positive("--examples"), default=500,
                   help="examples at most (default 500: the budget is what ends a run)")
    p.add_argument("--window", type=float, default=60.0, metavar="SECONDS",
                   help="how long the system gets to converge after a heal, at most "
                   "(default 60); once it says it is done, the agents must agree within 8 s")
    p.add_argument("--faults", default=None, metavar="KIND,...",
                   help="only these fault kinds (default: all the environment supports)")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE",
                   help="run a saved replay.json again (5 times) instead of searching")
    p.add_argument("--times", type=_positive("--times"), default=5,
                   help="runs of --replay (default 5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _env(args: argparse.Namespace) -> Any:
    from driver.env import EnvError, Environment

    try:
        return Environment.load(args.env, base=args.base)
    except EnvError as exc:
        raise CliError(str(exc)) from None


def _kinds(text: str) -> frozenset[str]:
    from driver.fuzz.strategies import COMPONENT_FAULTS, CONTAINER_FAULTS

    known = (*CONTAINER_FAULTS, "partition", *COMPONENT_FAULTS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    bad = sorted(kinds - set(known))
    if bad:
        raise CliError(f"--faults: unknown kind {', '.join(bad)} (known: {', '.join(known)})")
    return kinds


def run(args: argparse.Namespace) -> int:
    env = _env(args)
    if args.replay is not None:
        return _replay(env, args)
    from driver.fuzz.progress import Progress
    from driver.fuzz.runner import FuzzConfig, run_fuzz

    kinds = _kinds(args.faults) if args.faults is not None else None
    if args.window <= 0:
        raise CliError(f"--window {args.window:g}: want a positive number of seconds")
    cfg = FuzzConfig(budget_s=args.budget, seed=args.seed, steps=args.steps,
                     examples=args.examples, window=args.window, kinds=kinds,
                     search_share=args.search_share)
    try:
        with Progress(args.budget, enabled=sys.stderr.isatty() and not args.json) as bar:
            result = run_fuzz(env, cfg, on_step=bar.update)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return result.exit_code
    verdict = {True: "valid", False: "INVALID", "unknown": "unknown"}[result.valid]
    print(f"fuzz {env.name}: {verdict} after {s['examples']} example(s), {s['steps']} step(s), "
          f"{s['elapsed_s']} s (budget {s['budget']['total_s']:g} s: search "
          f"{s['budget']['search_s']:g} s, shrink the rest)")
    print(f"seed: {result.seed}")
    if s.get("inconclusive"):
        print(f"{s['inconclusive']} example(s) proved nothing: the system answered none of "
              "their writes")
    if result.program:
        print(f"shrunk to {s['shrunk_steps']} step(s):")
        for v in s["violations"]:
            print(f"  violated: {v}")
        print(result.program, end="")
        print(f"replay: shakedown fuzz --env {env.name} --replay {result.artifact}")
    if s.get("error"):
        print(f"the run broke before a verdict: {s['error']}")
    print(f"report: {result.report}")
    print(f"history, results: {result.reports_dir}")
    return result.exit_code


def _replay(env: Any, args: argparse.Namespace) -> int:
    from driver.fuzz.program import Artifact
    from driver.fuzz.replay import replay
    from driver.fuzz.runner import reports_dir

    try:
        art = Artifact.load(args.replay)
    except ValueError as exc:
        raise CliError(f"--replay: {exc}") from None
    out = reports_dir(env.paths.root)
    r = replay(env, art, times=args.times, out=out)
    doc = {"artifact": str(args.replay), "runs": r.runs, "failed": r.failed,
           "still_fails": r.still_fails, "flake_rate": r.flake_rate,
           "inconclusive": r.inconclusive,
           "violations": r.violations, "errors": r.errors, "reports_dir": str(out)}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        state = "still fails" if r.still_fails else "no longer fails"
        print(f"replay of {args.replay}: {state} in {r.failed}/{r.conclusive} conclusive "
              f"run(s) of {r.runs} (flake rate {r.flake_rate:.0%})")
        for e in r.errors:
            print(f"  error: {e}")
    if r.errors and not r.failed:
        return 2
    return 1 if r.still_fails else 0
