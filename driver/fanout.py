"""Run one call against many agents concurrently, keeping every node's outcome.

A failure on one node must not hide the others: each node gets a ``Result``
holding its value or its exception, and the caller decides (``raise_first()``,
``unwrap()``, ``failed``).

The calls run on one process-wide pool whose threads are reused: starting a
thread per node per fan-out cost more driver CPU than the RPCs themselves at
100 nodes (bench/bench_scale.py). A fan-out started from inside a fan-out, or
with its own ``max_workers``, gets a private pool instead, so nesting cannot
starve the shared one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from driver.client import AgentClient

T = TypeVar("T")
# Enough for every node of a large inventory at once; threads start on demand and stay.
SHARED_WORKERS = 256
_shared: ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is running a fan-out's fn


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start afresh."""
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _shared_pool() -> ThreadPoolExecutor:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadPoolExecutor(max_workers=SHARED_WORKERS,
                                         thread_name_prefix="shakedown-fanout")
        return _shared


class FanOutTimeout(TimeoutError):
    """The node did not answer within fan_out's overall ``timeout``."""


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    node: str
    value: T | None = None
    error: BaseException | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None is a legal T here


class Results(dict[str, "Result[T]"]):
    """node name -> Result, in the order the clients were given."""

    @property
    def failed(self) -> dict[str, BaseException]:
        return {name: r.error for name, r in self.items() if r.error is not None}

    @property
    def succeeded(self) -> dict[str, T]:
        return {name: r.value for name, r in self.items() if r.error is None}  # type: ignore[misc]

    def raise_first(self) -> None:
        """Raise the first node's error (the others are listed in a note); else nothing."""
        failed = self.failed
        if not failed:
            return
        name, exc = next(iter(failed.items()))
        if len(failed) > 1:
            others = ", ".join(f"{n}: {type(e).__name__}" for n, e in list(failed.items())[1:])
            exc.add_note(f"(node {name}; {len(failed) - 1} other node(s) failed too: {others})")
        raise exc

    def unwrap(self) -> dict[str, T]:
        """Every node's value; raises like ``raise_first()`` if any node failed."""
        self.raise_first()
        return self.succeeded


def fan_out(
    clients: Mapping[str, AgentClient], fn: Callable[[AgentClient], T], *,
    max_workers: int | None = None, timeout: float | None = None,
) -> Results[T]:
    """``fn(client)`` for every client at once; ``timeout`` bounds the whole fan-out.

    Nodes still running at the timeout get a ``FanOutTimeout`` result (their
    threads finish in the background: a blocking gRPC call cannot be interrupted
    from outside, but each has its own deadline).
    """
    results: Results[T] = Results()
    if not clients:
        return results
    private = max_workers is not None or getattr(_local, "inside", False)
    pool = (ThreadPoolExecutor(max_workers=max_workers or min(len(clients), 64),
                               thread_name_prefix="shakedown-fanout")
            if private else _shared_pool())

    def timed(name: str, client: AgentClient) -> Result[T]:
        _local.inside = True
        start = time.monotonic()
        try:
            return Result(name, value=fn(client), elapsed=time.monotonic() - start)
        except Exception as exc:  # kept per node; BaseException (Ctrl-C) still propagates
            return Result(name, error=exc, elapsed=time.monotonic() - start)
        finally:
            _local.inside = False

    futures: dict[str, Future[Result[T]]] = {
        name: pool.submit(timed, name, client) for name, client in clients.items()}
    wait(futures.values(), timeout=timeout)
    for fut in futures.values():
        fut.cancel()  # not started yet: never will (running ones finish in the background)
    if private:
        pool.shutdown(wait=False, cancel_futures=True)
    for name, fut in futures.items():
        if fut.done() and not fut.cancelled():
            results[name] = fut.result()
        else:
            results[name] = Result(
                name, error=FanOutTimeout(f"node {name}: no answer within {timeout} s"))
    return results
