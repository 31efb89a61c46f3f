"""Component faults of a local environment: processes, not containers.

    f = env.faults.inject("pause", "scheduler-leader", duration=10)   # SIGSTOP
    env.faults.list()          # what is active, from any process
    env.faults.heal(f.id)      # SIGCONT; or heal_all(); or `shakedown env start`

Kinds: ``agent-stop NODE`` (SIGTERM the agent; heal starts it again), ``pause
COMPONENT`` (SIGSTOP; heal SIGCONTs), ``kill COMPONENT`` (SIGKILL, or ``signal``;
heal starts it again) and ``coredns-stop``. A component is a component name
(``etcd``, ``coredns``, ``agent-<node>``, ``scheduler-<i>``), an agent's or
replica's node name, or ``scheduler-leader``: whichever replica leads now.

Each fault is a record in ``<env>/faults.json`` (atomic replace, under an
flock), so `shakedown fault list` in another process sees it. One fault per
component at a time. Healing is idempotent: a healed id answers with its record.

Durations: a detached timer process per fault (`driver.env.faulttimer`) heals
it when it runs out, so a fault injected by a CLI command that has since
exited still heals on time; if that process is gone, the next fault operation
(inject, list, heal) or `env start` heals what is overdue.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driver.control.process import ManagedProcess, spawn, wait_for
from driver.env import local
from driver.env.state import Component, EnvError, save_state

if TYPE_CHECKING:
    from driver.env.environment import Environment

KINDS = ("agent-stop", "pause", "kill", "coredns-stop")
LEADER = "scheduler-leader"
MAX_DURATION = 7 * 24 * 3600
KEEP_HEALED = 100  # healed records kept, so healing one again answers with it
LEADER_WAIT_S = 15.0


class FaultError(EnvError):
    """Bad input for a component fault; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ComponentFault:
    id: str  # c-<12 hex>
    kind: str
    component: str  # the component it hit (the leader resolved)
    requested: str  # as asked: a node name, scheduler-leader ...
    pid: int  # the process it stopped, froze or killed
    started_at: float
    duration: int = 0
    expires_at: float | None = None
    signal: str = ""
    timer: dict[str, Any] | None = None  # the duration's timer process (ManagedProcess)
    healed_at: float | None = None
    heal_note: str = ""

    @property
    def healed(self) -> bool:
        return self.healed_at is not None

    def doc(self) -> dict[str, Any]:
        """The JSON shape `shakedown fault list|inject|heal --json` prints."""
        return {"id": self.id, "scope": "component", "kind": self.kind,
                "component": self.component, "requested": self.requested, "pid": self.pid,
                "signal": self.signal, "duration": self.duration,
                "started_at": _iso(self.started_at), "expires_at": _iso(self.expires_at),
                "healed": self.healed, "healed_at": _iso(self.healed_at),
                "heal_note": self.heal_note}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


@dataclass
class _Book:
    active: list[ComponentFault] = field(default_factory=list)
    healed: list[ComponentFault] = field(default_factory=list)


def _path(env: Environment) -> Path:
    return env.paths.root / "faults.json"


