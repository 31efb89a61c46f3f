"""The fault proxy and its toxics on local asyncio sockets (no containers: fast).

An echo server on 127.0.0.1, the proxy in front of it, a client through it.
Timing assertions are at >= 50 ms scales with generous upper bounds (shared CPU).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent.faults import toxics as tx
from agent.faults.proxy import Proxy
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import InvalidArgument

SLACK = 0.5  # upper tolerance for a loaded machine


def toxic(type_: str, **kw: Any) -> tx.Toxic:
    return tx.parse_one(pb.Toxic(type=type_, **kw), "t")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    except ConnectionError:
        pass


Body = Callable[[Proxy, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(body: Body, toxics: tuple[tx.Toxic, ...] = (), server: Any = _echo) -> None:
    async def main() -> None:
        upstream = await asyncio.start_server(server, "127.0.0.1", 0)
        proxy = Proxy(upstream.sockets[0].getsockname()[:2], toxics)
        host, port = await proxy.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await asyncio.wait_for(body(proxy, reader, writer), 30)
        finally:
            writer.close()
            await proxy.close()
            upstream.close()
    asyncio.run(main())


async def rtt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
              msg: bytes = b"ping\n") -> float:
    start = time.monotonic()
    writer.write(msg)
    assert await reader.readexactly(len(msg)) == msg
    return time.monotonic() - start


def test_no_toxics_forward_bytes_intact() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        blob = bytes(range(256)) * 8192  # 2 MiB
        w.write(blob)
        assert await r.readexactly(len(blob)) == blob
        assert await rtt(r, w) < 0.2
    run(body)


def test_latency_delays_each_round_trip_and_live_updates_reach_the_connection() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        fast = await rtt(r, w)
        assert fast < 0.05
        proxy.update([toxic("latency", latency_ms=100)])  # the open connection too
        slow = await rtt(r, w)
        assert 0.1 <= slow < 0.1 + SLACK, slow
        proxy.update([toxic("latency", latency_ms=100, direction="both")])
        both = await rtt(r, w)
        assert 0.2 <= both < 0.2 + SLACK, both
        proxy.update([])
        assert await rtt(r, w) < 0.1
    run(body)


def test_toxicity_zero_applies_to_no_connection() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(5):
            assert await rtt(r, w) < 0.1
    run(body, (toxic("latency", latency_ms=300, toxicity=0.0),))


def test_cut_after_closes_both_sides_at_t() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        assert await rtt(r, w) < 0.1  # forwards until then
        assert await r.read(100) == b""
        took = time.monotonic() - start
        assert 0.2 <= took < 0.2 + SLACK, took
    run(body, (toxic("cut_after", timeout_ms=200),))


def test_reset_peer_sends_rst() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        with pytest.raises(ConnectionResetError):
            await r.read(100)
        assert 0.1 <= time.monotonic() - start < 0.1 + SLACK
    run(body, (toxic("reset_peer", timeout_ms=100),))


def test_limit_data_passes_exactly_its_bytes_then_closes() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"0123456789abcdef")
        assert await r.read() == b"0123456789"
    run(body, (toxic("limit_data", bytes=10),))


def test_timeout_zero_stops_forwarding_and_a_timed_one_closes() -> None:
    async def silent(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"lost\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.read(100), 0.3)  # nothing comes through
        proxy.update([])  # the stream lost bytes: removing the toxic closes it
        assert await r.read(100) == b""
    run(silent, (toxic("timeout", direction="upstream"),))

    async def closes(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        w.write(b"lost\n")
        assert await r.read(100) == b""
        assert 0.15 <= time.monotonic() - start < 0.15 + SLACK
    run(closes, (toxic("timeout", timeout_ms=150),))


def test_bandwidth_limits_the_rate() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        w.write(b"x" * 50_000)
        await r.readexactly(50_000)
        took = time.monotonic() - start
        assert 0.45 <= took < 0.5 + 2 * SLACK, took  # 50 kB at 100 kB/s
    run(body, (toxic("bandwidth", rate_kbps=100),))


def test_slicer_keeps_the_bytes_and_spreads_them_out() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        w.write(b"y" * 100)
        assert await r.readexactly(100) == b"y" * 100
        assert time.monotonic() - start >= 9 * 0.01  # 10 slices, 10 ms apart
    run(body, (toxic("slicer", average_size=10, size_variation=0, delay_us=10_000),))


def test_loss_with_certainty_drops_the_connection() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"gone\n")
        with pytest.raises(ConnectionResetError):
            await r.read(100)
    run(body, (toxic("loss", probability=1.0, direction="upstream"),))


def test_slow_close_holds_the_fin_back() -> None:
    async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.close()

    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        assert await r.readexactly(3) == b"bye"
        assert await r.read(100) == b""
        assert 0.15 <= time.monotonic() - start < 0.15 + SLACK
    run(body, (toxic("slow_close", delay_ms=150),), server=closer)


def test_closing_the_proxy_refuses_new_connections_and_ends_live_ones() -> None:
    async def body(proxy: Proxy, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await rtt(r, w)
        address = proxy.server.sockets[0].getsockname()[:2] if proxy.server else None
        assert address and len(proxy.links) == 1
        await proxy.close()
        assert await r.read(100) == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*address)
    run(body)


@pytest.mark.parametrize(("kw", "field"), [
    ({"type": "nope"}, "t.type"),
    ({"type": ""}, "t.type"),
    ({"type": "latency", "latency_ms": 60_001}, "t.latency_ms"),
    ({"type": "latency"}, "t.latency_ms"),
    ({"type": "latency", "latency_ms": 5, "toxicity": 1.5}, "t.toxicity"),
    ({"type": "latency", "latency_ms": 5, "toxicity": -0.1}, "t.toxicity"),
    ({"type": "latency", "latency_ms": 5, "rate_kbps": 3}, "t.rate_kbps"),
    ({"type": "bandwidth", "rate_kbps": -1}, "t.rate_kbps"),
    ({"type": "loss", "probability": 2.0}, "t.probability"),
    ({"type": "latency", "latency_ms": 5, "direction": "sideways"}, "t.direction"),
    ({"type": "slicer", "average_size": 4, "size_variation": 4}, "t.size_variation"),
    ({"type": "latency", "latency_ms": 5, "name": "bad name!"}, "t.name"),
])
def test_bad_toxics_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        tx.parse_one(pb.Toxic(**kw), "t")
    assert err.value.field == field


def test_two_toxics_of_one_name_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        tx.parse([pb.Toxic(type="latency", latency_ms=1), pb.Toxic(type="latency",
                                                                    latency_ms=2)], "x")
    assert err.value.field == "x[1].name"


def test_placement_prefers_the_network_address_then_the_published_port() -> None:
    from agent.faults.proxyfault import _upstream

    box = pb.Container(name="db", ip_addresses={"b-net": "10.0.1.2", "a-net": "10.0.0.2"})
    assert _upstream(box, 5432, "") == ("10.0.0.2", 5432)  # the first network by name
    assert _upstream(box, 5432, "b-net") == ("10.0.1.2", 5432)
    with pytest.raises(InvalidArgument) as err:
        _upstream(box, 5432, "c-net")
    assert err.value.field == "spec.proxy.network"
    published = pb.Container(name="db", ports=[pb.PortMapping(
        container_port=5432, host_port=15432, protocol="tcp", host_ip="0.0.0.0")])
    assert _upstream(published, 5432, "") == ("127.0.0.1", 15432)
    from shakedown.errors import FailedPrecondition
    with pytest.raises(FailedPrecondition) as failed:
        _upstream(pb.Container(name="db"), 5432, "")
    assert failed.value.field == "spec.proxy.container"


def test_listen_addresses_are_loopback_unless_allowed() -> None:
    from agent.faults.proxyfault import parse_listen
    from shakedown.errors import PolicyError

    assert parse_listen("", False) == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080", False) == ("::1", 8080)
    assert parse_listen("0.0.0.0:0", True) == ("0.0.0.0", 0)
    with pytest.raises(PolicyError) as denied:
        parse_listen("0.0.0.0:0", False)
    assert denied.value.field == "spec.proxy.listen" and "--allow-proxy-bind" in str(denied.value)
    for bad in ("127.0.0.1:70000", "localhost:80", "127.0.0.1", "127.0.0.1:x"):
        with pytest.raises(InvalidArgument) as err:
            parse_listen(bad, True)
        assert err.value.field == "spec.proxy.listen", bad
