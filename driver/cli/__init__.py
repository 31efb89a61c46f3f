"""The `shakedown` command line: one module per command group.

Each group module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (taking the parsed namespace, returning an exit code) on every
leaf command. Errors meant for the user are raised as ``CliError`` and printed
without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from shakedown.errors import ShakedownError

GROUPS = ("agent", "certs", "keys", "discover", "env", "verify", "grpc")


class CliError(Exception):
    """A user-facing error: printed as ``shakedown: <message>``, exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shakedown",
        description="End-to-end and fault-injection test driver for distributed container systems.",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(f"driver.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"shakedown: {exc}", file=sys.stderr)
        return exc.exit_code
    except ShakedownError as exc:
        print(f"shakedown: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
