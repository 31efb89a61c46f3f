"""Suite reconciliation: break a workload's container behind the system's back; it comes back.

Each case stops, SIGKILLs or removes the one container of a 1-replica
workload directly through its agent, then waits until the agents again hold
exactly one running container for it and the system reports it converged.
The time to recover is a metric of the scenario (per action, p50, max).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from driver.adapters import SystemAdapter, Workload, WorkloadSpec
from driver.adapters.truth import observe, running
from driver.client import AgentClient
from driver.control.process import wait_for

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("reconciliation")]
CONVERGE_S = 60.0
RECOVER_S = 60.0
_recovered: dict[str, float] = {}


@pytest.fixture()
def workload(system: SystemAdapter, agents: dict[str, AgentClient], shakedown_image: str,
             unique_name: str) -> Iterator[Workload]:
    w = system.apply(WorkloadSpec(unique_name, shakedown_image, ["sleep", "3600"], replicas=1,
                                  restart_policy="always"))
    wait_for(lambda: system.converged(w) and len(running(agents, system, w)) == 1, CONVERGE_S,
             what=f"workload {w.name} running")
    try:
        yield w
    finally:
        system.delete(w.name)
        wait_for(lambda: not observe(agents, system, w), CONVERGE_S,
                 what=f"workload {w.name}'s containers removed")


def _break(action: str, client: AgentClient, container: Any) -> None:
    if action == "stop":
        client.stop(container, timeout=1)
    elif action == "kill":
        client.kill(container, "SIGKILL")
    else:
        client.remove(container, force=True)


@pytest.mark.parametrize("action", ["stop", "kill", "remove"])
def test_container_is_restored(action: str, workload: Workload, system: SystemAdapter,
                               agents: dict[str, AgentClient], scenario_metric: Any) -> None:
    [victim] = running(agents, system, workload)
    started = time.monotonic()
    _break(action, agents[victim.node], victim.container)

    def restored() -> bool:
        seen = observe(agents, system, workload)
        return (len(seen) == 1 and seen[0].container.running
                and (action != "remove" or seen[0].container.id != victim.container.id)
                and system.converged(workload))

    wait_for(restored, RECOVER_S, what=f"{workload.name} restored after {action}")
    _recovered[action] = round(time.monotonic() - started, 3)
    # No duplicates: exactly one container for the one replica, on the agents' word.
    assert len(observe(agents, system, workload)) == 1
    times = list(_recovered.values())
    scenario_metric("recover_s", {**_recovered, "p50": round(statistics.median(times), 3),
                                  "max": max(times)})
