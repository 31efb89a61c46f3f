"""Suite performance: N concurrent Apply calls (``--shakedown-perf-n``, default 50).

Reported: Apply response time and apply->running latency (p50/p95/p99),
throughput in workloads per minute, success rate, and the CPU and memory of
the system's processes. Asserted is only the floor of the seed strategy:
responses under 5 s, more than 10 workloads a minute, more than 95% success.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from driver.adapters import SystemAdapter, Workload, WorkloadSpec
from driver.adapters.truth import observe, running
from driver.client import AgentClient
from driver.control.process import wait_for

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("performance")]
RESPONSE_FLOOR_S = 5.0
THROUGHPUT_FLOOR = 10.0  # workloads per minute
SUCCESS_FLOOR = 0.95
RUNNING_DEADLINE_S = 180.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {k: round(_pct(values, q), 4) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def test_concurrent_applies(system: SystemAdapter, agents: dict[str, AgentClient],
                            shakedown_image: str, unique_name: str, perf_n: int,
                            system_usage: Any, scenario_metric: Any) -> None:
    specs = [WorkloadSpec(f"{unique_name}-{i}", shakedown_image, ["sleep", "3600"])
             for i in range(perf_n)]
    applied: dict[str, tuple[Workload, float, float]] = {}  # name -> (w, sent, response_s)
    errors: list[str] = []

    def apply(spec: WorkloadSpec) -> None:
        sent = time.monotonic()
        try:
            w = system.apply(spec)
        except Exception as exc:  # counted against the success rate, with its reason
            errors.append(f"{spec.name}: {exc}")
            return
        applied[spec.name] = (w, sent, time.monotonic() - sent)

    usage = system_usage()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(min(perf_n, 50)) as pool:
            list(pool.map(apply, specs))
        ran_at: dict[str, float] = {}

        def all_running() -> bool:
            for name, (w, _, _) in applied.items():
                if name not in ran_at and system.converged(w) and running(agents, system, w):
                    ran_at[name] = time.monotonic()
            return len(ran_at) == len(applied)

        with contextlib.suppress(TimeoutError):  # stragglers count as failures below
            wait_for(all_running, RUNNING_DEADLINE_S, interval=0.25,
                     what=f"{perf_n} workloads running")
        elapsed = time.monotonic() - started
        responses = [r for _, _, r in applied.values()]
        to_running = [ran_at[n] - sent for n, (_, sent, _) in applied.items() if n in ran_at]
        success = len(ran_at) / perf_n
        throughput = len(ran_at) / (max(ran_at.values()) - started) * 60 if ran_at else 0.0
        scenario_metric("workloads", perf_n)
        scenario_metric("apply_response_s", _summary(responses))
        scenario_metric("apply_to_running_s", _summary(to_running))
        scenario_metric("throughput_per_min", round(throughput, 2))
        scenario_metric("success_rate", round(success, 4))
        scenario_metric("wall_s", round(elapsed, 2))
        scenario_metric("resources", usage.finish())
        assert not errors or success >= SUCCESS_FLOOR, errors[:5]
        assert max(responses, default=0.0) < RESPONSE_FLOOR_S, _summary(responses)
        assert throughput > THROUGHPUT_FLOOR, throughput
        assert success > SUCCESS_FLOOR, f"{len(ran_at)}/{perf_n} running; {errors[:5]}"
    finally:
        for spec in specs:
            system.delete(spec.name)
        wait_for(lambda: all(not observe(agents, system, w) for w, _, _ in applied.values()),
                 RUNNING_DEADLINE_S, what="the performance workloads removed")
