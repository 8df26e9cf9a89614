"""A tiny document model, rendered to Markdown and to one self-contained HTML
page, so both reports say exactly the same thing.

Texts come from run records: model names and error messages are anybody's
strings. Both renderers escape them: the HTML one with html.escape, the
Markdown one by turning ``<``, ``>`` and ``&`` outside code spans into
entities (Markdown viewers pass raw HTML through), with code spans found as
CommonMark finds them, table cells kept on one line and fences longer than
any backtick run of the text they hold."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    head: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass
class Image:
    path: str  # relative to the run directory
    alt: str


@dataclass
class Pre:
    text: str


_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def md_text(text: str) -> str:
    """``text`` for Markdown with no raw HTML: ``<``, ``>`` and ``&`` outside
    code spans become entities. Code spans (a run of n backticks closed by the
    next run of exactly n, as in CommonMark) are left as they are: their
    content is shown literally. A backslash-escaped character stays escaped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in _PUNCT:
            nxt = text[i + 1]
            out.append(_ENTITIES[nxt] if nxt in _ENTITIES else "\\" + nxt)  # \< is a literal <: so is &lt;
            i += 2
        elif c == "`":
            j = i
            while j < n and text[j] == "`":
                j += 1
            run = j - i
            k = j
            close = -1
            while k < n:  # the next run of exactly `run` backticks closes the span
                if text[k] == "`":
                    m = k
                    while m < n and text[m] == "`":
                        m += 1
                    if m - k == run:
                        close = k
                        break
                    k = m
                else:
                    k += 1
            if close < 0:  # no closing run: the backticks are literal
                out.append(text[i:j])
                i = j
            else:
                out.append(text[i:close + run])
                i = close + run
        else:
            out.append(_ENTITIES.get(c, c))
            i += 1
    return "".join(out)


def _md_line(text: str) -> str:
    """One line of Markdown text (headings, table cells)."""
    return md_text(" ".join(str(text).split("\n")))


def _fence(text: str) -> str:
    longest, run = 0, 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_markdown(blocks: Iterable[Heading | Para | Bullets | Table | Image | Pre]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + _md_line(b.text), ""]
        elif isinstance(b, Para):
            out += [md_text(b.text), ""]
        elif isinstance(b, Bullets):
            out += ["- " + md_text(i).replace("\n", "\n  ") for i in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_line(h).replace("|", "/") for h in b.head) + " |")
            out.append("|" + "|".join("---" for _ in b.head) + "|")
            out += ["| " + " | ".join(_md_line(c).replace("|", "/") for c in r) + " |" for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            alt = _md_line(b.alt).replace("[", "\\[").replace("]", "\\]")
            out += [f"![{alt}]({b.path.replace(' ', '%20').replace(')', '%29').replace('(', '%28')})", ""]
        elif isinstance(b, Pre):
            fence = _fence(b.text)
            out += [fence, b.text, fence, ""]
    return "\n".join(out).rstrip() + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
# A code span: a run of n backticks, then the shortest text up to the next run of exactly n (as in CommonMark
# and md_text); one space each side is padding where the content starts or ends with a backtick.
_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _code(m: re.Match[str]) -> str:
    body = m.group(2)
    if len(body) > 2 and body.startswith(" ") and body.endswith(" ") and body.strip():
        body = body[1:-1]
    return f"<code>{body}</code>"


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    parts = []  # code spans first: a ** inside one is not bold
    last = 0
    for m in _CODE.finditer(t):
        parts.append(_BOLD.sub(r"<strong>\1</strong>", t[last:m.start()]))
        parts.append(_code(m))
        last = m.end()
    parts.append(_BOLD.sub(r"<strong>\1</strong>", t[last:]))
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.6em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:right}th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f3f5f7;padding:0 3px;border-radius:3px}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}figcaption{color:#555;font-size:.9em}
"""


def render_html(blocks: Iterable[Heading | Para | Bullets | Table | Image | Pre], title: str,
                base_dir: str | Path) -> str:
    """One HTML file with every image inlined as a data: URI (readable offline)."""
    base = Path(base_dir)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.head)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            path = base / b.path
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(b.alt)}</figcaption></figure>")
            else:
                out.append(f"<p><em>(plot {html.escape(b.path)} missing)</em></p>")
        elif isinstance(b, Pre):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
