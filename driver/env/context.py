"""Isolated test contexts: one agent session per node, a labelled scope, a temp dir.

    with env.context("checkout-flow", ttl=30) as ctx:
        c = ctx.run("dev-n1", ContainerSpec(BUSYBOX_IMAGE, ["sleep", "60"]))
        ...
    # every container of the context is gone, and so is ctx.temp_dir

A context needs nothing from an environment but its clients, a name, a run id
and a directory for temp dirs (`ContextHost`); a local `Environment` and an
inventory of already-running agents (`InventoryEnv`) both provide them.

Setup and teardown are one concurrent round of OpenSession / CloseSession
across the nodes: no other round trip, so an empty context costs about one
RPC's latency. If the driver dies, the agents reap the sessions after their TTL.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from driver.fanout import Results, fan_out
from shakedown.labels import SESSION_LABEL_PREFIX

if TYPE_CHECKING:
    from driver.client import AgentClient
    from driver.faults.context import ContextFaults
    from driver.inventory import Inventory
    from driver.session import SessionHandle
    from driver.types import Container, ContainerSpec, Network

log = logging.getLogger("shakedown.context")
T = TypeVar("T")

# Caller-visible label keys (io.shakedown.* is reserved for the agent in specs).
CONTEXT_LABEL = "shakedown.context"
ENV_LABEL = "shakedown.env"
RUN_LABEL = "shakedown.run"
_SLUG_RE = re.compile(r"[^a-z0-9]+")
SLUG_MAX = 40  # the id goes into session names (<= 128) and dir names


class ContextCleanupError(RuntimeError):
    """Leaving a context failed to release something; `errors` says what, per node."""

    def __init__(self, context_id: str, errors: list[str]) -> None:
        self.context_id, self.errors = context_id, list(errors)
        super().__init__(f"context {context_id}: cleanup failed: " + "; ".join(errors))


@runtime_checkable
class ContextHost(Protocol):
    """What a context needs from an environment."""

    @property
    def name(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def temp_root(self) -> Path: ...

    def clients(self) -> dict[str, AgentClient]: ...


def as_host(env: Any) -> ContextHost:
    if isinstance(env, ContextHost):
        return env
    raise TypeError(f"{env!r}: not an environment (needs name, run_id, temp_root, clients())")


def slug(name: str) -> str:
    """`tests/test_x.py::test_y[n1]` -> `tests-test-x-py-test-y-n1`, kept to its tail."""
    text = _SLUG_RE.sub("-", name.lower()).strip("-")
    return text[-SLUG_MAX:].lstrip("-") or "ctx"


class TestContext:
    """An isolated scope on every node of an environment.

    Labels (values: `id`, env name, env run id):

    - `labels` = {"shakedown.context", "shakedown.env", "shakedown.run"} are merged
      into every spec given to `run()` / `create()` (over a caller's same keys), so
      `selector` ({"shakedown.context": id}) finds them with `client.list()`;
    - the same dict is passed as the *session* labels, which the agent stamps on
      every container of the session as `io.shakedown.session.label.<key>`,
      so `session_selector` ({"io.shakedown.session.label.shakedown.context": id})
      matches the context's containers however they were created (also through
      `ctx.sessions[node]` directly).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, host: ContextHost, name: str, ttl: int,
                 nodes: Collection[str] | None = None,
                 labels: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.name = name
        self.ttl = ttl
        self.id = f"{slug(name)}-{secrets.token_hex(4)}"
        # `labels`: extra ones (the pytest plugin adds the xdist worker); ours win.
        self.labels: dict[str, str] = {
            **dict(labels or {}),
            CONTEXT_LABEL: self.id,
            ENV_LABEL: host.name,
            RUN_LABEL: host.run_id,
        }
        # `nodes` narrows the context (the pytest plugin leaves out nodes that are down).
        self.clients: dict[str, AgentClient] = {
            n: c for n, c in host.clients().items() if nodes is None or n in nodes}
        self.sessions: dict[str, SessionHandle] = {}
        self.temp_dir = host.temp_root / self.id
        self.opened = self.closed = False
        self._faults: ContextFaults | None = None

    @property
    def faults(self) -> ContextFaults:
        """Faults healed when the context closes (driver/faults/context.py)."""
        if self._faults is None:
            from driver.faults.context import ContextFaults

            self._faults = ContextFaults(self)
        return self._faults

    @property
    def nodes(self) -> list[str]:
        return list(self.clients)

    @property
    def selector(self) -> dict[str, str | None]:
        """Matches containers made through `run()` / `create()`."""
        return {CONTEXT_LABEL: self.id}

    @property
    def session_selector(self) -> dict[str, str | None]:
        """Matches every container of this context's sessions."""
        return {SESSION_LABEL_PREFIX + CONTEXT_LABEL: self.id}

    def __repr__(self) -> str:
        return f"TestContext({self.id!r}, nodes={self.nodes}, closed={self.closed})"

    # ------------------------------------------------------------ open / close

    def open(self) -> TestContext:
        """One OpenSession per node, concurrently; on any failure nothing is left open."""
        if self.opened:
            return self
        if self.closed:
            raise RuntimeError(f"context {self.id} is closed")
        self.opened = True
        self.temp_dir.mkdir(parents=True)
        results = fan_out(
            self.clients, lambda c: c.open_session(self.ttl, name=self.id, labels=self.labels)
        )
        self.sessions = {n: h for n, h in results.succeeded.items() if h is not None}
        if results.failed:
            errors = self.close()
            if errors:
                log.warning("context %s: cleanup after a failed open: %s", self.id, errors)
            results.raise_first()
        return self

    def close(self) -> list[str]:
        """Close every session concurrently and remove the temp dir; returns the errors."""
        if self.closed:
            return []
        self.closed = True
        self._follow_moved_agents()
        # Component faults belong to no session: heal them first (agent faults go below).
        errors = self._faults.close() if self._faults is not None else []
        errors += [
            f"node {n}: closing session {self.sessions[n].id}: {e}"
            for n, e in self._per_session(lambda h: h.close()).failed.items()
        ]
        try:
            shutil.rmtree(self.temp_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"removing {self.temp_dir}: {exc}")
        return errors

    def _follow_moved_agents(self) -> None:
        """An agent restarted on another port (its own was taken meanwhile) has a new
        client at the host, and the old one, under our session there, is closed: close the
        session through the new one (the restart most likely ended it: NotFound, which
        closing ignores)."""
        now = self.host.clients()
        for node, handle in self.sessions.items():
            client = now.get(node)
            if client is not None and client.address != handle.client.address:
                handle.client = self.clients[node] = client

    def __enter__(self) -> TestContext:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self.close()
        if not errors:
            return
        if exc is not None:
            # Never hide the test's own failure: log, and attach a note to it.
            log.warning("context %s: cleanup failed: %s", self.id, "; ".join(errors))
            exc.add_note(f"(also: context {self.id} cleanup failed: {'; '.join(errors)})")
            return
        raise ContextCleanupError(self.id, errors)

    # ------------------------------------------------------------ use

    def session(self, node: str) -> SessionHandle:
        try:
            return self.sessions[node]
        except KeyError:
            known = ", ".join(self.sessions) or "none"
            raise KeyError(f"context {self.id}: no node {node!r} (known: {known})") from None

    def with_labels(self, spec: ContainerSpec) -> ContainerSpec:
        return dataclasses.replace(spec, labels={**spec.labels, **self.labels})

    def create(
        self, node: str, spec: ContainerSpec, *, start: bool = False, **kwargs: Any
    ) -> Container:
        return self.session(node).create(self.with_labels(spec), start=start, **kwargs)

    def run(self, node: str, spec: ContainerSpec, **kwargs: Any) -> Container:
        return self.session(node).run(self.with_labels(spec), **kwargs)

    def create_network(self, node: str, name: str, *, internal: bool = False) -> Network:
        """A network owned by this context on `node`, removed with it.

        Network names are engine-wide (a local environment's nodes share one
        engine), so the real name is `<context id>-<node>-<name>`.
        """
        return self.session(node).create_network(
            f"{self.id}-{node}-{name}", internal=internal, labels=self.labels
        )

    def containers(self, *, all: bool = True) -> list[Container]:
        """This context's containers on every node (`Container.node` says where)."""
        found: list[Container] = []
        for containers in self._per_session(lambda h: h.list(all=all)).unwrap().values():
            found += containers or []
        return found

    def _per_session(self, fn: Callable[[SessionHandle], T]) -> Results[T]:
        """`fn(handle)` on every node's session at once (fan_out passes clients: map back)."""
        by_client = {id(h.client): h for h in self.sessions.values()}
        return fan_out(
            {n: h.client for n, h in self.sessions.items()}, lambda c: fn(by_client[id(c)])
        )


