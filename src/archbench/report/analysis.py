"""Everything a report concludes, computed from a run record alone.

Accuracy verdicts come from :func:`archbench.stats.compare_pair` (training
randomness and test-set sampling together; docs/statistics.md). Cost
verdicts say under which conditions each cost was measured; a time verdict
needs a difference larger than the measured spread on an unloaded machine.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

import torch

from archbench.records import ModelRecord, RunRecord, Unit, lookup, source_run, unit_samples
from archbench.stats import accuracy_summary, compare_pair, verdict_rule

# (key, label, kind) — kind picks the unit renderer.
COST_AXES = (
    ("params", "parameters", "count"),
    ("saved_bytes", "saved size (safetensors)", "bytes"),
    ("flops_inference", "FLOPs per inference", "flops"),
    ("flops_train", "FLOPs per training sample", "flops"),
    ("peak_memory", "peak training memory", "bytes"),
    ("latency", "inference latency (batch 1, p50)", "seconds"),
    ("train_time", "train time", "seconds"),
)
TIME_AXES = ("latency", "train_time")
# What each cost depends on besides the model (shown when it differs between models).
AXIS_CONDITIONS: dict[str, tuple[str, ...]] = {
    "params": (), "saved_bytes": (), "flops_inference": (),
    "flops_train": ("batch_size",),
    "peak_memory": ("batch_size", "memory_precision", "memory_optimizer"),
    "latency": ("device", "measure_threads", "cpu"),
    "train_time": ("epochs", "samples_per_epoch", "batch_size", "precision", "optimizer", "device", "threads",
                   "cpu"),
}
CONDITION_WORDS = {"batch_size": "batch sizes", "epochs": "epochs", "samples_per_epoch": "training images per epoch",
                   "precision": "precisions", "optimizer": "optimizers", "device": "devices",
                   "threads": "thread counts", "measure_threads": "thread counts", "cpu": "CPUs",
                   "formulation": "formulations", "memory_precision": "precisions",
                   "memory_optimizer": "optimizers"}
# Records whose measurements carry no "step" description were measured by archbench's own fixed step
# (fp32, its Adam) whatever the recipe; newer ones measure the step the unit trains and describe it.
MEASURED_PRECISION, MEASURED_OPTIMIZER = "fp32", "Adam"


def _ok(entry: ModelRecord) -> list[Unit]:
    return [u for u in entry.get("units", []) if u.get("status") == "ok"]


def model_costs(entry: ModelRecord) -> dict[str, Any]:
    meas = entry.get("measurements") or {}
    times = [u["timings"]["train_seconds"] for u in _ok(entry)]
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
    got = correctness_by_seed(record, model)
    return got[0] if got else None


def correctness_by_seed(record: RunRecord, model: str) -> tuple[torch.Tensor, list[int]] | None:
    labels = lookup(record, "dataset", "test_labels")
    if labels is None:
        return None
    y = torch.tensor(labels)
    units = [u for u in _ok(record["models"][model]) if len(u["test"].get("predictions", [])) == len(labels)]
    if not units:
        return None
    return torch.stack([torch.tensor(u["test"]["predictions"]) == y for u in units]).int(), \
        [u["seed"] for u in units]


def verdict_front(an: dict[str, Any], key: str, axis: dict[str, Any]) -> dict[str, Any]:
    """The accuracy-vs-cost front that the verdicts support. A model is
    dominated only by one that is established more accurate (the accuracy
    verdict, training randomness and test-set sampling included) and no more
    costly (on a time axis: cheaper beyond the measured spread); every other
    model is on the front, and pairs where neither dominates although one
    leads on both by the means are "not distinguishable".

    Returns front (by cost), dominated {model: the model that dominates it},
    indistinct [(a, b)]."""
    vals = axis["values"]
    names = [n for n in an["ranked"] if n in vals]
    by_pair = {frozenset((p["a"], p["b"])): p for p in an["pairs"]}

    def cheaper_or_equal(a: str, b: str) -> bool:
        if key in TIME_AXES:
            return time_order(axis, a, b) == a
        return bool(vals[a] <= vals[b])

    dominated: dict[str, str] = {}
    indistinct: list[tuple[str, str]] = []
    for a, b in itertools.permutations(names, 2):
        pair = by_pair.get(frozenset((a, b)))
        if pair is None:
            continue
        if pair["winner"] == a and cheaper_or_equal(a, b):
            dominated.setdefault(b, a)
        elif (a, b) not in indistinct and (b, a) not in indistinct and pair["winner"] is None:
            acc_a, acc_b = an["models"][a]["accuracy"]["mean"], an["models"][b]["accuracy"]["mean"]
            if acc_a >= acc_b and vals[a] <= vals[b] and (acc_a > acc_b or vals[a] < vals[b]):
                indistinct.append((a, b))
    front = sorted((n for n in names if n not in dominated), key=lambda n: vals[n])
    return {"front": front, "dominated": dominated, "indistinct": indistinct}


# --- where each model came from (merged records) -----------------------------------


def _run_value(record: RunRecord, model: str, key: str) -> Any:
    """A study-level config value as it held for ``model``'s run."""
    run = source_run(record, model)
    if run is not None and lookup(record, "configs", run) is not None:
        return lookup(record, "configs", run, key)
    return lookup(record, "config", key)


