"""`shakedown keys`: manage the HMAC keyring. Prints key ids, never secrets."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path

from driver.cli import CliError
from shakedown import keyring
from shakedown.keyring import Key, Keyring, KeyringError
from shakedown.pkilayout import PkiLayoutError, check_name


def _principal(name: str, flag: str = "--principal") -> str:
    try:
        return check_name("principal", name)
    except PkiLayoutError as exc:
        raise CliError(f"{flag} {name}: {exc}") from None


def _load(path: Path) -> Keyring:
    if not path.exists():
        raise CliError(f"{path}: no keyring; create one with `shakedown keys init {path}`")
    try:
        return keyring.load(path)
    except KeyringError as exc:
        raise CliError(str(exc)) from None



def _new_key(ring: Keyring, principal: str, key_id: str | None, flag: str) -> Key:
    try:
        key = keyring.generate_key(principal, key_id)
    except KeyringError as exc:
        raise CliError(f"{flag}: {exc}") from None
    if ring.get(key.id) is not None:
        raise CliError(f"{flag} {key.id}: key id already in the keyring")
    # signing_key() picks the newest `created`; within one second the new key
    # would tie with the old and lose, so make it strictly newer.
    newest = max((k.created for k in ring.keys if k.principal == principal), default=0)
    if key.created <= newest:
        key = dataclasses.replace(key, created=newest + 1)
    return key


def _row(key: Key) -> str:
    created = dt.datetime.fromtimestamp(key.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = "active" if key.active else "retired"
    return f"{key.id:<28} {key.principal:<16} {state:<8} {created}"


def _public(key: Key) -> dict[str, object]:
    return {"id": key.id, "principal": key.principal, "active": key.active,
            "created": key.created}


def cmd_init(args: argparse.Namespace) -> int:
    path: Path = args.file
    principals = [_principal(p) for p in (args.principal or ["driver"])]
    if len(set(principals)) != len(principals):
        raise CliError(f"--principal: given twice in {principals}")
    if path.exists() and not args.force:
        raise CliError(f"{path}: exists; pass --force to replace it (every signer needs the "
                       "new keys afterwards)")
    ring = keyring.new_keyring(principals)
    keyring.save(ring, path)
    print(f"wrote {path} (mode 0600)")
    for key in ring.keys:
        print(f"  {_row(key)}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    path: Path = args.file
    ring = _load(path)
    principal = _principal(args.principal)
    key = _new_key(ring, principal, args.key_id, "--key-id")
    keyring.save(ring.with_key(key), path)
    print(f"added {_row(key)}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    path: Path = args.file
    ring = _load(path)
    principal = _principal(args.principal)
    old = [k for k in ring.keys if k.principal == principal and k.active]
    if not old:
        raise CliError(f"--principal {principal}: no active key in {path} to rotate; "
                       "use `keys add`")
    key = _new_key(ring, principal, None, "--principal")
    keyring.save(ring.with_key(key), path)
    print(f"added {_row(key)}")
    ids = " ".join(k.id for k in old)
    print(f"still active for overlap: {ids}")
    print(f"once every agent has the new keyring: shakedown keys retire {path} KEY_ID")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    path: Path = args.file
    ring = _load(path)
    target = ring.get(args.key_id)
    if target is None:
        raise CliError(f"KEY_ID {args.key_id}: not in {path}")
    if not target.active:
        print(f"{target.id} already retired")
        return 0
    keys = tuple(dataclasses.replace(k, active=False) if k.id == target.id else k
                 for k in ring.keys)
    keyring.save(Keyring(keys), path)
    print(f"retired {target.id}")
    if not any(k.active and k.principal == target.principal for k in keys):
        print(f"warning: principal {target.principal} has no active key left")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    path: Path = args.file
    ring = _load(path)
    if args.json:
        print(json.dumps({"file": str(path), "keys": [_public(k) for k in ring.keys]}, indent=2))
        return 0
    print(f"{'KEY ID':<28} {'PRINCIPAL':<16} {'STATE':<8} CREATED")
    for key in ring.keys:
        print(_row(key))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keys", help="manage the HMAC keyring")
    sub = parser.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create a keyring with one key per principal")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--principal", action="append", metavar="NAME",
                   help="repeatable; default: driver")
    p.add_argument("--force", action="store_true", help="replace an existing keyring")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("add", help="add a key for a principal")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--principal", required=True, metavar="NAME")
    p.add_argument("--key-id", metavar="ID")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("rotate", help="add a new active key; older keys stay active for overlap")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--principal", required=True, metavar="NAME")
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser("retire", help="mark a key inactive")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_retire)

    p = sub.add_parser("list", help="key ids, principals and states (no secrets)")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
