"""The replay window: nonces seen while their timestamp is still acceptable.

A nonce need only be remembered while its timestamp is still acceptable
(ts + skew): after that the timestamp check rejects a replay on its own.
Bounded, so a flood of valid calls cannot grow memory without limit.

With a state directory the window survives restarts: every accepted nonce is
appended to ``<state-dir>/nonces`` with ``os.write`` before the call's handler
runs. The record is then in the kernel's page cache, which a SIGTERM or SIGKILL
of the agent cannot lose; it is not fsynced per call (a host crash or power
loss can lose the last records, and with them the window: a reboot takes
longer than the 30 s default window in practice). On start, expired records
are skipped; the file is compacted (rewritten with the live records) by the
serving agent whenever it holds more than twice the live records (and at
least COMPACT_MIN).
Format, one record a line: ``<forget_at unix seconds> <key id> <nonce>``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from shakedown.errors import ResourceExhausted

log = logging.getLogger("shakedown.agent.auth")

COMPACT_MIN = 10_000


class NonceCache:
    def __init__(
        self, max_entries: int = 1_000_000, path: Path | None = None, now: float | None = None
    ) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self.path = path
        self._fd: int | None = None
        self._records = 0
        if path is not None:
            self._load(path, now)

    # -- persistence ----------------------------------------------------------

    def _load(self, path: Path, now: float | None) -> None:
        current = time.time() if now is None else now
        path.parent.mkdir(parents=True, exist_ok=True)
        live: list[tuple[float, str, str]] = []
        total, torn = 0, False
        try:
            with path.open("r", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    total += 1
                    parts = line.split()
                    # A torn last line (a crash mid-write) simply does not parse.
                    torn = not line.endswith("\n")
                    if len(parts) != 3 or torn:
                        continue
                    try:
                        forget_at = float(parts[0])
                    except ValueError:
                        continue
                    if forget_at > current:
                        live.append((forget_at, parts[1], parts[2]))
        except FileNotFoundError:
            pass
        live.sort()
        for forget_at, key_id, nonce in live[-self._max :]:
            self._seen[(key_id, nonce)] = forget_at
        # Append to the file as it is: loading never rewrites it, so an instance that
        # fails to start (its name held by a live agent) cannot pull the file from
        # under the live one. The first admitted call compacts it if it is mostly dead.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        if torn:  # end the torn line, or the next record would be glued to it
            os.write(fd, b"\n")
        self._fd, self._records = fd, total
        log.info(
            "replay window restored", extra={"fields": {"path": str(path), "nonces": len(live)}}
        )

    def _rewrite(self) -> None:
        """Atomically replace the file with the live records and reopen it for appending."""
        assert self.path is not None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = "".join(f"{math.ceil(f)} {k} {n}\n" for (k, n), f in self._seen.items())
            os.write(fd, data.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._records = len(self._seen)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- the window -----------------------------------------------------------

    def add(self, key_id: str, nonce: str, forget_at: float, now: float) -> bool:
        """Record a nonce (durably, with a state dir); False when it was already seen."""
        with self._lock:
            self._prune(now)
            token = (key_id, nonce)
            if token in self._seen:
                return False
            if len(self._seen) >= self._max:
                raise ResourceExhausted("nonce cache full: too many signed calls in the window")
            if self._fd is not None:
                # Before the handler runs: a crash right after the call cannot forget it.
                os.write(self._fd, f"{math.ceil(forget_at)} {key_id} {nonce}\n".encode("ascii"))
                self._records += 1
                if self._records > max(COMPACT_MIN, 2 * len(self._seen)):
                    self._seen[token] = forget_at
                    self._rewrite()
                    return True
            self._seen[token] = forget_at
            return True

    def _prune(self, now: float) -> None:
        # Entries are nearly sorted by forget_at; stop at the first live one.
        while self._seen:
            _, forget_at = next(iter(self._seen.items()))
            if forget_at > now:
                break
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
