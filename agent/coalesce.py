"""Coalesced reads: concurrent identical engine queries share one request.

Under a burst, hundreds of ListContainers for the same session each cost one
`GET /containers/json` on a dockerd that is busy creating containers. A caller
may join another caller's request only while that request is still *queued*
(not yet sent to the engine): it then starts after the joiner arrived, so its
answer is exactly as fresh as a request of the joiner's own would have been.
Once a request has started, newcomers queue a new one. At most one request per
key is in flight and one queued, whatever the number of callers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # joins happen on the loop, starts on pool threads
        self._queued: dict[Hashable, asyncio.Future[T]] = {}

    async def read(self, key: Hashable, fn: Callable[[], T],
                   submit: Callable[[Callable[[], T]], Awaitable[T]]) -> T:
        """fn's result, from a request that starts after this call; submit(fn) runs it."""
        with self._lock:
            shared = self._queued.get(key)
            if shared is None:
                shared = asyncio.ensure_future(self._start(key, fn, submit))
                self._queued[key] = shared
        # shield: one caller's deadline must not cancel the request the others wait on
        return await asyncio.shield(shared)

    async def _start(self, key: Hashable, fn: Callable[[], T],
                     submit: Callable[[Callable[[], T]], Awaitable[T]]) -> T:
        me = asyncio.current_task()

        def started() -> T:
            with self._lock:
                if self._queued.get(key) is me:
                    del self._queued[key]
            return fn()

        try:
            return await submit(started)
        finally:
            with self._lock:  # never started (cancelled, pool shut down): unqueue
                if self._queued.get(key) is me:
                    del self._queued[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._queued)
