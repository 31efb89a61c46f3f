"""Docker engine events, fanned out.

ONE engine events stream per agent (a daemon thread) feeds any number of
asyncio subscribers, each filtered by ownership, session and label selector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from agent.ownership import Selector, matches
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import ResourceExhausted

log = logging.getLogger(__name__)


# Event attributes that are not container labels.
_EVENT_ATTRS = frozenset({"name", "image", "exitCode", "signal", "execID", "container"})


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[pb.Event]
    selector: Selector
    session_id: str
    overflowed: bool = False


class EventHub:
    """ONE engine events stream (a daemon thread), fanned out to asyncio subscribers.

    Each subscriber has a bounded queue; one that falls behind is dropped (it
    gets ResourceExhausted once it has drained what it had) so it never slows
    the others or the thread.
    """

    def __init__(self, api: Any, node: str,
                 ownership: Callable[[dict[str, str]], tuple[bool, bool]],
                 on_destroy: Callable[[str], None], queue_size: int = 1024) -> None:
        self.api, self.node, self.queue_size = api, node, queue_size
        self._ownership, self._on_destroy = ownership, on_destroy
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._subs: set[_Subscriber] = set()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def subscribe(self, selector: Selector, session_id: str) -> AsyncGenerator[pb.Event, None]:
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(self.queue_size),
                          selector, session_id)
        with self._lock:
            self._subs.add(sub)
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(target=self._pump, name="docker-events",
                                                daemon=True)
                self._thread.start()
        return self._iterate(sub)

    async def _iterate(self, sub: _Subscriber) -> AsyncGenerator[pb.Event, None]:
        try:
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise ResourceExhausted(f"events subscriber fell more than {self.queue_size} "
                                            "events behind and was dropped")
                yield await sub.queue.get()
        finally:
            self._discard(sub)

    def _discard(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def _pump(self) -> None:
        last = 0  # timeNano of the last event seen: resume after a reconnect without repeats
        backoff = 0.5
        while not self._closing.is_set():
            try:
                since = f"{last / 1e9:.9f}" if last else None
                stream = self.api.events(since=since, filters={"type": "container"}, decode=True)
                with self._lock:
                    self._stream = stream
                if self._closing.is_set():
                    break
                self.connected.set()
                backoff = 0.5
                for ev in stream:
                    stamp = int(ev.get("timeNano") or 0)
                    if stamp and stamp <= last:
                        continue
                    last = stamp or last
                    self._dispatch(ev)
            except Exception as exc:
                log.warning("docker events stream failed, reconnecting: %s", exc)
            self.connected.clear()
            self._closing.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _dispatch(self, ev: dict[str, Any]) -> None:
        if ev.get("Type", "container") != "container":
            return
        actor = ev.get("Actor") or {}
        attrs: dict[str, str] = dict(actor.get("Attributes") or {})
        cid = actor.get("ID") or ev.get("id") or ""
        action = ev.get("Action") or ev.get("status") or ""
        if action == "destroy":
            self._on_destroy(cid)
        labels = {k: v for k, v in attrs.items() if k not in _EVENT_ATTRS}
        if not self._ownership(labels)[0]:
            return
        event = pb.Event(action=action, container_id=cid, container_name=attrs.get("name", ""),
                         session_id=labels.get(L.SESSION, ""), labels=labels, node=self.node)
        event.time.FromNanoseconds(int(ev.get("timeNano") or time.time_ns()))
        if action == "die" and attrs.get("exitCode", "").lstrip("-").isdigit():
            event.exit_code = int(attrs["exitCode"])
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.session_id and labels.get(L.SESSION) != sub.session_id:
                continue
            if matches(labels, sub.selector):
                try:
                    sub.loop.call_soon_threadsafe(self._offer, sub, event)
                except RuntimeError:  # its loop is closed
                    self._discard(sub)

    def _offer(self, sub: _Subscriber, event: pb.Event) -> None:
        if sub.overflowed:
            return
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            sub.overflowed = True
            self._discard(sub)
            log.warning("dropping a slow events subscriber (%d events queued)", self.queue_size)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            stream, thread = self._stream, self._thread
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if thread is not None:
            thread.join(timeout=5)