def _environment(record: RunRecord, model: str) -> dict[str, Any]:
    run = source_run(record, model)
    return (lookup(record, "environments", run) if run else None) or record.get("environment") or {}


def expected_seeds(record: RunRecord, model: str) -> list[int]:
    seeds = _run_value(record, model, "seeds")
    return list(seeds) if isinstance(seeds, list) else []


# --- conditions, host load, time spreads ---------------------------------------------

def conditions(record: RunRecord, model: str) -> dict[str, Any]:
    """What each of ``model``'s costs was measured under."""
    entry = record["models"][model]
    recipe = lookup(record, "config", "train", model) or entry.get("recipe") or {}
    meas = entry.get("measurements") or {}
    ok = _ok(entry)
    env = _environment(record, model)
    hosts = [u["host"] for u in ok if u.get("host")]
    per_epoch = {round(u["timings"]["samples_per_second"] * u["timings"]["train_seconds"] / len(u["history"]))
                 for u in ok if u.get("history") and u.get("timings")}
    budget = lookup(record, "budget", "models", model)
    if budget:  # a FLOP budget: whole epochs of n_train images, the last one partial
        per_epoch = {int(record["budget"]["n_train"])}
    step = meas.get("step") or {}
    return {
        "measures_recipe": bool(step),
        "memory_precision": str(step.get("precision", MEASURED_PRECISION)).replace(" autocast", ""),
        "memory_optimizer": str(step.get("optimizer", MEASURED_OPTIMIZER)).split(" (")[0],
        "batch_size": lookup(meas, "flops", "train_step_batch_size") or recipe.get("batch_size"),
        "recipe_batch_size": recipe.get("batch_size"),
        "precision": recipe.get("precision"),
        "optimizer": recipe.get("optimizer"),
        "formulation": ", ".join(sorted({u["training"]["formulation"] for u in ok if u.get("training")}))
        or recipe.get("formulation"),
        "device": ", ".join(sorted({u["training"]["device"] for u in ok if u.get("training")})) or None,
        "epochs": _budget_epochs(record, budget, ok) if budget else recipe.get("epochs"),
        "samples_per_epoch": ", ".join(f"{n:,}" for n in sorted(per_epoch)) or None,
        "threads": ", ".join(str(t) for t in sorted({h["torch_threads"] for h in hosts})) or None,
        "measure_threads": env.get("torch_threads"),
        "cpu": ", ".join(sorted({h["cpu"] for h in hosts})) or env.get("cpu"),
    }


def _budget_epochs(record: RunRecord, budget: dict, ok: list) -> float | None:
    """Epochs a budgeted model trained: planned (a FLOP budget), or reached in the mean (a time budget)."""
    if "epochs" in budget:
        return round(budget["epochs"], 2)
    samples = [unit_samples(u) for u in ok if u.get("timings")]
    n = lookup(record, "budget", "n_train")
    return round(sum(samples) / len(samples) / n, 2) if samples and n else None


