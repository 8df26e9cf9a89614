"""A page for all runs: ``RUNS_DIR/index.html``.

One self-contained file (no external requests; works from ``file://``):
every run under RUNS_DIR with its date, dataset, models, best accuracy per
model and device, linked to its report; sortable columns; select runs to see
their models side by side (accuracy with its interval and every cost) and on
an accuracy-vs-cost scatter. The page's state lives in the URL fragment
(``#sort=created:desc&select=run1,run2&cost=params``), so a view can be
bookmarked or shared.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from archbench.errors import ArchbenchError
from archbench.records import RunRecord, atomic_write_text, load_record, lookup, ok_units
from archbench.report.analysis import model_costs
from archbench.stats import accuracy_summary


def run_summary(record: RunRecord, run_dir: Path, root: Path) -> dict[str, Any]:
    n_test = lookup(record, "dataset", "test_samples") or 0
    seeds = record["config"].get("seeds") or []
    models = []
    for name, entry in record["models"].items():
        accs = [u["test"]["accuracy"] for u in ok_units(entry) if "test" in u]
        a = accuracy_summary(accs, n_test)
        models.append({"name": name, "acc": a.get("mean") if accs else None,
                       "low": lookup(a, "ci", "low") if accs else None,
                       "high": lookup(a, "ci", "high") if accs else None, "n": len(accs),
                       "units": len(entry["units"]), **model_costs(entry)})
    expected = len(seeds) if isinstance(seeds, list) else 0
    complete = all(m["n"] >= expected for m in models) and bool(models)
    created = record.get("created")
    if not created:
        import datetime

        mtime = (run_dir / "results.json").stat().st_mtime
        created = datetime.datetime.fromtimestamp(mtime, datetime.UTC).isoformat(timespec="seconds")
    report = run_dir / "report.html"
    return {"name": record["name"], "dir": os.path.relpath(run_dir, root), "created": created,
            "dataset": lookup(record, "dataset", "name"), "device": record.get("device"),
            "seeds": seeds if isinstance(seeds, list) else [], "complete": complete,
            "report": os.path.relpath(report, root) if report.exists() else None, "models": models}


def collect_runs(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Summaries of the runs directly under ``root``, and notes on the
    directories that hold an unreadable results.json."""
    runs, skipped = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if not (d / "results.json").is_file():
            continue
        try:
            runs.append(run_summary(load_record(d), d, root))
        except (ArchbenchError, OSError, KeyError, TypeError, ValueError) as exc:
            skipped.append(f"{d.name}: {exc}")
    return runs, skipped


