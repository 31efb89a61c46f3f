"""``SessionHandle``: a session that stays alive while the handle is open.

The agent reaps a non-persistent session (and its containers) once keep-alives
stop for its TTL: the "Ryuk guarantee". The handle's daemon thread sends one
every ttl/3 seconds, so a crashed test process leaks nothing for longer than
the TTL, and leaving the ``with`` block closes the session at once.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from driver.types import Container, ContainerSpec, Network, Selector, Session
from shakedown.errors import NotFound, ShakedownError

if TYPE_CHECKING:
    from driver.client import AgentClient


class SessionHandle:
    def __init__(self, client: AgentClient, session: Session, *, keepalive: bool = True) -> None:
        self.client = client
        self.session = session
        self.closed = False
        # The last keep-alive failure, if any (a test may assert it stayed None).
        self.keepalive_error: ShakedownError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if keepalive and session.ttl_seconds > 0:
            self._thread = threading.Thread(
                target=self._keepalive_loop, name=f"shakedown-keepalive-{session.id[:12]}",
                daemon=True,
            )
            self._thread.start()

    @property
    def id(self) -> str:
        return self.session.id

    def __repr__(self) -> str:
        return f"SessionHandle({self.id!r}, node={self.client.node!r}, closed={self.closed})"

    def _keepalive_loop(self) -> None:
        interval = max(self.session.ttl_seconds / 3, 0.2)
        # Event.wait doubles as the sleep and the stop signal: close() wakes it.
        while not self._stop.wait(interval):
            try:
                self.client.keep_alive(self.id, timeout=interval)
                self.keepalive_error = None
            except NotFound as exc:  # reaped or closed elsewhere: nothing left to keep
                self.keepalive_error = exc
                return
            except ShakedownError as exc:  # transient: try again next tick
                self.keepalive_error = exc
            except ValueError:  # the client's channel was closed under us: nothing to keep
                return

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
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

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