def _loads(record: RunRecord, model: str) -> list[tuple[str, float, int]]:
    """(when, 1-minute load, usable cores) for every load sample of this model's run and units."""
    env = _environment(record, model)
    cores = env.get("usable_cpus") or env.get("cpu_count")
    out = []
    if env.get("load_average") and cores:
        out.append(("run start", env["load_average"][0], cores))
    for u in _ok(record["models"][model]):
        h = u.get("host") or {}
        for when in ("load_start", "load_end"):
            if h.get(when) and h.get("usable_cpus"):
                out.append((f"seed {u['seed']} {when.split('_')[1]}", h[when][0], h["usable_cpus"]))
    return out


def host_load(record: RunRecord, models: list[str]) -> dict[str, Any]:
    """Whether anything competed with the timings: the largest 1-minute load
    average recorded (run start, each unit's start and end) against the
    usable cores. Loaded = more runnable threads than cores at some sample."""
    samples = [s for m in models for s in _loads(record, m)]
    if not samples:
        return {"recorded": False, "loaded": False}
    worst = max(samples, key=lambda s: s[1] / s[2])
    return {"recorded": True, "loaded": any(load > cores for _, load, cores in samples),
            "max_load": worst[1], "cores": worst[2], "when": worst[0], "samples": len(samples)}


def time_spread(entry: ModelRecord, key: str) -> dict[str, Any] | None:
    """A time cost with the spread its own measurements show.

    train_time: the mean of the units' train times; the range covers every
    unit's train time and every epoch's time times the number of epochs
    (what the run would take at that epoch's pace). With a single value, the
    spread of the repeated train-step timings (min to p90, relative to p50)
    is applied. latency: p50, range min to p90 of the repeated calls."""
    meas = entry.get("measurements") or {}
    if key == "latency":
        lat = lookup(meas, "speed", "inference_latency_batch1")
        if not lat or lat.get("p50_seconds") is None:
            return None
        lo, hi = lat.get("min_seconds"), lat.get("p90_seconds")
        if lo is None or hi is None:
            return {"value": lat["p50_seconds"], "low": None, "high": None,
                    "source": "median of repeated calls (no spread recorded)"}
        return {"value": lat["p50_seconds"], "low": lo, "high": hi,
                "source": f"min to p90 of {lat.get('calls', 'repeated')} calls"}
    ok = _ok(entry)
    if not ok:
        return None
    times = [u["timings"]["train_seconds"] for u in ok]
    values = list(times)
    for u in ok:
        hist = u.get("history") or []
        values += [h["seconds"] * len(hist) for h in hist]
    value = statistics.fmean(times)
    if len(values) > 1 and max(values) > min(values):
        return {"value": value, "low": min(values), "high": max(values),
                "source": f"{len(ok)} unit(s) and their {len(values) - len(ok)} epoch(s)"}
    step = lookup(meas, "speed", "train_step")
    if step and step.get("p50_seconds") and step.get("min_seconds") is not None and step.get("p90_seconds"):
        return {"value": value, "low": value * step["min_seconds"] / step["p50_seconds"],
                "high": value * step["p90_seconds"] / step["p50_seconds"],
                "source": f"one timing, with the spread of {step.get('calls', 'repeated')} timed train steps"}
    return {"value": value, "low": None, "high": None, "source": "one timing, no spread measured"}


def _differing(conds: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if len({str(c.get(k)) for c in conds.values()}) > 1]


def per_sample_memory(entry: ModelRecord) -> dict[str, float] | None:
    """Peak step memory split into what grows with the batch (input,
    activations, temporaries: per sample) and what does not (parameters,
    gradients, optimizer state)."""
    meas = entry.get("measurements") or {}
    bd = lookup(meas, "memory", "train_step", "breakdown")
    batch = lookup(meas, "flops", "train_step_batch_size")
    measured = lookup(meas, "memory", "per_sample")
    if measured and measured.get("per_sample_bytes") is not None:  # fitted from two batch sizes
        return {"fixed_bytes": measured["fixed_bytes"], "per_sample_bytes": measured["per_sample_bytes"],
                "batch_size": batch, "source": "measured at two batch sizes"}
    if not bd or not batch:
        return None
    fixed = sum(bd.get(k, 0) for k in ("parameters", "gradients", "optimizer_state"))
    per = sum(bd.get(k, 0) for k in ("input", "activations", "temporaries", "scratch"))
    return {"fixed_bytes": fixed, "per_sample_bytes": per / batch, "batch_size": batch,
            "source": "the breakdown at one batch size"}


