"""Issue #27: hostile names through every renderer, and inputs that used to
crash, hang or be accepted where they should be refused.

Names (models, classes) reach matplotlib text, Markdown, HTML, CSV and LaTeX:
each must show them literally and never let them act as markup."""

import csv
import html
import html.parser
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archbench.report import write_reports
from archbench.report.analysis import analyze
from archbench.report.document import render_html, render_markdown
from archbench.report.exports import tables, tex_escape, to_csv, to_latex
from archbench.report.rerun import code_span
from archbench.report.sections import build_blocks
from tests.fixed_records import fixed_record

META = "$\\{}%#&~^_<>`|*[]!\"'/ \t\u00e9\u2013\u00b5\U0001f600"
# Names: runs of metacharacters (TeX, mathtext, HTML, Markdown, CSV), letters, and whole hostile words.
NAME = st.one_of(
    st.text(alphabet=st.sampled_from(META + "ab"), min_size=1, max_size=12),
    st.sampled_from(["$x$", "$\\frac{1}{2}$", "<script>alert(1)</script>", "a,b\nc", '"q"', "**b**", "`c`",
                     "x``y", "\\", "$", "50%", "&amp;", "<b>", "[l](http://x)", "#h", "a|b", "${}$^_"]),
    st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s),
).filter(lambda s: s.strip() and "@" not in s and "\r" not in s)


def renamed(models: list[str], classes: list[str]) -> dict:
    """fixed_record with its three models and four classes renamed."""
    rec = fixed_record()
    old = list(rec["models"])
    mapping = dict(zip(old, models, strict=True))
    rec["models"] = {mapping[k]: v for k, v in rec["models"].items()}
    cfg = rec["config"]
    cfg["models"] = list(models)
    cfg["train"] = {mapping[k]: v for k, v in cfg["train"].items()}
    cfg["sources"]["train"] = {mapping[k]: v for k, v in cfg["sources"]["train"].items()}
    rec["dataset"]["classes"] = list(classes)
    return rec


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "ul", "li",
                "table", "thead", "tbody", "tr", "th", "td", "code", "strong", "em", "figure", "img",
                "figcaption", "pre", "a", "br", "hr"}


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


def parsed(doc: str) -> Tags:
    p = Tags()
    p.feed(doc)
    return p


def unique(n):
    return st.lists(NAME, min_size=n, max_size=n, unique_by=lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models=unique(3), classes=unique(4))
def test_names_are_literal_in_markdown_html_csv_and_latex(models, classes):
    from markdown_it import MarkdownIt

    rec = renamed(models, classes)
    an = analyze(rec)
    blocks = build_blocks(rec, an, [])
    md = render_markdown(blocks)
    page = render_html(blocks, "t", ".")
    # HTML: no tag a name could have made; every name without the report's own markup is in the text.
    got = parsed(page)
    assert got.tags <= ALLOWED_TAGS, got.tags - ALLOWED_TAGS
    text = "".join(got.text)
    for name in models:
        if "`" not in name and "**" not in name:
            assert " ".join(name.split()) in " ".join(text.split()), name
    # Markdown (CommonMark, raw HTML allowed: none may come from a name).
    rendered = parsed(MarkdownIt("commonmark", {"html": True}).render(md))
    assert rendered.tags <= ALLOWED_TAGS, rendered.tags - ALLOWED_TAGS
    # CSV: the names read back exactly.
    for name, table in tables(rec, an).items():
        rows = list(csv.reader(io.StringIO(to_csv(table))))
        assert len(rows) == len(table[1]) + 1 and all(len(r) == len(table[0]) for r in rows), name
    per_seed = list(csv.DictReader(io.StringIO(to_csv(tables(rec, an)["per_seed"]))))
    assert {r[next(iter(r))] for r in per_seed} == set(models)
    # LaTeX: every name escaped; a row splits into its columns at the unescaped &s only.
    tex = to_latex(tables(rec, an)["per_seed"], "c")
    for name in models:
        assert tex_escape(name) in tex
    body = [line for line in tex.splitlines() if line.endswith("\\\\")]
    cols = len(tables(rec, an)["per_seed"][0])
    for line in body:
        unescaped = [i for i, c in enumerate(line) if c == "&" and (i == 0 or line[i - 1] != "\\")]
        assert len(unescaped) == cols - 1, line


@pytest.mark.parametrize("name", ["a`b", "``", "`x", "x`", "plain"])
def test_a_code_span_survives_backticks_in_a_name(name):
    from markdown_it import MarkdownIt

    span = code_span(f"archbench run --models {name}")
    out = MarkdownIt("commonmark").render(span)
    assert f"<code>archbench run --models {html.escape(name, quote=False)}</code>" in out, (span, out)
    assert f"<code>archbench run --models {html.escape(name, quote=False)}</code>" in render_html(
        [__import__("archbench.report.document", fromlist=["Para"]).Para(span)], "t", ".")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(models=unique(3), classes=unique(4))
def test_names_are_literal_in_the_plots(models, classes, tmp_path_factory):
    """matplotlib draws names as given: a "$" or "\\frac" is text, not mathtext (it used to crash the report)."""
    run_dir = tmp_path_factory.mktemp("plots")
    rec = renamed(models, classes)
    written = write_reports(rec, run_dir, plots=True, formats=("md",))
    assert written["markdown"].is_file()
    svgs = sorted((run_dir / "plots").glob("confusion_*.svg"))
    assert len(svgs) == 3
    for i, name in enumerate(models):
        svg = next(p for p in svgs if p.name.startswith(f"confusion_{i}_")).read_text(encoding="utf-8")
        shown = " ".join("".join(parsed(svg).text).split())
        assert " ".join(f"{name}: confusion matrix".split()) in shown or not name.isprintable(), name
    per_class = (run_dir / "plots" / "per_class_accuracy.svg").read_text(encoding="utf-8")
    shown = " ".join("".join(parsed(per_class).text).split())
    for c in classes:
        if c.isprintable():
            assert " ".join(c.split()) in shown, c
    assert Path(run_dir / "report.md").read_text(encoding="utf-8")
