"""Hypothesis strategies: workload specs, invalid specs and fault schedules.

Sized for a 2-core machine: few replicas, busybox `sleep` containers. Fault
schedules are drawn from the environment's real nodes and components (a
``Topology``), never from live observations, so the same choices replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from driver.adapters.base import RESTART_POLICIES, WorkloadSpec
from driver.types import ContainerSpec, Mount, PortMapping

MAX_REPLICAS = 2
VERSION_ENV = "SD_FUZZ_VERSION"  # every write carries a fresh version: reads tell writes apart
CONTAINER_FAULTS = ("kill", "stop", "pause")
# What the fuzzer draws; `shakedown fault` also stops CoreDNS, which the scheduler's calls
# to agents do not go through (it has a static fallback): a step spent on nothing.
COMPONENT_FAULTS = ("agent-stop", "leader-kill", "leader-pause", "etcd-pause")


def workload_spec(name: str, image: str, replicas: int, version: int,
                  restart_policy: str = "always") -> WorkloadSpec:
    return WorkloadSpec(name, image, ["sleep", "3600"], env={VERSION_ENV: str(version)},
                        replicas=replicas, restart_policy=restart_policy)


def register_value(spec: WorkloadSpec | None) -> str | None:
    """What a workload is, as the linearizability checker's register sees it."""
    if spec is None:
        return None
    return f"r{spec.replicas}v{spec.env.get(VERSION_ENV, '?')}"


def replicas() -> st.SearchStrategy[int]:
    # At least 1: the reference scheduler (like most) refuses 0; delete is how a workload goes.
    return st.integers(1, MAX_REPLICAS)


def workload_specs(image: str, names: st.SearchStrategy[str] | None = None,
                   ) -> st.SearchStrategy[WorkloadSpec]:
    """Valid specs: a DNS-safe name, 0..MAX_REPLICAS replicas, any restart policy."""
    names = names or st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
    return st.builds(workload_spec, names, st.just(image), replicas(),
                     st.integers(1, 10**6), st.sampled_from(RESTART_POLICIES))


# (spec, the field the agent must name): each breaks exactly one rule.
def invalid_container_specs(image: str) -> st.SearchStrategy[tuple[ContainerSpec, str]]:
    bad_name = st.one_of(st.from_regex(r"[-_.][a-z0-9]{0,8}", fullmatch=True),
                         st.from_regex(r"[a-z]{1,5} [a-z]{1,5}", fullmatch=True))
    return st.one_of(
        st.just((ContainerSpec(""), "spec.image")),
        st.from_regex(r"[A-Z]{1,6}/[A-Z!]{1,6}", fullmatch=True).map(
            lambda ref: (ContainerSpec(ref), "spec.image")),
        bad_name.map(lambda n: (ContainerSpec(image, ["true"], name=n), "spec.name")),
        st.from_regex(r"[a-z]{1,8}", fullmatch=True).map(
            lambda k: (ContainerSpec(image, ["true"], labels={f"io.shakedown.{k}": "1"}),
                       "spec.labels")),
        st.integers(65536, 10**6).map(
            lambda p: (ContainerSpec(image, ["true"], ports=[PortMapping(p)]), "spec.ports")),
        st.floats(-64, -0.001).map(
            lambda c: (ContainerSpec(image, ["true"], cpus=c), "spec.resources")),
        st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True).map(
            lambda t: (ContainerSpec(image, ["true"], mounts=[Mount(t, "vol", "volume")]),
                       "spec.mounts")),
    )


def invalid_workload_specs(image: str) -> st.SearchStrategy[WorkloadSpec]:
    """Specs a scheduler must refuse: no name, no image, negative replicas."""
    return st.one_of(
        st.builds(WorkloadSpec, st.just(""), st.just(image), st.just(["true"])),
        st.builds(WorkloadSpec, st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.just("")),
        st.builds(WorkloadSpec, st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.just(image),
                  st.just(["true"]), replicas=st.integers(-100, -1)),
    )


@dataclass(frozen=True)
class Topology:
    """What faults can target: the environment's nodes and the fault kinds it supports."""

    nodes: tuple[str, ...]
    kinds: tuple[str, ...] = (*CONTAINER_FAULTS, "partition")
    names: tuple[str, ...] = field(default=("w0", "w1"))


@dataclass(frozen=True)
class FaultChoice:
    """One fault as drawn: resolved against live containers only when injected.

    Container faults and partitions name a workload and a replica index (the
    container holding it is looked up then); component faults name a node.
    """

    kind: str
    workload: str = ""
    index: int = 0
    node: str = ""
    peers: tuple[str, ...] = ()  # partition: the workloads the target must not hear

    def __str__(self) -> str:
        if self.kind in CONTAINER_FAULTS:
            return f"{self.kind} {self.workload}[{self.index}]"
        if self.kind == "partition":
            return f"partition {self.workload}[{self.index}] | {','.join(self.peers)}"
        return f"{self.kind} {self.node}".rstrip()


def fault_choices(topo: Topology) -> st.SearchStrategy[FaultChoice]:
    options: list[st.SearchStrategy[FaultChoice]] = []
    names = st.sampled_from(topo.names)
    index = st.integers(0, MAX_REPLICAS - 1)
    container = [k for k in topo.kinds if k in CONTAINER_FAULTS]
    if container:
        options.append(st.builds(FaultChoice, st.sampled_from(container), names, index))
    if "partition" in topo.kinds:
        options.append(st.builds(
            FaultChoice, st.just("partition"), names, index,
            peers=st.lists(names, min_size=1, max_size=2, unique=True).map(tuple)))
    if "agent-stop" in topo.kinds and topo.nodes:
        options.append(st.builds(FaultChoice, st.just("agent-stop"),
                                 node=st.sampled_from(topo.nodes)))
    options += [st.just(FaultChoice(k)) for k in COMPONENT_FAULTS
                if k in topo.kinds and k != "agent-stop"]
    if not options:
        raise ValueError("the topology supports no fault kind")
    return st.one_of(options)


@dataclass(frozen=True)
class ScheduledFault:
    fault: FaultChoice
    at_step: int
    duration: int  # seconds; 0: until healed


def fault_schedules(topo: Topology, steps: int = 10) -> st.SearchStrategy[list[ScheduledFault]]:
    """A schedule: which fault starts at which step, for how long (0: until healed)."""
    one = st.builds(ScheduledFault, fault_choices(topo), st.integers(0, max(0, steps - 1)),
                    st.sampled_from((0, 2, 5)))
    return st.lists(one, max_size=4).map(lambda xs: sorted(xs, key=lambda f: f.at_step))
