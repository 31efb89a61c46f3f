"""The `verify auth` report: cases, verdicts, exit status, a 100-column table and JSON."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field

from driver.verify.probemethod import ProbeMethod
from driver.verify.verdicts import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    SKIP,
    VERDICT_INCONCLUSIVE,
    VERDICT_NOT_APPLICABLE,
    VERDICTS,
    Observation,
    verdict,
)

WIDTH = 100
# Exit status of `shakedown verify auth` (documented in its --help).
EXIT_OK = 0  # every case as expected (not applicable and skipped cases allowed)
EXIT_ACCEPTED = 1  # a should-be-rejected case was accepted (wins over 2)
EXIT_INCONCLUSIVE = 2  # something inconclusive (or the valid call failed), nothing accepted


@dataclass(slots=True)
class Case:
    name: str
    category: str  # control | mtls | role | hmac
    expected: str  # accept | reject
    result: str = ""  # accepted | rejected | inconclusive | not applicable | skipped
    verdict: str = ""  # pass | FAIL | inconclusive | not applicable | skip
    code: str = ""  # the gRPC status, "TLS" for a handshake outcome, "" when nothing was sent
    reason: str = ""
    method: str = ""  # the method the case called ("" when nothing was sent)

    @property
    def observed(self) -> str:
        return f"{self.result}: {self.reason}" if self.reason else self.result

    def record(self, obs: Observation, method: str) -> None:
        self.result, self.code, self.reason = obs.result, obs.code, obs.reason
        self.verdict = verdict(self.expected, obs)
        self.method = method if obs.code not in ("", "UNREACHABLE") else ""


@dataclass(slots=True)
class AuthReport:
    target: str
    probe: ProbeMethod | None = None
    cases: list[Case] = field(default_factory=list)
    not_applicable_reason: str = ""

    @property
    def control(self) -> Case | None:
        return next((c for c in self.cases if c.category == "control"), None)

    @property
    def failures(self) -> list[Case]:
        return [c for c in self.cases if c.verdict == FAIL]

    @property
    def accepted_negatives(self) -> list[Case]:
        return [c for c in self.failures if c.expected == "reject"]

    @property
    def inconclusive(self) -> list[Case]:
        return [c for c in self.cases if c.verdict == VERDICT_INCONCLUSIVE]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.inconclusive

    @property
    def exit_code(self) -> int:
        if self.accepted_negatives:
            return EXIT_ACCEPTED
        return EXIT_OK if self.ok else EXIT_INCONCLUSIVE

    def to_json(self) -> dict[str, object]:
        probe = self.probe
        return {
            "target": self.target,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "probe": None
            if probe is None
            else {
                "method": probe.method,
                "source": probe.source,
                "note": probe.note,
                "request": probe.request,
                "agent_service": probe.agent,
                "services": list(probe.services) if probe.services is not None else None,
            },
            "not_applicable_reason": self.not_applicable_reason,
            "cases": [asdict(c) | {"observed": c.observed} for c in self.cases],
            "summary": {v: sum(c.verdict == v for c in self.cases) for v in VERDICTS},
        }


def render_table(report: AuthReport, width: int = WIDTH) -> str:
    """One row per case, reasons wrapped in their column; nothing wider than ``width``."""
    shown = [c for c in report.cases if c.result != NOT_APPLICABLE]
    name_w = min(max([len("CASE"), *(len(c.name) for c in shown)]), 34)
    verdict_w = max([len("VERDICT"), *(len(c.verdict) for c in shown)])
    head = f"{'CASE':<{name_w}}  {'EXPECT':<6}  {'VERDICT':<{verdict_w}}  "
    reason_w = width - len(head)
    lines = _wrap(_probe_line(report), width)
    lines.append("")
    lines.append(head + "OBSERVED")
    for c in shown:
        names = textwrap.wrap(c.name, name_w) or [""]
        # The verdict column already says "inconclusive": only the reason then.
        text = c.reason if c.result == c.verdict else c.observed
        reasons = textwrap.wrap(text, reason_w, break_on_hyphens=False) or [""]
        for i in range(max(len(names), len(reasons))):
            n = names[i] if i < len(names) else ""
            e = c.expected if i == 0 else ""
            v = c.verdict if i == 0 else ""
            r = reasons[i] if i < len(reasons) else ""
            lines.append(f"{n:<{name_w}}  {e:<6}  {v:<{verdict_w}}  {r}".rstrip())
    na = [c.name for c in report.cases if c.result == NOT_APPLICABLE]
    if na:
        lines.append("")
        lines += _wrap(f"not applicable ({len(na)}): {report.not_applicable_reason}", width)
        lines += _wrap(", ".join(na), width, indent="  ")
    lines.append("")
    head, tally = _summary(report)
    lines += _wrap(head, width)
    lines.append(tally)
    return "\n".join(lines)


def _probe_line(report: AuthReport) -> str:
    p = report.probe
    if p is None:
        why = report.control.reason if report.control else "the valid identity got no connection"
        return (
            f"{report.target}: no probe method, the valid identity got no further than TLS: {why}"
        )
    return f"{report.target}: probe {p.method} ({p.note})"


def _summary(report: AuthReport) -> tuple[str, str]:
    counts = {v: sum(c.verdict == v for c in report.cases) for v in VERDICTS}
    parts = [f"{counts[PASS]} pass"]
    for v, label in (
        (FAIL, "FAIL"),
        (VERDICT_INCONCLUSIVE, "inconclusive"),
        (VERDICT_NOT_APPLICABLE, "not applicable"),
        (SKIP, "skipped"),
    ):
        if counts[v]:
            parts.append(f"{counts[v]} {label}")
    tally = ", ".join(parts)
    n = len(report.accepted_negatives)
    control = report.control
    if n:
        names = "; ".join(c.name for c in report.accepted_negatives)
        head = f"FLAW: {n} should-be-rejected case(s) ACCEPTED ({names})"
    elif control is not None and control.verdict != PASS:
        head = "INCONCLUSIVE: the valid call was not accepted, so no rejection is specific"
    elif report.inconclusive:
        head = f"INCONCLUSIVE: {len(report.inconclusive)} case(s) proved nothing either way"
    elif report.failures:
        head = f"{len(report.failures)} case(s) FAILED"
    else:
        head = "every case as expected"
    return head, f"{tally}; exit {report.exit_code}"


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent or "  ")
