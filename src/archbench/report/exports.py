"""Tables people can take with them: CSV (base units, the unit in each column
name; every table) and LaTeX for a paper (booktabs; the comparison and the
main costs, human units), written to ``RUN_DIR/tables/`` from the run record
alone.

Column-name suffixes say the unit: ``_frac`` a fraction (0.8812 = 88.12 %),
``_bytes``, ``_flops``, ``_macs``, ``_s`` seconds, ``_per_s`` per second,
``_count``. Empty cells are values that were not measured.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archbench.records import RunRecord, atomic_write_text, lookup, ok_units

Table = tuple[list[str], list[list[Any]]]  # (columns, rows)


def comparison_table(record: RunRecord, analysis: dict[str, Any]) -> Table:
    cols = ["model", "test_accuracy_mean_frac", "test_accuracy_std_frac", "test_accuracy_ci_low_frac",
            "test_accuracy_ci_high_frac", "seeds_count", "failed_units_count", "params_trainable_count",
            "saved_safetensors_bytes", "flops_inference_per_sample_flops", "flops_train_per_sample_flops",
            "peak_train_memory_bytes", "latency_batch1_p50_s", "train_time_mean_s"]
    rows = []
    for name, s in analysis["models"].items():
        a, c = s["accuracy"], s["costs"]
        rows.append([name, a.get("mean"), a.get("std") if a.get("n") else None, lookup(a, "ci", "low"),
                     lookup(a, "ci", "high"), a.get("n", 0), len(s["failed"]), c["params"], c["saved_bytes"],
                     c["flops_inference"], c["flops_train"], c["peak_memory"], c["latency"], c["train_time"]])
    return cols, rows


def per_seed_table(record: RunRecord) -> Table:
    cols = ["model", "seed", "status", "test_accuracy_frac", "test_loss", "epochs_count", "train_time_s",
            "wall_time_s", "train_samples_per_s", "error"]
    rows = []
    for name, entry in record["models"].items():
        for u in entry["units"]:
            ok = u["status"] == "ok"
            rows.append([name, u["seed"], u["status"], lookup(u, "test", "accuracy") if ok else None,
                         lookup(u, "test", "loss") if ok else None, len(u.get("history") or []) if ok else None,
                         lookup(u, "timings", "train_seconds"), lookup(u, "timings", "wall_seconds"),
                         lookup(u, "timings", "samples_per_second"), u.get("error")])
    return cols, rows


def per_class_table(record: RunRecord) -> Table:
    """Precision, recall and F1 per class, each the mean over the model's
    finished seeds (computed per seed from its predictions on the test set).
    Undefined values are empty, not 0: recall (and F1) of a class with no
    test image, precision (and F1) of a class a seed never predicted."""
    cols = ["model", "class_index", "class", "precision_frac", "recall_frac", "f1_frac", "support_count",
            "seeds_count"]
    labels = lookup(record, "dataset", "test_labels")
    rows: list[list[Any]] = []
    if not labels:
        return cols, rows
    classes = lookup(record, "dataset", "classes") or [str(i) for i in range(max(labels) + 1)]
    k = len(classes)
    support = [0] * k
    for y in labels:
        support[y] += 1
    for name, entry in record["models"].items():
        per_seed = []
        for u in ok_units(entry):
            preds = lookup(u, "test", "predictions") or []
            if len(preds) != len(labels):
                continue
            tp, fp = [0] * k, [0] * k
            for y, p in zip(labels, preds):
                if y == p:
                    tp[y] += 1
                elif 0 <= p < k:
                    fp[p] += 1
            stats: list[tuple[float | None, float | None, float | None]] = []
            for c in range(k):
                # 0/0 is undefined, not 0: no test image of the class (recall), or never predicted (precision)
                prec = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else None
                rec = tp[c] / support[c] if support[c] else None
                f1 = None if prec is None or rec is None else 2 * prec * rec / (prec + rec) if prec + rec else 0.0
                stats.append((prec, rec, f1))
            per_seed.append(stats)
        if not per_seed:
            continue
        for c in range(k):
            means = []
            for i in range(3):
                vals = [v for s in per_seed if (v := s[c][i]) is not None]
                means.append(statistics.fmean(vals) if vals else None)
            rows.append([name, c, classes[c], *means, support[c], len(per_seed)])
    return cols, rows


def costs_table(record: RunRecord) -> Table:
    fields = [
        ("params_trainable_count", ("params", "trainable")),
        ("params_non_trainable_count", ("params", "non_trainable")),
        ("raw_weight_bytes", ("params", "raw_weight_bytes")),
        ("saved_safetensors_bytes", ("saved_size_bytes", "safetensors")),
        ("saved_state_dict_bytes", ("saved_size_bytes", "state_dict")),
        ("saved_onnx_bytes", ("saved_size_bytes", "onnx")),
        ("forward_per_sample_macs", ("flops", "forward_macs_per_sample")),
        ("forward_per_sample_flops", ("flops", "forward_per_sample")),
        ("forward_other_per_sample_flops", ("flops", "forward_other_per_sample")),
        ("train_step_batch_size_count", ("flops", "train_step_batch_size")),
        ("train_step_flops", ("flops", "train_step")),
        ("train_step_other_flops", ("flops", "train_step_other")),
        ("train_per_sample_flops", ("flops", "train_per_sample")),
        ("per_run_flops", ("flops", "per_run", "total")),
        ("peak_train_memory_bytes", ("memory", "train_step", "peak_bytes")),
        ("first_step_peak_memory_bytes", ("memory", "first_step", "peak_bytes")),
        ("inference_batch1_peak_memory_bytes", ("memory", "inference_batch1", "peak_bytes")),
        ("latency_batch1_p50_s", ("speed", "inference_latency_batch1", "p50_seconds")),
        ("latency_batch1_p99_s", ("speed", "inference_latency_batch1", "p99_seconds")),
        ("throughput_batch1024_per_s", ("speed", "inference_throughput_batch1024", "items_per_second")),
        ("train_step_p50_s", ("speed", "train_step", "p50_seconds")),
    ]
    cols = ["model"] + [f for f, _ in fields]
    rows = [[name] + [lookup(entry.get("measurements"), *path) for _, path in fields]
            for name, entry in record["models"].items()]
    return cols, rows


def tables(record: RunRecord, analysis: dict[str, Any]) -> dict[str, Table]:
    return {"comparison": comparison_table(record, analysis), "per_seed": per_seed_table(record),
            "per_class": per_class_table(record), "costs": costs_table(record)}


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back to the same float
    return v


def to_csv(table: Table) -> str:
    cols, rows = table
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows([[_csv_cell(v) for v in r] for r in rows])
    return buf.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """``text`` as LaTeX text: its special characters escaped, line breaks as
    spaces (a blank line inside a table cell would end the paragraph)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in " ".join(text.splitlines()))


