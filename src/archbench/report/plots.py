"""Report figures, written as PNG (inlined into report.html) and SVG beside it.

Drawn through matplotlib's object API (``Figure``, no pyplot): nothing
global changes -- not the caller's backend, not pyplot's figure list, not
rcParams (the style applies inside ``rc_context`` only).

Readable as the tables: axes in the tables' units (%, KiB/MiB, µs/ms/s,
k/M/G FLOPs), integer epoch ticks, one colour per model that is the same in
every plot of a run, constrained layout and a tight bounding box so no label
is clipped.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from archbench.records import ModelRecord, RunRecord, lookup
from archbench.report.analysis import COST_AXES, TIME_AXES, correctness, time_spread
from archbench.report.target import unit_curve

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

PAD_INCHES = 0.1  # blank margin around the tight bounding box
PNG_DPI = 150  # print quality for papers and slides; the SVG beside it scales without limit
# Text is literal: model and class names come from users ("$", "\\", "^" in a folder name) and are never TeX
# or mathtext (a "$" used to crash the whole report in the mathtext parser).
STYLE = {"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "archbench",
         "svg.fonttype": "none", "text.parse_math": False, "text.usetex": False}
# Category colours (memory and FLOP breakdowns) come from another palette than the models'.
CATEGORY_COLORS = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
                   "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f")


def model_colors(record: RunRecord) -> dict[str, Any]:
    """One colour per model, by its position in the record: the same model
    has the same colour in every plot of a run."""
    from matplotlib import colormaps

    names = list(record.get("models", {}))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None,
            **kw: Any) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig: Figure, png: Path) -> list[Path]:
    """PNG (at PNG_DPI) and SVG of ``fig``, with a tight bounding box (nothing clipped).

    Laid out once for both files, as ``savefig(bbox_inches="tight", pad_inches=PAD_INCHES)`` lays out the PNG
    (the layout engine run, then the tight box measured, at PNG_DPI); savefig would run the layout engine, a
    draw and the box's measure again for each file. The PNG is the one savefig wrote, byte for byte; the SVG
    takes the PNG's layout (savefig laid it out with the SVG renderer's 72 dpi text metrics: a fraction of a
    point apart).
    """
    import matplotlib

    svg = png.with_suffix(".svg")
    figure_dpi = fig.dpi
    fig.dpi = PNG_DPI
    try:
        engine = fig.get_layout_engine()
        if engine is not None and fig.axes:  # as Figure.draw runs it
            engine.execute(fig)
        box = fig.get_tightbbox().padded(PAD_INCHES)
    finally:
        fig.dpi = figure_dpi
    # Keep that layout: no engine (whatever the rcParams say a figure without one gets), so savefig runs none.
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    fig.savefig(png, bbox_inches=box, dpi=PNG_DPI)
    fig.savefig(svg, bbox_inches=box, dpi="figure", metadata={"Date": None})
    return [png, svg]


# --- units --------------------------------------------------------------------------------

def scale_for(kind: str, values: list[float]) -> tuple[float, str]:
    """(divisor, unit) that render ``values`` as the tables do."""
    top = max((abs(v) for v in values if v is not None), default=0.0)
    if kind == "bytes":
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if top >= size:
                return float(size), unit
        return 1.0, "B"
    if kind == "seconds":
        if top < 1e-3:
            return 1e-6, "µs"
        if top < 1:
            return 1e-3, "ms"
        if top < 120:
            return 1.0, "s"
        return 60.0, "min"
    if kind == "flops":
        for prefix, factor in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if top >= factor:
                return factor, f"{prefix}FLOPs"
        return 1.0, "FLOPs"
    return 1.0, ""


def _plain_ticks(axis: Axis) -> None:
    """Tick labels as plain numbers (3, 10, 30), not 10^k, on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def label(v: float, _: object) -> str:
        for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
            if v >= scale:
                return f"{v / scale:g}{prefix}"
        return f"{v:,.0f}" if v >= 100 else f"{v:g}"

    fmt = FuncFormatter(label)
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())


def _ok_units(entry: ModelRecord) -> list[Any]:  # Units; Any, as learning_curves reads their rows by computed keys
    return [u for u in entry.get("units", []) if u.get("status") == "ok"]


# --- figures ------------------------------------------------------------------------------

