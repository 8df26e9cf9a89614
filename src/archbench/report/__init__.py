"""Reports built from run records alone (so they can be rebuilt later)."""

from __future__ import annotations

from pathlib import Path

from archbench.records import RunRecord
from archbench.report.analysis import analyze
from archbench.report.datacheck import missing_class_warnings
from archbench.report.document import render_html, render_markdown
from archbench.report.sections import build_blocks
from archbench.report.table import TABLE_HEAD, comparison_rows, text_table

__all__ = ["TABLE_HEAD", "analyze", "build_blocks", "comparison_rows", "missing_class_warnings",
           "render_report_markdown", "text_table", "write_reports"]


def render_report_markdown(record: RunRecord, plots: list[tuple[str, str]] | None = None) -> str:
    return render_markdown(build_blocks(record, analyze(record), plots))


FORMATS = ("md", "html", "csv", "tex")


def write_reports(record: RunRecord, run_dir: str | Path, plots: bool = True,
                  formats: tuple[str, ...] | list[str] = FORMATS) -> dict[str, Path]:
    """From ``record`` alone, in ``run_dir``: report.md and report.html with
    plots/ (formats md, html), tables/*.csv and tables/*.tex (csv, tex).
    Returns the paths written: "markdown", "html", and "tables" (the folder)."""
    from archbench.records import atomic_write_text

    unknown = set(formats) - set(FORMATS)
    if unknown:
        from archbench.errors import UsageError

        raise UsageError(f"unknown report format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}.")
    run_dir = Path(run_dir)
    an = analyze(record)
    written: dict[str, Path] = {}
    if "md" in formats or "html" in formats:
        figs = []
        if plots:
            from archbench.report.plots import make_plots

            figs = make_plots(record, an, run_dir)
        blocks = build_blocks(record, an, figs)
        if "md" in formats:
            atomic_write_text(run_dir / "report.md", render_markdown(blocks))
            written["markdown"] = run_dir / "report.md"
        if "html" in formats:
            atomic_write_text(run_dir / "report.html",
                              render_html(blocks, f"archbench run {record.get('name', '')}", run_dir))
            written["html"] = run_dir / "report.html"
    if "csv" in formats or "tex" in formats:
        from archbench.report.exports import write_tables

        write_tables(record, an, run_dir, [f for f in formats if f in ("csv", "tex")])
        written["tables"] = run_dir / "tables"
    return written
