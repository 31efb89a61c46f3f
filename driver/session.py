"""``SessionHandle``: a session that stays alive while the handle is open.

The agent reaps a non-persistent session (and its containers) once keep-alives
stop for its TTL: the "Ryuk guarantee". A keep-alive goes every ttl/3 seconds,
so a crashed test process leaks nothing for longer than the TTL, and leaving
the ``with`` block closes the session at once.

One scheduler thread per process times every handle's keep-alives and hands
them to a small pool (one slow node cannot delay the others'); a thread per
handle made a context over 100 nodes start 100 threads.
"""

from __future__ import annotations

import builtins
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from driver.types import Container, ContainerSpec, Network, Selector, Session
from shakedown.errors import NotFound, ShakedownError

if TYPE_CHECKING:
    from driver.client import AgentClient


log = logging.getLogger("shakedown.session")
KEEPALIVE_WORKERS = 16


class _KeepAlives:
    """Due times of every handle's next keep-alive, in a heap, watched by one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, SessionHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._due: queue.SimpleQueue[SessionHandle] = queue.SimpleQueue()

    def schedule(self, handle: SessionHandle, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle))
            if self._thread is None:
                # Daemon threads, as the per-handle ones were: never hold up the exit.
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shakedown-keepalives")
                self._thread.start()
                for i in range(KEEPALIVE_WORKERS):
                    threading.Thread(target=self._work, daemon=True,
                                     name=f"shakedown-keepalive-{i}").start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, _, handle = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)  # woken early by a new, sooner entry
                    continue
                heapq.heappop(self._heap)
            if not handle._stop.is_set():
                self._due.put(handle)

    def _work(self) -> None:
        while True:
            handle = self._due.get()
            try:
                handle._keepalive_tick()
            except Exception:  # a bug must not cost the other handles this worker
                log.exception("keep-alive of session %s failed; no more for it", handle.id)


_keepalives: _KeepAlives | None = None
_keepalives_lock = threading.Lock()


def _scheduler() -> _KeepAlives:
    global _keepalives
    with _keepalives_lock:
        if _keepalives is None:
            _keepalives = _KeepAlives()
        return _keepalives


def _forget_scheduler() -> None:
    """A forked child has none of the scheduler's threads: start afresh."""
    global _keepalives, _keepalives_lock
    _keepalives, _keepalives_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_scheduler)


class SessionHandle:
    def __init__(self, client: AgentClient, session: Session, *, keepalive: bool = True) -> None:
        self.client = client
        self.session = session
        self.closed = False
        # The last keep-alive failure, if any (a test may assert it stayed None).
        self.keepalive_error: ShakedownError | None = None
        self._stop = threading.Event()
        # Held while a keep-alive is being sent: stop_keepalive() waits for it.
        self._sending = threading.Lock()
        self._interval = max(session.ttl_seconds / 3, 0.2)
        if keepalive and session.ttl_seconds > 0:
            _scheduler().schedule(self, self._interval)
        else:
            self._stop.set()

    @property
    def id(self) -> str:
        return self.session.id

    def __repr__(self) -> str:
        return f"SessionHandle({self.id!r}, node={self.client.node!r}, closed={self.closed})"

    def _keepalive_tick(self) -> None:
        """One keep-alive, then the next one is scheduled (unless it cannot help)."""
        with self._sending:
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self.client.keep_alive(self.id, timeout=self._interval)
                self.keepalive_error = None
            except NotFound as exc:  # reaped or closed elsewhere: nothing left to keep
                self.keepalive_error = exc
                return
            except ShakedownError as exc:  # transient: try again next tick
                self.keepalive_error = exc
            except ValueError:  # the client's channel was closed under us: nothing to keep
                return
        _scheduler().schedule(self, max(self._interval - (time.monotonic() - started), 0.0))

    # ------------------------------------------------------------ bound calls

    def create(self, spec: ContainerSpec, *, start: bool = False, **kwargs: Any) -> Container:
        return self.client.create(spec, session=self.id, start=start, **kwargs)

    def run(self, spec: ContainerSpec, **kwargs: Any) -> Container:
        return self.client.run(spec, session=self.id, **kwargs)

    def list(self, selector: Selector = None, *, all: bool = False,
             **kwargs: Any) -> builtins.list[Container]:
        return self.client.list(selector, all=all, session=self.id, **kwargs)

    def create_network(self, name: str, *, internal: bool = False,
                       labels: Mapping[str, str] | None = None, **kwargs: Any) -> Network:
        return self.client.create_network(name, session=self.id, internal=internal,
                                          labels=labels, **kwargs)

    def networks(self, selector: Selector = None, **kwargs: Any) -> builtins.list[Network]:
        return self.client.networks(selector, session=self.id, **kwargs)

    def keep_alive(self) -> Session:
        return self.client.keep_alive(self.id)

    # ------------------------------------------------------------ closing

    def stop_keepalive(self) -> None:
        """No keep-alive is sent once this returns (one in flight is waited for, up to 5 s)."""
        self._stop.set()
        if self._sending.acquire(timeout=5):
            self._sending.release()

    def close(self) -> int:
        """Close the session (removing its containers, then its networks); returns how many
        containers were removed."""
        self.stop_keepalive()
        if self.closed:
            return 0
        self.closed = True
        try:
            return self.client.close_session(self.id)
        except NotFound:
            return 0  # already reaped or closed

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
