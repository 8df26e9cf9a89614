"""The report's content, built from a run record alone, as document blocks
(rendered to report.md and report.html by archbench.report.document)."""

from __future__ import annotations

import json
import math
from typing import Any

from archbench.records import ModelRecord, RunRecord, lookup
from archbench.report.analysis import COST_AXES, analyze
from archbench.report.document import Bullets, Heading, Image, Para, Pre, Table
from archbench.report.units import fmt_bytes, fmt_count, fmt_pct, fmt_seconds, fmt_si

TABLE_HEAD = ("Model", "Test accuracy", "Trainable params", "Saved size (safetensors)",
              "FLOPs/sample (inference)", "FLOPs/sample (training)", "Peak training memory", "Train time")

KIND_FMT = {"count": fmt_count, "bytes": fmt_bytes, "flops": lambda v: fmt_si(v, "FLOPs"),
            "seconds": fmt_seconds}
AXIS_WORDS = {  # noun phrase for ratios: "4.1× fewer parameters"
    "params": ("more", "fewer", "parameters"),
    "saved_bytes": ("larger", "smaller", "saved file"),
    "flops_inference": ("more", "fewer", "FLOPs per inference"),
    "flops_train": ("more", "fewer", "FLOPs per training sample"),
    "peak_memory": ("more", "less", "peak training memory"),
    "latency": ("higher", "lower", "inference latency"),
    "train_time": ("more", "less", "train time"),
}


def _verified_note(ds: dict) -> str:
    if ds.get("verification") and ds.get("verified"):
        return f" (verified: {ds['verification']})."
    return " (SHA-256 verified)." if ds.get("verified_sha256") else " (not verified)."


def fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def fmt_pp(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def _acc_cell(a: dict, failed: int) -> str:
    if not a.get("n"):
        return "failed" if failed else "n/a"
    ci = a["ci"]
    if a["n"] == 1:
        return f"{100 * a['mean']:.2f} % (95 % CI {100 * ci['low']:.2f}–{100 * ci['high']:.2f}, 1 run)"
    return (f"{100 * a['mean']:.2f} % ± {100 * a['std']:.2f} (95 % CI {100 * ci['low']:.2f}–"
            f"{100 * ci['high']:.2f}, n={a['n']})")


def flops_partial(entry: ModelRecord | dict) -> dict[str, bool]:
    """Which FLOP figures of a model miss ops that have no formula
    ({"forward": ..., "train_step": ...}); a record written before this
    was recorded derives it from its lists of uncounted ops."""
    fl = lookup(entry, "measurements", "flops") or {}
    stored = fl.get("partial") or {}
    return {"forward": bool(stored.get("forward", fl.get("forward_uncounted_ops"))),
            "train_step": bool(stored.get("train_step", fl.get("uncounted_ops")))}


def _flops_cell(value: Any, partial: bool) -> str:
    return fmt_si(value, "FLOPs") + (" (partial)" if partial and value is not None else "")


def comparison_rows(record: RunRecord, analysis: dict[str, Any] | None = None) -> list[tuple[str, ...]]:
    analysis = analysis or analyze(record, resamples=200)
    rows: list[tuple[str, ...]] = []
    for name, s in analysis["models"].items():
        c = s["costs"]
        partial = flops_partial(record["models"].get(name) or {})
        rows.append((name, _acc_cell(s["accuracy"], len(s["failed"])), fmt_count(c["params"]),
                     fmt_bytes(c["saved_bytes"]), _flops_cell(c["flops_inference"], partial["forward"]),
                     _flops_cell(c["flops_train"], partial["train_step"]), fmt_bytes(c["peak_memory"]),
                     fmt_seconds(c["train_time"])))
    return rows


def text_table(head, rows) -> str:
    """A plain-text table for terminals."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _ratio_phrase(key: str, a: float, b: float) -> str | None:
    """How model A compares with B on a cost axis, in words."""
    if not a or not b or any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return None
    more, less, noun = AXIS_WORDS[key]
    r = a / b
    if abs(r - 1) < 0.005:
        return f"the same {noun}"
    return f"{r:.2f}× {more} {noun}" if r > 1 else f"{1 / r:.2f}× {less} {noun}"


def accuracy_conclusions(an: dict) -> list:
    ranked, models, pairs = an["ranked"], an["models"], an["pairs"]
    if not ranked:
        return [Para("No model finished a unit, so nothing can be concluded about accuracy.")]
    if len(ranked) == 1:
        a = models[ranked[0]]["accuracy"]
        return [Para(f"Only **{ranked[0]}** finished: {100 * a['mean']:.2f} % "
                     f"(95 % CI {100 * a['ci']['low']:.2f}–{100 * a['ci']['high']:.2f} %).")]
    blocks: list[Para | Bullets] = []
    top = ranked[0]
    beaten = [p for p in pairs if p["a"] == top and p["significant"]]
    rivals = [p["b"] for p in pairs if p["a"] == top and not p["significant"]]
    if len(beaten) == len(ranked) - 1:
        blocks.append(Para(f"**{top}** is the most accurate, significantly ahead of every other model "
                           f"(α = {an['alpha']})."))
    else:
        blocks.append(Para(f"**{top}** has the highest mean accuracy, but is not significantly ahead of "
                           f"{', '.join(rivals)} (α = {an['alpha']}): "
                           f"{'that difference is' if len(rivals) == 1 else 'those differences are'} "
                           "within the noise."))
    items = []
    for p in pairs:
        ci = p["difference_ci"]
        mc = p["mcnemar_pooled"]
        detail = (f"{fmt_pp(p['difference'])} (95 % CI {fmt_pp(ci['low'])} to {fmt_pp(ci['high'])}); exact McNemar "
                  f"p = {fmt_p(mc['p_value'])} on {fmt_count(mc['b'])} vs {fmt_count(mc['c'])} test images that only "
                  f"one of them got right, pooled over {p['pairs']} seed pair{'s' if p['pairs'] != 1 else ''}")
        if p["significant"]:
            items.append(f"**{p['winner']}** is more accurate than {p['b'] if p['winner'] == p['a'] else p['a']}: "
                         + detail + ".")
        else:
            items.append(f"{p['a']} vs {p['b']}: no significant difference — " + detail + ".")
    if items:
        blocks.append(Bullets(items))
    return blocks


def cost_conclusions(an: dict) -> list:
    models = an["models"]
    items = []
    for key, label, kind in COST_AXES:
        vals = {n: s["costs"][key] for n, s in models.items() if s["costs"][key] is not None}
        if len(vals) < 2:
            continue
        low = min(vals.values())
        best = [n for n, v in vals.items() if v <= low * 1.005]
        others = [f"{n}: {_ratio_phrase(key, v, low)}" for n, v in vals.items() if n not in best]
        listing = ", ".join(f"{n} {KIND_FMT[kind](v)}" for n, v in vals.items())
        cheapest = ", ".join(f"**{n}**" for n in best) + (" (tied)" if len(best) > 1 else "")
        items.append(f"**{label[0].upper() + label[1:]}**: {listing} — cheapest: {cheapest}"
                     + (f"; {'; '.join(others)}" if others else "") + ".")
    return [Bullets(items)] if items else [Para("Fewer than two models have measurements to compare.")]


def tradeoff_conclusions(an: dict) -> list:
    models, items = an["models"], []
    for p in an["pairs"]:
        a, b = p["a"], p["b"]
        phrases = [ph for key, _, _ in COST_AXES
                   if (ph := _ratio_phrase(key, models[a]["costs"][key], models[b]["costs"][key]))]
        verdict = "significant" if p["significant"] else "not significant"
        items.append(f"**{a}** vs {b}: {', '.join(phrases)}; {fmt_pp(p['difference'])} accuracy "
                     f"(p = {fmt_p(p['mcnemar_pooled']['p_value'])}, {verdict}).")
    blocks: list[Para | Bullets] = [Bullets(items)] if items else []
    pareto_items = []
    for key, label, _ in COST_AXES:
        front = an["pareto"].get(key)
        if front:
            dominated = [n for n in an["ranked"] if n not in front]
            pareto_items.append(f"accuracy vs {label}: **{', '.join(front)}**"
                                + (f" (dominated: {', '.join(dominated)})" if dominated else ""))
    if pareto_items:
        blocks += [Para("Pareto-optimal models (no other model is both at least as accurate and at most as "
                        "costly, by mean accuracy):"), Bullets(pareto_items)]
    return blocks


# Training options always shown in the recipe table (others only where some model differs from the default).
CORE_TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "precision")


def recipe_blocks(cfg: dict) -> list:
    """Each model's training recipe as it was resolved, every value with its
    source (cli, api, file, file:model, recipe, default)."""
    from archbench.config import TRAIN_DEFAULTS

    train = cfg.get("train") or {}
    if not train:
        return []
    sources = (cfg.get("sources") or {}).get("train") or {}
    models = list(train)
    keys = [k for k in TRAIN_DEFAULTS if any(k in train[m] for m in models)
            and (k in CORE_TRAIN_KEYS or any(train[m].get(k, TRAIN_DEFAULTS[k]) != TRAIN_DEFAULTS[k] for m in models))]
    rows = []
    for k in keys:
        cells = []
        for m in models:
            src = (sources.get(m) or {}).get(k)
            cells.append(f"{train[m][k]}" + (f" ({src})" if src and src != "default" else "") if k in train[m]
                         else "–")
        rows.append((k, *cells))
    same = all(train[m] == train[models[0]] for m in models)
    intro = ("Training recipe (the same for every model; in brackets where a value came from when not the "
             "default):" if same else
             "Training recipes differ between models; each model's own, with where each value came from "
             "when not the default:")
    blocks: list = [Para(intro), Table(("Option", *models), rows)]
    notes = cfg.get("notes") or []
    if notes:
        blocks.append(Bullets(list(notes)))
    return blocks


def build_blocks(record: RunRecord, analysis: dict[str, Any] | None = None,
                 plots: list[tuple[str, str]] | None = None) -> list:
    an = analysis or analyze(record)
    cfg = record.get("config", {})
    ds = record.get("dataset", {})
    blocks: list = [Heading(1, f"archbench run `{record.get('name', '?')}`")]
    runs = record.get("merged_from")
    if runs:
        blocks.append(Para("Merged from runs: " + ", ".join(f"`{r}`" for r in runs) + "."))
    blocks += [
        Para(f"Dataset **{ds.get('name', '?')}**: {fmt_count(ds.get('train_samples'))} train / "
             f"{fmt_count(ds.get('test_samples'))} test images"
             + _verified_note(ds)
             + f" Seeds {cfg.get('seeds')}, device {record.get('device', '?')}."),
        *recipe_blocks(cfg),
        Heading(2, "Comparison"),
        Table(TABLE_HEAD, comparison_rows(record, an)),
        Para("Test accuracy: mean ± sample standard deviation over seeds, with a 95 % interval (Student t "
             "over seeds; for a single run, the Wilson binomial interval over the test images). FLOPs count "
             "matrix-multiply and convolution arithmetic (1 multiply-accumulate = 2 FLOPs); training FLOPs are "
             "one forward + backward step divided by the batch size. Peak training memory is measured over "
             "one steady-state step. Train time covers the training steps only."),
        Heading(2, "Which model is more accurate?"),
        *accuracy_conclusions(an),
        Heading(2, "Which model is cheaper?"),
        *cost_conclusions(an),
        Heading(2, "The trade-off"),
        *tradeoff_conclusions(an),
    ]
    failed = [f"{n}, seed {f['seed']}: {f['error']}" for n, s in an["models"].items() for f in s["failed"]]
    failed += [f"{n}, measurements: {e['measurement_error']}" for n, e in record.get("models", {}).items()
               if e.get("measurement_error")]
    if failed:
        blocks += [Heading(2, "Failed units"), Bullets(failed)]
    if plots:
        blocks.append(Heading(2, "Plots"))
        blocks += [Image(path, alt) for path, alt in plots]
    blocks.append(Heading(2, "Per model"))
    for name, entry in record.get("models", {}).items():
        blocks += _model_section(name, entry)
    env = record.get("environment", {})
    blocks += [Heading(2, "Environment"),
               Para(", ".join(f"{k}: {v}" for k, v in env.items() if v is not None)),
               Heading(2, "Configuration"),
               Pre(json.dumps(cfg, indent=1, sort_keys=True))]
    return blocks


def _uncounted_text(ops: dict | None) -> str:
    """What a partial FLOP figure leaves out: the ops with no formula."""
    listed = ", ".join(f"`{k}` ×{v}" for k, v in sorted((ops or {}).items()))
    return f"these ops ran and are not counted (no formula): {listed or 'not recorded'}"


def _model_section(name: str, entry: ModelRecord) -> list:
    meas = entry.get("measurements") or {}
    blocks: list = [Heading(3, name)]
    if entry.get("description"):
        blocks.append(Para(entry["description"]))
    if meas:
        fl, mem, p = meas["flops"], meas["memory"]["train_step"], meas["params"]
        sizes = meas["saved_size_bytes"]
        partial = flops_partial(entry)
        items = [
            f"Parameters: {fmt_count(p['trainable'])} trainable, {fmt_count(p['non_trainable'])} non-trainable; "
            f"raw weights {fmt_bytes(p['raw_weight_bytes'])}.",
            "Saved files: " + ", ".join(f"{k} {fmt_bytes(v)} ({fmt_count(v)} B)" for k, v in sizes.items()
                                        if isinstance(v, int))
            + (f"; ONNX not measured: {sizes['onnx_note']}" if sizes.get("onnx_note") else "") + ".",
            f"Inference: {fmt_count(fl['forward_macs_per_sample'])} MACs = {fmt_count(fl['forward_per_sample'])} "
            f"matmul/conv FLOPs per sample"
            + (f", plus {fmt_count(fl['forward_other_per_sample'])} other FLOPs (bias, activations, pooling)"
               if "forward_other_per_sample" in fl else "")
            + (" — partial: " + _uncounted_text(fl.get("forward_uncounted_ops") or fl.get("uncounted_ops"))
               if partial["forward"] else "") + ".",
            f"Training step (batch {fl['train_step_batch_size']}): {fmt_count(fl['train_step'])} matmul/conv FLOPs "
            f"(forward {fmt_count(fl['train_step_forward'])}, backward {fmt_count(fl['train_step_backward'])})"
            + (f", plus {fmt_count(fl['train_step_other'])} other FLOPs including the Adam update"
               if "train_step_other" in fl else "")
            + (" — partial: " + _uncounted_text(fl.get("uncounted_ops")) if partial["train_step"] else "") + ".",
        ]
        if "per_run" in fl:
            items.append(f"Whole run: {fmt_si(fl['per_run']['matmul_conv'], 'FLOPs')} matmul/conv + "
                         f"{fmt_si(fl['per_run']['other'], 'FLOPs')} other over "
                         f"{fmt_count(fl['per_run']['steps'])} steps.")
        items.append(
            f"Peak training-step memory {fmt_bytes(mem['peak_bytes'])} ("
            + ", ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in mem["breakdown"].items()) + ")"
            + (f"; first step {fmt_bytes(meas['memory']['first_step']['peak_bytes'])}"
               if "first_step" in meas["memory"] else "")
            + f". The seed notebook's estimate, 4 × params, would say "
            f"{fmt_bytes(meas['memory']['estimate']['params_grads_adam_bytes'])}.")
        if mem.get("cuda_allocator_peak_bytes") is not None:
            items.append(f"CUDA allocator peak during the step: {fmt_bytes(mem['cuda_allocator_peak_bytes'])} "
                         "(includes cuBLAS/cuDNN workspaces).")
        if "speed" in meas:
            lat = meas["speed"]["inference_latency_batch1"]
            thr = meas["speed"]["inference_throughput_batch1024"]
            items.append(f"Inference latency at batch 1: p50 {fmt_seconds(lat['p50_seconds'])}, p99 "
                         f"{fmt_seconds(lat['p99_seconds'])}; throughput at batch 1024: "
                         f"{thr['items_per_second']:,.0f} samples/s.")
        blocks.append(Bullets(items))
    rows: list[tuple[str, ...]] = []
    for u in entry.get("units", []):
        if u.get("status") != "ok":
            rows.append((str(u.get("seed")), "failed: " + u.get("error", "?"), "", "", ""))
            continue
        rows.append((str(u["seed"]), fmt_pct(u["test"]["accuracy"]), f"{u['test']['loss']:.4f}",
                     fmt_seconds(u["timings"]["train_seconds"]), f"{u['timings']['samples_per_second']:,.0f}"))
    if rows:
        blocks.append(Table(("Seed", "Test accuracy", "Test loss", "Train time", "Samples/s"), rows))
    return blocks
