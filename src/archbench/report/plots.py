"""Report figures, written as PNG files.

Drawn through matplotlib's object API (``Figure``, no pyplot): nothing
global changes -- not the caller's backend, not pyplot's figure list, not
rcParams (the style applies inside ``rc_context`` only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archbench.records import RunRecord
from archbench.report.analysis import COST_AXES, correctness

STYLE = {"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def _subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path)
    return True


def _ok_units(entry):
    return [u for u in entry.get("units", []) if u.get("status") == "ok"]


def learning_curves(record: RunRecord, path: Path) -> bool:
    fig, axes = _subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = [("train_loss", "train loss"), ("test_loss", "test loss"), ("train_acc", "train accuracy"),
              ("test_acc", "test accuracy")]
    drawn = False
    for i, (name, entry) in enumerate(record["models"].items()):
        units = _ok_units(entry)
        if not units:
            continue
        color = f"C{i}"
        for ax, (key, title) in zip(axes.flat, panels):
            epochs = [h["epoch"] for h in units[0]["history"]]
            vals = torch.tensor([[h[key] if h[key] is not None else float("nan") for h in u["history"]]
                                 for u in units if len(u["history"]) == len(epochs)], dtype=torch.float64)
            mean = vals.mean(0).tolist()
            ax.plot(epochs, mean, color=color, marker="o", ms=3, label=f"{name} (n={vals.shape[0]})")
            if vals.shape[0] > 1:
                ax.fill_between(epochs, vals.min(0).values.tolist(), vals.max(0).values.tolist(), color=color,
                                alpha=0.2)
            ax.set_title(title)
            drawn = True
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend()
    fig.suptitle("Learning curves (mean over seeds; band = min–max)")
    _save(fig, path)
    return drawn


def confusion(record: RunRecord, model: str, path: Path) -> bool:
    labels = record["dataset"].get("test_labels")
    units = _ok_units(record["models"][model])
    if labels is None or not units:
        return False
    classes = record["dataset"].get("classes") or [str(i) for i in range(10)]
    k = len(classes)
    y = torch.tensor(labels)
    cm = torch.zeros(k, k, dtype=torch.float64)
    for u in units:
        p = torch.tensor(u["test"]["predictions"])
        cm += torch.bincount(y * k + p, minlength=k * k).reshape(k, k).double()
    rate = cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = _subplots(figsize=(6.8, 5.8))
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
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    ax.set_title(f"{model}: confusion matrix (% of each true class, {len(units)} seed(s) pooled)")
    return _save(fig, path)


def per_class_accuracy(record: RunRecord, path: Path) -> bool:
    labels = record["dataset"].get("test_labels")
    if labels is None:
        return False
    classes = record["dataset"].get("classes") or [str(i) for i in range(10)]
    y = torch.tensor(labels)
    names = [n for n in record["models"] if correctness(record, n) is not None]
    if not names:
        return False
    fig, ax = _subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        correct = correctness(record, name)
        assert correct is not None  # names holds only the models whose correctness is not None
        c = correct.double().mean(0)
        acc = [c[y == k].mean().item() for k in range(len(classes))]
        ax.bar([k + i * width - 0.4 + width / 2 for k in range(len(classes))], acc, width, label=name)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Per-class test accuracy")
    return _save(fig, path)


def accuracy_vs_cost(analysis: dict[str, Any], path: Path) -> bool:
    models = analysis["models"]
    units = {"count": "", "bytes": " [bytes]", "flops": "", "seconds": " [s]"}
    axes_with_data = [(k, label + units[kind]) for k, label, kind in COST_AXES
                      if sum(models[n]["costs"][k] is not None for n in analysis["ranked"]) >= 1]
    if not axes_with_data or not analysis["ranked"]:
        return False
    cols = 3
    rows = (len(axes_with_data) + cols - 1) // cols
    fig, axs = _subplots(rows, cols, figsize=(12, 3.4 * rows), squeeze=False)
    for ax, (key, label) in zip(axs.flat, axes_with_data):
        names = [n for n in analysis["ranked"] if models[n]["costs"][key] is not None]
        for n in names:
            a = models[n]["accuracy"]
            x = models[n]["costs"][key]
            # max(0, .): a Wilson interval's bound can sit a rounding error inside the mean at 0 % or 100 %.
            ax.errorbar([x], [100 * a["mean"]], yerr=[[max(0.0, 100 * (a["mean"] - a["ci"]["low"]))],
                                                     [max(0.0, 100 * (a["ci"]["high"] - a["mean"]))]],
                        fmt="o", color=f"C{list(models).index(n)}", capsize=3, label=n)
            ax.annotate(n, (x, 100 * a["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        front = analysis["pareto"].get(key, [])
        if len(front) > 1:
            ax.plot([models[n]["costs"][key] for n in front], [100 * models[n]["accuracy"]["mean"] for n in front],
                    "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("test accuracy, %")
    for ax in list(axs.flat)[len(axes_with_data):]:
        ax.axis("off")
    fig.suptitle("Accuracy vs cost (error bars: 95 % CI; dashed: Pareto front)")
    return _save(fig, path)


def cost_breakdown(record: RunRecord, path: Path) -> bool:
    mem_rows, flop_rows = {}, {}
    for name, entry in record["models"].items():
        meas = entry.get("measurements") or {}
        bd = ((meas.get("memory") or {}).get("train_step") or {}).get("breakdown")
        if bd:
            mem_rows[name] = bd
        phases = (meas.get("flops") or {}).get("train_step_phases")
        if phases:
            tot = phases["total"]
            flop_rows[name] = {"matmul/conv": tot["matmul_conv"], **tot["other"]}
    if not mem_rows and not flop_rows:
        return False
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(12, 0.9 + 0.6 * max(len(mem_rows), len(flop_rows), 1) + 1.5))
    for ax, rows, unit, scale, title in ((ax1, mem_rows, "MiB", 1024**2, "Peak training-step memory by category"),
                                         (ax2, flop_rows, "MFLOPs", 1e6, "FLOPs of one training step by category")):
        names = list(rows)
        if not names:
            ax.text(0.5, 0.5, "not measured in this record", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(title)
            ax.axis("off")
            continue
        cats = []
        for r in rows.values():
            cats += [c for c, v in r.items() if v and c not in cats]
        left = [0.0] * len(names)
        for j, cat in enumerate(cats):
            vals = [rows[n].get(cat, 0) / scale for n in names]
            ax.barh(names, vals, left=left, label=cat.replace("_", " "), color=f"C{j}")
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def make_plots(record: RunRecord, analysis: dict[str, Any], run_dir: Path) -> list[tuple[str, str]]:
    """Write every figure under ``run_dir/plots``; return (relative path, caption)."""
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    jobs: list[tuple[str, str, Callable[[Path], bool]]] = [
            ("learning_curves.png", "Learning curves", lambda p: learning_curves(record, p)),
            ("accuracy_vs_cost.png", "Accuracy vs each cost, with the Pareto front",
             lambda p: accuracy_vs_cost(analysis, p)),
            ("per_class_accuracy.png", "Per-class accuracy", lambda p: per_class_accuracy(record, p)),
            ("cost_breakdown.png", "Cost breakdown: memory and FLOP categories", lambda p: cost_breakdown(record, p))]
    for i, name in enumerate(record["models"]):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        jobs.append((f"confusion_{i}_{safe}.png", f"Confusion matrix: {name}",
                     functools.partial(confusion, record, name)))
    import matplotlib

    for fname, caption, fn in jobs:
        # matplotlib's stub types rc_context's keys as a Literal of every rcParam name, not str.
        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
            drawn = fn(out_dir / fname)
        if drawn:
            made.append((f"plots/{fname}", caption))
    return made
