"""The fuzz report (driver/fuzz/report.py), rendered from synthetic histories and opened in
real headless Chromium: the page must draw the timeline, the fault bands, the plots, and
link anomalies to operations, with no script error and no network request.

What the page drew is read two ways: the JSON summary its script writes into
#report's data-render after every draw, and the canvases' own pixels.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driver.fuzz.report import build_data, render_report
from tests.support.chromium import Browser, Page, headless_chromium

FS = ("apply", "update", "scale", "delete", "get", "get", "list")
SUMMARY = "JSON.parse(document.getElementById('report').dataset.render || 'null')"


def synthetic_history(ops: int, *, processes: int = 5, faults: int = 0, seed: int = 1,
                      open_fault: bool = False) -> list[dict[str, Any]]:
    """`ops` client operations spread over `processes`, and `faults` fault periods (the
    last one left unhealed when open_fault), as history.jsonl would hold them."""
    rng = random.Random(seed)
    raw: list[tuple[float, int, dict[str, Any]]] = []  # (time, tiebreak, event)
    per = ops // processes
    span = 0.0
    for p in range(processes):
        t = rng.uniform(0, 0.01)
        for _ in range(per if p else ops - per * (processes - 1)):
            f = rng.choice(FS)
            key = f"w-{rng.randrange(20)}"
            lat = rng.lognormvariate(-5, 0.8)
            outcome = rng.choices(("ok", "fail", "info"), (90, 7, 3))[0]
            if outcome == "info":
                lat = 1.0  # a timeout
            write = None if f in ("get", "list") else {"replicas": rng.randrange(1, 4)}
            raw.append((t, len(raw), {"type": "invoke", "process": p, "f": f, "key": key,
                                      "value": write, "node": None, "error": None}))
            t += lat
            done = {"type": outcome, "process": p, "f": f, "key": key, "node": f"n{p % 3 + 1}",
                    "value": {"replicas": 2} if f == "get" and outcome == "ok" else write,
                    "error": "deadline exceeded" if outcome != "ok" else None}
            raw.append((t, len(raw), done))
            t += rng.uniform(0.0005, 0.004)
        span = max(span, t)
    for k in range(faults):
        start = span * (k + 0.2) / (faults + 0.5)
        end = start + span / (faults + 0.5) * 0.5
        fid = f"f-{k:012x}"
        value = {"fault": fid, "kind": ("partition", "pause", "kill")[k % 3],
                 "targets": [f"n{k % 3 + 1}"], "label": f"fault {k}"}
        steps = ((start, "invoke", "inject", None), (start + 0.01, "ok", "inject", value),
                 (end, "invoke", "heal", None), (end + 0.01, "ok", "heal", {"fault": fid}))
        for t, typ, f, v in steps:
            if open_fault and k == faults - 1 and f == "heal":
                continue
            raw.append((t, len(raw), {"type": typ, "process": "nemesis", "f": f, "key": None,
                                      "value": v, "node": None, "error": None}))
    raw.sort(key=lambda r: (r[0], r[1]))
    return [{"index": i, "time": round(t, 6), "faults": [], **e} for i, (t, _, e) in enumerate(raw)]


def invalid_results(history: list[dict[str, Any]], anomalies: int = 2) -> dict[str, Any]:
    writes = [e["index"] for e in history if e["type"] == "ok" and e["f"] == "apply"]
    reads = [e["index"] for e in history if e["type"] == "ok" and e["f"] == "get"]
    found = [{"kind": "stale-read", "message": f"read {k} saw a value overwritten before it began",
              "key": "w-1", "ops": [writes[k * 7], reads[k * 11 + 3]]} for k in range(anomalies)]
    return {"valid": False, "checkers": {
        "linearizable": {"valid": False, "anomalies": found, "elapsed": 0.42},
        "convergence": {"valid": True, "anomalies": [], "elapsed": 0.01, "checked": 12}}}


VALID = {"valid": True, "checkers": {"linearizable": {"valid": True, "anomalies": [],
                                                      "elapsed": 0.2}}}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def open_report(browser: Browser, path: Path) -> tuple[Page, dict[str, Any]]:
    page = browser.open(path.resolve().as_uri())
    summary = page.wait_for(SUMMARY, what="the report's first draw")
    return page, summary


def canvas_pixels(page: Page, canvas: str, colours: dict[str, list[int]],
                  columns: tuple[float, ...] | list[float] = ()) -> dict[str, Any]:
    """Counts of pixels within 3 of each colour (and of near-black ones), over the whole
    canvas and down each of `columns` (CSS px)."""
    js = f"""(() => {{
      const c = document.getElementById({json.dumps(canvas)});
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const cols = {json.dumps(colours)}, xs = {json.dumps(list(columns))};
      const dpr = c.width / c.clientWidth, near = (i, rgb) => Math.abs(d[i] - rgb[0]) <= 3
        && Math.abs(d[i+1] - rgb[1]) <= 3 && Math.abs(d[i+2] - rgb[2]) <= 3;
      const out = {{all: {{}}, columns: [], painted: 0, dark: 0}};
      for (const k in cols) out.all[k] = 0;
      for (let i = 0; i < d.length; i += 4) {{
        if (d[i] !== 255 || d[i+1] !== 255 || d[i+2] !== 255) out.painted++;
        if (d[i] < 24 && d[i+1] < 24 && d[i+2] < 24) out.dark++;
        for (const k in cols) if (near(i, cols[k])) out.all[k]++;
      }}
      for (const x of xs) {{
        const px = Math.round(x * dpr), col = {{}};
        for (const k in cols) col[k] = 0;
        for (let y = 0; y < c.height; y++) {{
          const i = (y * c.width + px) * 4;
          for (const k in cols) if (near(i, cols[k])) col[k]++;
        }}
        out.columns.push(col);
      }}
      return out;
    }})()"""
    result: dict[str, Any] = page.evaluate(js)
    return result


def band_rgb(summary: dict[str, Any]) -> list[int]:
    *rgb, alpha = summary["bandColor"]
    return [round(b * (1 - alpha) + c * alpha) for c, b in zip(rgb, summary["background"],
                                                                strict=True)]


def hex_rgb(h: str) -> list[int]:
    return [int(h[i:i + 2], 16) for i in (1, 3, 5)]


def counts(history: list[dict[str, Any]]) -> tuple[int, int]:
    """(ops, completed ops) of a well-formed history."""
    invokes = sum(e["type"] == "invoke" for e in history)
    return invokes, sum(e["type"] != "invoke" for e in history)


def assert_no_network(page: Page, path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//|@import""", text, re.I)
    assert "<link" not in text and "<script src" not in text
    assert "default-src 'none'" in text  # the CSP: nothing may be fetched
    foreign = [u for u in page.requests() if u != path.resolve().as_uri()]
    assert foreign == [], foreign


