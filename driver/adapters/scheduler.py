"""The reference scheduler's adapter (examples/scheduler), over the dynamic reflection client.

No generated Python stubs: requests are dicts checked against the
descriptors the scheduler serves, which is how a user adapts their own
service too. The scheduler is found through discovery (`_scheduler._tcp` in
the environment's domain: CoreDNS, then etcd, then a static list); any
replica serves reads and accepts writes, so an unreachable one is skipped
and the next endpoint tried, re-resolving once.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from driver.adapters.base import Node, Replica, Workload, WorkloadSpec
from driver.dynamic import DynamicClient, Tls
from shakedown.errors import NotFound, Unavailable

SERVICE = "scheduler.v1.Scheduler"
ETCD_PREFIX = "/shakedown-scheduler"  # examples/scheduler/internal/store
DISCOVERY_NAME = "scheduler"
# The scheduler's label convention (examples/scheduler/internal/labels).
MANAGED_LABEL = "dev.shakedown.scheduler.managed"
WORKLOAD_LABEL = "dev.shakedown.scheduler.workload-id"
NAME_LABEL = "dev.shakedown.scheduler.workload"
_PHASES = {"PHASE_PENDING": "pending", "PHASE_RUNNING": "running", "PHASE_FAILED": "failed",
           "PHASE_SUCCEEDED": "succeeded", "PHASE_UNSPECIFIED": "pending"}
_RESTART = {"always": "RESTART_POLICY_ALWAYS", "on-failure": "RESTART_POLICY_ON_FAILURE",
            "never": "RESTART_POLICY_NEVER"}


class SchedulerAdapter:
    name = "reference-scheduler"

    def __init__(self, endpoints: Callable[[bool], list[str]], tls: Tls,
                 *, timeout: float = 10.0, etcd: str | None = None,
                 etcd_prefix: str = ETCD_PREFIX) -> None:
        """endpoints(fresh) -> HOST:PORT of the replicas, in the order to try; etcd (a URL),
        when given, lets ``stored`` read the scheduler's desired state directly."""
        self._endpoints = endpoints
        self._etcd, self._etcd_prefix = etcd, etcd_prefix.rstrip("/")
        self._tls = tls
        self._timeout = timeout
        self._clients: dict[str, DynamicClient] = {}
        self._lock = threading.Lock()

    def endpoints(self) -> builtins.list[str]:
        """HOST:PORT of every replica discovery knows now."""
        return self._endpoints(True)

    # ------------------------------------------------------------ plumbing

    def _client(self, target: str) -> DynamicClient:
        with self._lock:
            c = self._clients.get(target)
            if c is None:
                c = self._clients[target] = DynamicClient(target, self._tls,
                                                          timeout=self._timeout)
            return c

    def call(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        last: Unavailable | None = None
        for fresh in (False, True):
            for target in self._endpoints(fresh):
                try:
                    out: dict[str, Any] = self._client(target).call(f"{SERVICE}/{method}", data)
                    return out
                except Unavailable as exc:
                    last = exc
        raise last or Unavailable(f"no {DISCOVERY_NAME} endpoint is known")

    # ------------------------------------------------------------ the protocol

    def apply(self, spec: WorkloadSpec) -> Workload:
        out = self.call("ApplyWorkload", {"spec": _spec_to_json(spec)})
        return Workload(id=out["id"], name=spec.name, generation=int(out.get("generation", 0)),
                        spec=spec)

    def get(self, name: str) -> Workload | None:
        try:
            return _workload(self.call("GetWorkload", {"name": name}))
        except NotFound:
            return None

    def list(self) -> builtins.list[Workload]:
        return [_workload(w) for w in self.call("ListWorkloads", {}).get("workloads", [])]

    def delete(self, name: str) -> None:
        with contextlib.suppress(NotFound):  # already gone
            self.call("DeleteWorkload", {"name": name})

    def nodes(self) -> builtins.list[Node]:
        return [Node(name=n["name"], healthy=n.get("health") == "NODE_HEALTH_HEALTHY",
                     last_seen=_time(n.get("last_seen")), address=n.get("address", ""),
                     reason=n.get("last_error", ""))
                for n in self.call("ListNodes", {}).get("nodes", [])]

    def leader(self) -> str:
        return str(self.call("ListNodes", {}).get("leader", ""))

    def converged(self, workload: Workload) -> bool:
        seen = self.get(workload.name)
        if seen is None or seen.spec is None:
            return False
        return (seen.generation >= workload.generation
                and len(seen.replicas) == seen.spec.replicas
                and all(r.phase == "running" and r.observed_generation >= workload.generation
                        for r in seen.replicas))

    def stored(self, workload: Workload) -> bool | None:
        """Whether etcd still holds any of the workload's keys (spec, name, status);
        None without an etcd URL. Ground truth for "delete removes the etcd key"."""
        if self._etcd is None:
            return None
        from shakedown.etcdclient import connect

        client = connect(self._etcd)
        try:
            keys = (f"{self._etcd_prefix}/workloads/{workload.id}",
                    f"{self._etcd_prefix}/status/{workload.id}",
                    f"{self._etcd_prefix}/names/{workload.name}")
            return any(client.get(k)[0] is not None for k in keys)
        finally:
            client.close()

    def container_labels(self, workload: Workload) -> dict[str, str]:
        return {MANAGED_LABEL: "true", WORKLOAD_LABEL: workload.id}

    def name_labels(self, name: str) -> dict[str, str]:
        return {MANAGED_LABEL: "true", NAME_LABEL: name}

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()


def _spec_to_json(spec: WorkloadSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "image": spec.image, "command": list(spec.command),
                           "env": dict(spec.env), "replicas": spec.replicas,
                           "restart_policy": _RESTART.get(spec.restart_policy,
                                                          spec.restart_policy)}
    if spec.ports:
        out["ports"] = [{"container_port": p.container_port, "host_port": p.host_port,
                         "protocol": p.protocol} for p in spec.ports]
    if spec.cpus or spec.memory_bytes:
        out["resources"] = {"nano_cpus": str(int(spec.cpus * 1e9)),
                            "memory_bytes": str(spec.memory_bytes)}
    return out


def _spec(doc: dict[str, Any]) -> WorkloadSpec:
    res = doc.get("resources", {})
    restart = {v: k for k, v in _RESTART.items()}.get(doc.get("restart_policy", ""), "always")
    return WorkloadSpec(name=doc.get("name", ""), image=doc.get("image", ""),
                        command=tuple(doc.get("command", ())), env=dict(doc.get("env", {})),
                        replicas=int(doc.get("replicas", 1)),
                        cpus=int(res.get("nano_cpus", 0)) / 1e9,
                        memory_bytes=int(res.get("memory_bytes", 0)), restart_policy=restart)


def _workload(doc: dict[str, Any]) -> Workload:
    spec = _spec(doc.get("spec", {}))
    return Workload(
        id=doc["id"], name=spec.name, generation=int(doc.get("generation", 0)), spec=spec,
        replicas=tuple(Replica(index=int(r.get("index", 0)),
                               phase=_PHASES.get(r.get("phase", ""), "pending"),
                               node=r.get("node", ""), container_id=r.get("container_id", ""),
                               restarts=int(r.get("restarts", 0)),
                               last_error=r.get("last_error", "") or r.get("reason", ""),
                               observed_generation=int(r.get("observed_generation", 0)))
                       for r in doc.get("replicas", [])))


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