def learning_curves(record: RunRecord) -> Figure | None:
    from matplotlib.ticker import MaxNLocator

    colors = model_colors(record)
    fig, axes = _figure(2, 2, figsize=(10, 6.5), sharex=True)
    # With a validation split a model's curves are the validation set's (its test set is evaluated once, at the
    # end); a merged comparison may hold models of both kinds: each is drawn from its own held-out split.
    held = {name: "val" if any(h.get("val_acc") is not None for u in _ok_units(e) for h in u.get("history", []))
            else "test" for name, e in record["models"].items()}
    kinds = set(held.values())
    word = {"val": "validation", "test": "test"}
    heading = word[next(iter(kinds))] if len(kinds) == 1 else "held-out (validation or test: see legend)"
    panels = [("train_loss", "train loss", 1.0), ("held_loss", f"{heading} loss", 1.0),
              ("train_acc", "train accuracy (%)", 100.0), ("held_acc", f"{heading} accuracy (%)", 100.0)]
    drawn = False
    for name, entry in record["models"].items():
        units = _ok_units(entry)
        if not units:
            continue
        epochs = [h["epoch"] for h in units[0]["history"]]
        same = [u for u in units if len(u["history"]) == len(epochs)]
        for ax, (key, title, scale) in zip(axes.flat, panels):
            key = key.replace("held", held[name])
            vals = torch.tensor([[h[key] if h.get(key) is not None else float("nan") for h in u["history"]]
                                 for u in same], dtype=torch.float64) * scale
            label = f"{name} (n={vals.shape[0]}" + (f", {word[held[name]]})" if len(kinds) > 1 else ")")
            ax.plot(epochs, vals.mean(0).tolist(), color=colors[name], marker="o", ms=3, label=label)
            if vals.shape[0] > 1:
                ax.fill_between(epochs, vals.min(0).values.tolist(), vals.max(0).values.tolist(),
                                color=colors[name], alpha=0.2)
            ax.set_title(title)
            drawn = True
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend()
    fig.suptitle("Learning curves (mean over seeds; band = min–max)"
                 + ("; held-out curves on the validation split" if kinds == {"val"} else ""))
    return fig if drawn else None


