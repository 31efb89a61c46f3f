"""A fuzz run's report: one self-contained HTML file that opens with no network.

    render_report(events, results, out=run_dir / "report.html", program=src, meta={"seed": 7})

`events` are history.jsonl's lines as dicts, `results` is results.json (both in the
formats of docs/fuzzing.md). Python pairs each invoke with its completion, finds the
fault periods and interns repeated strings; the page's script (report_assets/report.js)
draws the timeline, latency and throughput on <canvas> from the JSON embedded in the
page, so 100k operations are three canvases, not 100k DOM nodes. The verdict, the
checker results, the anomalies, the faults, the program and meta are plain HTML,
readable without script. A Content-Security-Policy lets the page fetch nothing and run
only its own script (by hash); history values reach the DOM only as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

TYPES = ("invoke", "ok", "fail", "info")
COMPLETION = {"ok": 0, "fail": 1, "info": 2}  # the ops' "type" column
NEMESIS = "nemesis"
TOOLS = (("out", "\u2212", "zoom out (-)"), ("in", "+", "zoom in (+)"),
         ("left", "←", "pan left (←)"), ("right", "→", "pan right (→)"),
         ("reset", "reset", "the whole run (0)"))  # (action, label, title)
VALUE_CHARS = 80  # values are shown in tooltips, not stored whole: a spec can be large


@dataclass
class _Strings:
    """Interned strings: keys, errors, nodes and values repeat across thousands of ops."""

    table: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def id(self, s: str | None) -> int:
        if s is None:
            return -1
        if s not in self.ids:
            self.ids[s] = len(self.table)
            self.table.append(s)
        return self.ids[s]


@dataclass
class _Fault:
    id: str
    kind: str
    label: str
    targets: list[str]
    t0: float
    inject: int  # history index of the inject's ok
    t1: float | None = None
    heal: int | None = None


def _check_events(events: Iterable[Any]) -> list[Mapping[str, Any]]:
    out = []
    seen: set[int] = set()
    for i, e in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(e, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(e).__name__}")
        idx, typ, proc, t = e.get("index"), e.get("type"), e.get("process"), e.get("time")
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise ValueError(f"{where}.index: expected an integer, got {idx!r}")
        if typ not in TYPES:
            raise ValueError(f"{where}.type: expected one of {', '.join(TYPES)}, got {typ!r}")
        if isinstance(proc, bool) or not isinstance(proc, int | str):
            raise ValueError(f"{where}.process: expected an integer or \"nemesis\", got {proc!r}")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"{where}.time: expected a finite number of seconds, got {t!r}")
        if idx in seen:  # anomalies name ops by index: it must be unique
            raise ValueError(f"{where}.index: {idx} appears twice")
        seen.add(idx)
        out.append(e)
    out.sort(key=lambda e: e["index"])
    return out


def _valid(v: Any, where: str) -> bool | str:
    if v is True or v is False or v == "unknown":
        return v
    raise ValueError(f'{where}: expected true, false or "unknown", got {v!r}')


def _check_results(results: Any) -> dict[str, Any]:
    if not isinstance(results, Mapping):
        raise ValueError(f"results: expected an object, got {type(results).__name__}")
    checkers = results.get("checkers", {})
    if not isinstance(checkers, Mapping):
        raise ValueError("results.checkers: expected an object of checker name -> result")
    out: dict[str, Any] = {"valid": _valid(results.get("valid"), "results.valid"), "checkers": {}}
    for name, c in checkers.items():
        where = f"results.checkers.{name}"
        if not isinstance(c, Mapping):
            raise ValueError(f"{where}: expected an object")
        anomalies = c.get("anomalies", [])
        if not isinstance(anomalies, list):
            raise ValueError(f"{where}.anomalies: expected a list")
        for j, a in enumerate(anomalies):
            if not isinstance(a, Mapping):
                raise ValueError(f"{where}.anomalies[{j}]: expected an object")
            ops = a.get("ops", [])
            if not isinstance(ops, list) or not all(
                    isinstance(o, int) and not isinstance(o, bool) for o in ops):
                raise ValueError(f"{where}.anomalies[{j}].ops: expected a list of history indices")
        out["checkers"][str(name)] = {**c, "valid": _valid(c.get("valid"), f"{where}.valid"),
                                      "anomalies": anomalies}
    return out


def _lane_order(p: int | str) -> tuple[int, int, str]:
    if p == NEMESIS:
        return (0, 0, "")
    return (1, p, "") if isinstance(p, int) else (2, 0, p)


def _short(v: Any) -> str | None:
    if v is None:
        return None
    s = json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)
    return s if len(s) <= VALUE_CHARS else s[: VALUE_CHARS - 1] + "…"


def _r(t: float) -> float:
    return round(t, 5)


def build_data(events: Iterable[Any], results: Any) -> dict[str, Any]:
    """The page's data: ops as columns (lane, t0, t1, type, f, inv, cmp, key, value,
    error, node; strings as indices into `strings`), fault periods, anomalies."""
    evs = _check_events(events)
    res = _check_results(results)
    lanes = sorted({e["process"] for e in evs} | {NEMESIS}, key=_lane_order)
    lane_of = {p: i for i, p in enumerate(lanes)}
    t_start = min((float(e["time"]) for e in evs), default=0.0)
    t_end = max((float(e["time"]) for e in evs), default=t_start)
    strings = _Strings()
    fs = _Strings()
    cols: dict[str, list[Any]] = {k: [] for k in (
        "lane", "t0", "t1", "type", "f", "inv", "cmp", "key", "value", "error", "node")}
    faults: list[_Fault] = []
    open_faults: dict[str, _Fault] = {}
    warnings: list[str] = []
    orphans = 0

    def add(inv: Mapping[str, Any], done: Mapping[str, Any] | None, t1: float) -> None:
        src = done or inv
        value = src.get("value") if src.get("value") is not None else inv.get("value")
        for k, v in (("lane", lane_of[inv["process"]]), ("t0", _r(inv["time"])), ("t1", _r(t1)),
                     ("type", COMPLETION[done["type"]] if done else 2),
                     ("f", fs.id(str(inv.get("f")))), ("inv", inv["index"]),
                     ("cmp", done["index"] if done else -1),
                     ("key", strings.id(_str_or_none(inv.get("key")))),
                     ("value", strings.id(_short(value))),
                     ("error", strings.id(_str_or_none(src.get("error")))),
                     ("node", strings.id(_str_or_none(src.get("node") or inv.get("node"))))):
            cols[k].append(v)

    pending: dict[int | str, Mapping[str, Any]] = {}
    for e in evs:
        p = e["process"]
        if e["type"] == "invoke":
            if p in pending:  # invoked again: the earlier op never completed
                add(pending[p], None, float(e["time"]))
            pending[p] = e
            continue
        inv = pending.pop(p, None)
        if inv is None:
            orphans += 1
            continue
        add(inv, e, float(e["time"]))
        if p == NEMESIS and e["type"] == "ok":
            _nemesis(inv, e, faults, open_faults, warnings)
    for inv in pending.values():  # never completed: indeterminate, drawn to the end
        add(inv, None, t_end)
    if orphans:
        warnings.append(f"{orphans} completion(s) without an invoke were ignored")

    op_of: dict[int, int] = {}
    for i, (a, b) in enumerate(zip(cols["inv"], cols["cmp"], strict=True)):
        op_of[a] = i
        if b >= 0:
            op_of[b] = i
    anomalies = []
    for name, c in res["checkers"].items():
        for a in c["anomalies"]:
            ops = [int(o) for o in a.get("ops", [])]
            extra = {k: v for k, v in a.items() if k not in ("kind", "message", "key", "ops")}
            anomalies.append({
                "checker": name, "kind": str(a.get("kind", "")),
                "message": str(a.get("message", "")), "key": _str_or_none(a.get("key")),
                "ops": ops, "opIds": sorted({op_of[o] for o in ops if o in op_of}),
                "details": json.dumps(extra, sort_keys=True, default=str) if extra else ""})
    return {
        "version": 1, "tStart": _r(t_start), "tEnd": _r(t_end), "events": len(evs),
        "lanes": [str(p) for p in lanes], "fs": fs.table, "strings": strings.table,
        "ops": cols, "valid": res["valid"], "anomalies": anomalies, "warnings": warnings,
        "faults": [{"id": f.id, "kind": f.kind, "label": f.label, "targets": f.targets,
                    "t0": _r(f.t0), "t1": _r(t_end if f.t1 is None else f.t1),
                    "open": f.t1 is None, "inject": f.inject, "heal": f.heal} for f in faults],
        "checkers": res["checkers"],
    }


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _nemesis(inv: Mapping[str, Any], ok: Mapping[str, Any], faults: list[_Fault],
             open_faults: dict[str, _Fault], warnings: list[str]) -> None:
    """An inject ok opens a fault period, a heal ok closes it (or all, for "all")."""
    v = ok.get("value") if isinstance(ok.get("value"), Mapping) else inv.get("value")
    v = v if isinstance(v, Mapping) else {}
    if inv.get("f") == "inject":
        fid = str(v.get("fault") or f"inject@{ok['index']}")
        targets = v.get("targets") or []
        targets = [str(t) for t in targets] if isinstance(targets, list) else [str(targets)]
        kind = str(v.get("kind") or "fault")
        fault = _Fault(fid, kind, str(v.get("label") or kind), targets,
                       float(ok["time"]), ok["index"])
        faults.append(fault)
        open_faults[fid] = fault
    elif inv.get("f") == "heal":
        fid = str(v.get("fault") or "all")
        healed = list(open_faults) if fid == "all" else [fid] if fid in open_faults else []
        if not healed and fid != "all":
            warnings.append(f"heal at #{ok['index']} names fault {fid}, which is not active")
        for h in healed:
            f = open_faults.pop(h)
            f.t1, f.heal = float(ok["time"]), ok["index"]


def _asset(name: str) -> str:
    return resources.files("driver.fuzz").joinpath("report_assets", name).read_text("utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _json_for_script(doc: Any) -> str:
    # Inside <script> only "</script" or "<!--" could end or confuse the element; escaping
    # every <, > and & keeps the JSON equal and the HTML parser blind to it.
    s = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _verdict(v: bool | str) -> tuple[str, str]:
    if v is True:
        return "valid", "VALID"
    return ("invalid", "INVALID") if v is False else ("unknown", "UNKNOWN")


def _dl(items: Iterable[tuple[str, Any]], id_: str) -> str:
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(_text(v))}</dd>"
                   for k, v in items)
    return f'<dl id="{id_}">{rows}</dl>'


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _checkers_html(checkers: Mapping[str, Any]) -> str:
    if not checkers:
        return "<p>No checker ran.</p>"
    rows = []
    for name, c in checkers.items():
        cls, word = _verdict(c["valid"])
        extra = {k: v for k, v in c.items() if k not in ("valid", "anomalies", "elapsed")}
        elapsed = c.get("elapsed")
        took = (f"{elapsed:.3f} s" if isinstance(elapsed, int | float)
                else "" if elapsed is None else str(elapsed))
        details = json.dumps(extra, sort_keys=True, default=str) if extra else ""
        rows.append(
            f'<tr class="{cls}"><th scope="row">{html.escape(name)}</th>'
            f'<td class="verdict">{word}</td><td>{len(c["anomalies"])}</td>'
            f"<td>{html.escape(took)}</td><td><code>{html.escape(details)}</code></td></tr>")
    return ('<table id="checkers"><caption>Checkers</caption><thead><tr><th scope="col">checker'
            '</th><th scope="col">verdict</th><th scope="col">anomalies</th>'
            '<th scope="col">elapsed</th><th scope="col">details</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _anomalies_html(anomalies: list[dict[str, Any]], known: set[int]) -> str:
    if not anomalies:
        return '<p id="no-anomalies">No anomalies.</p>'
    rows = []
    for k, a in enumerate(anomalies):
        links = " ".join(
            f'<a href="#op-{o}" data-op="{o}">#{o}</a>' if o in known
            else f'<span class="missing" title="not in the history">#{o}</span>'
            for o in a["ops"])
        show = (f' <a class="show" href="#anomaly-{k}">show all on the timeline</a>'
                if a["opIds"] else "")
        rows.append(
            f'<tr id="anomaly-{k}" class="anomaly"><td>{html.escape(a["checker"])}</td>'
            f'<td>{html.escape(a["kind"])}</td><td>{html.escape(a["key"] or "")}</td>'
            f'<td>{html.escape(a["message"])}</td><td class="ops">{links}{show}</td>'
            f'<td><code>{html.escape(a["details"])}</code></td></tr>')
    return ('<table id="anomalies"><caption>Anomalies (click an operation to find it on the '
            'timeline)</caption><thead><tr><th scope="col">checker</th><th scope="col">kind</th>'
            '<th scope="col">key</th><th scope="col">message</th><th scope="col">operations'
            '</th><th scope="col">details</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _faults_html(faults: list[dict[str, Any]]) -> str:
    if not faults:
        return '<p id="no-faults">No faults were injected.</p>'
    rows = "".join(
        f'<tr><td><a href="#fault-{k}">{html.escape(f["id"])}</a></td>'
        f'<td>{html.escape(f["kind"])}</td><td>{html.escape(f["label"])}</td>'
        f'<td>{html.escape(", ".join(f["targets"]))}</td><td>{f["t0"]:.3f}</td>'
        f'<td>{"still active at the end" if f["open"] else format(f["t1"], ".3f")}</td></tr>'
        for k, f in enumerate(faults))
    return ('<table id="faults"><caption>Fault periods (inject ok to heal ok; times in s)'
            '</caption><thead><tr><th scope="col">fault</th><th scope="col">kind</th>'
            '<th scope="col">label</th><th scope="col">targets</th><th scope="col">from</th>'
            f'<th scope="col">to</th></tr></thead><tbody>{rows}</tbody></table>')


def render_html(data: dict[str, Any], *, program: str | None = None,
                meta: Mapping[str, Any] | None = None) -> str:
    js, css = _asset("report.js"), _asset("report.css")
    if "</script" in js.lower() or "</style" in css.lower():
        raise ValueError("report assets must not contain a closing </script> or </style>")
    meta = dict(meta or {})
    meta_html = _dl(meta.items(), "meta") if meta else "<p>No metadata.</p>"
    page_data = {k: v for k, v in data.items() if k != "checkers"}  # the tables show those
    cls, word = _verdict(data["valid"])
    ops = len(data["ops"]["inv"])
    known = set(data["ops"]["inv"]) | {c for c in data["ops"]["cmp"] if c >= 0}
    summary = [("valid", {True: "true", False: "false"}.get(data["valid"], "unknown")),
               ("seed", meta.get("seed", "not given")), ("operations", ops),
               ("events", data["events"]), ("processes", len(data["lanes"]) - 1),
               ("faults", len(data["faults"])), ("anomalies", len(data["anomalies"])),
               ("duration", f"{data['tEnd'] - data['tStart']:.3f} s")]
    prog = ('<section id="program-section"><h2>Shrunk failing program</h2>'
            '<button type="button" id="copy-program">Copy</button> '
            '<span id="copy-status" role="status"></span>'
            f'<pre id="program">{html.escape(program)}</pre></section>') if program else ""
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in data["warnings"])
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    tools = "".join(f'<button type="button" data-act="{a}" title="{t}">{label}</button>'
                    for a, label, t in TOOLS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shakedown fuzz report: {word}</title>
<style>{css}</style></head>
<body><main id="report" data-render="">
<header id="summary" class="{cls}"><h1>Shakedown fuzz run: <span class="verdict">{word}</span></h1>
{_dl(summary, "run-summary")}{f'<ul id="warnings">{warn}</ul>' if warn else ""}
<p id="script-error" hidden></p></header>
<section id="timeline-section"><h2>Timeline</h2>
<p class="hint">One lane per process; bars run from invoke to completion (green ok, red fail,
amber info); shaded bands are fault periods. Wheel or buttons zoom, drag pans, click shows an
operation.</p>
<div class="toolbar" role="toolbar" aria-label="zoom and pan">{tools}
<span id="view-range"></span></div>
<div class="canvas-wrap" id="timeline-wrap"><canvas id="timeline" tabindex="0" role="img"
aria-label="timeline of {ops} operations in {len(data['lanes'])} lanes"></canvas></div>
<div id="tooltip" hidden></div>
<div id="op-detail" aria-live="polite"></div></section>
<section id="latency-section"><h2>Latency</h2><div id="legend"></div>
<div class="canvas-wrap"><canvas id="latency" tabindex="0" role="img"
aria-label="operation latency against invoke time, log scale"></canvas></div></section>
<section id="throughput-section"><h2>Throughput</h2>
<div class="canvas-wrap"><canvas id="throughput" tabindex="0" role="img"
aria-label="ok operations per second"></canvas></div></section>
<section id="faults-section"><h2>Faults</h2>{_faults_html(data["faults"])}</section>
<section id="results-section"><h2>Results</h2>{_checkers_html(data["checkers"])}
{_anomalies_html(data["anomalies"], known)}</section>
{prog}
<section id="meta-section"><h2>Run</h2>{meta_html}</section>
<script type="application/json" id="report-data">{_json_for_script(page_data)}</script>
<script>{js}</script>
</main></body></html>
"""


def render_report(events: Iterable[dict[str, Any]], results: dict[str, Any], *, out: Path,
                  program: str | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write the report to `out` (atomically) and return its path."""
    page = render_html(build_data(events, results), program=program, meta=meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
