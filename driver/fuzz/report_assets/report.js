// Draws a Shakedown fuzz report from the JSON in #report-data (built by driver/fuzz/report.py).
// Everything is canvas: one draw is a loop over typed arrays, so 100k operations cost
// milliseconds and no DOM nodes. After every draw, #report's data-render holds a JSON
// summary of what was drawn (lanes, bars, fault bands, points, buckets, highlights), which
// the Chromium test reads; history text reaches the DOM only through textContent.
(function () {
  "use strict";
  const root = document.getElementById("report");
  const errors = [];
  function fail(msg) {
    errors.push(String(msg));
    const p = document.getElementById("script-error");
    p.hidden = false;
    p.textContent = "The charts could not be drawn: " + errors.join("; ");
  }
  window.addEventListener("error", (e) => fail(e.message));

  const D = JSON.parse(document.getElementById("report-data").textContent);
  const O = D.ops, S = D.strings, n = O.inv.length, nLanes = D.lanes.length;
  const lane = Int32Array.from(O.lane), type = Uint8Array.from(O.type), fid = Int32Array.from(O.f);
  const t0 = Float64Array.from(O.t0), t1 = Float64Array.from(O.t1), cmp = Int32Array.from(O.cmp);
  const nemesis = D.lanes.indexOf("nemesis");
  const COLORS = { 0: "#2f9e5b", 1: "#d9463e", 2: "#e6a117" };
  const NAMES = ["ok", "fail", "info"];
  const BAND = [124, 77, 204, 0.18], BG = [255, 255, 255];
  const BAND_FILL = `rgba(${BAND.join(",")})`, BAND_EDGE = "rgba(124,77,204,0.75)";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  const L = 96, R = 14, AXIS = 24, ROW = 14;
  const full = { a: D.tStart, b: Math.max(D.tEnd, D.tStart + 1e-3) };
  const pad = (full.b - full.a) * 0.01;
  const view = { a: full.a - pad, b: full.b + pad };
  const hidden = new Set();
  let highlight = [], selected = -1, selectedFault = -1, frame = 0, pending = false;

  // Per lane, op ids sorted by invoke time: hit testing is a binary search.
  const byLane = Array.from({ length: nLanes }, () => []);
  for (let i = 0; i < n; i++) byLane[lane[i]].push(i);
  for (const ids of byLane) ids.sort((x, y) => t0[x] - t0[y]);
  let eventToOp = null;
  function opOfEvent(idx) {
    if (!eventToOp) {
      eventToOp = new Map();
      for (let i = 0; i < n; i++) { eventToOp.set(O.inv[i], i); if (cmp[i] >= 0) eventToOp.set(cmp[i], i); }
    }
    return eventToOp.has(idx) ? eventToOp.get(idx) : -1;
  }

  // Fault label rows: a fault takes the first row free at its start.
  const rowEnds = [], faultRow = D.faults.map((f) => {
    let r = rowEnds.findIndex((end) => end <= f.t0);
    if (r < 0) { r = rowEnds.length; rowEnds.push(0); }
    rowEnds[r] = f.t1;
    return r;
  });
  const strip = rowEnds.length * ROW + 4;
  const laneH = Math.max(4, Math.min(20, Math.floor(520 / nLanes)));

  let latLo = Infinity, latHi = -Infinity;
  for (let i = 0; i < n; i++) {
    if (cmp[i] < 0) continue;
    const d = Math.max(t1[i] - t0[i], 1e-6);
    if (d < latLo) latLo = d;
    if (d > latHi) latHi = d;
  }
  if (latLo === Infinity) { latLo = 1e-3; latHi = 1; }
  // A margin of a twentieth of a decade, so points at a power of ten are not cut in half.
  const logLo = Math.floor(Math.log10(latLo) - 0.05);
  const logHi = Math.max(Math.ceil(Math.log10(latHi) + 0.05), logLo + 1);

  const canvases = {
    timeline: document.getElementById("timeline"),
    latency: document.getElementById("latency"),
    throughput: document.getElementById("throughput"),
  };
  const heights = { timeline: strip + nLanes * laneH + AXIS, latency: 260, throughput: 200 };

  function setup(name) {
    const c = canvases[name], dpr = window.devicePixelRatio || 1;
    const w = Math.max(320, c.parentElement.clientWidth), h = heights[name];
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    c.style.width = w + "px"; c.style.height = h + "px";
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = `rgb(${BG.join(",")})`; ctx.fillRect(0, 0, w, h);
    ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
    return { ctx, w, h, W: w - L - R };
  }
  const xOf = (g, t) => L + (t - view.a) * g.W / (view.b - view.a);
  const tOf = (g, x) => view.a + (x - L) * (view.b - view.a) / g.W;
  function niceStep(x) {
    const p = Math.pow(10, Math.floor(Math.log10(x))), m = x / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function fmtDur(s) {
    if (s >= 1) return +s.toPrecision(3) + " s";
    if (s >= 1e-3) return +(s * 1e3).toPrecision(3) + " ms";
    return +(s * 1e6).toPrecision(3) + " µs";
  }
  function clip(g, top, bottom, fn) {
    g.ctx.save(); g.ctx.beginPath(); g.ctx.rect(L, top, g.W, bottom - top); g.ctx.clip();
    fn(); g.ctx.restore();
  }
  function timeAxis(g, top, bottom) {
    const ctx = g.ctx, step = niceStep((view.b - view.a) / Math.max(2, g.W / 90));
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    ctx.strokeStyle = "#e3e6ec"; ctx.fillStyle = "#444"; ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let t = Math.ceil(view.a / step) * step; t <= view.b; t += step) {
      const x = Math.round(xOf(g, t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillText(t.toFixed(digits) + " s", x, bottom + 5);
    }
    ctx.strokeStyle = "#99a"; ctx.beginPath(); ctx.moveTo(L, bottom + 0.5); ctx.lineTo(L + g.W, bottom + 0.5); ctx.stroke();
  }
  // Shades every fault period overlapping the view; returns the bands drawn, clipped, in CSS px.
  function bands(g, top, bottom) {
    const out = [];
    D.faults.forEach((f, k) => {
      const xa = Math.max(L, xOf(g, f.t0)), xb = Math.min(L + g.W, xOf(g, f.t1));
      if (xb < L || xa > L + g.W) return;
      const w = Math.max(2, xb - xa);
      g.ctx.fillStyle = BAND_FILL; g.ctx.fillRect(xa, top, w, bottom - top);
      g.ctx.strokeStyle = BAND_EDGE; g.ctx.lineWidth = k === selectedFault ? 2 : 1;
      g.ctx.beginPath(); g.ctx.moveTo(xa + 0.5, top); g.ctx.lineTo(xa + 0.5, bottom);
      if (!f.open) { g.ctx.moveTo(xa + w - 0.5, top); g.ctx.lineTo(xa + w - 0.5, bottom); }
      g.ctx.stroke(); g.ctx.lineWidth = 1;
      out.push({ fault: f.id, x0: +xa.toFixed(1), x1: +(xa + w).toFixed(1), top, bottom });
    });
    return out;
  }

  function drawTimeline() {
    const g = setup("timeline"), ctx = g.ctx, top = strip, bottom = strip + nLanes * laneH;
    ctx.strokeStyle = "#eef0f4";
    for (let l = 0; l <= nLanes; l++) {
      const y = top + l * laneH + 0.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + g.W, y); ctx.stroke();
    }
    let drawn = [], bars = 0;
    clip(g, 0, bottom, () => {
      drawn = bands(g, 0, bottom);
      ctx.textBaseline = "middle"; ctx.textAlign = "left";
      D.faults.forEach((f, k) => {
        const xa = Math.max(L, xOf(g, f.t0)), xb = Math.min(L + g.W, xOf(g, f.t1));
        if (xb < L || xa > L + g.W || xb - xa < 12) return;
        const text = `${f.label} · ${f.kind}${f.targets.length ? " · " + f.targets.join(",") : ""}`;
        ctx.save(); ctx.beginPath(); ctx.rect(xa, 0, xb - xa, strip); ctx.clip();
        ctx.fillStyle = "#4a2a8a"; ctx.fillText(text, xa + 3, 2 + faultRow[k] * ROW + ROW / 2);
        ctx.restore();
      });
      const paths = [new Path2D(), new Path2D(), new Path2D()];
      const h = Math.max(1, laneH - 2);
      for (let i = 0; i < n; i++) {
        if (t1[i] < view.a || t0[i] > view.b) continue;
        const xa = xOf(g, t0[i]), w = Math.max(1, xOf(g, t1[i]) - xa);
        paths[type[i]].rect(xa, top + lane[i] * laneH + 1, w, h);
        bars++;
      }
      for (const k of [0, 2, 1]) { ctx.fillStyle = COLORS[k]; ctx.fill(paths[k]); }  // failures on top
      ctx.strokeStyle = "rgba(17,17,17,0.45)"; ctx.setLineDash([4, 3]);  // a guide down all lanes
      for (const i of highlight) {
        const x = Math.round(xOf(g, t0[i])) - 0.5;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      }
      ctx.setLineDash([]);
      ctx.strokeStyle = "#111"; ctx.lineWidth = 2; ctx.fillStyle = "#111";
      for (const i of highlight) {
        const xa = xOf(g, t0[i]), w = Math.max(1, xOf(g, t1[i]) - xa), y = top + lane[i] * laneH;
        ctx.strokeRect(xa - 1, y, w + 2, laneH);
        ctx.beginPath(); ctx.moveTo(xa - 5, y - 7); ctx.lineTo(xa + 5, y - 7); ctx.lineTo(xa, y - 1); ctx.fill();
      }
      ctx.lineWidth = 1;
    });
    ctx.fillStyle = "#333"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const every = Math.ceil(11 / laneH);  // thin lanes: label every few
    D.lanes.forEach((name, l) => {
      if (l % every === 0) ctx.fillText(name === "nemesis" ? name : "process " + name, L - 6, top + l * laneH + laneH / 2);
    });
    if (D.faults.length) { ctx.fillStyle = "#4a2a8a"; ctx.fillText("faults", L - 6, strip / 2); }
    timeAxis(g, top, bottom);
    return { bars, faultBands: drawn.length, bands: drawn, width: g.w, height: g.h, laneHeight: laneH, lanesTop: top };
  }

  function drawLatency() {
    const g = setup("latency"), ctx = g.ctx, top = 8, bottom = g.h - AXIS;
    const yOf = (d) => top + (logHi - Math.log10(Math.max(d, Math.pow(10, logLo)))) / (logHi - logLo) * (bottom - top);
    ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.strokeStyle = "#eef0f4"; ctx.fillStyle = "#444";
    for (let k = logLo; k <= logHi; k++) {
      const y = Math.round(yOf(Math.pow(10, k))) + 0.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + g.W, y); ctx.stroke();
      ctx.fillText(fmtDur(Math.pow(10, k)), L - 6, y);
    }
    let drawn = [], points = 0;
    clip(g, top, bottom, () => {
      drawn = bands(g, top, bottom);
      const fills = D.fs.map(() => new Path2D()), rings = D.fs.map(() => new Path2D());
      for (let i = 0; i < n; i++) {
        if (cmp[i] < 0 || hidden.has(fid[i]) || t0[i] < view.a || t0[i] > view.b) continue;
        const x = xOf(g, t0[i]), y = yOf(t1[i] - t0[i]);
        if (type[i] === 0) fills[fid[i]].rect(x - 1.5, y - 1.5, 3, 3);
        else rings[fid[i]].rect(x - 2, y - 2, 4, 4);
        points++;
      }
      D.fs.forEach((_, k) => {
        const c = PALETTE[k % PALETTE.length];
        ctx.fillStyle = c; ctx.fill(fills[k]); ctx.strokeStyle = c; ctx.stroke(rings[k]);
      });
      ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
      for (const i of highlight) if (cmp[i] >= 0) { ctx.beginPath(); ctx.arc(xOf(g, t0[i]), yOf(t1[i] - t0[i]), 6, 0, 7); ctx.stroke(); }
      ctx.lineWidth = 1;
    });
    timeAxis(g, top, bottom);
    return { points, faultBands: drawn.length, bands: drawn, logRange: [logLo, logHi] };
  }

  function drawThroughput() {
    const g = setup("throughput"), ctx = g.ctx, top = 8, bottom = g.h - AXIS;
    // About a bucket per 8 px, but never under 1/400 of the run: zoomed far in, rates
    // over sub-millisecond buckets would be noise.
    const bw = niceStep(Math.max((view.b - view.a) / Math.max(20, g.W / 8), (full.b - full.a) / 400, 1e-3));
    const a0 = Math.floor(view.a / bw) * bw;
    const nb = Math.ceil((view.b - a0) / bw) + 1, total = new Float64Array(nb);
    const per = D.fs.map(() => new Float64Array(nb));
    for (let i = 0; i < n; i++) {
      if (type[i] !== 0 || lane[i] === nemesis || hidden.has(fid[i]) || t1[i] < a0 || t1[i] > view.b) continue;
      const b = Math.floor((t1[i] - a0) / bw);
      total[b]++; per[fid[i]][b]++;
    }
    let max = 0;
    for (let b = 0; b < nb; b++) max = Math.max(max, total[b] / bw);
    const yMax = niceStep(Math.max(max, 1) * 1.1), yOf = (r) => bottom - r / yMax * (bottom - top);
    ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.strokeStyle = "#eef0f4"; ctx.fillStyle = "#444";
    for (let k = 0; k <= 4; k++) {
      const r = yMax * k / 4, y = Math.round(yOf(r)) + 0.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + g.W, y); ctx.stroke();
      ctx.fillText(+r.toPrecision(3) + "/s", L - 6, y);
    }
    let drawn = [];
    clip(g, top, bottom, () => {
      drawn = bands(g, top, bottom);
      const line = (arr, color, width) => {
        ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
        for (let b = 0; b < nb; b++) {
          const xa = xOf(g, a0 + b * bw), xb = xOf(g, a0 + (b + 1) * bw), y = yOf(arr[b] / bw);
          if (b === 0) ctx.moveTo(xa, y); else ctx.lineTo(xa, y);
          ctx.lineTo(xb, y);
        }
        ctx.stroke();
      };
      if (D.fs.length <= PALETTE.length) per.forEach((arr, k) => { if (!hidden.has(k) && arr.some((v) => v)) line(arr, PALETTE[k], 1); });
      line(total, "#1d2330", 2); ctx.lineWidth = 1;
    });
    timeAxis(g, top, bottom);
    return { buckets: nb, bucketSeconds: bw, maxRate: max, faultBands: drawn.length, bands: drawn };
  }

  function draw() {
    pending = false;
    const started = performance.now();
    try {
      const summary = {
        frame: ++frame, lanes: nLanes, laneNames: D.lanes, ops: n, faults: D.faults.length,
        view: [view.a, view.b], timeline: drawTimeline(), latency: drawLatency(),
        throughput: drawThroughput(), highlighted: highlight.map((i) => O.inv[i]),
        selected: selected >= 0 ? O.inv[selected] : null, dpr: window.devicePixelRatio || 1,
        bandColor: BAND, background: BG, colors: COLORS, errors,
      };
      document.getElementById("view-range").textContent =
        `showing ${view.a.toFixed(3)} s – ${view.b.toFixed(3)} s of ${D.tStart.toFixed(3)} s – ${D.tEnd.toFixed(3)} s`;
      summary.drawMs = +(performance.now() - started).toFixed(1);
      root.dataset.render = JSON.stringify(summary);
    } catch (e) { fail(e && e.stack || e); throw e; }
  }
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(draw); } }

  function setView(a, b) {
    const span = Math.min(Math.max(b - a, 1e-4), full.b - full.a + 2 * pad);
    let lo = (a + b) / 2 - span / 2;
    lo = Math.max(full.a - pad, Math.min(lo, full.b + pad - span));
    view.a = lo; view.b = lo + span; schedule();
  }
  function zoom(factor, at) {
    const c = at === undefined ? (view.a + view.b) / 2 : at;
    setView(c - (c - view.a) * factor, c + (view.b - c) * factor);
  }
  function pan(frac) { const d = (view.b - view.a) * frac; setView(view.a + d, view.b + d); }
  function focusOps(ids) {
    if (!ids.length) return;
    let lo = Infinity, hi = -Infinity;
    for (const i of ids) { lo = Math.min(lo, t0[i]); hi = Math.max(hi, t1[i]); }
    // Enough context to see the neighbours, not so much that a short op vanishes again.
    const p = Math.max((hi - lo) * 0.75, (full.b - full.a) * 0.001, 0.05);
    setView(lo - p, hi + p);
    const wrap = document.getElementById("timeline-wrap");
    wrap.scrollTop = Math.max(0, strip + lane[ids[0]] * laneH - wrap.clientHeight / 2);
    document.getElementById("timeline-section").scrollIntoView({ block: "start" });
  }

  function faultsAt(t) { return D.faults.filter((f) => f.t0 <= t && t < f.t1).map((f) => f.label); }
  function describe(i) {
    const s = (k) => (O[k][i] >= 0 ? S[O[k][i]] : "—");
    return [
      ["invoke", "#" + O.inv[i]], ["completion", cmp[i] >= 0 ? "#" + cmp[i] : "none (indeterminate)"],
      ["process", D.lanes[lane[i]]], ["f", D.fs[fid[i]]], ["type", NAMES[type[i]]], ["key", s("key")],
      ["value", s("value")], ["error", s("error")], ["node", s("node")],
      ["invoked", t0[i].toFixed(4) + " s"], ["latency", cmp[i] >= 0 ? fmtDur(t1[i] - t0[i]) : "—"],
      ["faults at invoke", faultsAt(t0[i]).join(", ") || "none"],
    ];
  }
  function select(i) {
    selected = i;
    const box = document.getElementById("op-detail");
    box.replaceChildren();
    if (i < 0) return;
    const dl = document.createElement("dl");
    for (const [k, v] of describe(i)) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; dl.append(dt, dd);
    }
    box.append(dl);
  }
  function hit(name, x, y) {
    const g = { W: canvases[name].clientWidth - L - R };
    if (name === "timeline") {
      const l = Math.floor((y - strip) / laneH);
      if (l < 0 || l >= nLanes || x < L) return -1;
      const t = tOf(g, x), tol = 3 * (view.b - view.a) / g.W, ids = byLane[l];
      let lo = 0, hi = ids.length - 1, k = -1;
      while (lo <= hi) { const m = (lo + hi) >> 1; if (t0[ids[m]] <= t + tol) { k = m; lo = m + 1; } else hi = m - 1; }
      for (let j = k; j >= 0 && j > k - 4; j--) if (t1[ids[j]] + tol >= t) return ids[j];
      return -1;
    }
    if (name !== "latency") return -1;
    let best = -1, bestD = 36;
    const top = 8, bottom = heights.latency - AXIS;
    for (let i = 0; i < n; i++) {
      if (cmp[i] < 0 || hidden.has(fid[i])) continue;
      const px = xOf(g, t0[i]) - x;
      if (px * px > bestD) continue;
      const d = Math.max(t1[i] - t0[i], Math.pow(10, logLo));
      const py = top + (logHi - Math.log10(d)) / (logHi - logLo) * (bottom - top) - y;
      if (px * px + py * py < bestD) { bestD = px * px + py * py; best = i; }
    }
    return best;
  }

  function applyHash(hash) {
    let m;
    document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
    if ((m = /^#op-(\d+)$/.exec(hash))) {
      const i = opOfEvent(+m[1]);
      if (i < 0) return;
      highlight = [i]; select(i); focusOps(highlight);
      document.querySelectorAll(`tr.anomaly a[href="${hash}"]`).forEach((a) => a.closest("tr").classList.add("selected"));
    } else if ((m = /^#anomaly-(\d+)$/.exec(hash)) && D.anomalies[+m[1]]) {
      highlight = D.anomalies[+m[1]].opIds.slice(); select(highlight.length ? highlight[0] : -1);
      focusOps(highlight);
      const row = document.getElementById("anomaly-" + m[1]);
      if (row) row.classList.add("selected");
    } else if ((m = /^#fault-(\d+)$/.exec(hash)) && D.faults[+m[1]]) {
      const f = D.faults[+m[1]], p = Math.max((f.t1 - f.t0) * 0.2, 0.05);
      selectedFault = +m[1]; setView(f.t0 - p, f.t1 + p);
      document.getElementById("timeline-section").scrollIntoView({ block: "start" });
    }
    schedule();
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest('a[href^="#"]');
    if (!a) return;
    applyHash(a.getAttribute("href"));  // also when the hash is already this one
  });
  window.addEventListener("hashchange", () => applyHash(location.hash));

  document.querySelectorAll(".toolbar button").forEach((b) => b.addEventListener("click", () => {
    const act = b.dataset.act;
    if (act === "in") zoom(0.5); else if (act === "out") zoom(2);
    else if (act === "left") pan(-0.25); else if (act === "right") pan(0.25);
    else { selectedFault = -1; setView(full.a - pad, full.b + pad); }
  }));
  const tip = document.getElementById("tooltip");
  for (const [name, c] of Object.entries(canvases)) {
    let drag = null;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const x = e.offsetX, W = c.clientWidth - L - R;
      if (Math.abs(e.deltaX) > Math.abs(e.deltaY)) pan(e.deltaX / W);  // sideways: trackpads
      else if (x >= L) zoom(e.deltaY > 0 ? 1.25 : 0.8, tOf({ W }, x));
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, a: view.a, b: view.b, moved: false }; c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (drag) {
        const dx = e.clientX - drag.x;
        if (Math.abs(dx) > 3) drag.moved = true;
        if (drag.moved) {
          const dt = dx * (drag.b - drag.a) / (c.clientWidth - L - R);
          setView(drag.a - dt, drag.b - dt);
        }
        return;
      }
      const i = hit(name, e.offsetX, e.offsetY);
      tip.hidden = i < 0;
      if (i >= 0) {
        tip.textContent = describe(i).slice(0, 9).map(([k, v]) => k + ": " + v).join("\n");
        tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
      }
    });
    c.addEventListener("pointerleave", () => { tip.hidden = true; });
    c.addEventListener("pointerup", (e) => {
      if (drag && !drag.moved) { const i = hit(name, e.offsetX, e.offsetY); select(i); highlight = i >= 0 ? [i] : []; schedule(); }
      drag = null;
    });
    c.addEventListener("keydown", (e) => {
      const k = e.key;
      if (k === "ArrowLeft") pan(-0.2); else if (k === "ArrowRight") pan(0.2);
      else if (k === "+" || k === "=") zoom(0.5); else if (k === "-") zoom(2);
      else if (k === "0") setView(full.a - pad, full.b + pad); else return;
      e.preventDefault();
    });
  }

  const legend = document.getElementById("legend");
  D.fs.forEach((f, k) => {
    const label = document.createElement("label"), box = document.createElement("input"), sw = document.createElement("span");
    box.type = "checkbox"; box.checked = true; sw.className = "swatch"; sw.style.background = PALETTE[k % PALETTE.length];
    box.addEventListener("change", () => { if (box.checked) hidden.delete(k); else hidden.add(k); schedule(); });
    label.append(box, sw, document.createTextNode(f)); legend.append(label);
  });

  const copy = document.getElementById("copy-program");
  if (copy) copy.addEventListener("click", async () => {
    const text = document.getElementById("program").textContent, status = document.getElementById("copy-status");
    try { await navigator.clipboard.writeText(text); status.textContent = "copied"; } catch (_) {
      const range = document.createRange(); range.selectNodeContents(document.getElementById("program"));
      const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      status.textContent = document.execCommand("copy") ? "copied" : "selected: press Ctrl+C";
    }
  });

  window.addEventListener("resize", schedule);
  if (location.hash) applyHash(location.hash);
  draw();
})();
