"""iptables inside one container's network namespace, never the host's.

Every command runs as ``nsenter -t PID -n``: only the network namespace is
entered, so the host's binaries run against the container's tables. A fault
owns one chain; adding and removing it are single ``iptables-restore
--noflush`` batches, atomic per namespace, that touch nothing else (no flush
of any built-in chain, unlike Jepsen's ``iptables -F``).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Sequence

from shakedown.errors import FailedPrecondition

HOOKS = ("INPUT", "OUTPUT")
# What iptables-save prints for a filter table nobody has added to (nf_tables).
PRISTINE_FILTER = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                   ":OUTPUT ACCEPT [0:0]", "COMMIT"]

# Deletes the ip "filter" table over nfnetlink: iptables cannot remove a table,
# and the nft binary is not always installed. Run inside the namespace.
_DELETE_TABLE = r"""
import socket, struct
NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE, BEGIN, END = 10, 2, 0x10, 0x11
REQ, ACK = 1, 4
def msg(kind, flags, seq, family, res, payload=b""):
    body = struct.pack("=BBH", family, 0, socket.htons(res)) + payload
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
name = b"filter\0"
attr = struct.pack("=HH", 4 + len(name), 1) + name
attr += b"\0" * (-len(attr) % 4)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
s.send(msg(BEGIN, REQ, 1, 0, NFNL_SUBSYS_NFTABLES)
       + msg(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE, REQ | ACK, 2, 2, 0, attr)
       + msg(END, REQ, 3, 0, NFNL_SUBSYS_NFTABLES))
data = s.recv(65536)
kind = struct.unpack_from("=H", data, 4)[0]
err = struct.unpack_from("=i", data, 16)[0] if kind == 2 else 0
raise SystemExit(0 if err == 0 else f"netlink error {-err}")
"""


class NetnsError(FailedPrecondition):
    """An iptables command in a container's namespace failed."""


def available() -> tuple[bool, str]:
    """Can this node apply partitions? (binaries present; the caller checks privileges)."""
    missing = [b for b in ("nsenter", "iptables", "iptables-save", "iptables-restore")
               if shutil.which(b) is None]
    if missing:
        return False, f"missing binaries: {', '.join(missing)}"
    return True, f"nsenter + {shutil.which('iptables')} in each container's network namespace"


async def _run(pid: int, args: Sequence[str], stdin: bytes | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nsenter", "-t", str(pid), "-n", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        raise NetnsError(f"{args[0]} in the network namespace of pid {pid} failed "
                         f"({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode()


async def save(pid: int, table: str | None = None) -> str:
    """iptables-save of the namespace, without its timestamped comment lines."""
    out = await _run(pid, ["iptables-save", *(["-t", table] if table else [])])
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))


async def filter_lines(pid: int) -> list[str]:
    """The filter table's lines; [] when the namespace has none. (Not ``-t filter``:
    with nf_tables that prints built-in chains even for a table that does not exist.)"""
    out, lines = (await save(pid)).splitlines(), []
    for line in out[out.index("*filter"):] if "*filter" in out else ():
        lines.append(line)
        if line == "COMMIT":
            break
    return lines


async def has_filter(pid: int) -> bool:
    return bool(await filter_lines(pid))


async def add_chain(pid: int, chain: str, peers: Sequence[str]) -> None:
    """Create ``chain`` dropping traffic from and to ``peers``, jumped to first from
    INPUT and OUTPUT (creating the filter table if the namespace has none)."""
    rules = [f":{chain} - [0:0]"]
    for peer in peers:
        rules += [f"-A {chain} -s {peer} -j DROP", f"-A {chain} -d {peer} -j DROP"]
    rules += [f"-I {hook} 1 -j {chain}" for hook in HOOKS]
    batch = "\n".join(["*filter", *rules, "COMMIT", ""]).encode()
    await _run(pid, ["iptables-restore", "--noflush"], batch)


async def remove_chain(pid: int, chain: str, drop_table: bool) -> tuple[str, bool]:
    """Remove ``chain`` and the jumps to it, whatever of them is left (idempotent).
    With ``drop_table``, also delete the filter table when nothing else is in it, so
    the namespace is exactly as before the first fault. Returns what was done, and
    whether the table is still owed a removal (another fault's rules keep it)."""
    lines = await filter_lines(pid)
    present = f":{chain} - " in "\n".join(lines) or any(
        line.startswith(f":{chain} ") for line in lines)
    ops = [f"-D {hook} -j {chain}" for hook in HOOKS
           if f"-A {hook} -j {chain}" in lines]
    if present:
        ops += [f"-F {chain}", f"-X {chain}"]
    if ops:
        batch = "\n".join(["*filter", *ops, "COMMIT", ""]).encode()
        await _run(pid, ["iptables-restore", "--noflush"], batch)
    note = "chain removed" if present else "chain already gone"
    if drop_table and lines:
        if await filter_lines(pid) != PRISTINE_FILTER:
            return note + "; filter table kept (other rules in it)", True
        await _run(pid, [sys.executable, "-c", _DELETE_TABLE])
        note += "; filter table removed (it did not exist before)"
    return note, False
