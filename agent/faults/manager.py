"""The fault manager: ids, session binding, timers, healing, heal-on-start.

Every fault belongs to a session. It is journaled (with its undo) before it is
applied, and healed by HealFault/HealAll, by its own duration running out, or
when its session ends (SessionManager calls ``heal_session`` on close and reap).
On start the agent heals every journaled fault whose session is gone or expired,
even one it was applying when it was SIGKILLed, and re-arms the timers of the rest.
Mutations are serialised by one lock: faults are few, correctness is not.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent.faults import container, netem, partition, proxyfault
from agent.faults import toxics as tx
from agent.faults.journal import Entry, Journal, Undo
from agent.identity import Caller
from agent.ownership import SessionInfo
from agent.runtime import DockerRuntime
from agent.sessions import SessionManager
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ShakedownError,
)

log = logging.getLogger(__name__)
MAX_DURATION = 7 * 24 * 3600
MAX_ACTIVE = 1024
FAULT_ID_RE = re.compile(r"f-[0-9a-f]{12}")
KEEP_HEALED = 1024  # healed faults stay visible to HealFault (idempotent) for a while


def _stamp(ts: pb.Fault, field: str, when: float) -> None:
    getattr(ts, field).FromNanoseconds(int(when * 1e9))


def fault_id(value: str, field: str = "fault_id") -> str:
    if not value:
        raise InvalidArgument("a fault id is required", field=field)
    if not FAULT_ID_RE.fullmatch(value):
        raise InvalidArgument(f"not a fault id (f- and 12 hex digits): {value[:40]!r}",
                              field=field)
    return value


def _kind(spec: pb.FaultSpec) -> pb.FaultKind.ValueType:
    if spec.kind == pb.FAULT_KIND_UNSPECIFIED or spec.kind not in pb.FaultKind.values():
        raise InvalidArgument("a fault kind is required (kill, stop, pause, restart, "
                              "partition, proxy)", field="spec.kind")
    if spec.duration_seconds < 0:
        raise InvalidArgument(f"duration must not be negative, got {spec.duration_seconds}",
                              field="spec.duration_seconds")
    if spec.duration_seconds > MAX_DURATION:
        raise InvalidArgument(f"duration must be at most {MAX_DURATION} seconds",
                              field="spec.duration_seconds")
    return spec.kind


class FaultManager:
    def __init__(self, runtime: DockerRuntime, sessions: SessionManager,
                 state_dir: Path | None = None, clock: Callable[[], float] = time.time,
                 allow_proxy_bind: bool = False) -> None:
        self.runtime = runtime
        self.allow_proxy_bind = allow_proxy_bind  # --allow-proxy-bind
        self.proxies = proxyfault.Proxies()
        self.sessions = sessions
        self.journal = Journal(state_dir)
        self.clock = clock
        self._active: dict[str, Entry] = {}
        self._healed: OrderedDict[str, pb.Fault] = OrderedDict()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Future[None]] = set()  # running expiries (kept from GC)
        self._lock = asyncio.Lock()
        sessions.on_end = self._session_ended  # close and reap heal first
        sessions.recover_extra = self.journaled_sessions

    # ------------------------------------------------------------ start / stop

    def load(self) -> int:
        """Read the journal (before sessions start: reaping them heals their faults)."""
        for entry in self.journal.load():
            self._active[entry.fault.id] = entry
        return len(self._active)

    def journaled_sessions(self) -> builtins.list[SessionInfo]:
        """The sessions of journaled faults, for the session table's recovery."""
        found: dict[str, SessionInfo] = {}
        for entry in self._active.values():
            info = entry.session
            if info.get("id") == entry.fault.session_id and info["id"] not in found:
                with contextlib.suppress(TypeError):
                    found[info["id"]] = SessionInfo(**info)
        return list(found.values())

    async def start(self) -> None:
        """Heal faults whose session is gone or that were half applied; re-arm timers."""
        for fid, entry in list(self._active.items()):
            sid = entry.fault.session_id
            try:
                self.sessions.get(sid)
                alive = entry.applied
            except NotFound:
                alive = False
            if not alive:
                log.info("healing a fault left from before the restart",
                         extra={"fault": fid, "session": sid, "applied": entry.applied})
                try:
                    await self.heal(fid, "left from before the agent restarted")
                except ShakedownError as exc:  # kept in the journal: the next start retries
                    log.error("cannot heal a fault left from before the restart: %s", exc,
                              extra={"fault": fid})
            elif await self._revive(entry):
                self._arm(entry)

    async def _revive(self, entry: Entry) -> bool:
        """A live session's proxy died with the agent that ran it: listen again on the
        same address (clients were pointed at it), or heal the fault, saying why."""
        fault = entry.fault
        if fault.kind != pb.FAULT_KIND_PROXY or fault.mechanism != "proxy":
            return True  # the rest lives in the kernel or the engine: still there
        try:
            await proxyfault.revive(self.runtime, self.proxies, fault, self.allow_proxy_bind)
        except ShakedownError as exc:
            note = f"the proxy could not be re-created after the agent restarted: {exc}"
            log.warning(note, extra={"fault": fault.id})
            with contextlib.suppress(ShakedownError):
                await self.heal(fault.id, note)
            return False
        self.journal.save(entry)
        log.info("proxy re-created after the restart", extra={"fault": fault.id})
        return True

    async def stop(self) -> None:
        """Disarm timers; faults stay (journaled) and are taken up on the next start.
        Proxies stop listening (they live in this process): the next start re-creates them."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.proxies.close_all()

    def _arm(self, entry: Entry) -> None:
        if not entry.fault.HasField("expires_at"):
            return
        delay = max(0.0, entry.fault.expires_at.ToNanoseconds() / 1e9 - self.clock())
        fid = entry.fault.id
        self._timers[fid] = asyncio.get_running_loop().call_later(
            delay, lambda: self._tasks.add(asyncio.ensure_future(self._expire(fid))))

    async def _expire(self, fid: str) -> None:
        try:
            await self.heal(fid, note="duration elapsed")
        except Exception:  # kept in the journal: its session's end heals it again
            log.exception("healing an expired fault failed", extra={"fault": fid})
        finally:
            self._tasks = {t for t in self._tasks if not t.done()}

    # ------------------------------------------------------------ inject

    async def inject(self, session_id: str, caller: Caller | None,
                     spec: pb.FaultSpec) -> pb.Fault:
        kind = _kind(spec)
        rec = self.sessions.get(session_id, caller)
        session = {f.name: getattr(rec, f.name) for f in fields(SessionInfo)}
        if len(self._active) >= MAX_ACTIVE:
            raise ResourceExhausted(f"{MAX_ACTIVE} faults are active on this node already")
        fid = f"f-{secrets.token_hex(6)}"
        now = self.clock()
        fault = pb.Fault(id=fid, kind=kind, session_id=session_id, spec=spec)
        _stamp(fault, "started_at", now)
        if spec.duration_seconds:
            _stamp(fault, "expires_at", now + spec.duration_seconds)
        async with self._lock:
            if kind == pb.FAULT_KIND_PARTITION:
                await self._inject_partition(fault, spec, session)
            elif kind == pb.FAULT_KIND_PROXY:
                await self._inject_proxy(fault, spec, session)
            else:
                await self._inject_container(fault, spec, session)
            entry = self._active[fid]
            entry.applied = True
            self.journal.save(entry)
        if self.sessions.is_ending(session_id):
            # The session ended while we applied: its heal may have missed this fault.
            await self.heal(fid, note="session ended during the inject")
            raise NotFound(f"session {session_id!r} ended during the inject",
                           field="session_id")
        self._arm(entry)
        log.info("fault injected", extra={"fault": fid, "session": session_id,
                                          "kind": pb.FaultKind.Name(kind)})
        return fault

    async def _inject_container(self, fault: pb.Fault, spec: pb.FaultSpec,
                                session: dict[str, Any]) -> None:
        plan = await container.prepare(self.runtime, spec)
        fault.targets.append(plan.container.id)
        fault.params.update(plan.params)
        fault.mechanism = container.MECHANISM
        entry = self._journaled(fault, plan.undo, session)
        try:
            await _to_completion(container.apply(self.runtime, plan))
        except asyncio.CancelledError:
            await self._unwind(entry)  # the action did run (to its end): undo it
            raise
        except BaseException:
            # One engine call that failed did nothing: undoing it would start or unpause
            # a container the fault never touched.
            self._active.pop(entry.fault.id, None)
            self.journal.delete(entry.fault.id)
            raise

    async def _inject_partition(self, fault: pb.Fault, spec: pb.FaultSpec,
                                session: dict[str, Any]) -> None:
        plan = await partition.prepare(self.runtime, spec)
        chain = partition.chain_name(fault.id)
        fault.targets.extend(t.container.id for t in plan.targets)
        fault.params.update(plan.params(chain))
        fault.mechanism = partition.MECHANISM
        entry = self._journaled(fault, partition.undo_steps(plan, chain), session)

        async def record() -> None:
            self.journal.save(entry)
        try:
            await _to_completion(partition.apply(plan, chain, entry.undo, record))
        except BaseException:
            await self._unwind(entry)  # no partial fault: earlier targets' chains go too
            raise

    async def _inject_proxy(self, fault: pb.Fault, spec: pb.FaultSpec,
                            session: dict[str, Any]) -> None:
        plan = await proxyfault.prepare(self.runtime, spec, self.allow_proxy_bind)
        box = plan.container
        fault.targets.append(box.id)
        fault.mechanism = plan.mechanism
        h = netem.handle(fault.id)
        step = Undo("unproxy", box.id) if plan.mechanism == "proxy" else \
            Undo("unnetem", box.id, chain=h, pid=box.pid)
        fault.params.update(plan.params)
        entry = self._journaled(fault, [step], session)
        try:
            if plan.mechanism == "proxy":
                plan.bound = await self.proxies.start(fault.id, plan, plan.listen)
                fault.params.update(plan.params)
            else:
                fault.params["qdisc"] = f"netem {h}: on " + ",".join(
                    await _to_completion(netem.apply(box.pid, h, plan.toxics)))
        except BaseException:
            await self._unwind(entry)  # nothing left behind: no listener, no qdisc
            raise

    async def update_toxics(self, fault_id: str, toxics: Any) -> pb.Fault:
        """Replace a live proxy's toxics (full state), for its existing connections too."""
        found = tx.parse(toxics, "toxics")
        async with self._lock:
            entry = self._active.get(fault_id)
            if entry is None:
                raise NotFound(f"fault {fault_id!r} is not active", field="fault_id")
            fault = entry.fault
            if fault.kind != pb.FAULT_KIND_PROXY:
                raise FailedPrecondition(f"fault {fault_id!r} is a "
                                         f"{pb.FaultKind.Name(fault.kind)}, not a proxy",
                                         field="fault_id")
            await proxyfault.update(self.proxies, fault, entry.undo[0], toxics, found)
            self.journal.save(entry)
        log.info("toxics updated", extra={"fault": fault_id, "toxics": fault.params["toxics"]})
        return fault

    def _journaled(self, fault: pb.Fault, undo: list[Undo],
                   session: dict[str, Any]) -> Entry:
        entry = Entry(fault, undo, session=session)
        self.journal.save(entry)  # before anything is applied
        self._active[fault.id] = entry
        return entry

    async def _unwind(self, entry: Entry) -> None:
        try:
            await self._undo(entry)
        except Exception:
            log.exception("undoing a failed inject failed; the journal keeps it",
                          extra={"fault": entry.fault.id})
            return
        self._active.pop(entry.fault.id, None)
        self.journal.delete(entry.fault.id)

    # ------------------------------------------------------------ heal

    async def heal(self, fault_id: str, note: str = "",
                   doomed: frozenset[str] = frozenset()) -> pb.Fault:
        """Heal one fault; healing a healed fault returns it again (idempotent).
        Containers in ``doomed`` are about to be removed: they are not started again."""
        async with self._lock:
            entry = self._active.get(fault_id)
            if entry is None:
                done = self._healed.get(fault_id)
                if done is None:
                    raise NotFound(f"fault {fault_id!r} does not exist", field="fault_id")
                return done
            notes = await self._undo(entry, doomed)
            timer = self._timers.pop(fault_id, None)
            if timer is not None:
                timer.cancel()
            fault = entry.fault
            fault.healed = True
            _stamp(fault, "healed_at", self.clock())
            fault.heal_note = "; ".join(n for n in (note, *notes) if n)
            self._active.pop(fault_id, None)
            self.journal.delete(fault_id)
            self._healed[fault_id] = fault
            while len(self._healed) > KEEP_HEALED:
                self._healed.popitem(last=False)
        log.info("fault healed", extra={"fault": fault_id, "session": fault.session_id,
                                        "note": fault.heal_note})
        return fault

    async def _undo(self, entry: Entry, doomed: frozenset[str] = frozenset()) -> list[str]:
        notes = []
        for step in entry.undo:
            if step.op in ("start", "unpause") and step.container in doomed:
                text = "removed with its session: not started again"
            elif step.op == "unchain":
                text, owed = await partition.undo(self.runtime, step)
                if owed:
                    self._pass_table(entry, step)
            elif step.op == "unproxy":
                text = await self.proxies.close(entry.fault.id)
            elif step.op == "unnetem":
                text = await netem.undo(self.runtime, step)
            else:
                text = await container.undo(self.runtime, step)
            notes.append(f"{step.container[:12]}: {text}")
        return notes

    def _pass_table(self, healed: Entry, step: Undo) -> None:
        """The filter table this fault created outlives it (another chain is there):
        hand the duty to remove it to a fault still in that namespace."""
        for other in self._active.values():
            if other is healed:
                continue
            for s in other.undo:
                if s.op == "unchain" and s.container == step.container and s.pid == step.pid:
                    s.drop_table = True
                    self.journal.save(other)
                    return

    async def heal_session(self, session_id: str, *,
                           ending: bool = False) -> builtins.list[pb.Fault]:
        """Heal the session's faults; ``ending``: it is being closed or reaped."""
        ids = [f for f, e in self._active.items() if e.fault.session_id == session_id]
        doomed: frozenset[str] = frozenset()
        if ids and ending:
            doomed = frozenset(await self.runtime.containers_of_session(session_id))
        return await self._heal_many(ids, "session ended" if ending else "", doomed)

    async def _session_ended(self, session_id: str) -> None:
        await self.heal_session(session_id, ending=True)

    async def heal_all(self) -> builtins.list[pb.Fault]:
        return await self._heal_many(list(self._active), "")

    async def _heal_many(self, ids: builtins.list[str], note: str,
                         doomed: frozenset[str] = frozenset()) -> builtins.list[pb.Fault]:
        """Heal each (one failure does not keep the others), then raise the first error."""
        healed, errors = [], []
        for fid in ids:
            try:
                healed.append(await self.heal(fid, note, doomed))
            except NotFound:
                pass  # healed meanwhile
            except ShakedownError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return healed

    # ------------------------------------------------------------ queries

    def session_of(self, fault_id: str) -> str | None:
        """The session an active fault belongs to (None: no such active fault)."""
        entry = self._active.get(fault_id)
        return entry.fault.session_id if entry else None

    def list(self, session_id: str = "") -> builtins.list[pb.Fault]:
        found = [e.fault for e in self._active.values()
                 if not session_id or e.fault.session_id == session_id]
        return sorted(found, key=lambda f: (f.started_at.ToNanoseconds(), f.id))


async def _to_completion(work: Any) -> Any:
    """Run ``work``; if our caller is cancelled meanwhile (a client deadline), wait for the
    engine call or iptables-restore already under way to end before re-raising, so that an
    unwind sees what was really done, never a half-applied fault it cannot know of."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait({task})
        raise