# ----------------------------------------------------------------------------- paper-ready LaTeX
#
# The .tex tables are for a paper: few columns, human headers, one unit per
# column (chosen from the column's values and named in its header), accuracy
# in percent with its interval, booktabs rules, nothing but LaTeX's kernel and
# booktabs. The wide tables stay as CSV.

_SI = (("G", 1e9), ("M", 1e6), ("k", 1e3))
_BINARY = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _tex_num(x: float) -> str:
    """Three significant digits or the whole number, thousands as {,}."""
    if x == 0:
        return "0"
    digits = min(4, max(0, 2 - math.floor(math.log10(abs(x)))))
    return f"{x:,.{digits}f}".replace(",", "{,}")


def _scale(values: list[float | None], kind: str) -> tuple[float, str]:
    """(divisor, unit) for a column: the largest unit its largest value reaches."""
    top = max((abs(v) for v in values if v is not None), default=0.0)
    if kind == "count":
        return next(((size, p) for p, size in _SI if top >= size), (1.0, ""))
    if kind == "bytes":
        return next(((size, u) for u, size in _BINARY if top >= size), (1.0, "B"))
    if kind == "seconds":
        return (1.0, "s") if top >= 1 else (1e-3, "ms") if top >= 1e-3 else (1e-6, "$\\mu$s")
    return 1.0, ""


def _column(values: list[float | None], kind: str) -> tuple[str, list[str]]:
    """A column's unit (for the header's second line) and its cells ('--' where not measured)."""
    div, unit = _scale(values, kind)
    cells = ["--" if v is None or (isinstance(v, float) and not math.isfinite(v)) else _tex_num(v / div)
             for v in values]
    return unit, cells


def _accuracy_cells(a: dict[str, Any]) -> tuple[str, str]:
    """(mean, 95 % interval), in percent (the spread over seeds is in the CSV)."""
    mean = a.get("mean")
    if mean is None:
        return "--", "--"
    acc = f"{100 * mean:.2f}"
    ci = a.get("ci") or {}
    interval = f"{100 * ci['low']:.1f}--{100 * ci['high']:.1f}" if ci.get("low") is not None else "--"
    return acc, interval


