"""The fault proxy: a TCP listener on the agent's host in front of one upstream address.

Each accepted connection becomes a ``Link`` to the upstream, with one ``Pipe``
per direction. A pipe reads large chunks and, while none of its toxics apply,
writes them straight on (no queue, no per-byte work: the no-toxic path costs one
read and one write per chunk); otherwise chunks go through a bounded queue,
stamped with their arrival time, to a writer that runs them through the toxics.
``Proxy.update`` swaps the toxics of every live link at once; closing the proxy
closes its listener and all its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Sequence

from agent.faults import toxics as tx
from agent.faults.toxics import Toxic

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
QUEUE = 64  # chunks in flight through toxics per direction (backpressure beyond)
CONNECT_TIMEOUT = 5.0
_LINGER_RST = struct.pack("ii", 1, 0)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class Pipe:
    """One direction of a link: src's bytes, through this direction's toxics, to dst."""

    def __init__(self, link: Link, direction: str, src: asyncio.StreamReader,
                 dst: asyncio.StreamWriter) -> None:
        self.link, self.direction, self.src, self.dst = link, direction, src, dst
        self.chain: tuple[Toxic, ...] = ()  # per-chunk toxics applying here, in order
        self.slow_close = 0.0
        self.counters: dict[str, int] = {}  # per toxic name: bytes passed or dropped
        self.queue: asyncio.Queue[tuple[bytes | None, float]] = asyncio.Queue(QUEUE)
        self.busy = False  # the writer holds a chunk: later ones must queue behind it

    def close_link(self, reason: str) -> None:
        self.link.close(reason)

    def reset_link(self, reason: str) -> None:
        self.link.reset(reason)

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.src.read(CHUNK)
                if not self.chain and not self.busy and self.queue.empty():
                    if not data:
                        await self._eof()
                        return
                    self.dst.write(data)
                    await self.dst.drain()
                    continue
                await self.queue.put((data or None, loop.time()))
                if not data:
                    return
        except (ConnectionError, OSError) as exc:
            self.link.reset(f"{self.direction}: {exc.__class__.__name__}")

    async def write(self) -> None:
        try:
            while True:
                data, at = await self.queue.get()
                self.busy = True
                if data is None:
                    await self._eof()
                    return
                await self._through(self.chain, 0, data, at)
                self.busy = False
        except (ConnectionError, OSError) as exc:
            self.link.reset(f"{self.direction}: {exc.__class__.__name__}")

    async def _through(self, chain: tuple[Toxic, ...], i: int, data: bytes, at: float) -> None:
        if i == len(chain):
            if data:
                self.dst.write(data)
                await self.dst.drain()
            return

        async def forward(piece: bytes, when: float) -> None:
            await self._through(chain, i + 1, piece, when)
        await tx.behaviour(chain[i])(chain[i], self, data, at, forward)

    async def _eof(self) -> None:
        if self.slow_close:
            await asyncio.sleep(self.slow_close)
        if self.dst.can_write_eof() and not self.dst.is_closing():
            self.dst.write_eof()
        self.link.half_closed()


class Link:
    """One proxied connection: a client and its upstream, two pipes, the timed toxics."""

    def __init__(self, proxy: Proxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        loop = asyncio.get_running_loop()
        self.proxy, self.loop, self.opened = proxy, loop, loop.time()
        self.client, self.upstream = client[1], upstream[1]
        self.pipes = {"upstream": Pipe(self, "upstream", client[0], upstream[1]),
                      "downstream": Pipe(self, "downstream", upstream[0], client[1])}
        self.rolls: dict[str, float] = {}  # per toxic name: this connection's draw
        self.timers: dict[str, tuple[Toxic, asyncio.TimerHandle]] = {}
        self.applied: dict[str, Toxic] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.eofs = 0
        self.done = asyncio.Event()

    def applies(self, t: Toxic) -> bool:
        return self.rolls.setdefault(t.name, random.random()) < t.toxicity

    def apply(self, toxics: Sequence[Toxic]) -> None:
        """Make ``toxics`` (the proxy's full list) this link's, now."""
        mine = {t.name: t for t in toxics if self.applies(t)}
        for name, old in self.applied.items():
            if old.type == "timeout" and mine.get(name) != old and any(
                    p.counters.get(name) for p in self.pipes.values()):
                self.close(f"{name}: timeout removed after it dropped data")
                return
        for direction, pipe in self.pipes.items():
            here = [t for t in mine.values() if t.acts_on(direction)]
            pipe.chain = tx.per_chunk(here)
            pipe.slow_close = max((t.get("delay_ms") for t in here if t.type == "slow_close"),
                                  default=0) / 1000
        for name, (old, handle) in list(self.timers.items()):
            if mine.get(name) != old:
                handle.cancel()
                del self.timers[name]
        now = self.loop.time()
        for t in mine.values():
            if t.type not in tx.TIMED or t.name in self.timers:
                continue
            after = t.get("timeout_ms") / 1000
            if t.type == "timeout" and not after:
                continue  # stops forwarding forever: nothing to time
            if t.type == "cut_after":
                after = max(0.0, self.opened + after - now)
            action = self.reset if t.type == "reset_peer" else self.close
            note = f"{t.name}: {t.type} after {int(t.get('timeout_ms'))} ms"
            self.timers[t.name] = (t, self.loop.call_later(after, action, note))
        self.applied = mine

    async def run(self) -> None:
        self.apply(self.proxy.toxics)
        for pipe in self.pipes.values():
            self.tasks += [asyncio.ensure_future(pipe.read()), asyncio.ensure_future(pipe.write())]
        try:
            await self.done.wait()
        finally:
            self._stop()

    def half_closed(self) -> None:
        self.eofs += 1
        if self.eofs == 2:
            self.close("both sides closed")

    def close(self, reason: str) -> None:
        if not self.done.is_set():
            log.debug("proxied connection closed: %s", reason)
            for w in (self.client, self.upstream):
                w.close()
            self.done.set()

    def reset(self, reason: str) -> None:
        if not self.done.is_set():
            log.debug("proxied connection reset: %s", reason)
            for w in (self.client, self.upstream):
                _rst(w)
            self.done.set()

    def _stop(self) -> None:
        for _, handle in self.timers.values():
            handle.cancel()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.done.set()


class Proxy:
    """A listener forwarding to ``upstream`` (host, port), with live-swappable toxics."""

    def __init__(self, upstream: tuple[str, int], toxics: Sequence[Toxic] = ()) -> None:
        self.upstream = upstream
        self.toxics: tuple[Toxic, ...] = tuple(toxics)
        self.links: set[Link] = set()
        self.server: asyncio.base_events.Server | None = None
        self.accepted = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen (port 0: a port the kernel picks); returns the address bound."""
        self.server = await asyncio.start_server(self._accept, host, port, limit=CHUNK,
                                                 reuse_address=True)
        bound = self.server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def update(self, toxics: Sequence[Toxic]) -> None:
        """Replace the toxics (full state): new connections and live ones alike."""
        self.toxics = tuple(toxics)
        for link in list(self.links):
            link.apply(self.toxics)

    async def close(self) -> None:
        """Stop listening (new connects are refused), then close every connection."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for link in list(self.links):
            link.close("the proxy was healed")
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.server is None:
            writer.transport.abort()
            return
        try:
            up = await asyncio.wait_for(asyncio.open_connection(
                *self.upstream, limit=CHUNK), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            log.info("proxy cannot reach its upstream %s:%s: %s", *self.upstream, exc)
            _rst(writer)  # the client sees its connection reset, as with no server
            return
        if self.server is None:  # healed while we connected: no link may outlive it
            writer.close()
            up[1].close()
            return
        link = Link(self, (reader, writer), up)
        self.links.add(link)
        try:
            await link.run()
        except asyncio.CancelledError:
            # The loop is shutting down. Not re-raised: on 3.11 the streams server's
            # done-callback calls task.exception(), which raises for a cancelled task.
            link.close("cancelled")
        finally:
            self.links.discard(link)
