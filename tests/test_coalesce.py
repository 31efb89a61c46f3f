"""Coalesced reads share a request only while it is queued, never a stale one."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.coalesce import Coalescer

DEADLINE = 10.0


async def _until(cond, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as p:
        yield p


def _submitter(pool):
    def submit(fn):
        return asyncio.get_running_loop().run_in_executor(pool, fn)
    return submit


def test_queued_callers_share_one_request(pool) -> None:
    async def main() -> None:
        gate = threading.Event()
        pool.submit(gate.wait)  # the one thread is busy: reads queue
        calls = []
        c: Coalescer[int] = Coalescer()

        def fn() -> int:
            calls.append(1)
            return len(calls)

        tasks = [asyncio.ensure_future(c.read("k", fn, _submitter(pool))) for _ in range(20)]
        other = asyncio.ensure_future(c.read("other", fn, _submitter(pool)))
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert results == [results[0]] * 20
        assert await other != results[0]
        assert len(calls) == 2  # one per key
        assert len(c) == 0

    asyncio.run(main())


def test_a_started_request_is_never_joined(pool) -> None:
    async def main() -> None:
        running, release = threading.Event(), threading.Event()
        state = {"value": 0}
        c: Coalescer[int] = Coalescer()

        def fn() -> int:
            value = state["value"]
            if value == 0:
                running.set()
                release.wait(DEADLINE)
            return value

        first = asyncio.ensure_future(c.read("k", fn, _submitter(pool)))
        await _until(running.is_set, "the first request to start")
        state["value"] = 1  # a write lands after the first request started
        second = asyncio.ensure_future(c.read("k", fn, _submitter(pool)))
        await asyncio.sleep(0)
        release.set()
        assert await first == 0
        assert await second == 1  # a fresh request, not the one already in flight

    asyncio.run(main())


def test_one_callers_cancellation_does_not_cancel_the_others(pool) -> None:
    async def main() -> None:
        gate = threading.Event()
        pool.submit(gate.wait)
        c: Coalescer[str] = Coalescer()
        a = asyncio.ensure_future(c.read("k", lambda: "done", _submitter(pool)))
        b = asyncio.ensure_future(c.read("k", lambda: "unused", _submitter(pool)))
        await asyncio.sleep(0)
        a.cancel()
        gate.set()
        assert await b == "done"
        with pytest.raises(asyncio.CancelledError):
            await a

    asyncio.run(main())


def test_errors_reach_every_caller_and_the_key_is_free_again(pool) -> None:
    async def main() -> None:
        gate = threading.Event()
        pool.submit(gate.wait)
        c: Coalescer[int] = Coalescer()

        def boom() -> int:
            raise LookupError("engine said no")

        tasks = [asyncio.ensure_future(c.read("k", boom, _submitter(pool))) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        for t in tasks:
            with pytest.raises(LookupError, match="engine said no"):
                await t
        assert len(c) == 0
        assert await c.read("k", lambda: 7, _submitter(pool)) == 7

    asyncio.run(main())