def confusion(record: RunRecord, model: str) -> Figure | None:
    labels = record["dataset"].get("test_labels")
    units = _ok_units(record["models"][model])
    if labels is None or not units:
        return None
    classes = record["dataset"].get("classes") or [str(i) for i in range(10)]
    k = len(classes)
    y = torch.tensor(labels)
    cm = torch.zeros(k, k, dtype=torch.float64)
    for u in units:
        p = torch.tensor(u["test"]["predictions"])
        cm += torch.bincount(y * k + p, minlength=k * k).reshape(k, k).double()
    rate = cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = _figure(figsize=(6.8, 5.8))
    im = ax.imshow(rate.tolist(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            r = float(rate[i, j])
            if r >= 0.005:
                ax.text(j, i, f"{100 * r:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if r > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    cbar = fig.colorbar(im, ax=ax, label="% of the true class")
    cbar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "25", "50", "75", "100"])
    ax.set_title(f"{model}: confusion matrix\n(% of each true class, {len(units)} seed(s) pooled)")
    return fig


def per_class_accuracy(record: RunRecord) -> Figure | None:
    labels = record["dataset"].get("test_labels")
    if labels is None:
        return None
    colors = model_colors(record)
    classes = record["dataset"].get("classes") or [str(i) for i in range(10)]
    y = torch.tensor(labels)
    names = [n for n in record["models"] if correctness(record, n) is not None]
    if not names:
        return None
    fig, ax = _figure(figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        correct = correctness(record, name)
        assert correct is not None  # names holds only the models whose correctness is not None
        c = correct.double().mean(0)
        acc = [100 * c[y == k].mean().item() if bool((y == k).any()) else float("nan")  # no test image: no bar
               for k in range(len(classes))]
        ax.bar([k + i * width - 0.4 + width / 2 for k in range(len(classes))], acc, width, label=name,
               color=colors[name])
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylabel("test accuracy, % (mean over seeds)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Per-class test accuracy")
    return fig


def accuracy_vs_cost(record: RunRecord, analysis: dict[str, Any]) -> Figure | None:
    models = analysis["models"]
    colors = model_colors(record)
    axes_with_data = [(k, label, kind) for k, label, kind in COST_AXES
                      if any(models[n]["costs"][k] is not None for n in analysis["ranked"])]
    if not axes_with_data or not analysis["ranked"]:
        return None
    cols = 3
    rows = (len(axes_with_data) + cols - 1) // cols
    fig, axs = _figure(rows, cols, figsize=(12, 3.6 * rows), squeeze=False)
    for ax, (key, label, kind) in zip(axs.flat, axes_with_data):
        names = [n for n in analysis["ranked"] if models[n]["costs"][key] is not None]
        spreads = {n: time_spread(record["models"][n], key) for n in names} if key in TIME_AXES else {}
        div, unit = scale_for(kind, [models[n]["costs"][key] for n in names]
                              + [s["high"] for s in spreads.values() if s and s.get("high")])
        for n in names:
            a = models[n]["accuracy"]
            x = models[n]["costs"][key] / div
            s = spreads.get(n)
            xerr = ([[max(0.0, x - s["low"] / div)], [max(0.0, s["high"] / div - x)]]
                    if s and s.get("low") is not None else None)
            # max(0, .): a Wilson interval's bound can sit a rounding error inside the mean at 0 % or 100 %.
            ax.errorbar([x], [100 * a["mean"]], xerr=xerr,
                        yerr=[[max(0.0, 100 * (a["mean"] - a["ci"]["low"]))],
                              [max(0.0, 100 * (a["ci"]["high"] - a["mean"]))]],
                        fmt="o", color=colors[n], capsize=3, label=n)
            views = lookup(record["models"][n], "measurements", "flops", "inference_views") or 1
            tag = f"{n} ({views} views)" if key == "flops_inference" and views > 1 else n
            ax.annotate(tag, (x, 100 * a["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        front = analysis["pareto"].get(key, [])
        if len(front) > 1:
            ax.plot([models[n]["costs"][key] / div for n in front],
                    [100 * models[n]["accuracy"]["mean"] for n in front], "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
        views = ", all views" if key == "flops_inference" else ""  # every test-time view evaluation averages
        ax.set_xlabel(f"{label}{views}" + (f" ({unit}, log scale)" if unit else " (log scale)"))
        ax.set_ylabel("test accuracy, %")
        ax.margins(x=0.15)
        low, high = ax.get_ylim()  # accuracy lives in 0-100 %: the axis never shows more or less
        ax.set_ylim(max(0.0, low), min(100.0, high) if high > max(0.0, low) else 100.0)
    for ax in list(axs.flat)[len(axes_with_data):]:
        ax.axis("off")
    fig.suptitle("Accuracy vs cost (error bars: 95 % CI of accuracy; for times, the measured range; "
                 "dashed: the front the verdicts support)")
    return fig


def cost_breakdown(record: RunRecord) -> Figure | None:
    mem_rows, flop_rows = {}, {}
    for name, entry in record["models"].items():
        meas = entry.get("measurements") or {}
        bd = ((meas.get("memory") or {}).get("train_step") or {}).get("breakdown")
        batch = (meas.get("flops") or {}).get("train_step_batch_size")
        label = f"{name} (batch {batch})" if batch else name
        if bd:
            mem_rows[label] = bd
        phases = (meas.get("flops") or {}).get("train_step_phases")
        if phases:
            tot = phases["total"]
            flop_rows[label] = {"matmul/conv": tot["matmul_conv"], **tot["other"]}
    if not mem_rows and not flop_rows:
        return None
    fig, (ax1, ax2) = _figure(1, 2, figsize=(12, 0.9 + 0.6 * max(len(mem_rows), len(flop_rows), 1) + 1.5))
    for ax, rows, kind, title in ((ax1, mem_rows, "bytes", "Peak training-step memory by category"),
                                  (ax2, flop_rows, "flops", "FLOPs of one training step by category")):
        names = list(rows)
        if not names:
            ax.text(0.5, 0.5, "not measured in this record", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(title)
            ax.axis("off")
            continue
        div, unit = scale_for(kind, [sum(r.values()) for r in rows.values()])
        cats: list[str] = []
        for r in rows.values():
            cats += [c for c, v in r.items() if v and c not in cats]
        left = [0.0] * len(names)
        for j, cat in enumerate(cats):
            vals = [rows[n].get(cat, 0) / div for n in names]
            ax.barh(names, vals, left=left, label=cat.replace("_", " "),
                    color=CATEGORY_COLORS[j % len(CATEGORY_COLORS)], edgecolor="#555555", linewidth=0.4)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def _compute_points(record: RunRecord, name: str, units: list[Any]) -> tuple[list[float], list[float], Any] | None:
    """(FLOPs spent, seconds, accuracy %: seeds x points) along a budgeted model's training: the curve's
    points (archbench.report.target.unit_curve), the seeds' FLOPs and seconds averaged."""
    if not units or not ((record.get("budget") or {}).get("models") or {}).get(name):
        return None
    curves = [unit_curve(record, name, u) for u in units]
    k = min(len(c) for c in curves)
    if k == 0:
        return None
    acc = torch.tensor([[100 * p["accuracy"] for p in c[:k]] for c in curves], dtype=torch.float64)
    flops = [statistics.fmean(c[i]["flops"] for c in curves) for i in range(k)]
    secs = [statistics.fmean(c[i]["seconds"] for c in curves) for i in range(k)]
    return flops, secs, acc


def accuracy_vs_compute(record: RunRecord) -> Figure | None:
    """With ``--match flops``: each model's held-out accuracy along its
    training against the training FLOPs and seconds spent by then (mean over
    seeds, the band their range), up to the common budget."""
    budget = record.get("budget")
    if not budget:
        return None
    colors = model_colors(record)
    fig, axes = _figure(1, 2, figsize=(11, 4.2), sharey=True)
    for name, entry in record["models"].items():
        got = _compute_points(record, name, _ok_units(entry))
        if got is None:
            continue
        flops, secs, acc = got
        for ax, x in zip(axes, (flops, secs)):
            ax.plot(x, acc.mean(0).tolist(), color=colors[name], marker="o", ms=3, label=f"{name} (n={len(acc)})")
            if len(acc) > 1:
                ax.fill_between(x, acc.min(0).values.tolist(), acc.max(0).values.tolist(), color=colors[name],
                                alpha=0.2)
    if budget.get("budget_flops"):
        axes[0].axvline(budget["budget_flops"], color="k", ls="--", lw=1, label="the budget")
    if budget.get("budget_seconds"):
        axes[1].axvline(budget["budget_seconds"], color="k", ls="--", lw=1, label="the budget")
    axes[0].set_xscale("log")
    _plain_ticks(axes[0].xaxis)  # (mathtext is off: matplotlib's 10^k labels would print as raw TeX)
    axes[0].set_xlabel("training FLOPs spent (matmul/conv, log scale)")
    axes[1].set_xlabel("training seconds spent (this machine)")
    axes[0].set_ylabel("held-out accuracy, %")
    low, high = axes[0].get_ylim()
    axes[0].set_ylim(max(0.0, low), min(100.0, high))
    axes[0].legend(fontsize=8)
    fig.suptitle("Accuracy against training compute (equal-" + ("time" if budget.get("match") == "time" else "FLOP")
                 + " comparison)")
    return fig


def tuning_trials(record: RunRecord) -> Figure | None:
    """With ``--tune``: each model's validation accuracy against the first
    tuned key's value, one point per trial (the chosen ones ringed)."""
    tune = (record.get("config") or {}).get("tune")
    if not tune:
        return None
    key = next(iter(tune))
    colors = model_colors(record)
    fig, ax = _figure()
    xs: list[float] = []
    for name, entry in record["models"].items():
        tuned = (entry.get("tuned") or {}).get("by_seed") or {}
        pts = sorted((float(u["params"][key]), 100 * float(u["validation"]["accuracy"]), u["trial"], u["seed"])
                     for u in entry.get("trials") or [] if u.get("status") == "ok" and u.get("validation"))
        if not pts:
            continue
        xs += [p[0] for p in pts]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[name], marker="o", ms=4, lw=1,
                ls="-" if len({p[3] for p in pts}) == 1 else "none", label=name)
        for x, y, t, seed in pts:
            if (tuned.get(str(seed)) or {}).get("trial") == t:
                ax.plot([x], [y], marker="o", ms=11, mfc="none", color=colors[name])
    if not xs:
        return None
    if min(xs) > 0:
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
    ax.set_xlabel(f"{key} (trial value)")
    ax.set_ylabel("validation accuracy, %")
    ax.legend(fontsize=8)
    ax.set_title("Tuning trials (ringed: the value each model's seeds trained with)")
    return fig


def make_plots(record: RunRecord, analysis: dict[str, Any], run_dir: Path) -> list[tuple[str, str]]:
    """Write every figure under ``run_dir/plots`` (PNG and SVG); return (relative PNG path, caption)."""
    import matplotlib

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for fname, caption, build in plot_jobs(record, analysis):
        # matplotlib's stub types rc_context's keys as a Literal of every rcParam name, not str.
        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
            fig = build()
            if fig is not None:
                save_figure(fig, out_dir / fname)
                made.append((f"plots/{fname}", caption))
    return made


def plot_jobs(record: RunRecord, analysis: dict[str, Any]) -> list[tuple[str, str, Callable[[], Any]]]:
    """(file name, caption, a function drawing the Figure or None) for every figure of a report."""
    jobs: list[tuple[str, str, Callable[[], Any]]] = [
        ("learning_curves.png", "Learning curves", lambda: learning_curves(record)),
        ("accuracy_vs_cost.png", "Accuracy vs each cost, with the Pareto front",
         lambda: accuracy_vs_cost(record, analysis)),
        ("per_class_accuracy.png", "Per-class accuracy", lambda: per_class_accuracy(record)),
        ("accuracy_vs_compute.png", "Accuracy against training FLOPs spent (equal-compute comparison)",
         lambda: accuracy_vs_compute(record)),
        ("tuning_trials.png", "Tuning trials: validation accuracy against the value tried",
         lambda: tuning_trials(record)),
        ("cost_breakdown.png", "Cost breakdown: memory and FLOP categories", lambda: cost_breakdown(record))]
    for i, name in enumerate(record["models"]):
        # Short (a file name has at most 255 bytes); unique by i.
        safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)[:80]
        jobs.append((f"confusion_{i}_{safe}.png", f"Confusion matrix: {name}",
                     functools.partial(confusion, record, name)))
    return jobs
