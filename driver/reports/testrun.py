"""The scenario report: one JSON document per run, in the shape CI dashboards read.

    {"testRun": {"id", "timestamp", "duration",
      "scenarios": [{"name", "status", "duration", "metrics": {...}}],
      "summary": {"totalScenarios", "passed", "failed", "overallStatus"}}}

A scenario is a suite. Its status is "passed" when its tests ran and none
failed or errored, "failed" when one did, "skipped" when none ran. Its
metrics hold the test counts and success rate plus whatever its tests
recorded with the ``scenario_metric`` fixture (times to recover, latencies).
Durations are seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def scenario_status(counts: Mapping[str, int]) -> str:
    if counts.get("failed", 0) or counts.get("errors", 0):
        return "failed"
    return "passed" if counts.get("passed", 0) else "skipped"


def build_report(suites: Mapping[str, Mapping[str, Any]], *, started_at: float,
                 duration_s: float, durations: Mapping[str, float],
                 metrics: Mapping[str, Mapping[str, Any]], run_id: str | None = None,
                 ) -> dict[str, Any]:
    """suites: name -> counts (as in the summary); durations/metrics: name -> value(s)."""
    scenarios = []
    for name in sorted(suites):
        counts = dict(suites[name])
        scenarios.append({
            "name": name,
            "status": scenario_status(counts),
            "duration": round(durations.get(name, 0.0), 3),
            "metrics": {"tests": {k: counts.get(k, 0)
                                  for k in ("passed", "failed", "skipped", "errors")},
                        "success_rate": counts.get("success_rate"),
                        **dict(metrics.get(name, {}))},
        })
    passed = sum(s["status"] == "passed" for s in scenarios)
    failed = sum(s["status"] == "failed" for s in scenarios)
    return {"testRun": {
        "id": run_id or uuid.uuid4().hex[:12],
        "timestamp": datetime.fromtimestamp(started_at, UTC).isoformat(),
        "duration": round(duration_s, 3),
        "scenarios": scenarios,
        "summary": {"totalScenarios": len(scenarios), "passed": passed, "failed": failed,
                    "overallStatus": "passed" if scenarios and not failed else "failed"},
    }}


def summary_table(report: Mapping[str, Any], key_metrics: int = 3) -> str:
    """Scenario, status, duration and the first few recorded metrics, as a terminal table."""
    run = report["testRun"]
    rows = [["scenario", "status", "duration", "metrics"]]
    for s in run["scenarios"]:
        extra = [(k, v) for k, v in s["metrics"].items() if k not in ("tests", "success_rate")]
        t = s["metrics"]["tests"]
        shown = [f"{t['passed']}/{t['passed'] + t['failed'] + t['errors']} tests"]
        shown += [f"{k}={_fmt(v)}" for k, v in extra[:key_metrics]]
        rows.append([s["name"], s["status"].upper(), f"{s['duration']:.1f}s", ", ".join(shown)])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 7)
    summ = run["summary"]
    lines.append(f"{summ['passed']}/{summ['totalScenarios']} scenarios passed: "
                 f"{summ['overallStatus'].upper()}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:3]) + "}"
    return str(v)
