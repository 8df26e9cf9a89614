"""Per-model summaries computed from a run record (no I/O)."""

from __future__ import annotations

import math
import statistics


def finished_units(entry: dict) -> list[dict]:
    return [u for u in entry.get("units", []) if u.get("status") == "ok"]


def summarize_model(name: str, entry: dict) -> dict:
    units = finished_units(entry)
    accs = [u["test"]["accuracy"] for u in units]
    losses = [u["test"]["loss"] for u in units]
    times = [u["timings"]["train_seconds"] for u in units]
    meas = entry.get("measurements") or {}

    def stats(xs):
        if not xs:
            return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
        return {
            "mean": statistics.fmean(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs), "n": len(xs),
        }

    return {
        "model": name,
        "accuracy": stats(accs),
        "loss": stats(losses),
        "train_seconds": stats(times),
        "failed": [u for u in entry.get("units", []) if u.get("status") != "ok"],
        "params": (meas.get("params") or {}).get("trainable"),
        "saved_bytes": (meas.get("saved_size_bytes") or {}).get("safetensors"),
        "flops_inference": (meas.get("flops") or {}).get("forward_per_sample"),
        "flops_train_per_sample": (meas.get("flops") or {}).get("train_per_sample"),
        "peak_train_bytes": ((meas.get("memory") or {}).get("train_step") or {}).get("peak_bytes"),
    }


def summarize(record: dict) -> list[dict]:
    return [summarize_model(name, entry) for name, entry in record.get("models", {}).items()]