def cost_axis(an: dict[str, Any], record: RunRecord, key: str, names: list[str]) -> dict[str, Any]:
    """Whether ``names`` can be ranked on cost ``key``, and by which values.

    Returns values {name: v}, comparable (bool), differs (condition keys that
    differ), and for time axes the spreads and the host load; ``reason`` says
    why no ranking is made."""
    models = an["models"]
    vals = {n: models[n]["costs"][key] for n in names if models[n]["costs"][key] is not None}
    conds = {n: models[n]["conditions"] for n in vals}
    differs = _differing(conds, AXIS_CONDITIONS[key])
    out: dict[str, Any] = {"key": key, "values": vals, "differs": differs, "comparable": len(vals) >= 2,
                           "reason": None}
    if key == "peak_memory" and "batch_size" in differs:
        out["per_sample"] = {n: per_sample_memory(record["models"][n]) for n in vals}
        out["comparable"] = False
        out["reason"] = "batch sizes differ"
    if key in TIME_AXES and len(vals) >= 2:
        spreads = {n: time_spread(record["models"][n], key) for n in vals}
        out["spreads"] = spreads
        load = host_load(record, list(vals))
        out["load"] = load
        hard = [d for d in differs if d in ("device", "threads", "measure_threads", "cpu")]
        if load["loaded"]:
            out["comparable"], out["reason"] = False, "loaded"
        elif hard:
            out["comparable"], out["reason"] = False, "conditions"
        elif key == "train_time" and {"epochs", "samples_per_epoch"} & set(differs):
            out["per_sample"] = {n: 1 / statistics.fmean(u["timings"]["samples_per_second"]
                                                         for u in _ok(record["models"][n])) for n in vals}
        if any(s is None or s["low"] is None for s in spreads.values()) and out["comparable"]:
            out["comparable"], out["reason"] = False, "no spread"
        # One unit's epochs share its moment's load: a time winner needs the spread between units (two or more
        # each); with one unit each, models of identical speed were told apart in a third of comparisons.
        if key == "train_time" and out["comparable"] and any(len(_ok(record["models"][n])) < 2 for n in vals):
            out["comparable"], out["reason"] = False, "one unit"
    return out


def time_order(axis: dict[str, Any], a: str, b: str) -> str | None:
    """The model cheaper than the other on a time axis when their measured
    ranges do not overlap; None when they do (or no verdict is allowed)."""
    if not axis["comparable"]:
        return None
    sa, sb = axis["spreads"][a], axis["spreads"][b]
    if "per_sample" in axis:  # scale each range to seconds per training sample
        ka, kb = axis["per_sample"][a] / sa["value"], axis["per_sample"][b] / sb["value"]
    else:
        ka = kb = 1.0
    if sa["high"] * ka < sb["low"] * kb:
        return a
    if sb["high"] * kb < sa["low"] * ka:
        return b
    return None


# Training options that do not change what is learned (where it runs, how it is evaluated in batches).
NOT_RECIPE = ("device", "cuda_graphs", "eval_batch_size", "formulation")


def recipe_differences(record: RunRecord, models: dict[str, dict[str, Any]], a: str, b: str) -> list[str]:
    """The training options (and training-set size) in which a's and b's
    recipes differ: an accuracy difference then belongs to model and recipe together."""
    ra = lookup(record, "config", "train", a) or record["models"][a].get("recipe") or {}
    rb = lookup(record, "config", "train", b) or record["models"][b].get("recipe") or {}
    out = [k for k in ra if k in rb and k not in NOT_RECIPE and ra[k] != rb[k]]
    sa, sb = (models[n]["conditions"].get("samples_per_epoch") for n in (a, b))
    if sa and sb and sa != sb:
        out.append("training images per epoch")
    return out