def _finite(v: Any) -> Any:
    """``v`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def write_index(runs_dir: str | Path) -> tuple[Path, int, int]:
    """Write ``RUNS_DIR/index.html``; returns its path, the number of runs
    listed and the number of unreadable ones (named on the page)."""
    root = Path(runs_dir)
    runs, skipped = collect_runs(root)
    data = json.dumps(_finite({"title": f"archbench runs in {root}", "runs": runs, "skipped": skipped}),
                      allow_nan=False, default=str)
    # "<" escaped as JSON allows: no "</script>" or "<!--" can end or confuse the script element.
    page = PAGE.replace("__DATA__", data.replace("<", "\\u003c"))
    path = root / "index.html"
    atomic_write_text(path, page)
    return path, len(runs), len(skipped)


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>archbench runs</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1250px;margin:1.5em auto;
padding:0 1em;color:#1d1d1f;line-height:1.4}
h1{font-size:1.5em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.4em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f3f5f7}td.l,th.l{text-align:left}
th.sortable{cursor:pointer;user-select:none}th.sortable:hover{background:#e6eaef}
.muted{color:#666;font-size:.9em}.warn{color:#9a6700}svg{border:1px solid #eee;background:#fff}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em}
</style></head><body>
<h1 id="title"></h1>
<p class="muted">Click a column title to sort; tick runs to compare their models side by side. The view is kept in
the address (its part after #), so it can be bookmarked.</p>
<table id="runs"><thead><tr>
<th class="l">Select</th>
<th class="sortable l" data-key="name">Run</th><th class="sortable l" data-key="created">Date (UTC)</th>
<th class="sortable l" data-key="dataset">Dataset</th><th class="sortable" data-key="nmodels">Models</th>
<th class="sortable" data-key="best">Mean test accuracy per model (sorts by the best)</th>
<th class="sortable l" data-key="device">Device</th>
</tr></thead><tbody></tbody></table>
<p id="skipped" class="warn"></p>
<h2>Selected runs, side by side</h2>
<p id="none" class="muted">No run selected.</p>
<table id="models"><thead><tr><th class="l">Run</th><th class="l">Model</th><th>Test accuracy (95 % CI, n seeds)</th>
<th>Trainable params</th><th>Saved size (safetensors)</th><th>FLOPs/sample (inference)</th>
<th>FLOPs/sample (training)</th><th>Peak training memory</th><th>Latency (batch 1, p50)</th><th>Train time</th>
</tr></thead><tbody></tbody></table>
<p>Accuracy vs <select id="cost"></select> (log scale; bars: 95 % interval)</p>
<svg id="scatter" width="900" height="420" role="img" aria-label="accuracy versus cost"></svg>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const COSTS = {params: ["trainable parameters", "count"], saved_bytes: ["saved size", "bytes"],
  flops_inference: ["FLOPs per inference", "flops"], flops_train: ["FLOPs per training sample", "flops"],
  peak_memory: ["peak training memory", "bytes"], latency: ["inference latency", "seconds"],
  train_time: ["train time", "seconds"]};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const state = {sort: "created", dir: "desc", select: new Set(), cost: "params"};

function fmtCount(v) { return v == null ? "n/a" : Math.round(v).toLocaleString("en-US"); }
function fmtBytes(v) {
  if (v == null) return "n/a";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(2) : String(Math.round(v))) + " " + u[i];
}
function fmtSI(v, unit) {
  if (v == null) return "n/a";
  const p = ["", "k", "M", "G", "T", "P"]; let i = 0;
  while (Math.abs(v) >= 1000 && i < p.length - 1) { v /= 1000; i++; }
  return v.toFixed(2) + " " + p[i] + unit;
}
function fmtSeconds(v) {
  if (v == null) return "n/a";
  if (v < 1e-3) return (v * 1e6).toFixed(1) + " µs";
  if (v < 1) return (v * 1e3).toFixed(2) + " ms";
  return v.toFixed(2) + " s";
}
function fmtKind(v, kind) {
  return kind === "bytes" ? fmtBytes(v) : kind === "flops" ? fmtSI(v, "FLOPs") : kind === "seconds"
    ? fmtSeconds(v) : fmtCount(v);
}
function pct(v) { return v == null ? "n/a" : (100 * v).toFixed(2) + " %"; }
function best(run) {
  const accs = run.models.map(m => m.acc).filter(a => a != null);
  return accs.length ? Math.max(...accs) : -1;
}
function sortValue(run, key) {
  if (key === "nmodels") return run.models.length;
  if (key === "best") return best(run);
  return (run[key] == null ? "" : String(run[key])).toLowerCase();
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}
function readHash() {
  const h = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (h.get("sort")) {
    const [k, d] = h.get("sort").split(":");
    state.sort = k; state.dir = d === "asc" ? "asc" : "desc";
  }
  if (h.get("select")) state.select = new Set(h.get("select").split(",").filter(Boolean));
  if (h.get("cost") && COSTS[h.get("cost")]) state.cost = h.get("cost");
}
function writeHash() {
  const h = new URLSearchParams({sort: state.sort + ":" + state.dir, select: [...state.select].join(","),
    cost: state.cost});
  history.replaceState(null, "", "#" + h.toString());
}
function sortedRuns() {
  const runs = DATA.runs.slice();
  runs.sort((a, b) => {
    const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
    const c = x < y ? -1 : x > y ? 1 : 0;
    return state.dir === "asc" ? c : -c;
  });
  return runs;
}
function renderRuns() {
  const body = document.querySelector("#runs tbody");
  body.replaceChildren();
  for (const run of sortedRuns()) {
    const tr = el("tr", {"data-run": run.name});
    const box = el("input", {type: "checkbox", "aria-label": "select " + run.name});
    box.checked = state.select.has(run.name);
    box.addEventListener("change", () => { toggle(run.name, box.checked); });
    const c0 = el("td", {class: "l"}); c0.append(box); tr.append(c0);
    const c1 = el("td", {class: "l"});
    if (run.report) { const a = el("a", {href: run.report}, run.name); c1.append(a); } else c1.textContent = run.name;
    if (!run.complete) c1.append(el("span", {class: "warn"}, " (incomplete)"));
    tr.append(c1, el("td", {class: "l"}, run.created.replace("T", " ").replace("+00:00", "")),
      el("td", {class: "l"}, run.dataset || "?"), el("td", {}, String(run.models.length)),
      el("td", {}, run.models.map(m => m.name + " " + pct(m.acc)).join(", ")),
      el("td", {class: "l"}, run.device || "?"));
    body.append(tr);
  }
  for (const th of document.querySelectorAll("#runs th.sortable")) {
    th.textContent = th.textContent.replace(/ [▲▼]$/, "");
    if (th.dataset.key === state.sort) th.textContent += state.dir === "asc" ? " ▲" : " ▼";
  }
}
function selectedModels() {
  const out = [];
  DATA.runs.forEach((run, i) => {
    if (!state.select.has(run.name)) return;
    for (const m of run.models) out.push({run: run.name, color: COLORS[i % COLORS.length], ...m});
  });
  return out;
}
function renderModels() {
  const rows = selectedModels();
  document.getElementById("none").style.display = rows.length ? "none" : "";
  const body = document.querySelector("#models tbody");
  body.replaceChildren();
  for (const m of rows) {
    const tr = el("tr", {"data-run": m.run, "data-model": m.name});
    const c0 = el("td", {class: "l"}); const sw = el("span", {class: "swatch"}); sw.style.background = m.color;
    c0.append(sw, document.createTextNode(m.run));
    const acc = m.acc == null ? "no finished unit"
      : pct(m.acc) + " (" + pct(m.low) + "–" + pct(m.high) + ", n=" + m.n + ")";
    tr.append(c0, el("td", {class: "l"}, m.name), el("td", {}, acc), el("td", {}, fmtCount(m.params)),
      el("td", {}, fmtBytes(m.saved_bytes)), el("td", {}, fmtSI(m.flops_inference, "FLOPs")),
      el("td", {}, fmtSI(m.flops_train, "FLOPs")), el("td", {}, fmtBytes(m.peak_memory)),
      el("td", {}, fmtSeconds(m.latency)), el("td", {}, fmtSeconds(m.train_time)));
    body.append(tr);
  }
}
function renderScatter() {
  const svg = document.getElementById("scatter");
  const NS = "http://www.w3.org/2000/svg";
  const W = 900, H = 420, L = 70, R = 20, T = 20, B = 50;
  svg.replaceChildren();
  const [label, kind] = COSTS[state.cost];
  const pts = selectedModels().filter(m => m.acc != null && m.low != null && m[state.cost] > 0);
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e); return e;
  };
  if (!pts.length) { mk("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#666"},
    "select runs with measured " + label); return; }
  const xs = pts.map(p => Math.log10(p[state.cost]));
  let x0 = Math.min(...xs), x1 = Math.max(...xs); if (x1 - x0 < 0.5) { x0 -= 0.25; x1 += 0.25; }
  const pad = (x1 - x0) * 0.08; x0 -= pad; x1 += pad;
  let y0 = Math.min(...pts.map(p => p.low)), y1 = Math.max(...pts.map(p => p.high));
  const yp = Math.max((y1 - y0) * 0.1, 0.002); y0 -= yp; y1 += yp;
  const X = v => L + (Math.log10(v) - x0) / (x1 - x0) * (W - L - R);
  const Y = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
  mk("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#333"});
  mk("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#333"});
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) {
    mk("line", {x1: X(10 ** e), y1: H - B, x2: X(10 ** e), y2: H - B + 5, stroke: "#333"});
    mk("text", {x: X(10 ** e), y: H - B + 18, "text-anchor": "middle", "font-size": 11}, fmtKind(10 ** e, kind));
  }
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4;
    mk("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end", "font-size": 11}, (100 * v).toFixed(1) + " %");
  }
  mk("text", {x: (L + W - R) / 2, y: H - 10, "text-anchor": "middle", "font-size": 12}, label + " (log scale)");
  mk("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12,
    transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, "test accuracy");
  for (const p of pts) {
    const x = X(p[state.cost]);
    mk("line", {x1: x, y1: Y(p.low), x2: x, y2: Y(p.high), stroke: p.color});
    const c = mk("circle", {cx: x, cy: Y(p.acc), r: 5, fill: p.color, "data-model": p.run + "/" + p.name});
    const t = document.createElementNS(NS, "title"); t.textContent = p.run + " / " + p.name + ": " + pct(p.acc) +
      ", " + fmtKind(p[state.cost], kind); c.append(t);
    mk("text", {x: x + 7, y: Y(p.acc) - 6, "font-size": 11}, p.name);
  }
}
function render() { renderRuns(); renderModels(); renderScatter(); writeHash(); }
function toggle(name, on) { if (on) state.select.add(name); else state.select.delete(name); render(); }
function sortBy(key) {
  if (state.sort === key) state.dir = state.dir === "asc" ? "desc" : "asc";
  else { state.sort = key; state.dir = key === "created" || key === "best" ? "desc" : "asc"; }
  render();
}
document.getElementById("title").textContent = document.title = DATA.title;
for (const th of document.querySelectorAll("#runs th.sortable")) {
  th.addEventListener("click", () => sortBy(th.dataset.key));
}
const costSel = document.getElementById("cost");
for (const [k, [label]] of Object.entries(COSTS)) costSel.append(el("option", {value: k}, label));
costSel.addEventListener("change", () => { state.cost = costSel.value; render(); });
readHash();
costSel.value = state.cost;
if (DATA.skipped.length) document.getElementById("skipped").textContent =
  "Not listed (unreadable results.json): " + DATA.skipped.join("; ");
window.addEventListener("hashchange", () => { readHash(); costSel.value = state.cost; render(); });
render();
</script>
</body></html>
"""
