"""Cost to a target accuracy: for each model, the training FLOPs, seconds
and epochs at which its learning curve (held-out accuracy at the end of
each epoch, or with ``--match flops`` at each eighth of the budget: the
validation split where there is one, else the test set)
first reaches the target, interpolated linearly between the two evaluation
points around it, with the spread over seeds; "not reached" where a seed's
curve never gets there. The target is ``--target`` or, by default, the
lowest final mean accuracy among the models (so that every model reaches it
in the mean)."""

from __future__ import annotations

import base64
import math
import statistics
from typing import Any

import numpy as np
import torch

from archbench.records import ModelRecord, RunRecord, Unit, lookup
from archbench.stats import compare_pair, t_interval


def _curve(unit: Unit, flops_per_sample: float | None, samples: list[int], per_epoch: int
           ) -> list[dict[str, float]]:
    """(accuracy, FLOPs, seconds, epochs) at the end of each epoch of ``unit``
    (``samples``: images seen by then; ``per_epoch``: images in a whole epoch)."""
    hist = unit.get("history") or []
    key = "val_acc" if hist and hist[0].get("val_acc") is not None else "test_acc"
    out, seconds = [], 0.0
    for h, s in zip(hist, samples):
        seconds += float(h.get("seconds") or 0.0)
        acc: Any = h.get(key)
        if acc is None:
            continue
        out.append({"accuracy": float(acc), "flops": s * flops_per_sample if flops_per_sample else math.nan,
                    "seconds": seconds, "epochs": s / per_epoch if per_epoch else math.nan})
    return out


def unit_curve(record: RunRecord, model: str, unit: Unit) -> list[dict[str, float]]:
    """A unit's learning curve as (accuracy, FLOPs, seconds, epochs) points:
    with ``--match flops`` the held-out evaluations at the eighths of the
    budget (``unit["curve"]``), else the end of each epoch."""
    fps = lookup(record["models"][model], "measurements", "flops", "train_per_sample")
    n_train = lookup(record, "budget", "n_train")
    if unit.get("curve") and n_train and fps:
        return [{"accuracy": float(p["accuracy"]), "flops": p["samples"] * fps, "seconds": p["seconds"],
                 "epochs": p["samples"] / n_train} for p in unit["curve"]]
    return _curve(unit, fps, *_epoch_samples(record, model, unit))


def _epoch_samples(record: RunRecord, model: str, unit: Unit) -> tuple[list[int], int]:
    """(training images seen by the end of each epoch, images in a whole
    epoch): a FLOP budget's last epoch is partial."""
    hist = unit.get("history") or []
    budget = ((record.get("budget") or {}).get("models") or {}).get(model)
    if budget and budget.get("samples"):
        n = int(record["budget"]["n_train"])
        return [min(e * n, int(budget["samples"])) for e in range(1, len(hist) + 1)], n
    t = unit.get("timings") or {}
    n = round(t.get("samples_per_second", 0) * t.get("train_seconds", 0) / len(hist)) if hist else 0
    return [e * n for e in range(1, len(hist) + 1)], n


def reach(points: list[dict[str, float]], target: float) -> dict[str, Any] | None:
    """Where a curve first reaches ``target``: the cost of that point,
    interpolated linearly from the point before (``at_first_point`` when the
    first evaluation already reaches it: the cost is then an upper bound); None
    when it never does."""
    for i, p in enumerate(points):
        if p["accuracy"] >= target:
            if i == 0:
                return {**{k: p[k] for k in ("flops", "seconds", "epochs")}, "at_first_point": True}
            q = points[i - 1]
            f = (target - q["accuracy"]) / (p["accuracy"] - q["accuracy"])
            return {**{k: q[k] + f * (p[k] - q[k]) for k in ("flops", "seconds", "epochs")}, "at_first_point": False}
    return None


def _spread(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    if len(values) >= 2 and all(math.isfinite(v) for v in values):
        ci = t_interval(values)
        out["ci"] = {"low": max(0.0, ci.low), "high": ci.high}
    return out


def _final_accuracy(entry: ModelRecord) -> float | None:
    """The mean over seeds of the last held-out accuracy of the learning curve."""
    finals: list[float] = []
    for u in entry.get("units", []):
        if u.get("status") != "ok":
            continue
        held = [a for h in u.get("history") or []
                if (a := h.get("val_acc") if h.get("val_acc") is not None else h.get("test_acc")) is not None]
        if held:
            finals.append(float(held[-1]))
    return statistics.fmean(finals) if finals else None


def target_costs(record: RunRecord, target: float | None = None) -> dict[str, Any] | None:
    """Each model's cost to ``target`` (default: the lowest final mean
    held-out accuracy among the models): value, source and per model
    ``reached`` / ``units`` and the spread of flops, seconds and epochs over
    the seeds that reached it. None without learning curves."""
    finals: dict[str, float] = {}
    for m, e in record.get("models", {}).items():
        final = _final_accuracy(e)
        if final is not None:
            finals[m] = final
    if len(finals) < 1:
        return None
    if target is None:
        low = min(finals, key=lambda m: finals[m])
        target, source = finals[low], f"the lowest final mean held-out accuracy ({low})"
    else:
        source = "--target"
    goal = float(target)
    out: dict[str, Any] = {"value": goal, "source": source, "models": {}, "budget": bool(record.get("budget"))}
    for m, entry in record["models"].items():
        got = []
        units = [u for u in entry.get("units", []) if u.get("status") == "ok" and u.get("history")]
        for u in units:
            r = reach(unit_curve(record, m, u), goal)
            if r is not None:
                got.append(r)
        row: dict[str, Any] = {"reached": len(got), "units": len(units), "best": finals.get(m),
                               "at_first_point": any(r["at_first_point"] for r in got)}
        if got:
            row.update({k: _spread([r[k] for r in got]) for k in ("flops", "seconds", "epochs")})
        out["models"][m] = row
    return out


def _decode(bits: str, n: int) -> torch.Tensor:
    """A point's per-image correctness (``correct``: packed bits, base64) as an (n,) 0/1 tensor."""
    raw = np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8))[:n]
    return torch.from_numpy(raw.astype(np.int64))


