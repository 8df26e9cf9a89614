"""Everything a report concludes, computed from a run record alone."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

import torch

from archbench.records import ModelRecord, RunRecord, lookup
from archbench.stats import accuracy_summary, compare_pair

# (key, label, kind, lower is better) — kind picks the unit renderer.
COST_AXES = (
    ("params", "parameters", "count"),
    ("saved_bytes", "saved size (safetensors)", "bytes"),
    ("flops_inference", "FLOPs per inference", "flops"),
    ("flops_train", "FLOPs per training sample", "flops"),
    ("peak_memory", "peak training memory", "bytes"),
    ("latency", "inference latency (batch 1, p50)", "seconds"),
    ("train_time", "train time", "seconds"),
)


def model_costs(entry: ModelRecord) -> dict[str, Any]:
    meas = entry.get("measurements") or {}
    ok = [u for u in entry.get("units", []) if u.get("status") == "ok"]
    times = [u["timings"]["train_seconds"] for u in ok]
    return {
        "params": lookup(meas, "params", "trainable"),
        "saved_bytes": lookup(meas, "saved_size_bytes", "safetensors"),
        "flops_inference": lookup(meas, "flops", "forward_per_sample"),
        "flops_train": lookup(meas, "flops", "train_per_sample"),
        "peak_memory": lookup(meas, "memory", "train_step", "peak_bytes"),
        "latency": lookup(meas, "speed", "inference_latency_batch1", "p50_seconds"),
        "train_time": statistics.fmean(times) if times else None,
    }


def correctness(record: RunRecord, model: str) -> torch.Tensor | None:
    """(seeds, N) 0/1 tensor of per-sample test correctness, seeds in record order."""
    labels = lookup(record, "dataset", "test_labels")
    if labels is None:
        return None
    y = torch.tensor(labels)
    rows = [torch.tensor(u["test"]["predictions"]) == y
            for u in record["models"][model].get("units", [])
            if u.get("status") == "ok" and len(u["test"].get("predictions", [])) == len(labels)]
    return torch.stack(rows).int() if rows else None


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated on (higher accuracy, lower cost)."""
    front = []
    for name, (acc, cost) in points.items():
        dominated = any(a >= acc and c <= cost and (a > acc or c < cost)
                        for other, (a, c) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][1])


def analyze(record: RunRecord, alpha: float = 0.05, resamples: int = 2000) -> dict[str, Any]:
    n_test = lookup(record, "dataset", "test_samples") or 0
    models: dict[str, dict[str, Any]] = {}
    for name, entry in record.get("models", {}).items():
        ok = [u for u in entry.get("units", []) if u.get("status") == "ok"]
        accs = [u["test"]["accuracy"] for u in ok]
        losses = [u["test"]["loss"] for u in ok]
        models[name] = {
            "accuracy": accuracy_summary(accs, n_test),
            "loss": {"mean": statistics.fmean(losses) if losses else math.nan,
                     "std": statistics.stdev(losses) if len(losses) > 1 else 0.0, "n": len(losses)},
            "costs": model_costs(entry),
            "seeds": [u["seed"] for u in ok],
            "failed": [{"seed": u.get("seed"), "error": u.get("error", "")}
                       for u in entry.get("units", []) if u.get("status") != "ok"],
        }
    ranked = sorted((n for n in models if models[n]["accuracy"]["n"]),
                    key=lambda n: -models[n]["accuracy"]["mean"])
    pairs = []
    for a, b in itertools.combinations(ranked, 2):
        ca, cb = correctness(record, a), correctness(record, b)
        if ca is not None and cb is not None:
            pairs.append(compare_pair(a, ca, b, cb, alpha, resamples))
    pareto = {}
    for key, _label, _kind in COST_AXES:
        pts = {n: (models[n]["accuracy"]["mean"], models[n]["costs"][key]) for n in ranked
               if models[n]["costs"][key] is not None}
        if len(pts) >= 1:
            pareto[key] = pareto_front(pts)
    return {"models": models, "ranked": ranked, "pairs": pairs, "pareto": pareto, "alpha": alpha}
