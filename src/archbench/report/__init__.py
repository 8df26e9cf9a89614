"""Reports built from run records alone (so they can be rebuilt later)."""

from archbench.report.markdown import TABLE_HEAD, comparison_rows, render_markdown, text_table
from archbench.report.summary import summarize

__all__ = ["TABLE_HEAD", "comparison_rows", "render_markdown", "summarize", "text_table"]
