"""Start, watch and stop local processes, recorded by PID.

This is Shakedown's "control" layer for components that run on the driver's
own machine (etcd, CoreDNS, agents). A process may outlive the Python process
that started it (`detach=True`), so everything here works from a PID plus the
recorded argv rather than from a `Popen` object; when the process *is* our
child we also keep the `Popen` so it is reaped and never lingers as a zombie.

Stopping is by PID only, and only after checking that /proc/<pid>/cmdline still
starts with the argv[0] we recorded: a PID recycled by the kernel for an
unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Our own children, so alive()/stop() can reap them (waitpid) instead of
# leaving zombies that look alive to kill(pid, 0).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ManagedProcess:
    """What we record about a started process; enough to stop it later."""

    name: str
    argv: tuple[str, ...]
    pid: int
    log_path: Path
    started_at: float  # time.time() at spawn

    def alive(self) -> bool:
        return alive(self.pid) and _cmdline_matches(self.pid, self.argv)

    def stop(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        # The whole argv, not argv[0]: every agent is `python -m agent ...`.
        return stop(self.pid, self.argv, timeout=timeout, sig=sig)

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ready() until true. Fails at once if the process exits, and stops it
        when it never gets ready, so a failed start leaves nothing running."""

        def check() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start:\n{self.log_tail()}")
            return ready()

        try:
            wait_for(check, timeout, what=what)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (for `shakedown env` state files)."""
        d = asdict(self)
        d["argv"] = list(self.argv)
        d["log_path"] = str(self.log_path)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ManagedProcess:
        return cls(
            name=str(d["name"]),
            argv=tuple(str(a) for a in d["argv"]),
            pid=int(d["pid"]),
            log_path=Path(d["log_path"]),
            started_at=float(d["started_at"]),
        )


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    detach: bool,
) -> ManagedProcess:
    """Start argv with stdout+stderr appended to log_path.

    detach=True puts the process in a new session, so it survives the CLI that
    started it exiting and does not receive the terminal's Ctrl-C. detach=False
    keeps it in our process group (test fixtures: Ctrl-C reaches it too).
    """
    if not argv:
        raise ValueError("argv must not be empty")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A marker line so one log file can hold several runs readably.
        log.write(f"--- shakedown: starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=detach,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return ManagedProcess(name, tuple(argv), proc.pid, log_path, time.time())


def alive(pid: int) -> bool:
    """True if pid is running (a zombie counts as dead; our own are reaped)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:  # waitpid(pid, WNOHANG) under the hood
            return True
        del _children[pid]
        return False
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        # Our child, but spawned without the registry (e.g. by a library).
        return reaped == 0
    except ChildProcessError:
        pass  # not our child: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return _proc_state(pid) not in ("Z", "X", None)


def stop(pid: int, argv0: str | Sequence[str], *, timeout: float = 10.0,
         sig: int = signal.SIGTERM) -> bool:
    """Stop a process we started: sig, then SIGKILL after timeout.

    Signals only if /proc/<pid>/cmdline still starts with argv0 (a string, or
    the full recorded argv), so a recycled
    PID is left alone. Returns True if we signalled it, False if it was already
    gone (or is no longer ours). Raises TimeoutError if even SIGKILL fails.
    """
    if not alive(pid) or not _cmdline_matches(pid, argv0):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    try:
        wait_for(lambda: not alive(pid), timeout, interval=0.02, what=f"pid {pid} to exit")
        return True
    except TimeoutError:
        pass
    if _cmdline_matches(pid, argv0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5.0, interval=0.02, what=f"pid {pid} to die (SIGKILL)")
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port that was free a moment ago (bind port 0, read it, release it).

    Racy by nature: another process may take the port before the caller's
    component binds it. Use only for components that cannot bind port 0 and
    report the port themselves (etcd, CoreDNS); a start failure then shows up
    as a clear "exited early" error and the caller may retry. udp=True also
    checks the same UDP port is free (DNS serves both).
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no free TCP+UDP port found on {host}")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll until predicate() is truthy and return its value, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def _cmdline_matches(pid: int, argv0: str | Sequence[str]) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is None:
        # An unreaped child's PID cannot be reused, so it is ours. (Its cmdline
        # can also read empty for a moment right after exec, before the kernel
        # has set up the new argv.)
        return True
    args = _cmdline(pid)
    if not args:
        return False
    expected = [argv0] if isinstance(argv0, str) else list(argv0)
    return args[: len(expected)] == expected


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The state follows the parenthesised comm, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]
