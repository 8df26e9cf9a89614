"""What ``archbench run`` and ``archbench compare`` print at the end: the
comparison fitted to the terminal, then the bottom line, then where the
report is -- the answer where the user looks, not only in report.md."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

from archbench.records import RunRecord
from archbench.report.analysis import analyze
from archbench.report.conclusions import bottom_line
from archbench.report.table import TABLE_HEAD, comparison_rows, text_table

# Short labels of the table's cost columns for the per-model layout of narrow terminals.
_SHORT = ("params", "saved", "FLOPs/inference", "FLOPs/training sample", "peak training memory", "train time")


def plain(markdown: str) -> str:
    """Markdown emphasis and code marks removed, for a terminal."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", markdown).replace("`", "")


def fitted_table(rows: list[tuple[str, ...]], width: int) -> str:
    """The comparison table where it fits ``width`` columns; else one block
    per model (its accuracy, then its costs), wrapped to the width."""
    table = text_table(TABLE_HEAD, rows)
    if max(len(line) for line in table.splitlines()) <= width:
        return table
    blocks = []
    for row in rows:
        name, acc, *costs = row
        costs_text = " · ".join(f"{v} {label}" if label in ("params",) else f"{label} {v}"
                                for v, label in zip(costs, _SHORT) if v not in ("n/a", ""))
        blocks.append("\n".join(textwrap.wrap(f"{name}: {acc}", width, subsequent_indent="    ")
                                + textwrap.wrap(costs_text, width, initial_indent="    ",
                                                subsequent_indent="    ")))
    return "\n".join(blocks)


def terminal_summary(record: RunRecord, run_dir: Path | str, width: int | None = None,
                     analysis: dict[str, Any] | None = None) -> str:
    """The comparison, the bottom line (wrapped) and the report's path, in
    that order: the last lines are the answer and where to read more
    (report.md, results.json and tables/ lie beside report.html)."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    width = max(40, width)
    an = analysis or analyze(record)
    parts = [fitted_table(comparison_rows(record, an), width), "", "Bottom line:"]
    for sentence in bottom_line(an, record):
        parts += textwrap.wrap(plain(sentence), width, initial_indent="  ", subsequent_indent="  ")
    parts += ["", f"report: {Path(run_dir) / 'report.html'}"]
    return "\n".join(parts)