@contextmanager
def open_context(env: Any, name: str = "", *, ttl: int = 30,
                 nodes: Collection[str] | None = None,
                 labels: Mapping[str, str] | None = None) -> Iterator[TestContext]:
    """`with open_context(env, "name") as ctx:` (what `Environment.context()` calls)."""
    with TestContext(as_host(env), name, ttl, nodes, labels) as ctx:
        yield ctx


# ---------------------------------------------------------------- inventory-backed


@dataclass
class InventoryEnv:
    """Already-running agents from an inventory file: no env dir, no local components.

    Satisfies `ContextHost`; `dns`/`etcd` are None and `domain` empty (no
    discovery to check). Temp dirs go under `temp_root` (a fresh one by default,
    removed by `close()`).
    """

    inventory_path: Path
    name: str = ""
    temp_root: Path = field(default=Path())
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    domain: str = ""
    dns: str | None = None
    etcd: str | None = None
    _clients: dict[str, AgentClient] | None = field(default=None, repr=False)
    _own_temp: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.inventory_path = Path(self.inventory_path)
        self.name = self.name or slug(self.inventory_path.stem)
        if self.temp_root == Path():
            self.temp_root = Path(tempfile.mkdtemp(prefix=f"shakedown-{self.name}-"))
            self._own_temp = True
        self.inventory()  # validate now: a bad file is a usage error, not a test failure

    def inventory(self) -> Inventory:
        from driver.inventory import load_inventory

        return load_inventory(self.inventory_path)

    def clients(self) -> dict[str, AgentClient]:
        with self._lock:  # contexts open from many threads
            if self._clients is None:
                self._clients = self.inventory().clients()
            return dict(self._clients)

    @contextmanager
    def context(self, name: str = "", *, ttl: int = 30) -> Iterator[TestContext]:
        with open_context(self, name, ttl=ttl) as ctx:
            yield ctx

    def close(self) -> None:
        with self._lock:
            for c in (self._clients or {}).values():
                c.close()
            self._clients = None
        if self._own_temp:
            shutil.rmtree(self.temp_root, ignore_errors=True)


__all__ = [
    "CONTEXT_LABEL",
    "ENV_LABEL",
    "RUN_LABEL",
    "ContextCleanupError",
    "ContextHost",
    "InventoryEnv",
    "TestContext",
    "as_host",
    "open_context",
    "slug",
]
