"""Server streams of the agent (Logs, Events) as typed iterators."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from driver.types import LogChunk
from shakedown.errors import ShakedownError

T = TypeVar("T")


class Stream(Generic[T]):
    """A server stream (Logs, Events): iterate it, ``cancel()`` it, or use ``with``.

    Errors (e.g. ``NotFound``) surface on iteration, as typed errors; after
    ``cancel()`` iteration simply ends.
    """

    def __init__(self, call: Any, convert: Callable[[Any], T],
                 wrap: Callable[[grpc.RpcError], ShakedownError]) -> None:
        self._call = call
        self._convert = convert
        self._wrap = wrap
        self._cancelled = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._convert(next(self._call))
        except grpc.RpcError as err:
            if self._cancelled and err.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise self._wrap(err) from None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the agent has accepted the stream (its initial metadata arrived).

        An events stream is ready once its subscription is live: every event from
        then on is delivered. True when ready, False after ``timeout`` seconds or
        once cancelled; a call that failed instead raises its typed error.
        """
        arrived = threading.Event()

        def wait() -> None:
            # Returns once metadata arrived or the call ended (it may raise then).
            with contextlib.suppress(Exception):
                self._call.initial_metadata()
            arrived.set()

        threading.Thread(target=wait, name="stream-ready", daemon=True).start()
        if not arrived.wait(timeout):
            return False
        if not self._call.done():
            return True
        code = self._call.code()
        if code == grpc.StatusCode.OK:
            return True
        if self._cancelled or code == grpc.StatusCode.CANCELLED:
            return False
        raise self._wrap(self._call)

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class LogStream(Stream[LogChunk]):
    def read(self) -> bytes:
        """All remaining data of both streams (for ``follow=False``)."""
        return b"".join(chunk.data for chunk in self)

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")