def _at_point(record: RunRecord, model: str, pts: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' evaluations of ``model`` at one point of a budget (curve
    points or ``at_epochs``): ``correct`` ((seeds, n) per-image correctness;
    None when the split's size is not recorded), mean ``accuracy``,
    ``samples``, ``flops`` (NaN where not measured) and ``seconds``."""
    ds, budget = record.get("dataset", {}), record["budget"]
    n = len(ds.get("test_labels") or []) if pts[0]["split"] == "test" else int(ds.get("val_samples") or 0)
    fps = budget["models"][model].get("flops_per_sample")
    samples = statistics.fmean(p["samples"] for p in pts)
    return {"correct": torch.stack([_decode(p["correct"], n) for p in pts]) if n else None,
            "accuracy": statistics.fmean(p["accuracy"] for p in pts), "samples": samples,
            "flops": samples * fps if fps else math.nan, "seconds": statistics.fmean(p["seconds"] for p in pts)}


def budget_leads(record: RunRecord, alpha: float = 0.05) -> list[dict[str, Any]] | None:
    """With ``--match flops``: at each of the curve's points (k/8 of the
    budget, the same for every model), each model's mean held-out accuracy
    and which model leads, ``established`` only where the verdict rule
    (:func:`archbench.stats.compare_pair`: seeds and images) calls the leader
    more accurate than every other model there. None without curves."""
    budget = record.get("budget")
    if not budget:
        return None
    curves = {m: [u["curve"] for u in e.get("units", []) if u.get("status") == "ok" and u.get("curve")]
              for m, e in record.get("models", {}).items()}
    curves = {m: c for m, c in curves.items() if c}
    if len(curves) < 2:
        return None
    k_max = min(len(c) for cs in curves.values() for c in cs)
    out = []
    for k in range(k_max):
        at = {m: _at_point(record, m, [c[k] for c in cs]) for m, cs in curves.items()}
        acc, flops, seconds = ({m: a[key] for m, a in at.items()} for key in ("accuracy", "flops", "seconds"))
        correct = {m: a["correct"] for m, a in at.items() if a["correct"] is not None}
        leader = max(acc, key=lambda m: acc[m])
        established = len(correct) == len(acc) and all(
            compare_pair(leader, correct[leader], m, correct[m], alpha)["winner"] == leader
            for m in acc if m != leader)
        out.append({"point": k + 1, "of": k_max, "flops": flops, "seconds": seconds, "accuracy": acc,
                    "leader": leader, "established": established, "match": budget.get("match", "flops")})
    return out


def epochs_comparison(record: RunRecord, alpha: float = 0.05) -> dict[str, Any] | None:
    """Under a FLOP budget, the other question the run answers: the models
    after their recipe's epochs each (the seed notebook's comparison), from
    each unit's ``at_epochs`` evaluation of the held-out split. ``accuracy``
    (mean over seeds), ``flops`` (training FLOPs by then), ``epochs``, the
    ``leader`` by the means, whether the verdict rule establishes its lead
    over every other model (``established``), and its comparison with the
    runner-up (``pair``: :func:`archbench.stats.compare_pair`). None when a
    model's units lack the point (its budget ends before its recipe's epochs)."""
    budget = record.get("budget")
    if not budget:
        return None
    correct, acc, flops, epochs, split = {}, {}, {}, {}, "test"
    for m, e in record.get("models", {}).items():
        pts = [u["at_epochs"] for u in e.get("units", []) if u.get("status") == "ok" and u.get("at_epochs")]
        ok = [u for u in e.get("units", []) if u.get("status") == "ok"]
        if not pts or len(pts) != len(ok):
            return None
        split, at = pts[0]["split"], _at_point(record, m, pts)
        if at["correct"] is None:
            return None
        correct[m], acc[m], flops[m] = at["correct"], at["accuracy"], at["flops"]
        epochs[m] = at["samples"] / budget["n_train"]
    if len(acc) < 2:
        return None
    ranked = sorted(acc, key=lambda m: -acc[m])
    leader = ranked[0]
    pairs = {m: compare_pair(leader, correct[leader], m, correct[m], alpha) for m in ranked[1:]}
    return {"split": split, "accuracy": acc, "flops": flops, "epochs": epochs, "leader": leader,
            "runner_up": ranked[1], "pair": pairs[ranked[1]],
            "established": all(p["winner"] == leader for p in pairs.values())}
