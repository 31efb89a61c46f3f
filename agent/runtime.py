"""The Docker engine, seen through the docker SDK.

Every blocking SDK call runs in this runtime's own thread pools, never on the
event loop. Ownership is decided by labels alone: a container is *managed*
when it carries this agent's managed-by and node labels, *adopted* when it
matches an operator adopt selector; nothing else is ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import docker
import requests
from docker.types import Mount
from docker.types.daemon import CancellableStream

from agent import nodeinfo
from agent.policy import HostLimits, parse_selector
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ShakedownError,
    Unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Selector = list[tuple[str, str | None]]

STREAM_WORKERS = 64  # long waits: logs --follow, wait, exec
EXEC_OUTPUT_CAP = 1536 * 1024  # per stream; keeps an ExecResponse under gRPC's 4 MiB default
WAIT_SLICE = 5.0  # a blocking wait re-checks cancellation this often
_STATES = {
    "created": pb.CONTAINER_STATE_CREATED, "running": pb.CONTAINER_STATE_RUNNING,
    "paused": pb.CONTAINER_STATE_PAUSED, "restarting": pb.CONTAINER_STATE_RESTARTING,
    "exited": pb.CONTAINER_STATE_EXITED, "dead": pb.CONTAINER_STATE_DEAD,
    "removing": pb.CONTAINER_STATE_REMOVING,
}
_EXITED = re.compile(r"Exited \((-?\d+)\)")
_NOT_MANAGED = "not found or not managed by this agent"


@dataclass
class SessionInfo:
    """What the labels of a session's containers say about it."""

    id: str
    name: str = ""
    ttl: int = 30
    persistent: bool = False
    principal: str = ""
    created: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


def session_labels(s: SessionInfo) -> dict[str, str]:
    out = {
        L.SESSION: s.id, L.SESSION_NAME: s.name, L.SESSION_TTL: str(s.ttl),
        L.SESSION_PERSISTENT: "true" if s.persistent else "false",
        L.SESSION_PRINCIPAL: s.principal, L.SESSION_CREATED: f"{s.created:.3f}",
    }
    out.update({L.SESSION_LABEL_PREFIX + k: v for k, v in s.labels.items()})
    return out


def session_from_labels(sid: str, labels: dict[str, str]) -> SessionInfo:
    def num(key: str, default: float) -> float:
        try:
            return float(labels.get(key, default))
        except ValueError:
            return default

    n = len(L.SESSION_LABEL_PREFIX)
    return SessionInfo(
        id=sid, name=labels.get(L.SESSION_NAME, ""), ttl=max(1, int(num(L.SESSION_TTL, 30))),
        persistent=labels.get(L.SESSION_PERSISTENT) == "true",
        principal=labels.get(L.SESSION_PRINCIPAL, ""), created=num(L.SESSION_CREATED, 0.0),
        labels={k[n:]: v for k, v in labels.items() if k.startswith(L.SESSION_LABEL_PREFIX)},
    )


def matches(labels: dict[str, str], selector: Selector) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in selector)


