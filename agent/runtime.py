"""The Docker engine, seen through the docker SDK.

Every blocking SDK call runs in this runtime's own thread pools, never on the
event loop. What the agent may touch is decided by labels alone (ownership.py);
engine data becomes protobuf in convert.py; engine events fan out in events.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

import docker
import requests

from agent import nodeinfo
from agent.claim import INSTANCE
from agent.coalesce import Coalescer
from agent.config import PolicyConfig
from agent.convert import Demuxer, create_kwargs, explain, summary_to_pb, to_pb, translate
from agent.events import EventHub
from agent.networks import Networks
from agent.ownership import Ownership, Selector, SessionInfo, session_from_labels, session_labels
from agent.policy import HostLimits
from agent.streams import Cancel, close_response, next_chunk
from agent.volumes import Volumes
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import DeadlineExceeded, ImagePullError, InvalidArgument, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM_WORKERS = 64  # long waits: logs --follow, wait, exec
READ_WORKERS = 16  # inspect and list: reads never queue behind slow writes
REAPER_WORKERS = 4  # the reaper's own: callers cannot take them
PULL_WORKERS = 4  # image pulls: slow, so bounded apart from the lifecycle calls
# Set in the reaper task: every engine call it makes (here and in networks.py)
# runs on the reaper's pool.
REAPING: ContextVar[bool] = ContextVar("shakedown_reaping", default=False)
EXEC_OUTPUT_CAP = 1536 * 1024  # per stream; keeps an ExecResponse under gRPC's 4 MiB default
WAIT_SLICE = 5.0  # a blocking wait re-checks cancellation this often
_NOT_MANAGED = "not found or not managed by this agent"


class _ImageMissing(Exception):
    """create found no image: pull it (on the pull pool), then create again."""


def _with_network(spec: pb.ContainerSpec, network: str) -> pb.ContainerSpec:
    out = pb.ContainerSpec()
    out.CopyFrom(spec)
    out.network = network
    return out


class DockerRuntime:
    def __init__(self, node: str, adopt: Sequence[str] = (), *, docker_host: str | None = None,
                 client: docker.DockerClient | None = None, max_workers: int = 32,
                 instance: str = "") -> None:
        self.node = node
        self.instance = instance
        self.owner = Ownership(node, adopt)
        self.adopt: list[Selector] = self.owner.adopt
        pool_size = (max_workers + STREAM_WORKERS + READ_WORKERS + REAPER_WORKERS
                     + PULL_WORKERS + 4)
        if client is None:
            client = (docker.DockerClient(base_url=docker_host, max_pool_size=pool_size)
                      if docker_host else docker.from_env(max_pool_size=pool_size))
        self.client = client
        self.api = client.api
        self._writes = ThreadPoolExecutor(max_workers, thread_name_prefix="docker")
        self._streams = ThreadPoolExecutor(STREAM_WORKERS, thread_name_prefix="docker-stream")
        self._reads = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="docker-read")
        self._reads_shared: Coalescer[Any] = Coalescer()
        self._reaper = ThreadPoolExecutor(REAPER_WORKERS, thread_name_prefix="docker-reaper")
        self._pulls = ThreadPoolExecutor(PULL_WORKERS, thread_name_prefix="docker-pull")
        # ref (full id or name) -> (full id, managed); labels are immutable, so this
        # only saves the ownership inspect; a stale entry just yields a 404 → NotFound.
        self._known: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._known_lock = threading.Lock()
        self._facts: nodeinfo.NodeFacts | None = None
        self._facts_lock = threading.Lock()
        self.hub = EventHub(self.api, node, self.ownership, self._forget)
        self.networks = Networks(self)
        self.volumes = Volumes(self)

    # ------------------------------------------------------------ plumbing

    @property
    def _pool(self) -> ThreadPoolExecutor:
        """The pool for engine writes; the reaper's own while reaping."""
        return self._reaper if REAPING.get() else self._writes

    async def _run(self, fn: Callable[..., T], *args: Any, field: str = "container",
                   pool: ThreadPoolExecutor | None = None) -> T:
        loop = asyncio.get_running_loop()
        if pool is None or REAPING.get():
            pool = self._pool  # while reaping, the reaper's own, whatever was asked
        try:
            return await loop.run_in_executor(pool, functools.partial(fn, *args))
        except Exception as exc:
            raise translate(exc, field) from exc

    async def _read(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        """A query on the read pool, shared with identical ones still queued."""
        if REAPING.get():  # the reaper never waits on callers' capacity
            return await self._run(fn)
        return await self._reads_shared.read(key, fn, lambda f: self._run(f, pool=self._reads))

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
        return self.owner(labels)

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
            return to_pb(self.api.inspect_container(cid), self.owner)
        return self._on(ref, run)

    # ------------------------------------------------------------ create

    async def create(self, session: SessionInfo, spec: pb.ContainerSpec,
                     start: bool = False, policy: PolicyConfig | None = None) -> pb.Container:
        policy = policy or PolicyConfig()
        # Pulls run on their own bounded pool, never holding a lifecycle thread.
        if spec.pull_policy == pb.PULL_POLICY_ALWAYS:
            await self.pull(spec.image)
        try:
            return await self._run(self._create, session, spec, start, policy, field="spec")
        except _ImageMissing:
            await self.pull(spec.image)
        try:
            return await self._run(self._create, session, spec, start, policy, field="spec")
        except _ImageMissing:
            raise NotFound(f"image {spec.image!r} is still missing after the pull",
                           field="spec.image") from None

    async def pull(self, image: str) -> None:
        await self._run(self._pull, image, field="spec.image", pool=self._pulls)

    def _create(self, session: SessionInfo, spec: pb.ContainerSpec, start: bool,
                policy: PolicyConfig) -> pb.Container:
        # Checks that need the engine (policy.validate_spec ran before, without it).
        network = self.networks.for_spec(spec.network, policy)
        if network != spec.network:
            spec = _with_network(spec, network)
        self.volumes.prepare(session, spec.mounts, policy)
        labels = dict(spec.labels)
        labels.update(session_labels(session))
        labels.update(self.owner.managed_labels())
        if self.instance:
            labels[INSTANCE] = self.instance  # which agent instance made it (claim.py)
        kwargs = create_kwargs(self.api, spec, labels)
        try:
            cid = self.api.create_container(**kwargs)["Id"]
        except docker.errors.ImageNotFound:
            if spec.pull_policy == pb.PULL_POLICY_NEVER:
                raise NotFound(f"image {spec.image!r} is not present on this node and "
                               "pull_policy is NEVER", field="spec.image") from None
            raise _ImageMissing(spec.image) from None
        except docker.errors.NotFound as exc:
            where = "spec.network" if "network" in explain(exc) else "spec"
            raise NotFound(explain(exc), field=where) from None
        if start:
            try:
                self.api.start(cid)
            except docker.errors.APIError as exc:
                # Keep create+start atomic: a container that cannot start is not left behind.
                with contextlib.suppress(docker.errors.APIError):
                    self.api.remove_container(cid, force=True, v=True)
                msg = explain(exc)
                if "executable file not found" in msg or "no such file or directory" in msg:
                    raise InvalidArgument(msg, field="spec.command") from None
                if isinstance(exc, docker.errors.NotFound) and "network" in msg:
                    raise NotFound(msg, field="spec.network") from None
                raise translate(exc, "spec") from None
        attrs = self.api.inspect_container(cid)
        self._remember(cid, attrs.get("Name", "").lstrip("/"), True)
        return to_pb(attrs, self.owner)

    def _pull(self, image: str) -> None:
        """Pull ``image``; any failure is the registry's, so ImagePullError, never Unavailable
        (which the driver reads as "the agent is unreachable")."""
        try:
            for line in self.api.pull(image, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise ImagePullError(f"pulling {image!r} failed: {line['error']}")
        except docker.errors.APIError as exc:
            raise ImagePullError(f"pulling {image!r} failed: {explain(exc)}") from None

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
        attrs = await self._read(("inspect", ref), functools.partial(
            self._on, ref, lambda cid, attrs: attrs or self.api.inspect_container(cid)))
        return to_pb(attrs, self.owner)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> str:
        def run(cid: str, _: dict[str, Any] | None) -> str:
            self.api.remove_container(cid, force=force, v=volumes)
            self._forget(cid)
            return cid
        return await self._run(self._on, ref, run)

    # ------------------------------------------------------------ queries

    async def list_containers(self, selector: Selector | None = None, all: bool = False,
                              session_id: str = "") -> list[pb.Container]:
        sel = tuple(selector or ())
        return [summary_to_pb(c, self.owner) for c in await self._read(
            ("list", sel, all, session_id),
            functools.partial(self._list, list(sel), all, session_id))]

    def _list(self, selector: Selector, all: bool, session_id: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for labels in self.owner.list_filters(selector, session_id):
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
            for cid in ids:  # volumes go later (Volumes.remove_session), like networks
                try:
                    self.api.remove_container(cid, force=True, v=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass  # already gone: someone else's removal counts as done
                except docker.errors.APIError as exc:
                    if "already in progress" not in explain(exc):
                        raise
                finally:
                    self._forget(cid)
            return removed
        return await self._run(run)

    async def remove_session_volumes(self, session_id: str) -> int:
        """The session's volumes, on the runtime's pools (the reaper's while reaping)."""
        return await self._run(self.volumes.remove_session, session_id, field="volume")

    async def recover(self) -> list[SessionInfo]:
        """Sessions as the labels of this node's managed containers (and networks and
        volumes: a session may own only those) describe them."""
        sessions: dict[str, SessionInfo] = {}
        for c in await self._run(self._list, [], True, ""):
            labels = c.get("Labels") or {}
            sid = labels.get(L.SESSION)
            if sid and self.ownership(labels)[1] and sid not in sessions:
                sessions[sid] = session_from_labels(sid, labels)
        for info in await self.networks.recover():
            sessions.setdefault(info.id, info)
        for info in await self._run(self.volumes.recover, field="volume"):
            sessions.setdefault(info.id, info)
        return list(sessions.values())

    # ------------------------------------------------------------ wait, exec, logs

    async def wait(self, ref: str, timeout: float = 0) -> tuple[int, str]:
        """(exit code, engine error); DeadlineExceeded after ``timeout`` seconds (0: no limit)."""
        cancel = Cancel()
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
        cancel = Cancel()

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
        demux = Demuxer(tty)
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.run_in_executor(self._streams, next_chunk, chunks)
                if data is None:
                    return
                for item in demux.feed(data):
                    yield item
        finally:
            close_response(res)

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
        for pool in (self._writes, self._streams, self._reads, self._reaper, self._pulls):
            pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.client.close()
