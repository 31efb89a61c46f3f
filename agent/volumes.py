"""Session-owned named volumes, and the ownership check on every mount of one.

The agent creates every named volume a spec mounts (labelled like a container:
managed-by, node and the session's labels, so recovery and reaping see it) and
mounts an existing one only when it is this agent's own *and* belongs to the
caller's session or to another session of the same principal, or when an
operator adopt selector matches it. Volumes whose driver options bind a host
path (``--opt type=none --opt o=bind --opt device=/path``; in fact any driver
option, or a driver other than ``local``) are refused unless bind mounts are
allowed, adopted or not. A session's volumes are removed after
its containers; a volume another session's container still uses stays, and is
retried by the reaper (its labels bring the session back after a restart).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import docker

from agent.config import PolicyConfig
from agent.convert import explain
from agent.ownership import SessionInfo, session_from_labels, session_labels
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import PolicyError

if TYPE_CHECKING:
    from agent.runtime import DockerRuntime

log = logging.getLogger(__name__)


def binds_host(attrs: dict[str, Any]) -> bool:
    """True unless the volume is plain engine storage (the local driver, no options):
    ``type``/``o``/``device`` options mount a host path or device (or a remote share),
    and other drivers can do anything."""
    return attrs.get("Driver", "local") != "local" or bool(attrs.get("Options"))


class Volumes:
    """The volume half of the runtime; its methods are blocking (run in the runtime's pool)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.rt = runtime
        self.api = runtime.api

    def prepare(self, session: SessionInfo, mounts: Iterable[pb.Mount],
                policy: PolicyConfig) -> None:
        """Check every named volume ``mounts`` uses; create the missing ones for ``session``."""
        for i, m in enumerate(mounts):
            if m.type != pb.Mount.TYPE_VOLUME or not m.source:
                continue  # anonymous volumes go with their container (removed with v=True)
            where = f"spec.mounts[{i}].source"
            try:
                attrs = self.api.inspect_volume(m.source)
            except docker.errors.NotFound:
                self._create(session, m.source, where)
                continue
            self._check(session, attrs, policy, where)

    def _check(self, session: SessionInfo, attrs: dict[str, Any], policy: PolicyConfig,
               where: str) -> None:
        name, labels = attrs.get("Name", ""), attrs.get("Labels") or {}
        visible, managed = self.rt.owner(labels)
        if not visible:
            raise PolicyError(f"volume {name!r} is not managed by this agent: only volumes it "
                              "created (or an operator --adopt selector matches) are mounted",
                              field=where)
        if managed and labels.get(L.SESSION) != session.id \
                and labels.get(L.SESSION_PRINCIPAL) != session.principal:
            raise PolicyError(f"volume {name!r} belongs to another principal's session",
                              field=where)
        if binds_host(attrs) and not policy.allow_bind_mounts:
            raise PolicyError(f"volume {name!r} binds a host path through its driver options; "
                              "refused by this agent (operator flag --allow-bind-mounts)",
                              field=where)

    def _create(self, session: SessionInfo, name: str, where: str) -> None:
        labels = {**session_labels(session), **self.rt.owner.managed_labels()}
        try:
            self.api.create_volume(name, driver="local", labels=labels)
        except docker.errors.APIError as exc:  # e.g. created meanwhile by someone else
            raise PolicyError(f"volume {name!r} cannot be created: {explain(exc)}",
                              field=where) from None

    def _filters(self, session_id: str = "") -> dict[str, list[str]]:
        return {"label": self.rt.owner.list_filters([], session_id)[0]}

    def _list(self, session_id: str = "") -> builtins.list[dict[str, Any]]:
        return list(self.api.volumes(filters=self._filters(session_id)).get("Volumes") or [])

    def remove_session(self, session_id: str) -> int:
        """Remove the session's volumes; call after its containers are gone."""
        removed = 0
        for v in self._list(session_id):
            try:
                self.api.remove_volume(v["Name"])
                removed += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:  # 409: still used by a container
                log.warning("volume kept: %s", explain(exc),
                            extra={"session": session_id, "volume": v["Name"]})
        return removed

    def recover(self) -> builtins.list[SessionInfo]:
        """Sessions as the labels of this node's managed volumes describe them."""
        sessions: dict[str, SessionInfo] = {}
        for v in self._list():
            labels = v.get("Labels") or {}
            sid = labels.get(L.SESSION)
            if sid and self.rt.owner(labels)[1]:
                with contextlib.suppress(Exception):
                    sessions.setdefault(sid, session_from_labels(sid, labels))
        return list(sessions.values())
