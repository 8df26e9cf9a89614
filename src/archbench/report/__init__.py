"""Reports built from run records alone (so they can be rebuilt later)."""

from __future__ import annotations

from pathlib import Path

from archbench.records import RunRecord
from archbench.report.analysis import analyze
from archbench.report.document import render_html, render_markdown
from archbench.report.markdown import TABLE_HEAD, build_blocks, comparison_rows, text_table

__all__ = ["TABLE_HEAD", "analyze", "build_blocks", "comparison_rows", "render_report_markdown",
           "text_table", "write_reports"]


def render_report_markdown(record: RunRecord, plots=None) -> str:
    return render_markdown(build_blocks(record, analyze(record), plots))


def write_reports(record: RunRecord, run_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """report.md, report.html and plots/*.png in ``run_dir``, from ``record`` alone."""
    from archbench.records import atomic_write_text

    run_dir = Path(run_dir)
    an = analyze(record)
    figs = []
    if plots:
        from archbench.report.plots import make_plots

        figs = make_plots(record, an, run_dir)
    blocks = build_blocks(record, an, figs)
    atomic_write_text(run_dir / "report.md", render_markdown(blocks))
    atomic_write_text(run_dir / "report.html", render_html(blocks, f"archbench run {record.get('name', '')}", run_dir))
    return {"markdown": run_dir / "report.md", "html": run_dir / "report.html"}