def test_small_report_with_faults_and_anomalies(browser: Browser, tmp_path: Path) -> None:
    history = synthetic_history(300, processes=4, faults=3, open_fault=True)
    results = invalid_results(history)
    program = "state = ClusterMachine()\nstate.apply(spec='w-1')\nstate.inject('partition n1')\n"
    out = render_report(history, results, out=tmp_path / "report.html", program=program,
                        meta={"seed": 1234, "env": "demo", "budget": "5m"})
    page, s = open_report(browser, out)
    ops, completed = counts(history)
    assert page.errors() == []
    assert s["lanes"] == 5 and s["laneNames"][0] == "nemesis"
    assert s["ops"] == ops and s["timeline"]["bars"] == ops
    assert s["latency"]["points"] == completed  # every completed op, nemesis included
    assert s["timeline"]["faultBands"] == 3
    assert s["latency"]["faultBands"] == 3 and s["throughput"]["faultBands"] == 3
    assert s["throughput"]["buckets"] > 10 and s["throughput"]["maxRate"] > 0

    band = band_rgb(s)
    centres = [(b["x0"] + b["x1"]) / 2 for b in s["timeline"]["bands"]]
    outside = s["timeline"]["bands"][0]["x0"] - 20  # before the first fault
    tl = canvas_pixels(page, "timeline", {"band": band, **{k: hex_rgb(v) for k, v in
                                                          s["colors"].items()}},
                       [*centres, outside])
    assert tl["all"]["0"] > 1000 and tl["all"]["1"] > 0  # ok and fail bars
    for col in tl["columns"][:-1]:
        assert col["band"] >= 20, tl["columns"]  # each period is shaded...
    assert tl["columns"][-1]["band"] == 0  # ...and nothing outside them is
    assert tl["dark"] == 0  # nothing highlighted yet
    lat = canvas_pixels(page, "latency", {"band": band})
    assert lat["painted"] > 2000 and lat["all"]["band"] > 1000
    thr = canvas_pixels(page, "throughput", {"line": hex_rgb("#1d2330"), "band": band})
    assert thr["all"]["line"] > 200 and thr["all"]["band"] > 1000

    # The tables, the program and meta are HTML.
    assert page.evaluate("document.querySelectorAll('#faults tbody tr').length") == 3
    assert "still active at the end" in page.evaluate("document.getElementById('faults').innerText")
    assert page.evaluate("document.querySelector('#summary .verdict').textContent") == "INVALID"
    assert page.evaluate("document.getElementById('program').textContent") == program
    browser.grant_clipboard()
    page.evaluate("document.getElementById('copy-program').click()")
    assert page.wait_for("document.getElementById('copy-status').textContent") == "copied"
    assert page.evaluate("navigator.clipboard.readText()") == program
    assert "1234" in page.evaluate("document.getElementById('summary').innerText")

    # Every anomaly lists its operations as links; one click finds the op on the timeline.
    rows = page.evaluate("document.querySelectorAll('#anomalies tbody tr').length")
    assert rows == 2
    links = page.evaluate("[...document.querySelectorAll('#anomalies a[data-op]')]"
                          ".map(a => a.getAttribute('href'))")
    wanted = [o for a in results["checkers"]["linearizable"]["anomalies"] for o in a["ops"]]
    assert links == [f"#op-{o}" for o in wanted]
    target = wanted[1]  # a read's ok event: the op is found by its completion too
    frame = s["frame"]
    page.evaluate(f"document.querySelector('a[href=\"#op-{target}\"]').click()")
    s2 = page.wait_for(f"(s => s.frame > {frame} && s.selected !== null && s)({SUMMARY})",
                       what="the redraw after the click")
    inv = next(e for e in reversed(history[:target]) if e["type"] == "invoke"
               and e["process"] == history[target]["process"])
    assert s2["highlighted"] == [inv["index"]] and s2["selected"] == inv["index"]
    assert s2["view"][0] <= inv["time"] <= s2["view"][1]
    assert s2["view"][1] - s2["view"][0] < s["view"][1] - s["view"][0]  # zoomed in on it
    assert page.evaluate("document.getElementById('anomaly-0').classList.contains('selected')")
    assert f"#{inv['index']}" in page.evaluate("document.getElementById('op-detail').innerText")
    assert canvas_pixels(page, "timeline", {})["dark"] > 10  # the highlight outline

    # A fault's row zooms the charts to its period.
    fault = next(e["value"] for e in history if e["f"] == "inject" and e["type"] == "ok"
                 and e["value"]["label"] == "fault 1")
    start = next(e["time"] for e in history if e["type"] == "ok" and e["value"] == fault)
    end = next(e["time"] for e in history if e["f"] == "heal" and e["type"] == "ok"
               and e["value"]["fault"] == fault["fault"])
    frame = page.evaluate(f"{SUMMARY}.frame")
    page.evaluate("document.querySelector('a[href=\"#fault-1\"]').click()")
    f = page.wait_for(f"(s => s.frame > {frame} && s)({SUMMARY})")
    assert f["view"][0] < start < end < f["view"][1]
    assert f["view"][1] - f["view"][0] < 2 * (end - start)
    assert f["timeline"]["faultBands"] >= 1
    assert page.errors() == []
    assert_no_network(page, out)
    page.screenshot(tmp_path / "small.png")


