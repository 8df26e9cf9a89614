"""The comparison table: one row per model, its test accuracy with an
interval and every cost. report.md shows it, ``archbench run`` prints it
(laid out by :func:`text_table`) and the API returns its rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archbench.records import ModelRecord, RunRecord, flops_partial, lookup
from archbench.report.analysis import analyze
from archbench.report.units import fmt_bytes, fmt_count, fmt_seconds, fmt_si

TABLE_HEAD = ("Model", "Test accuracy", "Trainable params", "Saved size (safetensors)",
              "FLOPs/sample (inference)", "FLOPs/sample (training)", "Peak training memory", "Train time")


def _acc_cell(a: dict, failed: int) -> str:
    if not a.get("n"):
        return "failed" if failed else "no finished unit"
    ci = a["ci"]
    if a["n"] == 1:
        return f"{100 * a['mean']:.2f} % (95 % CI {100 * ci['low']:.2f}–{100 * ci['high']:.2f}, 1 run)"
    return (f"{100 * a['mean']:.2f} % ± {100 * a['std']:.2f} (95 % CI {100 * ci['low']:.2f}–"
            f"{100 * ci['high']:.2f}, n={a['n']})")


def _flops_cell(value: Any, partial: bool, views: int = 1) -> str:
    """A FLOPs figure, marked partial where ops went uncounted and with its
    test-time views where evaluation averages several (one view otherwise)."""
    if value is None:
        return fmt_si(value, "FLOPs")
    return fmt_si(value, "FLOPs") + (f" ({views} views)" if views > 1 else "") + (" (partial)" if partial else "")


def inference_views(entry: ModelRecord | dict) -> int:
    """How many test-time views a model's inference FLOPs include (1 for a record made before they were recorded)."""
    return int(lookup(entry, "measurements", "flops", "inference_views") or 1)


def comparison_rows(record: RunRecord, analysis: dict[str, Any] | None = None) -> list[tuple[str, ...]]:
    analysis = analysis or analyze(record)
    rows: list[tuple[str, ...]] = []
    for name, s in analysis["models"].items():
        c = s["costs"]
        partial = flops_partial(record["models"].get(name) or {})
        rows.append((name, _acc_cell(s["accuracy"], len(s["failed"])), fmt_count(c["params"]),
                     fmt_bytes(c["saved_bytes"]),
                     _flops_cell(c["flops_inference"], partial["forward"],
                                 inference_views(record["models"].get(name) or {})),
                     _flops_cell(c["flops_train"], partial["train_step"]), fmt_bytes(c["peak_memory"]),
                     fmt_seconds(c["train_time"])))
    return rows


def text_table(head: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table for terminals."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def wrapped_table(head: Sequence[object], rows: Sequence[Sequence[object]], width: int,
                  wrap: Sequence[int]) -> str:
    """:func:`text_table` fitted to ``width`` columns of text: the columns
    ``wrap`` (indices) are wrapped onto more lines when the table is wider
    than that (never narrower than 12 characters each); the others keep their width."""
    import textwrap

    natural = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    widths = list(natural)
    fixed = sum(w for i, w in enumerate(natural) if i not in wrap) + 2 * (len(natural) - 1)
    wanted = sum(natural[i] for i in wrap)
    if fixed + wanted > width and wanted:
        room = max(width - fixed, 12 * len(wrap))
        for i in wrap:
            widths[i] = max(12, min(natural[i], room * natural[i] // wanted))
        while sum(widths[i] for i in wrap) > room and max(widths[i] for i in wrap) > 12:
            widest = max(wrap, key=lambda i: widths[i])
            widths[widest] -= 1
    lines = []
    for r in [head, ["-" * w for w in widths], *rows]:
        cells = [(textwrap.wrap(str(x), widths[i]) or [""]) if i in wrap else [str(x)] for i, x in enumerate(r)]
        for k in range(max(len(c) for c in cells)):
            lines.append("  ".join((c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)
