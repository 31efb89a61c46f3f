"""Sessions and the Ryuk guarantee: a session whose keep-alives stop is reaped.

The labels on a session's containers are the only durable state (no
database): after a restart the table is rebuilt from them. One heartbeat
file records when the agent was last alive, so sessions that expired while
it was down are reaped at once instead of getting a fresh TTL.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.config import PolicyConfig
from agent.identity import Caller
from agent.runtime import REAPING, DockerRuntime, SessionInfo
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import AlreadyExists, FailedPrecondition, NotFound, PolicyError

log = logging.getLogger(__name__)
HEARTBEAT = "heartbeat"
SWEEP_EVERY = 30.0  # seconds between sweeps for containers of sessions we do not know


@dataclass
class SessionRecord(SessionInfo):
    expires_at: float = 0.0
    # Roadmap: fault records (partitions, latency proxies) a nemesis injected on
    # behalf of this session; expiry and close heal them (see SessionManager._heal).
    faults: list[Any] = field(default_factory=list)
    closing: bool = False


class SessionManager:
    def __init__(self, runtime: DockerRuntime, *, default_ttl: int = 30,
                 reap_interval: float = 1.0, state_dir: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.default_ttl = default_ttl
        self.reap_interval = reap_interval
        self.state_dir = state_dir
        self.clock = clock
        self._sessions: dict[str, SessionRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        # Heals a session's faults (agent/faults/manager.py) when it is closed or reaped.
        self.on_end: Callable[[str], Awaitable[object]] | None = None
        # Sessions only the fault journal knows of (no labelled resource), for recovery.
        self.recover_extra: Callable[[], builtins.list[SessionInfo]] | None = None

    # ------------------------------------------------------------ table

    def open(self, principal: str, ttl: int = 0, persistent: bool = False, name: str = "",
             labels: dict[str, str] | None = None) -> SessionRecord:
        if name:
            for rec in self._sessions.values():
                if rec.name == name and not rec.closing:
                    if rec.principal != principal:
                        raise AlreadyExists(f"session name {name!r} belongs to another principal",
                                            field="name")
                    self._touch(rec)
                    return rec
        now = self.clock()
        # A persistent session never expires: TTL 0, so its labels do not claim one.
        ttl = 0 if persistent else ttl if ttl > 0 else self.default_ttl
        rec = SessionRecord(id=f"s-{secrets.token_hex(6)}", name=name, ttl=ttl,
                            persistent=persistent, principal=principal, created=now,
                            labels=dict(labels or {}), expires_at=now + ttl)
        self._sessions[rec.id] = rec
        log.info("session opened", extra={"session": rec.id, "principal": principal,
                                          "ttl": ttl, "persistent": persistent})
        return rec

    def get(self, session_id: str, caller: Caller | None = None) -> SessionRecord:
        rec = self._sessions.get(session_id)
        if rec is None or rec.closing:
            raise NotFound(f"session {session_id!r} does not exist (closed or expired)",
                           field="session_id")
        if caller is not None and caller.principal != rec.principal and caller.role != "admin":
            raise PolicyError(f"session {session_id!r} belongs to another principal",
                              field="session_id")
        return rec

    def is_ending(self, session_id: str) -> bool:
        """Closed, reaped or being so (a fault injected meanwhile must heal itself)."""
        rec = self._sessions.get(session_id)
        return rec is None or rec.closing

    def keep_alive(self, session_id: str, caller: Caller | None = None) -> SessionRecord:
        rec = self.get(session_id, caller)
        self._touch(rec)
        return rec

    def list(self) -> list[SessionRecord]:
        return sorted((r for r in self._sessions.values() if not r.closing),
                      key=lambda r: (r.created, r.id))

    async def close(self, session_id: str, caller: Caller | None = None) -> int:
        """Close the session; returns how many containers were removed."""
        return (await self.close_counts(session_id, caller))[0]

    async def close_counts(self, session_id: str,
                           caller: Caller | None = None) -> tuple[int, int, int]:
        """Close the session; returns (removed containers, networks, volumes)."""
        rec = self.get(session_id, caller)
        return await self._remove(rec, "closed")

    def _touch(self, rec: SessionRecord) -> None:
        rec.expires_at = self.clock() + rec.ttl

    # ------------------------------------------------------------ containers

    async def create_container(self, session_id: str, caller: Caller | None,
                               spec: pb.ContainerSpec, start: bool,
                               policy: PolicyConfig | None = None) -> pb.Container:
        rec = self.get(session_id, caller)
        container = await self.runtime.create(rec, spec, start, policy)
        if rec.closing or self._sessions.get(rec.id) is not rec:
            # The session went away while the engine was creating: do not leave an orphan.
            with contextlib.suppress(Exception):
                await self.runtime.remove(container.id, force=True, volumes=True)
            raise FailedPrecondition(f"session {session_id!r} was closed during the create",
                                     field="session_id")
        return container

    async def create_network(self, session_id: str, caller: Caller | None, name: str,
                             internal: bool, labels: dict[str, str]) -> pb.Network:
        rec = self.get(session_id, caller)
        network = await self.runtime.networks.create(rec, name, internal=internal, labels=labels)
        if rec.closing or self._sessions.get(rec.id) is not rec:
            with contextlib.suppress(Exception):  # the same race as create_container
                await self.runtime.networks.remove(network.id)
            raise FailedPrecondition(f"session {session_id!r} was closed during the create",
                                     field="session_id")
        return network

    async def to_pb(self, rec: SessionRecord, count: int | None = None,
                    networks: int | None = None) -> pb.Session:
        if count is None:
            count = len(await self.runtime.containers_of_session(rec.id))
        if networks is None:
            networks = await self.runtime.networks.count(rec.id)
        s = pb.Session(id=rec.id, name=rec.name, ttl_seconds=rec.ttl, persistent=rec.persistent,
                       principal=rec.principal, labels=rec.labels, container_count=count,
                       network_count=networks)
        s.created_at.FromNanoseconds(int(rec.created * 1e9))
        if not rec.persistent:
            s.expires_at.FromNanoseconds(int(rec.expires_at * 1e9))
        return s

    async def list_pb(self) -> builtins.list[pb.Session]:
        counts = await self.runtime.session_counts()  # one engine call for every session
        nets = await self.runtime.networks.session_counts()
        return [await self.to_pb(r, counts.get(r.id, 0), nets.get(r.id, 0)) for r in self.list()]

    # ------------------------------------------------------------ reaping

    async def start(self) -> None:
        """Rebuild the table from labels, reap what expired while we were down, start reaping."""
        await self.runtime.node_info()  # probe the engine once now, not on the first RPC
        now = self.clock()
        beat = await asyncio.to_thread(self._read_heartbeat)
        # Without a heartbeat we cannot tell how long we were down: grant one TTL.
        base = min(beat, now) if beat is not None else now
        await self._adopt_orphans(base)
        await self.reap_once()
        self._task = asyncio.create_task(self._reaper(), name="session-reaper")

    async def stop(self) -> None:
        """Stop reaping; containers stay and their sessions are recovered on the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._write_heartbeat, self.clock())

    async def _reaper(self) -> None:
        REAPING.set(True)  # this task's engine calls use the reaper's own threads
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper tick failed; retrying next tick")

    async def reap_once(self) -> int:
        """One reaper tick: heartbeat, reap expired sessions, sometimes sweep for orphans."""
        now = self.clock()
        try:
            await asyncio.to_thread(self._write_heartbeat, now)
        except OSError as exc:
            log.warning("cannot write the heartbeat file: %s", exc)
        if now - self._last_sweep >= SWEEP_EVERY and self._last_sweep:
            await self._adopt_orphans(now)
        self._last_sweep = self._last_sweep or now
        expired = [r for r in self._sessions.values()
                   if not r.persistent and not r.closing and r.expires_at <= now]
        removed = 0
        for rec in expired:
            removed += (await self._remove(rec, "expired"))[0]
        return removed

    async def _remove(self, rec: SessionRecord, why: str) -> tuple[int, int, int]:
        """Heal, remove the containers, then the networks and volumes (in use, they cannot go)."""
        rec.closing = True
        try:
            await self._heal(rec)
            removed = await self.runtime.remove_session(rec.id)
            networks = await self.runtime.networks.remove_session(rec.id)
            volumes = await self.runtime.remove_session_volumes(rec.id)
        except Exception:
            rec.closing = False  # keep it: the next tick (or close) retries
            raise
        self._sessions.pop(rec.id, None)
        log.info("session %s", why, extra={"session": rec.id, "principal": rec.principal,
                                           "removed_containers": removed,
                                           "removed_networks": networks,
                                           "removed_volumes": volumes})
        return removed, networks, volumes

    async def _heal(self, rec: SessionRecord) -> None:
        # Undo each fault the session injected before its containers go, so an
        # expired test never leaves the node degraded.
        rec.faults.clear()
        if self.on_end is not None:
            await self.on_end(rec.id)

    async def _adopt_orphans(self, base: float) -> None:
        """Take in sessions that exist only as labels (after a restart, or a close/create race)."""
        self._last_sweep = self.clock()
        infos = await self.runtime.recover()
        if self.recover_extra is not None:
            infos += self.recover_extra()
        for info in infos:
            if info.id in self._sessions:
                continue
            values = {f.name: getattr(info, f.name) for f in fields(SessionInfo)}
            if info.persistent:
                values["ttl"] = 0
            rec = SessionRecord(**values, expires_at=base + info.ttl)
            self._sessions[rec.id] = rec
            log.info("session recovered from labels",
                     extra={"session": rec.id, "persistent": rec.persistent,
                            "expires_in": round(rec.expires_at - self.clock(), 3)})

    # ------------------------------------------------------------ heartbeat file

    def _heartbeat_path(self) -> Path | None:
        return self.state_dir / HEARTBEAT if self.state_dir else None

    def _read_heartbeat(self) -> float | None:
        path = self._heartbeat_path()
        try:
            return float(path.read_text().strip()) if path else None
        except (OSError, ValueError):
            return None

    def _write_heartbeat(self, now: float) -> None:
        path = self._heartbeat_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
        tmp.write_text(f"{now:.3f}\n")
        os.replace(tmp, path)  # atomic: a crash never leaves a torn heartbeat
