"""Helpers for blocking engine streams read in worker threads: cancellation from
the event loop, closing a streamed response, reading one chunk."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests
from docker.types.daemon import CancellableStream


class Cancel:
    """Cross-thread cancellation: closers registered by a worker run once, on cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self.cancelled = False

    def on_cancel(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self.cancelled:
                self._closers.append(fn)
                return
        fn()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, closers, self._closers = True, self._closers, []
        for fn in closers:
            with contextlib.suppress(Exception):
                fn()


def close_response(res: Any) -> None:
    # CancellableStream.close shuts the socket down, which unblocks a reader thread.
    with contextlib.suppress(Exception):
        CancellableStream(iter(()), res).close()
    with contextlib.suppress(Exception):
        res.close()


def next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    try:
        return next(chunks)
    except StopIteration:
        return None
    except (OSError, requests.exceptions.RequestException, ValueError, AttributeError):
        return None  # the stream was closed under us (cancellation) or the engine hung up