def test_valid_history_without_faults_shows_no_bands_and_no_anomalies(
        browser: Browser, tmp_path: Path) -> None:
    history = synthetic_history(400, processes=3, faults=0, seed=2)
    out = render_report(history, VALID, out=tmp_path / "report.html")
    page, s = open_report(browser, out)
    assert page.errors() == []
    assert s["timeline"]["bars"] == counts(history)[0] > 0
    assert s["faults"] == 0
    assert [s[k]["faultBands"] for k in ("timeline", "latency", "throughput")] == [0, 0, 0]
    band = band_rgb(s)
    for canvas in ("timeline", "latency", "throughput"):
        px = canvas_pixels(page, canvas, {"band": band})
        assert px["painted"] > 500 and px["all"]["band"] == 0, (canvas, px)
    assert page.evaluate("document.querySelectorAll('#anomalies tbody tr').length") == 0
    assert page.evaluate("!!document.getElementById('no-anomalies')")
    assert page.evaluate("!!document.getElementById('no-faults')")
    assert page.evaluate("document.querySelector('#summary .verdict').textContent") == "VALID"
    assert page.evaluate("document.getElementById('program')") is None  # none was given
    assert_no_network(page, out)


@pytest.mark.slow
def test_large_report_draws_past_jepsens_limit_and_zooms(browser: Browser, tmp_path: Path) -> None:
    history = synthetic_history(25_000, processes=10, faults=6, seed=3)
    results = invalid_results(history, anomalies=3)
    started = time.monotonic()
    out = render_report(history, results, out=tmp_path / "report.html", meta={"seed": 3})
    elapsed = time.monotonic() - started
    size = out.stat().st_size
    assert elapsed < 30, elapsed  # ~1 s unloaded; generous for a shared 2-core machine
    assert size < 4_000_000, size
    page, s = open_report(browser, out)
    ops = counts(history)[0]
    assert page.errors() == []
    assert s["ops"] == ops > 25_000 and s["timeline"]["bars"] == ops
    assert s["timeline"]["faultBands"] == 6 == s["latency"]["faultBands"]
    assert s["latency"]["points"] == counts(history)[1]
    tl = canvas_pixels(page, "timeline", {"band": band_rgb(s)},
                       [(b["x0"] + b["x1"]) / 2 for b in s["timeline"]["bands"]])
    assert tl["painted"] > 20_000
    assert all(col["band"] >= 4 for col in tl["columns"]), tl["columns"]
    # One canvas, not a node per op.
    assert page.evaluate("document.getElementsByTagName('*').length") < 600

    # Zoom in twice: fewer bars in view, the plots follow the same window.
    for _ in range(2):
        frame = page.evaluate(f"{SUMMARY}.frame")
        page.evaluate("document.querySelector('button[data-act=\"in\"]').click()")
        page.wait_for(f"{SUMMARY}.frame > {frame}", what="redraw after zoom")
    z = page.evaluate(SUMMARY)
    assert z["view"][1] - z["view"][0] < (s["view"][1] - s["view"][0]) / 3
    assert 0 < z["timeline"]["bars"] < ops / 2
    assert 0 < z["latency"]["points"] < s["latency"]["points"] / 2
    # Real input: the wheel zooms in around the cursor, a drag pans.
    x, y = page.evaluate("(() => { const c = document.getElementById('latency');"
                         " c.scrollIntoView({block: 'center'});"
                         " const r = c.getBoundingClientRect();"
                         " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    frame = z["frame"]
    page.mouse("mouseWheel", x, y, deltaX=0, deltaY=-400)
    w = page.wait_for(f"(s => s.frame > {frame} && s)({SUMMARY})", what="redraw after wheel")
    assert w["view"][1] - w["view"][0] < z["view"][1] - z["view"][0]
    page.mouse("mousePressed", x, y, button="left", clickCount=1)
    page.mouse("mouseMoved", x + 200, y, button="left", buttons=1)
    page.mouse("mouseReleased", x + 200, y, button="left", clickCount=1)
    d = page.wait_for(f"(s => s.view[0] < {w['view'][0]} && s)({SUMMARY})", what="pan by drag")
    assert abs((d["view"][1] - d["view"][0]) - (w["view"][1] - w["view"][0])) < 1e-6
    page.evaluate("document.querySelector('a[href=\"#anomaly-2\"]').click()")
    h = page.wait_for(f"(s => s.highlighted.length === 2 && s)({SUMMARY})")
    assert all(h["view"][0] <= e["time"] <= h["view"][1] for e in history
               if e["index"] in set(h["highlighted"]))
    assert page.errors() == []
    assert_no_network(page, out)
    page.screenshot(tmp_path / "large.png")


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    good = synthetic_history(10, processes=2)
    with pytest.raises(ValueError, match=r"events\[3\]\.time"):
        build_data([*good[:3], {**good[3], "time": "soon"}], VALID)
    with pytest.raises(ValueError, match=r"events\[0\]\.type"):
        build_data([{**good[0], "type": "done"}], VALID)
    with pytest.raises(ValueError, match=r"events\[2\]\.index: 1 appears twice"):
        build_data([good[0], good[1], {**good[2], "index": 1}], VALID)
    with pytest.raises(ValueError, match=r"events\[1\]\.process"):
        build_data([good[0], {**good[1], "process": None}], VALID)
    with pytest.raises(ValueError, match=r"results\.valid"):
        build_data(good, {"valid": "maybe"})
    bad = {"valid": False, "checkers": {"lin": {"valid": False,
                                                "anomalies": [{"ops": ["three"]}]}}}
    with pytest.raises(ValueError, match=r"results\.checkers\.lin\.anomalies\[0\]\.ops"):
        build_data(good, bad)
    with pytest.raises(ValueError, match=r"results\.checkers\.lin\.anomalies\[0\]: expected"):
        build_data(good, {"valid": False, "checkers": {"lin": {"valid": False,
                                                               "anomalies": ["x"]}}})
    with pytest.raises(ValueError, match=r"results\.checkers\.lin\.valid"):
        build_data(good, {"valid": False, "checkers": {"lin": {"anomalies": []}}})


def test_history_text_cannot_break_out_of_the_page(browser: Browser, tmp_path: Path) -> None:
    """Keys, values and messages are data: a </script> in them stays text."""
    evil = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    history = synthetic_history(20, processes=2)
    for e in history:
        e["key"], e["value"] = evil, {"v": evil}
    results = {"valid": False, "checkers": {"c": {"valid": False, "anomalies": [
        {"kind": evil, "message": evil, "key": evil, "ops": [0, 1]}]}}}
    out = render_report(history, results, out=tmp_path / "report.html", program=evil,
                        meta={"note": evil})
    page, s = open_report(browser, out)
    assert s["ops"] == counts(history)[0]
    assert page.evaluate("window.pwned === undefined")
    assert page.evaluate("document.getElementById('program').textContent") == evil
    page.evaluate("document.querySelector('a[href=\"#op-1\"]').click()")
    page.wait_for(f"{SUMMARY}.selected !== null")
    assert evil in page.evaluate("document.getElementById('op-detail').textContent")
    assert page.evaluate("window.pwned === undefined")
    assert page.errors() == []


def test_malformed_pairs_and_unknown_verdict(browser: Browser, tmp_path: Path) -> None:
    """An invoke never completed is indeterminate to the end; a stray completion is
    ignored and said; an unknown verdict says so."""
    h = [
        {"index": 0, "type": "invoke", "process": 0, "f": "get", "key": "w-1", "time": 0.0},
        {"index": 1, "type": "ok", "process": 0, "f": "get", "key": "w-1", "time": 0.5},
        {"index": 2, "type": "ok", "process": 1, "f": "get", "key": "w-1", "time": 0.6},
        {"index": 3, "type": "invoke", "process": 1, "f": "apply", "key": "w-2", "time": 1.0},
        {"index": 4, "type": "invoke", "process": 0, "f": "apply", "key": "w-3", "time": 2.0},
        {"index": 5, "type": "info", "process": 0, "f": "apply", "key": "w-3", "time": 3.0},
    ]
    data = build_data(h, {"valid": "unknown", "checkers": {}})
    assert data["ops"]["inv"] == [0, 4, 3] and data["ops"]["cmp"] == [1, 5, -1]
    assert data["ops"]["t1"][2] == 3.0 and data["ops"]["type"] == [0, 2, 2]
    assert data["warnings"] == ["1 completion(s) without an invoke were ignored"]
    out = render_report(h, {"valid": "unknown", "checkers": {}}, out=tmp_path / "r.html")
    page, s = open_report(browser, out)
    assert s["ops"] == 3 and page.errors() == []
    assert page.evaluate("document.querySelector('#summary .verdict').textContent") == "UNKNOWN"
    assert "without an invoke" in page.evaluate("document.getElementById('warnings').innerText")


def test_empty_history_renders(browser: Browser, tmp_path: Path) -> None:
    out = render_report([], {"valid": "unknown", "checkers": {}}, out=tmp_path / "r.html")
    page, s = open_report(browser, out)
    assert page.errors() == []
    assert (s["lanes"], s["ops"], s["timeline"]["bars"], s["latency"]["points"]) == (1, 0, 0, 0)


def test_real_checker_results_link_to_their_ops(browser: Browser, tmp_path: Path) -> None:
    """history.jsonl and results.json as the fuzz run writes them (driver.fuzz.history,
    the linearizability checker): a read of a value never written is found, and each of
    its operations is a link the page resolves to an op on the timeline."""
    from driver.fuzz.checkers import linearizable
    from driver.fuzz.checkers.synthetic import register_history
    from driver.fuzz.history import Op, dump, load, pairs
    from driver.fuzz.results import Results

    ops = register_history(random.Random(7), 400, processes=4)
    read = next(o for o in ops if o.type == "ok" and o.f == "get" and o.index > 200)
    ops[read.index] = Op(**{**read.to_json(), "value": {"never": "written"}, "faults": ()})
    dump(ops, tmp_path / "history.jsonl")
    history = load(tmp_path / "history.jsonl")
    results = Results()
    results.add(linearizable.check(history, time_limit=20))
    doc = results.to_json()
    assert doc["valid"] is False
    events = [op.to_json() for op in history]
    out = render_report(events, doc, out=tmp_path / "report.html", meta={"seed": 7})
    page, s = open_report(browser, out)
    assert page.errors() == [] and s["ops"] == len(pairs(history))
    anomalies = doc["checkers"][linearizable.NAME]["anomalies"]
    assert page.evaluate("document.querySelectorAll('#anomalies tbody tr').length") == len(
        anomalies) > 0
    hrefs = page.evaluate("[...document.querySelectorAll('#anomalies a[data-op]')]"
                          ".map(a => a.getAttribute('href'))")
    assert hrefs == [f"#op-{o}" for a in anomalies for o in a["ops"]]
    assert page.evaluate("document.querySelectorAll('#anomalies .missing').length") == 0
    page.evaluate("document.querySelector('#anomalies a.show').click()")
    h = page.wait_for(f"(s => s.highlighted.length && s)({SUMMARY})")
    wanted = set(anomalies[0]["ops"])
    invokes = {p.invoke.index for p in pairs(history) if p.invoke.index in wanted
               or (p.complete is not None and p.complete.index in wanted)}
    assert set(h["highlighted"]) == invokes