def _read(path: Path) -> _Book:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return _Book([ComponentFault(**d) for d in doc.get("active", [])],
                     [ComponentFault(**d) for d in doc.get("healed", [])])
    except FileNotFoundError:
        return _Book()
    except (OSError, json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise EnvError(f"{path}: unreadable fault record ({exc})") from None


def _write(path: Path, book: _Book) -> None:
    tmp = path.with_name(f".faults.json.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps({"active": [asdict(f) for f in book.active],
                               "healed": [asdict(f) for f in book.healed[-KEEP_HEALED:]]},
                              indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _locked(env: Environment) -> Iterator[_Book]:
    """The record, exclusively (one writer at a time across processes); saved on exit."""
    path = _path(env)
    with open(env.paths.root / ".faults.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env._reload()  # PIDs may have changed in another process
        book = _read(path)
        try:
            yield book
        finally:
            _write(path, book)


def peek(env: Environment, fault_id: str) -> ComponentFault | None:
    """One active record, read under the lock (so never before its inject has written it)."""
    with open(env.paths.root / ".faults.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return next((f for f in _read(_path(env)).active if f.id == fault_id), None)


def check_duration(duration: int | float) -> int:
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise FaultError(f"duration {duration!r}: must be whole seconds", field="duration")
    if duration < 0:
        raise FaultError(f"duration {duration}: must not be negative", field="duration")
    if duration > MAX_DURATION:
        raise FaultError(f"duration {duration}: must be at most {MAX_DURATION} s",
                         field="duration")
    return duration


def _signal(name: str) -> signal.Signals:
    text = name.upper().removeprefix("SIG") if name else "KILL"
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[f"SIG{text}"]
    except (KeyError, ValueError):
        raise FaultError(f"signal {name!r}: not a signal name or number", field="signal") from None


def leader(env: Environment, wait: float = LEADER_WAIT_S) -> Component:
    """The scheduler replica whose `scheduler_leader` gauge says it leads now (the same
    source as `env status`); waits out an election in progress."""
    from driver.control.scheduler import is_leader

    replicas = [c for c in env.state.schedulers() if local.is_running(c)]
    if not replicas:
        raise FaultError(f"{LEADER}: environment {env.name} runs no scheduler replica",
                         field="component")

    def find() -> Component | None:
        leads = [c for c in replicas if is_leader(c.ports["metrics"])]
        return leads[0] if len(leads) == 1 else None

    try:
        found = wait_for(find, wait, interval=0.2, what="one scheduler replica to lead")
        assert found is not None
        return found
    except TimeoutError:
        raise EnvError(f"{LEADER}: no single replica leads within {wait:g} s "
                       f"(replicas: {', '.join(c.name for c in replicas)})") from None


def resolve(env: Environment, kind: str, name: str) -> Component:
    """The component ``name`` means for a fault of ``kind``, or a FaultError naming why not."""
    if kind not in KINDS:
        raise FaultError(f"fault kind {kind!r}: one of {', '.join(KINDS)}", field="kind")
    if env.state.kind != "local":
        raise FaultError(f"environment {env.name} is remote: component faults need a local "
                         "one (its processes run here)", field="env")
    if kind == "coredns-stop":
        name = name or "coredns"
    if not name:
        raise FaultError(f"{kind}: which component?", field="component")
    comp = leader(env) if name == LEADER else env.state.components.get(
        name) or env.state.components.get(env.component_of(name) or "")
    if comp is None:
        known = ", ".join([*sorted(env.state.components), LEADER])
        raise FaultError(f"component {name!r}: not in environment {env.name} (one of {known}, "
                         "or an agent's or replica's node name)", field="component")
    want = {"agent-stop": "agent", "coredns-stop": "coredns"}.get(kind)
    if want and comp.kind != want:
        what = "an agent" if want == "agent" else "CoreDNS"
        raise FaultError(f"{kind} {name!r}: that is {comp.name} ({comp.kind}), not {what}",
                         field="component")
    return comp


def inject(env: Environment, kind: str, component: str = "", *, duration: int = 0,
           signal_name: str = "") -> ComponentFault:
    """Apply one component fault and record it; nothing is recorded if it fails."""
    check_duration(duration)
    sig = _signal(signal_name) if kind == "kill" else None
    if signal_name and kind != "kill":
        raise FaultError(f"signal: only for kill, not {kind}", field="signal")
    expire_due(env)
    with _locked(env) as book:
        comp = resolve(env, kind, component)
        busy = next((f for f in book.active if f.component == comp.name), None)
        if busy is not None:
            raise EnvError(f"{comp.name} already has fault {busy.id} ({busy.kind}): "
                           f"heal it first (`shakedown fault heal {busy.id}`)")
        proc = comp.managed()
        if proc is None or not proc.alive():
            raise EnvError(f"{comp.name} is not running: nothing to {kind} "
                           f"(`shakedown env start {env.name}` starts it)")
        now = time.time()
        fault = ComponentFault(f"c-{secrets.token_hex(6)}", kind, comp.name, component or
                               comp.name, proc.pid, now, duration,
                               now + duration if duration else None,
                               sig.name if sig else "")
        try:
            _apply(env, comp, proc, fault, sig)
        except BaseException:
            # The signal may have landed (a freeze or a death that was slow to show):
            # put the component back rather than leave a fault no record knows of.
            with contextlib.suppress(Exception):
                _restore(env, fault)
            raise
        book.active.append(fault)
        if duration:
            fault.timer = _start_timer(env, fault).to_dict()
    return fault


def _apply(env: Environment, comp: Component, proc: ManagedProcess, fault: ComponentFault,
           sig: signal.Signals | None) -> None:
    if fault.kind == "pause":
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: frozen(proc.pid), 10, what=f"{comp.name} to freeze")
    elif fault.kind == "kill":
        assert sig is not None
        os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            wait_for(lambda: not proc.alive(), 10, what=f"{comp.name} to die")
    else:  # agent-stop, coredns-stop: a clean stop, as `env stop` does
        local.stop_component(comp)
        comp.stopped = False  # down by a fault, not stopped on purpose: status says "down"
        save_state(env.paths, env.state)


def frozen(pid: int) -> bool:
    """State T (stopped by a signal) in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["T"]


def _restore(env: Environment, fault: ComponentFault) -> str:
    """Undo one fault exactly; safe to repeat."""
    comp = env.state.components.get(fault.component)
    if comp is None:
        return f"{fault.component} is no longer in the environment"
    proc = comp.managed()
    if fault.kind == "pause" and proc is not None and proc.pid == fault.pid and proc.alive():
        if frozen(proc.pid):
            os.kill(proc.pid, signal.SIGCONT)
            wait_for(lambda: not frozen(proc.pid), 10, what=f"{comp.name} to thaw")
            return f"SIGCONT {fault.pid}"
        return "already running"
    if local.is_running(comp):
        return "already running"
    env.revive(comp.name)  # start it again, on its ports
    return f"started again (pid {comp.managed().pid})"  # type: ignore[union-attr]


def _heal_locked(env: Environment, book: _Book, fault: ComponentFault, note: str) -> None:
    done = _restore(env, fault)
    if fault.timer and fault.timer.get("pid") != os.getpid():
        ManagedProcess.from_dict(fault.timer).stop(timeout=5)
    fault.healed_at = time.time()
    fault.heal_note = "; ".join(n for n in (note, done) if n)
    book.active.remove(fault)
    book.healed.append(fault)


def heal(env: Environment, fault_id: str, note: str = "") -> ComponentFault:
    """Heal one fault; a healed one is returned again. An unknown id is a FaultError."""
    with _locked(env) as book:
        found = next((f for f in book.active if f.id == fault_id), None)
        if found is not None:
            _heal_locked(env, book, found, note)
            return found
        again = next((f for f in reversed(book.healed) if f.id == fault_id), None)
        if again is not None:
            return again
    raise FaultError(f"no component fault {fault_id!r} in environment {env.name}",
                     field="id")


def heal_all(env: Environment, note: str = "",
             progress: Callable[[str], None] | None = None) -> list[ComponentFault]:
    """Heal every recorded fault (one failing does not keep the others: the first error is
    raised after, and its record stays), etcd first: a scheduler replica cannot start
    while etcd is frozen."""
    healed: list[ComponentFault] = []
    errors: list[Exception] = []
    order = {"etcd": 0, "coredns": 1, "scheduler": 2, "agent": 3}

    def rank(f: ComponentFault) -> int:
        comp = env.state.components.get(f.component)
        return order.get(comp.kind, 9) if comp is not None else 9

    with _locked(env) as book:
        for fault in sorted(book.active, key=rank):
            try:
                _heal_locked(env, book, fault, note)
            except (EnvError, OSError, TimeoutError) as exc:
                errors.append(exc)
                continue
            healed.append(fault)
            if progress:
                progress(f"healed fault {fault.id} ({fault.kind} {fault.component}): "
                         f"{fault.heal_note}")
    if errors:
        raise errors[0]
    return healed


def active(env: Environment) -> list[ComponentFault]:
    expire_due(env)
    return _read(_path(env)).active


def expire_due(env: Environment) -> list[ComponentFault]:
    """Heal what has outlived its duration (its timer process did not, e.g. it was killed)."""
    now = time.time()
    due = [f for f in _read(_path(env)).active if f.expires_at and f.expires_at <= now]
    return [heal(env, f.id, "duration elapsed") for f in due]


def _start_timer(env: Environment, fault: ComponentFault) -> ManagedProcess:
    argv = [sys.executable, "-m", "driver.env.faulttimer", str(env.paths.root), fault.id]
    source = str(Path(__file__).resolve().parents[2])
    environ = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return spawn(f"fault-timer-{fault.id}", argv, env.paths.logs / "faults.log", env=environ,
                 detach=True)


def drop_timers(env: Environment) -> None:
    """Before the environment is destroyed: thaw what is frozen (so it stops cleanly) and end
    the timer processes; the records go with the directory."""
    for fault in _read(_path(env)).active:
        if fault.kind == "pause" and frozen(fault.pid):
            os.kill(fault.pid, signal.SIGCONT)
        if fault.timer:
            ManagedProcess.from_dict(fault.timer).stop(timeout=5)


class ComponentFaults:
    """``env.faults``: the functions above, bound to one environment."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def inject(self, kind: str, component: str = "", *, duration: int = 0,
               signal: str = "") -> ComponentFault:
        return inject(self.env, kind, component, duration=duration, signal_name=signal)

    def list(self) -> builtins.list[ComponentFault]:
        return active(self.env)

    def heal(self, fault: str | ComponentFault) -> ComponentFault:
        return heal(self.env, fault if isinstance(fault, str) else fault.id)

    def heal_all(self) -> builtins.list[ComponentFault]:
        return heal_all(self.env)
