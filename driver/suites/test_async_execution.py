"""Suite async_execution: Apply returns at once; the workload is seen Pending, then Running;
its logs stream through the agent while it runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from driver.adapters import SystemAdapter, Workload, WorkloadSpec
from driver.adapters.truth import observe, running
from driver.client import AgentClient
from driver.control.process import wait_for

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("async_execution")]
APPLY_BOUND_S = 1.0
CONVERGE_S = 60.0
# Prints a line every 0.2 s after a 1 s start-up, so streaming can be told from a dump.
TICKER = ["sh", "-c", "sleep 1; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]


@pytest.fixture()
def applied(system: SystemAdapter, agents: dict[str, AgentClient], shakedown_image: str,
            unique_name: str) -> Iterator[tuple[Workload, float, str]]:
    started = time.monotonic()
    w = system.apply(WorkloadSpec(unique_name, shakedown_image, TICKER, replicas=1))
    took = time.monotonic() - started
    first = _phase(system, w.name)  # at once: the system may act on the write quickly
    try:
        yield w, took, first
    finally:
        system.delete(w.name)
        wait_for(lambda: not observe(agents, system, w), CONVERGE_S,
                 what=f"workload {w.name}'s containers removed")


def _phase(system: SystemAdapter, name: str) -> str:
    w = system.get(name)
    if w is None or not w.replicas:
        return "pending"  # accepted, not placed yet
    return "running" if all(r.phase == "running" for r in w.replicas) else w.replicas[0].phase


def test_apply_returns_then_pending_then_running(applied: tuple[Workload, float, str],
                                                 system: SystemAdapter,
                                                 agents: dict[str, AgentClient],
                                                 scenario_metric: Any) -> None:
    w, took, first = applied
    scenario_metric("apply_s", round(took, 4))
    assert took < APPLY_BOUND_S, f"Apply took {took:.2f} s: it must return before placing"
    phases: list[str] = [first]
    deadline = time.monotonic() + CONVERGE_S
    while time.monotonic() < deadline:
        phase = _phase(system, w.name)
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if phase == "running":
            break
        time.sleep(0.02)
    assert phases[0] == "pending" and phases[-1] == "running", phases
    assert "failed" not in phases, phases
    assert len(running(agents, system, w)) == 1  # the agents agree it runs


def test_logs_stream_while_it_runs(applied: tuple[Workload, float, str], system: SystemAdapter,
                                   agents: dict[str, AgentClient]) -> None:
    w, _, _ = applied
    wait_for(lambda: len(running(agents, system, w)) == 1, CONVERGE_S, what=f"{w.name} running")
    [box] = running(agents, system, w)
    arrivals: list[float] = []
    stream = agents[box.node].logs(box.container, follow=True, timeout=30)
    try:
        for chunk in stream:
            arrivals += [time.monotonic()] * chunk.text.count("tick")
            if len(arrivals) >= 6:
                break
    finally:
        stream.cancel()
    assert len(arrivals) >= 6
    # Lines arrived as they were printed (0.2 s apart), not in one dump at the end.
    assert arrivals[-1] - arrivals[0] > 0.5, arrivals
    assert agents[box.node].inspect(box.container).running
