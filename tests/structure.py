"""The import graph of ``src/archbench``, read from the source (module- and
function-level imports alike), for the structure tests and for people:
``python tests/structure.py`` prints the layers, cycles and long functions."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its __init__)."""
    out = {}
    for path in sorted((src / "archbench").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package_of(name: str, mods: dict[str, Path]) -> str:
    path = mods[name]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its body. ``from
    a.b import c`` is an edge to ``a.b.c`` where that is a module, else to ``a.b``.
    Importing ``a.b.c`` runs ``a.b`` first; that is the package's edge, not the importer's."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = _package_of(name, mods).split(".")
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    targets.append(full if full in mods else base)
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("archbench"):
                    edges.add(t)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def depth(graph: dict[str, set[str]], root: str) -> tuple[int, list[str]]:
    """Layers on the longest import chain from ``root`` down to a leaf (the
    root counts as one), and that chain. The graph must be acyclic."""

    @cache
    def longest(v: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for w in sorted(graph[v]):
            chain = longest(w)
            if len(chain) > len(best):
                best = chain
        return (v, *best)

    chain = longest(root)
    return len(chain), list(chain)


def long_functions(mods: dict[str, Path], limit: int = 100) -> list[tuple[str, int]]:
    """(module:function, lines) of every function longer than ``limit`` lines
    (from its ``def`` line, decorators excluded, to its last line)."""
    out = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out.append((f"{name}:{node.name}", n))
    return sorted(out, key=lambda t: -t[1])


if __name__ == "__main__":
    mods = modules()
    g = imports(mods)
    cyc = cycles(g)
    print("cycles:", cyc or "none")
    if not cyc:
        n, chain = depth(g, "archbench.cli")
        print(f"layers from archbench.cli: {n}: " + " -> ".join(chain))
    for f, n in long_functions(mods):
        print(f"long function: {f} {n} lines")
    print("lines in src/archbench:", sum(len(p.read_text().splitlines()) for p in mods.values()))
