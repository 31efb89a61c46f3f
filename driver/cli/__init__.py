"""The `shakedown` command line: one module per command group.

Each group module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (taking the parsed namespace, returning an exit code) on every
leaf command. Errors meant for the user are raised as ``CliError`` and printed
without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each group's one-line help, for `shakedown --help` without importing the group
# (tests check these equal what each module registers).
GROUP_HELP = {
    "agent": "talk to node agents",
    "certs": "create and inspect the test PKI",
    "keys": "manage the HMAC keyring",
    "discover": "register, resolve and watch services (CoreDNS + etcd)",
    "env": "local and remote test environments",
    "verify": "verify the authentication or the discovery of a system",
    "grpc": "list, describe and call gRPC services through reflection",
    "fault": "inject, list and heal faults",
    "fuzz": "generated workloads and faults, checked and shrunk",
}
GROUPS = tuple(GROUP_HELP)


class CliError(Exception):
    """A user-facing error: printed as ``shakedown: <message>``, exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _group_of(argv: Sequence[str]) -> str | None:
    """The command group named on the command line (the first non-option word)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; given `argv`, only the group it names is built in full.

    Importing and building all groups costs ~50 ms, paid by every command.
    """
    parser = argparse.ArgumentParser(
        prog="shakedown",
        description="End-to-end and fault-injection test driver for distributed container systems.",
        epilog="exit codes: 0 success, 1 a failed call or check, 2 a usage error, "
        "3 an image that could not be pulled (agent run)",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    wanted = None if argv is None else _group_of(argv) or ""
    for name in GROUPS:
        if wanted is None or name == wanted:
            importlib.import_module(f"driver.cli.{name}").register(sub)
        else:  # a stand-in: only its name and help are used
            sub.add_parser(name, help=GROUP_HELP[name])
    return parser


class _VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"shakedown {_version()}")
        parser.exit(0)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("shakedown")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0"


def quiet_grpc_core() -> None:
    """Keep gRPC core's own stderr lines (``E0000 ...``) out of our output.

    Read once when grpc is first imported, so this runs before any import of it;
    a value the user set is theirs to keep.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_grpc_core()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([*argv, "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"shakedown: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from shakedown.errors import ShakedownError  # imports grpc: only when it is needed

        if not isinstance(exc, ShakedownError):
            raise
        print(f"shakedown: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