def time_cheapest(axis: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The models no other model beats on a time axis (their ranges may
    overlap each other), and, for every other model, the lowest-valued model
    whose range lies wholly below its own."""
    names = list(axis["values"])
    vals = axis.get("per_sample") or axis["values"]
    beaten = {}
    for n in names:
        by = [m for m in names if m != n and time_order(axis, m, n) == m]
        if by:
            beaten[n] = min(by, key=lambda m: vals[m])
    return [n for n in names if n not in beaten], beaten


def _incomplete(record: RunRecord, models: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    names = list(dict.fromkeys([*(lookup(record, "config", "models") or []), *record.get("models", {})]))
    expected = finished = 0
    no_data, partial = [], {}
    for n in names:
        seeds = expected_seeds(record, n) if n in record.get("models", {}) else \
            list(lookup(record, "config", "seeds") or []) if isinstance(lookup(record, "config", "seeds"), list) \
            else []
        done = models[n]["seeds"] if n in models else []
        expected += max(len(seeds), len(done))
        finished += len(done)
        if not done:
            no_data.append(n)
        elif missing := [s for s in seeds if s not in done]:
            partial[n] = missing
    if not no_data and not partial:
        return None
    failed = {n: [f["seed"] for f in m["failed"]] for n, m in models.items() if m["failed"]}
    return {"expected": expected, "finished": finished, "no_data": no_data, "partial": partial, "failed": failed}


def analyze(record: RunRecord, alpha: float = 0.05) -> dict[str, Any]:
    n_test = lookup(record, "dataset", "test_samples") or 0
    models: dict[str, dict[str, Any]] = {}
    for name, entry in record.get("models", {}).items():
        ok = _ok(entry)
        accs = [u["test"]["accuracy"] for u in ok]
        losses = [u["test"]["loss"] for u in ok]
        correct = correctness_by_seed(record, name)
        models[name] = {
            "accuracy": accuracy_summary(accs, n_test, correct=correct[0] if correct else None),
            "loss": {"mean": statistics.fmean(losses) if losses else math.nan,
                     "std": statistics.stdev(losses) if len(losses) > 1 else 0.0, "n": len(losses)},
            "costs": model_costs(entry),
            "seeds": [u["seed"] for u in ok],
            "failed": [{"seed": u.get("seed"), "error": u.get("error", "")}
                       for u in entry.get("units", []) if u.get("status") != "ok"],
            "conditions": conditions(record, name),
        }
    ranked = sorted((n for n in models if models[n]["accuracy"]["n"]),
                    key=lambda n: -models[n]["accuracy"]["mean"])
    pairs = []
    for a, b in itertools.combinations(ranked, 2):
        ca, cb = correctness_by_seed(record, a), correctness_by_seed(record, b)
        if ca is not None and cb is not None:
            pair = compare_pair(a, ca[0], b, cb[0], alpha, ca[1], cb[1])
            pair["recipe_differs"] = recipe_differences(record, models, a, b)
            pairs.append(pair)
    an: dict[str, Any] = {"models": models, "ranked": ranked, "pairs": pairs, "alpha": alpha,
                          "rule": verdict_rule(alpha), "incomplete": _incomplete(record, models)}
    with_costs = [n for n in models if any(v is not None for v in models[n]["costs"].values())]
    an["axes"] = {key: cost_axis(an, record, key, with_costs) for key, _, _ in COST_AXES}
    # Time verdicts are made among the models with accuracy (ranked); recompute for them.
    with_accuracy = [n for n in models if n in ranked]  # record order
    an["time_axes"] = {key: cost_axis(an, record, key, with_accuracy) for key in TIME_AXES}
    an["host"] = host_load(record, list(models))
    pareto, fronts = {}, {}
    for key, _label, _kind in COST_AXES:
        axis = an["time_axes"][key] if key in TIME_AXES else cost_axis(an, record, key, with_accuracy)
        if axis["values"] and (axis["comparable"] or len(axis["values"]) == 1):
            fronts[key] = verdict_front(an, key, axis)
            pareto[key] = fronts[key]["front"]
    an["pareto"] = pareto
    an["fronts"] = fronts
    return an
