"""Session-owned Docker networks.

A network is *managed* when it carries this agent's managed-by and node labels
(it also carries its session's labels, like a container, so recovery sees a
session that owns only networks), *adopted* when it matches an operator adopt
selector. Managed networks may be removed; managed and adopted ones may have
visible containers connected and disconnected; nothing else is touched. Only
bridge networks are created; the engine's predefined networks (host, none,
bridge) are never created or removed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import docker

from agent.config import PolicyConfig
from agent.convert import explain, network_to_pb, to_pb, translate
from agent.ownership import Selector, SessionInfo, session_from_labels, session_labels
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import AlreadyExists, FailedPrecondition, NotFound, PolicyError

if TYPE_CHECKING:
    from agent.runtime import DockerRuntime

T = TypeVar("T")
_NOT_MANAGED = "not found or not managed by this agent"


def _translate(exc: BaseException, field: str) -> BaseException:
    """Engine refusals about endpoints (403, or 500 "is not connected") are preconditions."""
    if isinstance(exc, docker.errors.APIError) and not isinstance(exc, docker.errors.NotFound):
        msg = explain(exc)
        if exc.status_code == 403 or "is not connected" in msg:
            return FailedPrecondition(msg, field=field)
    return translate(exc, field)


class Networks:
    """The network half of the runtime: blocking engine calls run in its pool."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.rt = runtime
        self.api = runtime.api

    async def _run(self, fn: Callable[..., T], *args: Any, field: str = "network") -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.rt._pool, functools.partial(fn, *args))
        except Exception as exc:
            raise _translate(exc, field) from exc

    def _owned(self, ref: str, *, manage: bool = False) -> dict[str, Any]:
        """Inspect of a network we may see (``manage``: one we created)."""
        try:
            attrs = self.api.inspect_network(ref)
        except docker.errors.NotFound:
            raise NotFound(f"network {ref!r} {_NOT_MANAGED}", field="network") from None
        visible, managed = self.rt.owner(attrs.get("Labels"))
        if not visible:
            raise NotFound(f"network {ref!r} {_NOT_MANAGED}", field="network")
        if manage and not managed:
            raise FailedPrecondition(f"network {ref!r} is adopted, not managed by this agent: "
                                     "it is never removed", field="network")
        return dict(attrs)

    def for_spec(self, ref: str, policy: PolicyConfig) -> str:
        """``spec.network`` under ConnectNetwork's rule plus the default bridge (and
        "none"): the network's full id, so the engine cannot resolve the reference to
        another one. A host-driver network by name, id or id prefix needs
        --allow-host-network (policy.py has checked "host" and "container:" already)."""
        if ref in ("", "bridge", "none", "default") or ref == "host" \
                or ref.startswith("container:"):
            return ref
        try:
            attrs = self.api.inspect_network(ref)
        except docker.errors.NotFound:
            raise NotFound(f"network {ref!r} {_NOT_MANAGED}", field="spec.network") from None
        if attrs.get("Driver") == "host" or attrs.get("Name") == "host":
            if not policy.allow_host_network:
                raise PolicyError(f"network {ref!r} is the host network, refused by this agent "
                                  "(operator flag --allow-host-network)", field="spec.network")
            return "host"
        if attrs.get("Name") in ("bridge", "none"):
            return str(attrs["Name"])
        if not self.rt.owner(attrs.get("Labels"))[0]:
            raise NotFound(f"network {ref!r} {_NOT_MANAGED}", field="spec.network")
        return str(attrs["Id"])

    # ------------------------------------------------------------ one network

    async def create(self, session: SessionInfo, name: str, *, internal: bool = False,
                     labels: dict[str, str] | None = None) -> pb.Network:
        return await self._run(self._create, session, name, internal, dict(labels or {}),
                               field="name")

    def _create(self, session: SessionInfo, name: str, internal: bool,
                labels: dict[str, str]) -> pb.Network:
        labels.update(session_labels(session))
        labels.update(self.rt.owner.managed_labels())
        try:
            nid = self.api.create_network(name, driver="bridge", internal=internal,
                                          labels=labels, check_duplicate=True)["Id"]
        except docker.errors.APIError as exc:
            if exc.status_code == 409 or "already exists" in explain(exc):
                raise AlreadyExists(explain(exc), field="name") from None
            raise
        return network_to_pb(self.api.inspect_network(nid), self.rt.owner)

    async def inspect(self, ref: str) -> pb.Network:
        return await self._run(lambda: network_to_pb(self._owned(ref), self.rt.owner))

    async def remove(self, ref: str) -> str:
        def run() -> str:
            nid = str(self._owned(ref, manage=True)["Id"])
            self.api.remove_network(nid)
            return nid
        return await self._run(run)

    async def connect(self, ref: str, container: str, aliases: Sequence[str] = ()) -> pb.Container:
        def run(cid: str, _: dict[str, Any] | None) -> pb.Container:
            nid = self._owned(ref)["Id"]
            self.api.connect_container_to_network(cid, nid, aliases=list(aliases) or None)
            return to_pb(self.api.inspect_container(cid), self.rt.owner)
        return await self._run(lambda: self.rt._on(container, run))

    async def disconnect(self, ref: str, container: str, force: bool = False) -> pb.Container:
        def run(cid: str, _: dict[str, Any] | None) -> pb.Container:
            nid = self._owned(ref)["Id"]
            self.api.disconnect_container_from_network(cid, nid, force=force)
            return to_pb(self.api.inspect_container(cid), self.rt.owner)
        return await self._run(lambda: self.rt._on(container, run))

    # ------------------------------------------------------------ many

    def _list(self, selector: Selector, session_id: str) -> builtins.list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for labels in self.rt.owner.list_filters(selector, session_id):
            for n in self.api.networks(filters={"label": labels}):
                found.setdefault(n["Id"], n)
        out = []
        for nid in found:  # the list endpoint leaves "Containers" empty: inspect each
            with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                out.append(self.api.inspect_network(nid))
        return sorted(out, key=lambda n: (n.get("Created", ""), n["Id"]))

    async def list(self, selector: Selector | None = None,
                   session_id: str = "") -> builtins.list[pb.Network]:
        found = await self._run(self._list, list(selector or ()), session_id)
        return [network_to_pb(n, self.rt.owner) for n in found]

    async def session_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in await self._run(self.api.networks, None, None,
                                 {"label": self.rt.owner.list_filters([])[0]}):
            sid = (n.get("Labels") or {}).get(L.SESSION)
            if sid:
                counts[sid] = counts.get(sid, 0) + 1
        return counts

    async def count(self, session_id: str) -> int:
        filters = {"label": self.rt.owner.list_filters([], session_id)[0]}
        return len(await self._run(self.api.networks, None, None, filters))

    async def remove_session(self, session_id: str) -> int:
        """Remove the session's networks; call after its containers are gone. Containers
        still attached (adopted ones, or another session's) are disconnected first."""
        def run() -> int:
            removed = 0
            for attrs in self._list([], session_id):
                for cid in attrs.get("Containers") or {}:
                    with contextlib.suppress(docker.errors.APIError):
                        self.api.disconnect_container_from_network(cid, attrs["Id"], force=True)
                try:
                    self.api.remove_network(attrs["Id"])
                    removed += 1
                except docker.errors.NotFound:
                    pass  # already gone
            return removed
        return await self._run(run)

    async def recover(self) -> builtins.list[SessionInfo]:
        """Sessions as the labels of this node's managed networks describe them."""
        sessions: dict[str, SessionInfo] = {}
        for n in await self._run(self.api.networks, None, None,
                                 {"label": self.rt.owner.list_filters([])[0]}):
            labels = n.get("Labels") or {}
            sid = labels.get(L.SESSION)
            if sid and self.rt.owner(labels)[1] and sid not in sessions:
                sessions[sid] = session_from_labels(sid, labels)
        return list(sessions.values())