def _tabular(heads: list[tuple[str, str]], columns: list[list[str]], caption: str) -> str:
    """A booktabs tabular: a header of two lines (what, then its unit), the first column left-aligned."""
    spec = "@{}l" + "r" * (len(heads) - 1) + "@{}"
    lines = ["% " + caption, "% generated by archbench from results.json; needs \\usepackage{booktabs}",
             "{\\small\\setlength{\\tabcolsep}{3.5pt}%  fits a page's text width",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(h for h, _ in heads) + r" \\",
             " & ".join(u for _, u in heads) + r" \\", "\\midrule"]
    lines += [" & ".join(row) + r" \\" for row in zip(*columns)]
    lines += ["\\bottomrule", "\\end{tabular}}"]
    return "\n".join(lines) + "\n"


def _with_units(kind: str, unit: str, note: str = "") -> str:
    if kind == "count" and not unit and not note:
        return ""
    return "(" + ", ".join(x for x in (unit, note) if x) + ")"


def comparison_latex(analysis: dict[str, Any]) -> str:
    """Model, accuracy (% mean ± std over seeds), its 95 % interval, seeds,
    parameters, FLOPs per inference, peak training memory, training time."""
    models = analysis["models"]
    acc = [_accuracy_cells(s["accuracy"]) for s in models.values()]
    heads = [("Model", ""), ("Accuracy", "(\\%)"), ("95\\,\\% CI", "(\\%)"), ("Seeds", "")]
    columns = [[tex_escape(n) for n in models], [a for a, _ in acc], [c for _, c in acc],
               [str(s["accuracy"].get("n", 0)) for s in models.values()]]
    for header, key, kind in (("Params", "params", "count"), ("FLOPs/inf.", "flops_inference", "count"),
                              ("Peak mem.", "peak_memory", "bytes"), ("Train time", "train_time", "seconds")):
        unit, cells = _column([s["costs"][key] for s in models.values()], kind)
        heads.append((header, _with_units(kind, unit)))
        columns.append(cells)
    return _tabular(heads, columns, CAPTIONS["comparison"])


def costs_latex(record: RunRecord) -> str:
    """The main measured costs: parameters, saved size, FLOPs per inference
    and per training sample, peak training memory, batch-1 latency, throughput."""
    entries = record["models"]
    heads, columns = [("Model", "")], [[tex_escape(n) for n in entries]]
    for header, path, kind, note in (
            ("Params", ("params", "trainable"), "count", ""),
            ("Saved", ("saved_size_bytes", "safetensors"), "bytes", ""),
            ("FLOPs/inf.", ("flops", "forward_per_sample"), "count", ""),
            ("FLOPs/train", ("flops", "train_per_sample"), "count", ""),
            ("Peak mem.", ("memory", "train_step", "peak_bytes"), "bytes", ""),
            ("Latency", ("speed", "inference_latency_batch1", "p50_seconds"), "seconds", ""),
            ("Images/s", ("speed", "inference_throughput_batch1024", "items_per_second"), "count", "")):
        unit, cells = _column([lookup(e.get("measurements"), *path) for e in entries.values()], kind)
        if header == "FLOPs/train":
            unit += "/img"
        heads.append((header, _with_units(kind, unit, note)))
        columns.append(cells)
    return _tabular(heads, columns, CAPTIONS["costs"])


CAPTIONS = {"comparison": "Test accuracy (mean over seeds, 95 % interval) and the main costs, per model",
            "costs": "Measured costs per model (saved: safetensors; latency: median at batch 1; throughput at "
            "batch 1024; FLOPs: matmul/conv, 1 MAC = 2 FLOPs)"}


def write_tables(record: RunRecord, analysis: dict[str, Any], run_dir: str | Path,
                 formats: Sequence[str] = ("csv", "tex")) -> list[Path]:
    """``RUN_DIR/tables/<name>.csv`` and ``.tex``; returns the paths written."""
    out = Path(run_dir) / "tables"
    written = []
    if "csv" in formats:
        for name, table in tables(record, analysis).items():
            atomic_write_text(out / f"{name}.csv", to_csv(table))
            written.append(out / f"{name}.csv")
    if "tex" in formats:  # the paper tables; the wide ones stay as CSV
        for name, text in (("comparison", comparison_latex(analysis)), ("costs", costs_latex(record))):
            atomic_write_text(out / f"{name}.tex", text)
            written.append(out / f"{name}.tex")
        for stale in ("per_seed.tex", "per_class.tex"):  # written by earlier versions: no longer this run's
            (out / stale).unlink(missing_ok=True)
    return written
