"""Latency and loss as a kernel netem qdisc inside a container's network namespace.

The second mechanism of a PROXY fault (``mechanism: "netem"``), where the kernel
has sch_netem: ``tc qdisc add dev IF root handle H: netem ...`` on every
interface of the target's namespace (``nsenter -t PID -n``, never the host's).
netem shapes a device's egress, so it delays and drops what the container
sends: downstream only, every connection (no toxicity), packets rather than
chunks (loss is packet loss, which TCP retransmits, not a dropped connection).
The qdisc's handle is the fault's, so healing deletes exactly that qdisc.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.faults.journal import Undo
from agent.faults.toxics import Toxic
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:  # agent.runtime imports nodeinfo, which imports this
    from agent.runtime import DockerRuntime

MECHANISM = "netem"
TYPES = ("latency", "loss")


@functools.cache
def probe() -> tuple[bool, str]:
    """Does netem work on this kernel? Tried in a scratch network namespace when we may
    (the truth), else read from the kernel config. Run once, at start."""
    tc = shutil.which("tc")
    if tc is None:
        return False, "tc binary not found"
    unshare = shutil.which("unshare")
    if unshare is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            res = subprocess.run([unshare, "-n", tc, "qdisc", "add", "dev", "lo", "root",
                                  "netem", "delay", "1ms"], capture_output=True, text=True,
                                 timeout=10)
            if res.returncode == 0:
                return True, f"{tc} qdisc netem (probed in a scratch network namespace)"
            if "unknown" in res.stderr.lower():
                return False, ("the kernel has no sch_netem (CONFIG_NET_SCH_NETEM not set or "
                               f"the module not loaded): {res.stderr.strip()}")
    if Path("/sys/module/sch_netem").exists():
        return True, f"{tc} qdisc netem (sch_netem loaded)"
    with contextlib.suppress(OSError):
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
        if "CONFIG_NET_SCH_NETEM=y" in config or "CONFIG_NET_SCH_NETEM=m" in config:
            return True, f"{tc} qdisc netem (CONFIG_NET_SCH_NETEM in the kernel config)"
        return False, "the kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set)"
    return False, "cannot tell whether the kernel has sch_netem (no scratch namespace, no config)"


def handle(fault_id: str) -> str:
    """A qdisc major handle from the fault id (1..ffff, hex)."""
    value = int(fault_id.removeprefix("f-")[:4], 16) or 1
    return f"{value:x}"


def check(toxics: Sequence[Toxic], where: str) -> None:
    """What netem can do of these toxics; the rest is refused naming the field."""
    if not toxics:
        raise InvalidArgument("a netem fault needs a latency or loss toxic", field=where)
    types = [t.type for t in toxics]
    for i, t in enumerate(toxics):
        at = f"{where}[{i}]"
        if t.type not in TYPES:
            raise InvalidArgument(f"netem does latency and loss, not {t.type} (use the proxy "
                                  "mechanism)", field=f"{at}.type")
        if types.count(t.type) > 1:
            raise InvalidArgument(f"netem takes one {t.type} toxic", field=f"{at}.type")
        if t.direction != "downstream":
            raise InvalidArgument("netem shapes the container's egress: downstream only",
                                  field=f"{at}.direction")
        if t.toxicity != 1:
            raise InvalidArgument("netem applies to every connection: toxicity must be 1",
                                  field=f"{at}.toxicity")


def args(toxics: Sequence[Toxic]) -> list[str]:
    out = ["netem"]
    for t in toxics:
        if t.type == "latency":
            out += ["delay", f"{int(t.get('latency_ms'))}ms"]
            if t.get("jitter_ms"):
                out.append(f"{int(t.get('jitter_ms'))}ms")
        elif t.type == "loss":
            out += ["loss", f"{t.get('probability') * 100:.4f}%"]
    return out


async def _run(pid: int, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nsenter", "-t", str(pid), "-n", *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise FailedPrecondition(f"{' '.join(argv[:3])} in the network namespace of pid {pid} "
                                 f"failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def devices(pid: int) -> list[str]:
    """The namespace's interfaces but lo (``ip -o link``: "2: eth0@if9: <...> ...")."""
    out = await _run(pid, "ip", "-o", "link", "show")
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    return [n for n in names if n != "lo"]


async def _ours(pid: int, dev: str, h: str) -> bool:
    return f"qdisc netem {h}: " in await _run(pid, "tc", "qdisc", "show", "dev", dev, "root")


async def apply(pid: int, h: str, toxics: Sequence[Toxic]) -> list[str]:
    """Add the qdisc on every interface (each added one is undone if a later one fails)."""
    devs = await devices(pid)
    if not devs:
        raise FailedPrecondition("the container has no network interface but lo")
    done: list[str] = []
    try:
        for dev in devs:
            await _run(pid, "tc", "qdisc", "add", "dev", dev, "root", "handle", f"{h}:",
                       *args(toxics))
            done.append(dev)
    except BaseException:
        await remove(pid, h)
        raise
    return done


async def change(pid: int, h: str, toxics: Sequence[Toxic]) -> None:
    for dev in await devices(pid):
        if await _ours(pid, dev, h):
            await _run(pid, "tc", "qdisc", "change", "dev", dev, "root", "handle", f"{h}:",
                       *args(toxics))


async def remove(pid: int, h: str) -> str:
    """Delete our qdisc wherever it is the root; idempotent."""
    removed = []
    for dev in await devices(pid):
        if await _ours(pid, dev, h):
            await _run(pid, "tc", "qdisc", "del", "dev", dev, "root", "handle", f"{h}:")
            removed.append(dev)
    return f"netem qdisc {h}: removed from {', '.join(removed)}" if removed \
        else "netem qdisc already gone"


async def undo(runtime: DockerRuntime, step: Undo) -> str:
    """Remove the fault's qdisc (handle in ``step.chain``) from its container; idempotent."""
    try:
        box = await runtime.inspect(step.container)
    except NotFound:
        return "container gone: its namespace and qdisc with it"
    if box.pid <= 0 or box.pid != step.pid:
        return "container not running (or restarted): its qdisc went with its namespace"
    return await remove(box.pid, step.chain)
