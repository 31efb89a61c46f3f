"""Suite error_handling: bad requests get precise errors and leave the agent healthy."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from driver.adapters import SystemAdapter, Workload, WorkloadSpec
from driver.adapters.truth import observe, running
from driver.client import AgentClient
from driver.control.process import wait_for
from driver.env.context import TestContext
from driver.images import BUSYBOX_IMAGE
from driver.types import ContainerSpec, Mount, PortMapping
from shakedown.errors import InvalidArgument, NotFound, PolicyError, ShakedownError, Unavailable

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("error_handling")]
ABSENT = "shakedown-suite-absent-container"


def invalid_specs(image: str) -> list[tuple[str, ContainerSpec, str]]:
    """(id, spec, the field the agent must name)."""
    return [
        ("empty-image", ContainerSpec(""), "spec.image"),
        ("bad-image-ref", ContainerSpec("UPPER/Case!!"), "spec.image"),
        ("bad-name", ContainerSpec(image, ["true"], name="-bad name"), "spec.name"),
        ("reserved-label", ContainerSpec(image, ["true"], labels={"io.shakedown.x": "1"}),
         "spec.labels"),
        ("port-out-of-range", ContainerSpec(image, ["true"], ports=[PortMapping(70000)]),
         "spec.ports"),
        ("negative-cpus", ContainerSpec(image, ["true"], cpus=-1.0), "spec.resources"),
        ("bad-mount-target", ContainerSpec(image, ["true"], mounts=[
            Mount("relative/path", "vol", "volume")]), "spec.mounts"),
    ]


CASES = invalid_specs(BUSYBOX_IMAGE)  # never created: rejected before the image matters


@pytest.mark.parametrize(("spec", "field"), [(s, f) for _, s, f in CASES],
                         ids=[i for i, _, _ in CASES])
def test_invalid_spec_is_rejected_with_its_field(ctx: TestContext, shakedown_node: str,
                                                 spec: ContainerSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        ctx.create(shakedown_node, spec)
    assert err.value.field is not None and err.value.field.startswith(field), err.value
    assert ctx.containers() == []


def test_privileged_is_refused_by_policy(ctx: TestContext, shakedown_node: str,
                                         shakedown_image: str) -> None:
    info = ctx.clients[shakedown_node].node_info()
    if info.policy.allow_privileged:
        pytest.skip(f"node {shakedown_node} allows privileged containers")
    with pytest.raises(PolicyError) as err:
        ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["true"], privileged=True))
    assert err.value.field == "spec.privileged", err.value
    assert ctx.containers() == []


@pytest.mark.parametrize("op", ["inspect", "stop", "start", "kill", "remove", "logs", "exec"])
def test_unknown_container_is_not_found(ctx: TestContext, shakedown_node: str, op: str) -> None:
    agent = ctx.clients[shakedown_node]
    calls = {
        "inspect": lambda: agent.inspect(ABSENT),
        "stop": lambda: agent.stop(ABSENT, timeout=1),
        "start": lambda: agent.start(ABSENT),
        "kill": lambda: agent.kill(ABSENT),
        "remove": lambda: agent.remove(ABSENT, force=True),
        "logs": lambda: agent.logs(ABSENT).read(),
        "exec": lambda: agent.exec(ABSENT, ["true"]),
    }
    with pytest.raises(NotFound):
        calls[op]()


def test_agent_healthy_after_errors(ctx: TestContext, shakedown_node: str,
                                   shakedown_image: str) -> None:
    agent = ctx.clients[shakedown_node]
    for _, spec, _ in invalid_specs(shakedown_image):
        with pytest.raises(InvalidArgument):
            ctx.create(shakedown_node, spec)
    assert agent.node_info().name == shakedown_node
    c = ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["sh", "-c", "exit 0"]))
    assert agent.wait(c, timeout=20) == 0


# ---------------------------------------------------------------- through the system under test

def invalid_workloads(image: str, name: str) -> list[tuple[str, WorkloadSpec, str]]:
    """(id, spec, the field the system must name)."""
    return [
        ("bad-name", WorkloadSpec("Not_A_DNS_Label!", image, ["true"]), "spec.name"),
        ("no-image", WorkloadSpec(name, "", ["true"]), "spec.image"),
        ("zero-replicas", WorkloadSpec(name, image, ["true"], replicas=0), "spec.replicas"),
        ("negative-memory", WorkloadSpec(name, image, ["true"], memory_bytes=-1),
         "spec.resources"),
    ]


@pytest.mark.parametrize("case", range(4), ids=["bad-name", "no-image", "zero-replicas",
                                                "negative-memory"])
def test_invalid_workload_names_the_field(case: int, system: SystemAdapter,
                                          shakedown_image: str, unique_name: str) -> None:
    _, spec, field = invalid_workloads(shakedown_image, unique_name)[case]
    with pytest.raises(InvalidArgument) as err:
        system.apply(spec)
    assert (err.value.field or "").startswith(field), (err.value.field, str(err.value))
    assert system.get(spec.name or unique_name) is None  # nothing was stored


def test_more_than_capacity_is_pending_with_a_reason(system: SystemAdapter,
                                                     agents: dict[str, AgentClient],
                                                     shakedown_image: str,
                                                     unique_name: str) -> None:
    cpus = max(a.node_info().cpus for a in agents.values())
    w = system.apply(WorkloadSpec(unique_name, shakedown_image, ["sleep", "3600"],
                                  cpus=float(cpus) * 4))
    try:
        def pending_with_reason() -> bool:
            seen = system.get(w.name)
            return bool(seen and seen.replicas and seen.replicas[0].phase == "pending"
                        and seen.replicas[0].last_error)
        wait_for(pending_with_reason, 30, what=f"{w.name} pending with a reason")
        assert not running(agents, system, w)  # nothing was started anyway
        # ... and the system did not fall over: the environment's own nodes stay healthy
        # (a node another test made up and removed may still be listed as unreachable).
        wait_for(lambda: all(n.healthy for n in system.nodes() if n.name in agents), 30,
                 what="the environment's nodes healthy")
    finally:
        system.delete(w.name)


# ---------------------------------------------------------------- components failing

LEASE_S = 10.0  # the scheduler's etcd lease: a new leader within it
NODE_TIMEOUT_S = 10.0  # the local environment's -node-timeout


def _faults(shakedown_env: Any) -> Any:
    if not hasattr(shakedown_env, "signal") or not hasattr(shakedown_env, "revive"):
        pytest.skip("this environment cannot stop its components (not a local one)")
    return shakedown_env


@pytest.fixture()
def replicated(system: SystemAdapter, agents: dict[str, AgentClient], shakedown_image: str,
               unique_name: str) -> Iterator[Workload]:
    w = system.apply(WorkloadSpec(unique_name, shakedown_image, ["sleep", "3600"], replicas=2))
    wait_for(lambda: system.converged(w) and len(running(agents, system, w)) == 2, 60,
             what=f"{w.name}: 2 replicas running")
    yield w
    system.delete(w.name)
    wait_for(lambda: not observe(agents, system, w), 60, what=f"{w.name} removed")


def test_leader_killed_a_new_one_leads_and_nothing_doubles(
        replicated: Workload, system: SystemAdapter, agents: dict[str, AgentClient],
        shakedown_env: Any, scenario_metric: Any) -> None:
    env = _faults(shakedown_env)
    leader = getattr(system, "leader", None)
    if leader is None:
        pytest.skip("the system's adapter does not say who leads (no leader())")
    old = wait_for(leader, 30, what="a leader")
    component = env.component_of(old)
    assert component, f"leader {old!r} is no component of this environment"
    started = time.monotonic()
    env.signal(component, signal.SIGKILL)
    try:
        new = wait_for(lambda: (n := leader()) and n != old and n, LEASE_S + 5,
                       what="a new leader")
        took = time.monotonic() - started
        scenario_metric("leader_failover_s", round(took, 3))
        assert new != old and took <= LEASE_S + 5
        # The new leader reconciles what the old one placed: no duplicates, still 2.
        wait_for(lambda: system.converged(replicated), 30, what="converged under the new leader")
        assert len(observe(agents, system, replicated)) == 2
    finally:
        env.revive(component)


def test_agent_down_node_unhealthy_and_the_workload_moves(
        replicated: Workload, system: SystemAdapter, agents: dict[str, AgentClient],
        shakedown_env: Any, scenario_metric: Any) -> None:
    env = _faults(shakedown_env)
    if len(agents) < 2:
        pytest.skip("moving a workload needs a second node")
    victim = running(agents, system, replicated)[0].node
    started = time.monotonic()
    component = env.component_of(victim)
    env.signal(component, signal.SIGKILL)
    try:
        wait_for(lambda: any(n.name == victim and not n.healthy for n in system.nodes()), 30,
                 what=f"node {victim} reported unhealthy")
        live = {n: c for n, c in agents.items() if n != victim}

        def moved() -> bool:
            seen = system.get(replicated.name)
            return bool(seen and all(r.node != victim and r.phase == "running"
                                     for r in seen.replicas)
                        and sum(len(c.list(system.container_labels(replicated)))
                                for c in live.values()) == 2)
        wait_for(moved, NODE_TIMEOUT_S + 40, interval=0.25, what=f"replicas off {victim}")
        scenario_metric("node_loss_move_s", round(time.monotonic() - started, 3))
    finally:
        env.revive(component)
    # Back: the returning node's stale copy is removed, not kept as a duplicate.
    wait_for(lambda: len(observe(agents, system, replicated)) == 2
             and system.converged(replicated), 60, interval=0.25, what="no duplicate after")


def test_etcd_down_clear_errors_then_recovery(system: SystemAdapter, shakedown_env: Any,
                                              agents: dict[str, AgentClient],
                                              shakedown_image: str, unique_name: str) -> None:
    env = _faults(shakedown_env)
    if "etcd" not in env.state.components:
        pytest.skip("no etcd in this environment")
    env.signal("etcd", signal.SIGSTOP)  # frozen, not gone: the worst case for timeouts
    try:
        started = time.monotonic()
        with pytest.raises(ShakedownError) as err:
            system.apply(WorkloadSpec(unique_name, shakedown_image, ["sleep", "3600"]))
        assert time.monotonic() - started < 15, "Apply must fail fast while etcd is down"
        assert "etcd" in str(err.value).lower() or isinstance(err.value, Unavailable), err.value
    finally:
        env.signal("etcd", signal.SIGCONT)
    applied = wait_for(lambda: _try_apply(system, WorkloadSpec(
        unique_name, shakedown_image, ["sleep", "3600"])), 60, interval=0.5,
        what="Apply accepted again once etcd is back")
    assert applied is not None
    w = applied
    try:
        wait_for(lambda: system.converged(w) and running(agents, system, w), 60,
                 what=f"{w.name} running after etcd came back")
    finally:
        system.delete(w.name)
        wait_for(lambda: not observe(agents, system, w), 60, what=f"{w.name} removed")


def _try_apply(system: SystemAdapter, spec: WorkloadSpec) -> Workload | None:
    try:
        return system.apply(spec)
    except ShakedownError:
        return None
