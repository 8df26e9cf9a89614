"""Rendering base units (bytes, seconds, counts) for people. Records store
base units; only these functions convert, and every rendered value names its
unit (KiB = 1024 bytes, MiB = 1024^2; k/M/G FLOPs are powers of 1000)."""

from __future__ import annotations

import math


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_si(n: float | None, unit: str = "") -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    n = float(n)
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def fmt_count(n: int | None) -> str:
    return "n/a" if n is None else f"{int(n):,}"


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def fmt_latency(t: dict, with_min: bool = True, max_note: str = "") -> str:
    """A timing's quantiles (``p50_seconds``...): the median (and the minimum
    where recorded, if ``with_min``), p90/p99 only where enough samples
    support them, else the maximum (then ``max_note``), and the number of
    calls where recorded."""
    parts = [f"p50 {fmt_seconds(t['p50_seconds'])}"]
    if with_min and t.get("min_seconds") is not None:
        parts[0] += f" (min {fmt_seconds(t['min_seconds'])})"
    parts += [f"{q} {fmt_seconds(t[q + '_seconds'])}" for q in ("p90", "p99") if t.get(q + "_seconds") is not None]
    if t.get("p99_seconds") is None and t.get("max_seconds") is not None:
        parts.append(f"max {fmt_seconds(t['max_seconds'])}{max_note}")
    return ", ".join(parts) + (f" ({fmt_count(t['calls'])} calls)" if "calls" in t else "")