def translate(exc: BaseException, field: str = "container") -> BaseException:
    """Map an SDK/transport exception to the matching ShakedownError."""
    if isinstance(exc, ShakedownError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(_explain(exc), field=field)
    if isinstance(exc, docker.errors.APIError):
        msg, code = _explain(exc), exc.status_code
        if code == 409:
            if "already in use" in msg or "Conflict. The container name" in msg:
                return AlreadyExists(msg, field="spec.name")
            return FailedPrecondition(msg, field=field)
        if code == 400:
            return InvalidArgument(msg, field=field)
        return InternalError(f"docker engine: {msg}", field=field)
    if isinstance(exc, requests.exceptions.Timeout):
        return DeadlineExceeded(f"docker engine did not answer in time: {exc}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unavailable(f"docker engine unreachable: {exc}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        return InternalError(f"docker engine: {exc}")
    return exc


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


class _Cancel:
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


def _close_response(res: Any) -> None:
    # CancellableStream.close shuts the socket down, which unblocks a reader thread.
    with contextlib.suppress(Exception):
        CancellableStream(iter(()), res).close()
    with contextlib.suppress(Exception):
        res.close()


# Event attributes that are not container labels.
_EVENT_ATTRS = frozenset({"name", "image", "exitCode", "signal", "execID", "container"})


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[pb.Event]
    selector: Selector
    session_id: str
    overflowed: bool = False


class EventHub:
    """ONE engine events stream (a daemon thread), fanned out to asyncio subscribers.

    Each subscriber has a bounded queue; one that falls behind is dropped (it
    gets ResourceExhausted once it has drained what it had) so it never slows
    the others or the thread.
    """

    def __init__(self, api: Any, node: str,
                 ownership: Callable[[dict[str, str]], tuple[bool, bool]],
                 on_destroy: Callable[[str], None], queue_size: int = 1024) -> None:
        self.api, self.node, self.queue_size = api, node, queue_size
        self._ownership, self._on_destroy = ownership, on_destroy
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._subs: set[_Subscriber] = set()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def subscribe(self, selector: Selector, session_id: str) -> AsyncGenerator[pb.Event, None]:
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(self.queue_size),
                          selector, session_id)
        with self._lock:
            self._subs.add(sub)
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(target=self._pump, name="docker-events",
                                                daemon=True)
                self._thread.start()
        return self._iterate(sub)

    async def _iterate(self, sub: _Subscriber) -> AsyncGenerator[pb.Event, None]:
        try:
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise ResourceExhausted(f"events subscriber fell more than {self.queue_size} "
                                            "events behind and was dropped")
                yield await sub.queue.get()
        finally:
            self._discard(sub)

    def _discard(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def _pump(self) -> None:
        last = 0  # timeNano of the last event seen: resume after a reconnect without repeats
        backoff = 0.5
        while not self._closing.is_set():
            try:
                since = f"{last / 1e9:.9f}" if last else None
                stream = self.api.events(since=since, filters={"type": "container"}, decode=True)
                with self._lock:
                    self._stream = stream
                if self._closing.is_set():
                    break
                self.connected.set()
                backoff = 0.5
                for ev in stream:
                    stamp = int(ev.get("timeNano") or 0)
                    if stamp and stamp <= last:
                        continue
                    last = stamp or last
                    self._dispatch(ev)
            except Exception as exc:
                log.warning("docker events stream failed, reconnecting: %s", exc)
            self.connected.clear()
            self._closing.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _dispatch(self, ev: dict[str, Any]) -> None:
        if ev.get("Type", "container") != "container":
            return
        actor = ev.get("Actor") or {}
        attrs: dict[str, str] = dict(actor.get("Attributes") or {})
        cid = actor.get("ID") or ev.get("id") or ""
        action = ev.get("Action") or ev.get("status") or ""
        if action == "destroy":
            self._on_destroy(cid)
        labels = {k: v for k, v in attrs.items() if k not in _EVENT_ATTRS}
        if not self._ownership(labels)[0]:
            return
        event = pb.Event(action=action, container_id=cid, container_name=attrs.get("name", ""),
                         session_id=labels.get(L.SESSION, ""), labels=labels, node=self.node)
        event.time.FromNanoseconds(int(ev.get("timeNano") or time.time_ns()))
        if action == "die" and attrs.get("exitCode", "").lstrip("-").isdigit():
            event.exit_code = int(attrs["exitCode"])
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.session_id and labels.get(L.SESSION) != sub.session_id:
                continue
            if matches(labels, sub.selector):
                try:
                    sub.loop.call_soon_threadsafe(self._offer, sub, event)
                except RuntimeError:  # its loop is closed
                    self._discard(sub)

    def _offer(self, sub: _Subscriber, event: pb.Event) -> None:
        if sub.overflowed:
            return
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            sub.overflowed = True
            self._discard(sub)
            log.warning("dropping a slow events subscriber (%d events queued)", self.queue_size)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            stream, thread = self._stream, self._thread
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if thread is not None:
            thread.join(timeout=5)


class DockerRuntime:
    def __init__(self, node: str, adopt: Sequence[str] = (), *, docker_host: str | None = None,
                 client: docker.DockerClient | None = None, max_workers: int = 32) -> None:
        self.node = node
        self.adopt: list[Selector] = [parse_selector([s], "adopt") for s in adopt]
        pool_size = max_workers + STREAM_WORKERS + 4
        if client is None:
            client = (docker.DockerClient(base_url=docker_host, max_pool_size=pool_size)
                      if docker_host else docker.from_env(max_pool_size=pool_size))
        self.client = client
        self.api = client.api
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="docker")
        self._streams = ThreadPoolExecutor(STREAM_WORKERS, thread_name_prefix="docker-stream")
        # ref (full id or name) -> (full id, managed); labels are immutable, so this
        # only saves the ownership inspect; a stale entry just yields a 404 → NotFound.
        self._known: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._known_lock = threading.Lock()
        self._facts: nodeinfo.NodeFacts | None = None
        self._facts_lock = threading.Lock()
        self.hub = EventHub(self.api, node, self.ownership, self._forget)

    # ------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[..., T], *args: Any, field: str = "container",
                   pool: ThreadPoolExecutor | None = None) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool or self._pool, functools.partial(fn, *args))
        except Exception as exc:
            raise translate(exc, field) from exc

    def _remember(self, cid: str, name: str, managed: bool) -> None:
        with self._known_lock:
            self._known[cid] = self._known[name] = (cid, managed)
            while len(self._known) > 8192:
                self._known.popitem(last=False)

    def _forget(self, cid: str) -> None:
        with self._known_lock:
            for key in [k for k, v in self._known.items() if v[0] == cid]:
                del self._known[key]

    def ownership(self, labels: dict[str, str] | None) -> tuple[bool, bool]:
        """(visible, managed) for a container with these labels."""
        labels = labels or {}
        managed = (labels.get(L.MANAGED_BY) == L.MANAGED_BY_VALUE
                   and labels.get(L.NODE) == self.node)
        return managed or any(matches(labels, sel) for sel in self.adopt), managed

    def _resolve(self, ref: str) -> tuple[str, dict[str, Any] | None]:
        """Full id of a container we may touch (+ its inspect, when we had to look)."""
        with self._known_lock:
            hit = self._known.get(ref)
        if hit:
            return hit[0], None
        attrs = self._inspect_owned(ref)
        return attrs["Id"], attrs

    def _inspect_owned(self, ref: str) -> dict[str, Any]:
        try:
            attrs = self.api.inspect_container(ref)
        except docker.errors.NotFound:
            raise NotFound(f"container {ref!r} {_NOT_MANAGED}", field="container") from None
        visible, managed = self.ownership(attrs.get("Config", {}).get("Labels"))
        if not visible:
            raise NotFound(f"container {ref!r} {_NOT_MANAGED}", field="container")
        self._remember(attrs["Id"], attrs.get("Name", "").lstrip("/"), managed)
        return attrs

    def _on(self, ref: str, fn: Callable[[str, dict[str, Any] | None], T]) -> T:
        """fn(full id, inspect or None) on a container we may touch. A stale cache entry
        (the container went away, its name reused) is dropped and resolved once more."""
        for attempt in (0, 1):
            cid, attrs = self._resolve(ref)
            try:
                return fn(cid, attrs)
            except docker.errors.NotFound:
                self._forget(cid)
                if attrs is not None or attempt:
                    raise NotFound(f"container {ref!r} {_NOT_MANAGED}",
                                   field="container") from None
        raise AssertionError("unreachable")

    def _act(self, ref: str, action: Callable[[str], Any]) -> pb.Container:
        def run(cid: str, _: dict[str, Any] | None) -> pb.Container:
            action(cid)
            return self.to_pb(self.api.inspect_container(cid))
        return self._on(ref, run)

    # ------------------------------------------------------------ create

    async def create(self, session: SessionInfo, spec: pb.ContainerSpec,
                     start: bool = False) -> pb.Container:
        return await self._run(self._create, session, spec, start, field="spec")

    def _create(self, session: SessionInfo, spec: pb.ContainerSpec, start: bool) -> pb.Container:
        labels = dict(spec.labels)
        labels.update(session_labels(session))
        labels.update({L.MANAGED_BY: L.MANAGED_BY_VALUE, L.NODE: self.node})
        kwargs = self._create_kwargs(spec, labels)
        if spec.pull_policy == pb.PULL_POLICY_ALWAYS:
            self._pull(spec.image)
        try:
            cid = self.api.create_container(**kwargs)["Id"]
        except docker.errors.ImageNotFound:
            if spec.pull_policy == pb.PULL_POLICY_NEVER:
                raise NotFound(f"image {spec.image!r} is not present on this node and "
                               "pull_policy is NEVER", field="spec.image") from None
            self._pull(spec.image)
            cid = self.api.create_container(**kwargs)["Id"]
        except docker.errors.NotFound as exc:
            where = "spec.network" if "network" in _explain(exc) else "spec"
            raise NotFound(_explain(exc), field=where) from None
        if start:
            try:
                self.api.start(cid)
            except docker.errors.APIError as exc:
                # Keep create+start atomic: a container that cannot start is not left behind.
                with contextlib.suppress(docker.errors.APIError):
                    self.api.remove_container(cid, force=True, v=True)
                msg = _explain(exc)
                if "executable file not found" in msg or "no such file or directory" in msg:
                    raise InvalidArgument(msg, field="spec.command") from None
                if isinstance(exc, docker.errors.NotFound) and "network" in msg:
                    raise NotFound(msg, field="spec.network") from None
                raise translate(exc, "spec") from None
        attrs = self.api.inspect_container(cid)
        self._remember(cid, attrs.get("Name", "").lstrip("/"), True)
        return self.to_pb(attrs)

    def _create_kwargs(self, spec: pb.ContainerSpec, labels: dict[str, str]) -> dict[str, Any]:
        bindings: dict[str, list[tuple[str, int | None]]] = {}
        ports: list[tuple[int, str]] = []
        for p in spec.ports:
            proto = p.protocol or "tcp"
            key = f"{p.container_port}/{proto}"
            if key not in bindings:
                ports.append((p.container_port, proto))
            bindings.setdefault(key, []).append((p.host_ip or "127.0.0.1", p.host_port or None))
        kinds = {pb.Mount.TYPE_VOLUME: "volume", pb.Mount.TYPE_TMPFS: "tmpfs",
                 pb.Mount.TYPE_BIND: "bind"}
        mounts = [Mount(m.target, m.source or None, type=kinds[m.type], read_only=m.read_only)
                  for m in spec.mounts]
        rp = spec.restart_policy
        host_config = self.api.create_host_config(
            port_bindings=bindings or None,
            mem_limit=spec.resources.memory_bytes or None,
            nano_cpus=spec.resources.nano_cpus or None,
            restart_policy={"Name": rp.name, "MaximumRetryCount": rp.max_retries}
            if rp.name else None,
            network_mode=spec.network or None, privileged=spec.privileged,
            pid_mode=spec.pid_mode or None, ipc_mode=spec.ipc_mode or None,
            cap_add=list(spec.cap_add) or None, devices=list(spec.devices) or None,
            mounts=mounts or None, init=True if spec.init else None,
        )
        return dict(
            image=spec.image, command=list(spec.command) or None,
            entrypoint=list(spec.entrypoint) or None,
            environment=[f"{k}={v}" for k, v in spec.env.items()] or None,
            labels=labels, ports=ports or None, host_config=host_config,
            name=spec.name or None, working_dir=spec.working_dir or None,
            user=spec.user or None, hostname=spec.hostname or None,
            stop_signal=spec.stop_signal or None, detach=True,
        )

    def _pull(self, image: str) -> None:
        try:
            for line in self.api.pull(image, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise Unavailable(f"pulling {image!r} failed: {line['error']}",
                                      field="spec.image")
        except docker.errors.NotFound as exc:
            raise NotFound(f"pulling {image!r} failed: {_explain(exc)}",
                           field="spec.image") from None
        except docker.errors.APIError as exc:
            raise Unavailable(f"pulling {image!r} failed: {_explain(exc)}",
                              field="spec.image") from None

    # ------------------------------------------------------------ lifecycle

    async def start(self, ref: str) -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.start(cid))

    async def stop(self, ref: str, timeout: int | None = None) -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.stop(cid, timeout=timeout)
                               if timeout is not None else self.api.stop(cid))

    async def kill(self, ref: str, signal: str = "SIGKILL") -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.kill(cid, signal=signal))

    async def pause(self, ref: str) -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.pause(cid))

    async def unpause(self, ref: str) -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.unpause(cid))

    async def restart(self, ref: str, timeout: int | None = None) -> pb.Container:
        return await self._run(self._act, ref, lambda cid: self.api.restart(
            cid, timeout=10 if timeout is None else timeout))

    async def inspect(self, ref: str) -> pb.Container:
        return await self._run(self._on, ref, lambda cid, attrs: self.to_pb(
            attrs or self.api.inspect_container(cid)))

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> str:
        def run(cid: str, _: dict[str, Any] | None) -> str:
            self.api.remove_container(cid, force=force, v=volumes)
            self._forget(cid)
            return cid
        return await self._run(self._on, ref, run)

    # ------------------------------------------------------------ queries

    async def list_containers(self, selector: Selector | None = None, all: bool = False,
                              session_id: str = "") -> list[pb.Container]:
        return [self.summary_to_pb(c) for c in await self._run(
            self._list, list(selector or ()), all, session_id)]

    def _list(self, selector: Selector, all: bool, session_id: str) -> list[dict[str, Any]]:
        extra = [k if v is None else f"{k}={v}" for k, v in selector]
        queries = [[f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE}", f"{L.NODE}={self.node}", *extra]]
        if session_id:
            queries[0].append(f"{L.SESSION}={session_id}")
        else:
            queries += [[k if v is None else f"{k}={v}" for k, v in sel] + extra
                        for sel in self.adopt]
        found: dict[str, dict[str, Any]] = {}
        for labels in queries:
            for c in self.api.containers(all=all, filters={"label": labels}):
                found.setdefault(c["Id"], c)
        return sorted(found.values(), key=lambda c: (c.get("Created", 0), c["Id"]))

    async def containers_of_session(self, session_id: str) -> list[str]:
        return [c.id for c in await self.list_containers(all=True, session_id=session_id)]

    async def session_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in await self.list_containers(all=True):
            if c.managed and c.session_id:
                counts[c.session_id] = counts.get(c.session_id, 0) + 1
        return counts

    async def remove_session(self, session_id: str) -> int:
        ids = await self.containers_of_session(session_id)

        def run() -> int:
            removed = 0
            for cid in ids:
                try:
                    self.api.remove_container(cid, force=True, v=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass  # already gone: someone else's removal counts as done
                except docker.errors.APIError as exc:
                    if "already in progress" not in _explain(exc):
                        raise
                finally:
                    self._forget(cid)
            return removed
        return await self._run(run)

    async def recover(self) -> list[SessionInfo]:
        """Sessions as the labels of this node's managed containers describe them."""
        sessions: dict[str, SessionInfo] = {}
        for c in await self._run(self._list, [], True, ""):
            labels = c.get("Labels") or {}
            sid = labels.get(L.SESSION)
            if sid and self.ownership(labels)[1] and sid not in sessions:
                sessions[sid] = session_from_labels(sid, labels)
        return list(sessions.values())

    # ------------------------------------------------------------ wait, exec, logs

    async def wait(self, ref: str, timeout: float = 0) -> tuple[int, str]:
        """(exit code, engine error); DeadlineExceeded after ``timeout`` seconds (0: no limit)."""
        cancel = _Cancel()
        deadline = time.monotonic() + timeout if timeout > 0 else None

        def run() -> tuple[int, str]:
            cid, _ = self._resolve(ref)
            while not cancel.cancelled:
                left = WAIT_SLICE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    res = self.api.wait(cid, timeout=min(left, WAIT_SLICE))
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as e:
                    if "timed out" not in str(e).lower():
                        raise
                    continue
                err = (res.get("Error") or {}).get("Message") or ""
                return int(res.get("StatusCode", -1)), err
            raise DeadlineExceeded(f"container {ref!r} did not exit within {timeout} s",
                                   field="timeout_seconds")
        try:
            return await self._run(run, pool=self._streams)
        finally:
            cancel.cancel()

    async def exec(self, ref: str, cmd: Sequence[str], env: dict[str, str] | None = None,
                   workdir: str = "", user: str = "",
                   timeout: float = 0) -> tuple[int, bytes, bytes]:
        cancel = _Cancel()

        def run() -> tuple[int, bytes, bytes]:
            cid, _ = self._resolve(ref)
            ex = self.api.exec_create(cid, list(cmd), stdout=True, stderr=True,
                                      environment=[f"{k}={v}" for k, v in (env or {}).items()]
                                      or None, workdir=workdir or None, user=user or "")
            stream = self.api.exec_start(ex["Id"], stream=True, demux=True)
            cancel.on_cancel(stream.close)
            out, err = bytearray(), bytearray()
            for o, e in stream:
                if o and len(out) < EXEC_OUTPUT_CAP:
                    out += o[: EXEC_OUTPUT_CAP - len(out)]
                if e and len(err) < EXEC_OUTPUT_CAP:
                    err += e[: EXEC_OUTPUT_CAP - len(err)]
            if cancel.cancelled:
                return -1, b"", b""
            code = self.api.exec_inspect(ex["Id"]).get("ExitCode")
            return (-1 if code is None else int(code)), bytes(out), bytes(err)

        task = asyncio.ensure_future(self._run(run, pool=self._streams))
        try:
            return await asyncio.wait_for(task, timeout or None)
        except TimeoutError:
            raise DeadlineExceeded(f"exec did not finish within {timeout} s; the process may "
                                   "still be running in the container",
                                   field="timeout_seconds") from None
        finally:
            cancel.cancel()

    async def logs(self, ref: str, *, follow: bool = False, stdout: bool = True,
                   stderr: bool = True, tail: int = 0, since: float = 0.0,
                   timestamps: bool = False) -> AsyncGenerator[tuple[int, bytes], None]:
        """(stream, data) chunks, stream 1 = stdout, 2 = stderr. Closing the iterator
        closes the engine stream at once, even while a follow read is blocked."""
        params: dict[str, Any] = {"stdout": int(stdout or not stderr),
                                  "stderr": int(stderr or not stdout),
                                  "follow": int(follow), "timestamps": int(timestamps),
                                  "tail": str(tail) if tail > 0 else "all"}
        if since > 0:
            params["since"] = f"{since:.9f}"

        def open_stream() -> tuple[Any, bool]:
            cid, attrs = self._resolve(ref)
            tty = bool(attrs and attrs.get("Config", {}).get("Tty"))
            res = self.api._get(self.api._url("/containers/{0}/logs", cid),
                                params=params, stream=True)
            self.api._raise_for_status(res)  # SDK helpers: its logs() drops the stream ids
            return res, tty

        res, tty = await self._run(open_stream)
        chunks = res.iter_content(chunk_size=None)
        demux = _Demuxer(tty)
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.run_in_executor(self._streams, _next_chunk, chunks)
                if data is None:
                    return
                for item in demux.feed(data):
                    yield item
        finally:
            _close_response(res)

    # ------------------------------------------------------------ events, node

    def events(self, selector: Selector | None = None,
               session_id: str = "") -> AsyncGenerator[pb.Event, None]:
        """Registers at once (events from this moment on are kept); iterate later.
        Call it inside the event loop that will consume it."""
        return self.hub.subscribe(list(selector or ()), session_id)

    async def events_ready(self, timeout: float = 10.0) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._streams, self.hub.connected.wait, timeout)

    def facts(self) -> nodeinfo.NodeFacts:
        with self._facts_lock:
            if self._facts is None:
                self._facts = nodeinfo.probe(self.api)
            return self._facts

    async def node_info(self) -> nodeinfo.NodeFacts:
        facts = self._facts  # cached after the first call: no engine round trip per RPC
        return facts if facts is not None else await self._run(self.facts, field="node")

    async def limits(self) -> HostLimits:
        facts = await self.node_info()
        return HostLimits(cpus=facts.cpus, memory_bytes=facts.memory_bytes or 1 << 62)

    def close(self) -> None:
        self.hub.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.client.close()

    # ------------------------------------------------------------ conversion

    def to_pb(self, attrs: dict[str, Any]) -> pb.Container:
        config, state = attrs.get("Config") or {}, attrs.get("State") or {}
        labels = config.get("Labels") or {}
        net = attrs.get("NetworkSettings") or {}
        c = pb.Container(
            id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"), image=config.get("Image", ""),
            state=_STATES.get(state.get("Status", ""), pb.CONTAINER_STATE_UNSPECIFIED),
            status=state.get("Status", ""), exit_code=int(state.get("ExitCode") or 0),
            labels=labels, session_id=labels.get(L.SESSION, ""), managed=self.ownership(labels)[1],
            node=self.node, restart_count=int(attrs.get("RestartCount") or 0),
            oom_killed=bool(state.get("OOMKilled")), pid=int(state.get("Pid") or 0),
            command=[x for x in [attrs.get("Path"), *(attrs.get("Args") or [])] if x],
        )
        _set_time(c.created_at, attrs.get("Created"))
        _set_time(c.started_at, state.get("StartedAt"))
        _set_time(c.finished_at, state.get("FinishedAt"))
        bound = net.get("Ports") or (attrs.get("HostConfig") or {}).get("PortBindings") or {}
        for key, binds in bound.items():
            port, _, proto = key.partition("/")
            for b in binds or [{}]:
                c.ports.add(container_port=int(port), protocol=proto or "tcp",
                            host_ip=b.get("HostIp", ""), host_port=int(b.get("HostPort") or 0))
        for name, n in (net.get("Networks") or {}).items():
            if n and n.get("IPAddress"):
                c.ip_addresses[name] = n["IPAddress"]
        return c

    def summary_to_pb(self, s: dict[str, Any]) -> pb.Container:
        labels = s.get("Labels") or {}
        status = s.get("Status", "")
        m = _EXITED.search(status)
        c = pb.Container(
            id=s["Id"], name=(s.get("Names") or [""])[0].lstrip("/"), image=s.get("Image", ""),
            state=_STATES.get(s.get("State", ""), pb.CONTAINER_STATE_UNSPECIFIED), status=status,
            exit_code=int(m.group(1)) if m else 0, labels=labels,
            session_id=labels.get(L.SESSION, ""), managed=self.ownership(labels)[1],
            node=self.node, command=[s["Command"]] if s.get("Command") else [],
        )
        c.created_at.FromSeconds(int(s.get("Created") or 0))
        for p in s.get("Ports") or []:
            c.ports.add(container_port=int(p.get("PrivatePort") or 0), protocol=p.get("Type", ""),
                        host_ip=p.get("IP", ""), host_port=int(p.get("PublicPort") or 0))
        for name, n in ((s.get("NetworkSettings") or {}).get("Networks") or {}).items():
            if n and n.get("IPAddress"):
                c.ip_addresses[name] = n["IPAddress"]
        return c


def _set_time(ts: Any, value: str | None) -> None:
    if not value or value.startswith("0001-"):
        return
    with contextlib.suppress(ValueError):
        ts.FromJsonString(value)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    try:
        return next(chunks)
    except StopIteration:
        return None
    except (OSError, requests.exceptions.RequestException, ValueError, AttributeError):
        return None  # the stream was closed under us (cancellation) or the engine hung up


class _Demuxer:
    """Splits the engine's multiplexed stream: 8-byte headers (stream id, big-endian size)."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.buf = bytearray()

    def feed(self, data: bytes) -> Iterable[tuple[int, bytes]]:
        if self.tty:
            return [(1, data)] if data else []
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            size = int.from_bytes(self.buf[4:8], "big")
            if len(self.buf) < 8 + size:
                break
            stream = self.buf[0]
            out.append((stream if stream in (1, 2) else 1, bytes(self.buf[8:8 + size])))
            del self.buf[:8 + size]
        return out
