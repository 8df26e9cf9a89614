"""The report's content, built from a run record alone, as document blocks
(rendered to report.md and report.html by archbench.report.document).

Every sentence is generated from :func:`archbench.report.analysis.analyze`;
a claim is printed only where the analysis allows it (an accuracy verdict
under the rule of docs/statistics.md, a cost ranking under like-for-like
conditions, a time ranking beyond the measured spread on an unloaded host).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from typing import Any

from archbench.records import ModelRecord, RunRecord, lookup
from archbench.report.analysis import (
    CONDITION_WORDS,
    COST_AXES,
    MEASURED_OPTIMIZER,
    MEASURED_PRECISION,
    TIME_AXES,
    analyze,
    source_run,
    time_cheapest,
    time_order,
)
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
AXIS_LABEL = {key: label for key, label, _ in COST_AXES}
AXIS_KIND = {key: kind for key, _, kind in COST_AXES}
MORE_SEEDS = "0,1,2,3,4"


def _verified_note(ds: dict) -> str:
    if ds.get("verification") and ds.get("verified"):
        return f" (verified: {ds['verification']})."
    return " (SHA-256 verified)." if ds.get("verified_sha256") else " (not verified)."


def fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def fmt_pp(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def _names(names: list[str]) -> str:
    """a, b and c"""
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _in_order(an: dict, names) -> list[str]:
    """``names`` in the record's model order."""
    return [n for n in an["models"] if n in set(names)]


def _acc_cell(a: dict, failed: int) -> str:
    if not a.get("n"):
        return "failed" if failed else "no finished unit"
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
    analysis = analysis or analyze(record)
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


# --- accuracy -------------------------------------------------------------------------

def seeds_command(record: RunRecord, names: list[str]) -> str:
    """The `archbench run` command that trains ``names`` over 5 seeds, with
    the study options this run was given (what measures training variance)."""
    from archbench.config import TRAIN_KEYS

    cfg = record.get("config") or {}
    order = list(record.get("models", {}))
    names = sorted(names, key=lambda n: order.index(n) if n in order else len(order))
    refs = list(dict.fromkeys(n.rsplit("@", 1)[0] if source_run(record, n) and "@" in n else n for n in names))
    parts = ["archbench", "run", "--models", ",".join(refs), "--seeds", MORE_SEEDS]
    ds = cfg.get("dataset")
    if isinstance(ds, str) and ds != "fashion-mnist":
        parts += ["--dataset", ds]
    for key in ("train_limit", "test_limit", "val_split"):
        if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
            parts += ["--" + key.replace("_", "-"), str(cfg[key])]
    train = cfg.get("train") or {}
    sources = lookup(cfg, "sources", "train") or {}
    for key in TRAIN_KEYS:
        given = {str((train.get(n) or {}).get(key)) for n in names
                 if (sources.get(n) or {}).get(key) in ("cli", "api", "file", "file:model")}
        values = {str((train.get(n) or {}).get(key)) for n in names}
        if given and len(values) == 1:
            v = next(iter(values))
            flag = "--" + key.replace("_", "-")
            if v in ("True", "False"):
                parts.append(flag if v == "True" else "--no-" + key.replace("_", "-"))
            else:
                parts += [flag, v]
    return "`" + " ".join(shlex.quote(p) for p in parts) + "`"  # pasteable: a path with spaces stays one word


def _pair_detail(p: dict, n_test: int) -> str:
    ci = p["difference_ci"]
    a, b = p["a"], p["b"]
    out = f"{fmt_pp(p['difference'])} (95 % CI {fmt_pp(ci['low'])} to {fmt_pp(ci['high'])}"
    if p["scope"] == "seeds and test images":
        out += (f"; p = {fmt_p(p['p_value'])}, {p['df']:.1f} df); standard error {100 * p['se']:.2f} pp, of which "
                f"training randomness {100 * p['se_training']:.2f} pp ({p['seeds_a']} + {p['seeds_b']} seeds) and "
                f"test-set sampling {100 * p['se_test_images']:.2f} pp ({fmt_count(n_test)} images)")
    else:
        out += f"; p = {fmt_p(p['p_value'])}, {p['test']})"
    poi = p.get("probability_of_improvement")
    if poi:
        out += f"; probability of improvement of {a} over {b} {poi['value']:.2f} ({poi['pairs']} seed pairs)"
    seeds = [f"seed {s['seed']}: {fmt_pp(s['difference'])}, p = {fmt_p(s['p_value'])} "
             f"({fmt_count(s['b'])} vs {fmt_count(s['c'])})" for s in p["mcnemar_per_seed"]]
    out += _recipe_note(p)
    if seeds:
        out += (f". Exact McNemar per seed (images only {a} vs only {b} got right): " + "; ".join(seeds))
    return out + "."


def accuracy_conclusions(an: dict, record: RunRecord) -> list:
    ranked, models, pairs = an["ranked"], an["models"], an["pairs"]
    n_test = lookup(record, "dataset", "test_samples") or 0
    blocks: list[Para | Bullets] = [Para("Rule: " + an["rule"])]
    no_data = [n for n in models if not models[n]["accuracy"]["n"]]
    if not ranked:
        return blocks + [Para("No model finished a unit, so nothing can be concluded about accuracy.")]
    if len(ranked) == 1:
        a = models[ranked[0]]["accuracy"]
        return blocks + [Para(f"Only **{ranked[0]}** finished a unit: {100 * a['mean']:.2f} % "
                              f"(95 % CI {100 * a['ci']['low']:.2f}–{100 * a['ci']['high']:.2f} %); "
                              "there is nothing to compare it with.")]
    top = ranked[0]
    among = f" of the {len(ranked)} models with finished units" if no_data else ""
    top_pairs = [p for p in pairs if top in (p["a"], p["b"])]
    beaten = [p for p in top_pairs if p["winner"] == top and not p["unmeasured"]]
    one_seed = [p for p in top_pairs if p["unmeasured"]]
    if len(beaten) == len(ranked) - 1:
        blocks.append(Para(f"**{top}** is the most accurate{among}, ahead of "
                           f"{'every other model' if len(ranked) > 2 else ranked[1]} beyond both training "
                           f"randomness and test-set noise (α = {an['alpha']})."))
    elif one_seed:
        blocks.append(Para(f"**{top}** has the highest accuracy{among}, but with one seed for "
                           f"{_names(_in_order(an, {u for p in one_seed for u in p['unmeasured']}))} training "
                           "variance is "
                           "unmeasured: the comparisons below cover test-set noise only and say nothing certain "
                           "about the architectures. " + seeds_command(record, ranked) + " measures it."))
    else:
        rivals = [p["b"] if p["a"] == top else p["a"] for p in top_pairs if not p["significant"]]
        blocks.append(Para(f"**{top}** has the highest mean accuracy{among}, but is not significantly ahead of "
                           f"{_names(rivals)} (α = {an['alpha']}): "
                           f"{'that difference is' if len(rivals) == 1 else 'those differences are'} within the "
                           "noise of training randomness and test-set sampling."))
    items = []
    for p in pairs:
        other = (p["b"] if p["winner"] == p["a"] else p["a"]) if p["winner"] else None
        if p["winner"] and p["unmeasured"]:
            items.append(f"On these trained models, **{p['winner']}** scored higher than {other} on the test set "
                         f"(training variance of {_names(p['unmeasured'])} unmeasured): " + _pair_detail(p, n_test))
        elif p["winner"]:
            items.append(f"**{p['winner']}** is more accurate than {other}: " + _pair_detail(p, n_test))
        else:
            items.append(f"{p['a']} vs {p['b']}: no significant difference — " + _pair_detail(p, n_test))
    if items:
        blocks.append(Bullets(items))
    missing = (an["incomplete"] or {}).get("no_data") or no_data
    if missing:
        blocks.append(Para(f"No claim is made about {_names(missing)}: no finished unit."))
    return blocks


# --- costs ----------------------------------------------------------------------------

def _cond_listing(an: dict, names: list[str], key: str) -> str:
    return ", ".join(f"{n} {an['models'][n]['conditions'].get(key)}" for n in names)


def _measured_under(an: dict, axis: dict) -> str:
    """The conditions an axis was measured under, or which of them differ."""
    names = list(axis["values"])
    if not names:
        return ""
    c0 = an["models"][names[0]]["conditions"]
    key = axis["key"]
    differ = [f"{CONDITION_WORDS[k]} differ ({_cond_listing(an, names, k)})" for k in axis["differs"]]
    if key in ("flops_train",):
        same = "" if differ else f"one training step at batch {c0['batch_size']}, divided by the batch size"
        if differ:
            differ.append("matmul/conv FLOPs per sample do not depend on the batch size")
    elif key == "peak_memory":
        same_keys = [k for k in ("memory_precision", "memory_optimizer") if k not in axis["differs"]]
        same = "" if "batch_size" in axis["differs"] else f"one training step at batch {c0['batch_size']}"
        if same_keys:
            same += ("; " if same else "") + ", ".join(str(c0[k]) for k in same_keys) + " for every model"
    elif key == "latency":
        same = "" if differ else (f"batch 1, {c0['measure_threads']} threads" if c0.get("measure_threads")
                                  else "batch 1")
    elif key == "train_time":
        same = "" if differ else (f"{c0['epochs']} epoch{'s' if c0['epochs'] != 1 else ''} of "
                                  f"{c0['samples_per_epoch']} images, batch "
                                  f"{c0['batch_size']}, {c0['precision']}, {c0['optimizer']}, {c0['device']}"
                                  + (f", {c0['threads']} threads" if c0.get("threads") else ""))
    else:
        return ""
    return "; ".join(x for x in [same, *differ] if x)


def _recipe_mismatch(an: dict, names: list[str]) -> str:
    """Models whose recipe trains otherwise than the memory/FLOP measurement steps."""
    odd = [f"{n} trains in {c['precision']} with {c['optimizer']}" for n in names
           if not (c := an["models"][n]["conditions"]).get("measures_recipe")
           and ((c.get("precision") or MEASURED_PRECISION) != MEASURED_PRECISION
                or (c.get("optimizer") or MEASURED_OPTIMIZER).lower() != MEASURED_OPTIMIZER.lower())]
    return ("; " + ", ".join(odd) + ", which this measurement does not reflect") if odd else ""


def _time_range(axis: dict, n: str) -> str:
    """The measured range of model n on a time axis, per training sample where the axis compares so."""
    s = axis["spreads"][n]
    if not s or s.get("low") is None:
        return "no spread"
    k = axis["per_sample"][n] / s["value"] if "per_sample" in axis else 1.0
    return f"{fmt_seconds(s['low'] * k)}–{fmt_seconds(s['high'] * k)}"


def _load_words(load: dict) -> str:
    return (f"1-minute load average {load['max_load']:.2f} on {load['cores']} usable cores at {load['when']}: "
            "other work competed for the cores")


def time_verdict_text(an: dict, axis: dict) -> str:
    """The cheapest model on a time axis, or why none is named."""
    names = list(axis["values"])
    if axis["reason"] == "loaded":
        return "no winner on time: the machine was loaded (" + _load_words(axis["load"]) + ")"
    if axis["reason"] == "conditions":
        return "no winner: measured under different conditions"
    if axis["reason"] == "no spread":
        return ("no winner: a single timing shows no spread to compare the difference with ("
                + ", ".join(f"{n} {axis['spreads'][n]['source']}" for n in names) + ")")
    ranges = ", ".join(f"{n} {_time_range(axis, n)}" for n in names)
    basis = " per training sample" if "per_sample" in axis else ""
    load = axis.get("load") or {}
    caveat = "" if load.get("recorded") else "; host load not recorded"
    cheapest, beaten = time_cheapest(axis)
    if not beaten:
        return f"no winner: the measured ranges overlap ({ranges}){caveat}"
    vals = axis["per_sample"] if "per_sample" in axis else axis["values"]
    others = [f"{n}: {_ratio_phrase(axis['key'], vals[n], vals[by])}{basis} than {by}" for n, by in beaten.items()]
    group = ", ".join(f"**{n}**" for n in cheapest) + (" (their ranges overlap)" if len(cheapest) > 1 else "")
    return (f"cheapest: {group}{basis}, beyond the measured spread (ranges{basis} {ranges}){caveat}; "
            + "; ".join(others))


def cost_conclusions(an: dict) -> list:
    items = []
    for key, label, kind in COST_AXES:
        axis = an["time_axes"][key] if key in TIME_AXES else an["axes"][key]
        vals = axis["values"]
        if len(vals) < 2:
            continue
        listing = ", ".join(f"{n} {KIND_FMT[kind](v)}" for n, v in vals.items())
        cond = _measured_under(an, axis)
        head = f"**{label[0].upper() + label[1:]}**" + (f" ({cond})" if cond else "") + f": {listing}"
        if key == "peak_memory":
            head += _recipe_mismatch(an, list(vals)) if not axis["differs"] else ""
        if key in TIME_AXES:
            items.append(head + " — " + time_verdict_text(an, axis) + ".")
        elif key == "peak_memory" and axis["reason"] == "batch sizes differ":
            per = {n: v for n, v in axis["per_sample"].items() if v}
            text = head + " — not like for like, so no cheapest peak is named"
            if len(per) >= 2:
                ps = min(per, key=lambda n: per[n]["per_sample_bytes"])
                fx = min(per, key=lambda n: per[n]["fixed_bytes"])
                text += ("; per sample (what grows with the batch, ÷ batch): "
                         + ", ".join(f"{n} {fmt_bytes(v['per_sample_bytes'])}" for n, v in per.items())
                         + f" — least: **{ps}**; fixed (parameters, gradients, optimizer state): "
                         + ", ".join(f"{n} {fmt_bytes(v['fixed_bytes'])}" for n, v in per.items())
                         + f" — least: **{fx}**")
            items.append(text + _recipe_mismatch(an, list(vals)) + ".")
        else:
            low = min(vals.values())
            best = [n for n, v in vals.items() if v <= low * 1.005]
            others = [f"{n}: {_ratio_phrase(key, v, low)}" for n, v in vals.items() if n not in best]
            cheapest = ", ".join(f"**{n}**" for n in best) + (" (tied)" if len(best) > 1 else "")
            items.append(f"{head} — cheapest: {cheapest}" + (f"; {'; '.join(others)}" if others else "") + ".")
    return [Bullets(items)] if items else [Para("Fewer than two models have measurements to compare.")]


def _pair_cost_phrases(an: dict, a: str, b: str) -> list[str]:
    """How a compares with b on every axis where a comparison is allowed."""
    models, out = an["models"], []
    for key, _, _ in COST_AXES:
        if key in TIME_AXES:
            axis = an["time_axes"][key]
            if a in axis["values"] and b in axis["values"] and time_order(axis, a, b) is not None:
                out.append(_ratio_phrase(key, models[a]["costs"][key], models[b]["costs"][key]) or "")
            continue
        axis = an["axes"][key]
        if key == "peak_memory" and axis["reason"] == "batch sizes differ":
            continue
        ph = _ratio_phrase(key, models[a]["costs"][key], models[b]["costs"][key])
        if ph:
            out.append(ph)
    return [p for p in out if p]


def tradeoff_conclusions(an: dict) -> list:
    items = []
    for p in an["pairs"]:
        a, b = p["a"], p["b"]
        phrases = _pair_cost_phrases(an, a, b)
        verdict = ("test-set noise only" if p["unmeasured"] else "significant") if p["significant"] \
            else "not significant"
        items.append(f"**{a}** vs {b}: {', '.join(phrases) or 'no cost compared'}; {fmt_pp(p['difference'])} "
                     f"accuracy (p = {fmt_p(p['p_value'])}, {verdict}).")
    blocks: list[Para | Bullets] = [Bullets(items)] if items else []
    if any(key in TIME_AXES and key not in an["pareto"] for key, _, _ in COST_AXES) and an["pairs"]:
        blocks.append(Para("Time costs appear above only where the difference exceeds the measured spread."))
    pareto_items = []
    for key, label, _ in COST_AXES:
        front = an["pareto"].get(key)
        if front:
            dominated = [n for n in an["ranked"] if n not in front and n in an["axes"][key]["values"]]
            pareto_items.append(f"accuracy vs {label}: **{', '.join(front)}**"
                                + (f" (dominated: {', '.join(dominated)})" if dominated else ""))
    if pareto_items and len(an["ranked"]) > 1:
        blocks += [Para("Pareto-optimal models (no other model is both at least as accurate and at most as "
                        "costly, by mean accuracy; time and memory axes only where comparable):"),
                   Bullets(pareto_items)]
    return blocks


# --- the bottom line --------------------------------------------------------------------

def _recipe_note(pair: dict) -> str:
    if not pair.get("recipe_differs"):
        return ""
    return (f"; their training recipes differ ({', '.join(k.replace('_', ' ') for k in pair['recipe_differs'])}), "
            "so this compares each model with its own recipe")


def _accuracy_sentence(an: dict, record: RunRecord) -> str:
    ranked, models = an["ranked"], an["models"]
    if not ranked:
        return "No model finished a unit, so nothing is known about accuracy."
    if len(ranked) == 1:
        a = models[ranked[0]]["accuracy"]
        return (f"Only **{ranked[0]}** finished: {100 * a['mean']:.2f} % test accuracy "
                f"(95 % CI {100 * a['ci']['low']:.2f}–{100 * a['ci']['high']:.2f} %).")
    top, second = ranked[0], ranked[1]
    pair = next(p for p in an["pairs"] if {p["a"], p["b"]} == {top, second})
    ci = pair["difference_ci"]
    poi = pair["probability_of_improvement"]
    gap = (f"{fmt_pp(pair['difference'])} over {second} (95 % CI {fmt_pp(ci['low'])} to {fmt_pp(ci['high'])}"
           + (f"; probability of improvement {poi['value']:.2f} over {poi['pairs']} seed pairs" if poi else "")
           + ")")
    n_test = fmt_count(lookup(record, "dataset", "test_samples"))
    if pair["unmeasured"]:
        return (f"With one seed for {_names(pair['unmeasured'])}, **{top}** scored {gap} on these {n_test} test "
                "images" + (f" ({'exact McNemar ' if pair['test'].startswith('exact McNemar') else ''}"
                            f"p = {fmt_p(pair['p_value'])})" if pair["significant"] else ", within test-set noise")
                + ", but training variance is unmeasured, so which architecture is more accurate is not "
                  "established.")
    lead = "the most accurate" if len(ranked) > 2 else "more accurate"
    recipe = _recipe_note(pair)
    if all(p["winner"] == top for p in an["pairs"] if top in (p["a"], p["b"])):
        return (f"**{top}** is {lead}: {gap}, with training randomness ({pair['seeds_a']} and "
                f"{pair['seeds_b']} seeds) and test-set sampling ({n_test} images) included{recipe}.")
    who = "No single model is shown the most accurate" if len(ranked) > 2 else \
        "Neither model is shown more accurate"
    return (f"{who}: **{top}** leads by {gap}, within the noise of {pair['seeds_a']} and {pair['seeds_b']} "
            f"seeds and {n_test} test images{recipe}.")


def _undecided_reason(axis: dict) -> str:
    return {"loaded": "the machine was loaded", "batch sizes differ": "batch sizes differ",
            "conditions": "measured under different conditions",
            "no spread": "no spread measured"}.get(axis["reason"], "the measured ranges overlap")


def _cheaper_sentence(an: dict) -> str | None:
    names = [n for n in an["models"] if any(v is not None for v in an["models"][n]["costs"].values())]
    if len(names) < 2:
        return None
    by_winner: dict[tuple[str, ...], list[str]] = {}
    undecided: dict[str, list[str]] = {}
    for key, label, _ in COST_AXES:
        axis = an["time_axes"][key] if key in TIME_AXES else an["axes"][key]
        vals = axis["values"]
        if len(vals) < 2:
            continue
        w: list[str] = []
        if key in TIME_AXES:
            cheapest, beaten = time_cheapest(axis)
            w = cheapest if beaten and axis["comparable"] else []
        elif axis["comparable"]:
            low = min(vals.values())
            w = [n for n, v in vals.items() if v <= low * 1.005]
            if len(w) == len(vals):
                continue  # all the same: nothing to say in one line
        if w:
            by_winner.setdefault(tuple(w), []).append(label)
        else:
            undecided.setdefault(_undecided_reason(axis), []).append(label)
    parts = [_names([f"**{n}**" for n in w]) + (" (tied)" if len(w) > 1 else "") + f" in {_names(labels)}"
             for w, labels in by_winner.items()]
    text = ("Cheapest: " + "; ".join(parts)) if parts else "No model is cheapest on any single cost"
    if undecided:
        text += "; no winner on " + "; ".join(f"{_names(labels)} ({why})" for why, labels in undecided.items())
    return text + "."


def _tradeoff_sentence(an: dict) -> str | None:
    ranked = an["ranked"]
    if len(ranked) < 2:
        return None
    top, second = ranked[0], ranked[1]
    pair = next(p for p in an["pairs"] if {p["a"], p["b"]} == {top, second})
    phrases = _pair_cost_phrases(an, top, second)
    costlier = [ph for ph in phrases if any(ph.split("× ", 1)[-1].startswith(AXIS_WORDS[k][0] + " ")
                                            for k in AXIS_WORDS)]
    cheaper = [ph for ph in phrases if ph not in costlier and not ph.startswith("the same")]
    if pair["winner"] == top and not pair["unmeasured"]:
        if not costlier:
            return (f"Trade-off: none against {second} — **{top}** is more accurate and costs no more on any axis "
                    "compared.")
        return (f"Trade-off: **{top}**'s {fmt_pp(pair['difference'])} over {second} costs {_names(costlier)}"
                + (f", with {_names(cheaper)}" if cheaper else "") + ".")
    if not phrases:
        return None
    if not costlier and not cheaper:
        return (f"Trade-off: none — {top} and {second} cost the same on every axis compared, and their accuracy "
                "difference is not established.")
    return (f"Trade-off: {top} has {_names(costlier + cheaper)} than {second}, for an accuracy difference that is "
            "not established.")


def _caveat_sentence(an: dict, record: RunRecord) -> str | None:
    notes = []
    inc = an["incomplete"]
    if inc:
        notes.append(f"the run is incomplete ({inc['finished']} of {inc['expected']} units finished"
                     + (f"; no data for {_names(inc['no_data'])}" if inc["no_data"] else "") + ")")
    one = _in_order(an, {u for p in an["pairs"] for u in p["unmeasured"]})
    if one:
        notes.append(f"one seed for {_names(one)} leaves training variance unmeasured "
                     f"({seeds_command(record, an['ranked'])} measures it)")
    if an["host"].get("loaded"):
        notes.append("the machine was loaded, so no time winner is called")
    return ("Caveat: " + "; ".join(notes) + ".") if notes else None


def bottom_line(an: dict, record: RunRecord) -> list[str]:
    """2-4 sentences answering the seed notebook's questions: which model is
    more accurate, which is cheaper, the trade-off (and the caveat that limits them)."""
    sentences = [_accuracy_sentence(an, record), _cheaper_sentence(an), _tradeoff_sentence(an),
                 _caveat_sentence(an, record)]
    return [s for s in sentences if s][:4]


# --- provenance --------------------------------------------------------------------------

# Training options always shown in the recipe table (others only where some model differs from the default).
CORE_TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "precision")


def recipe_blocks(cfg: dict, record: RunRecord | None = None) -> list:
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
    if record is not None and record.get("merged_from"):
        rows.append(("run", *[source_run(record, m) or "?" for m in models]))
    for k in ("train_limit", "test_limit"):
        if record is not None and record.get("merged_from"):
            vals = [lookup(record, "configs", source_run(record, m) or "", k) for m in models]
            if any(v is not None for v in vals) and len({str(v) for v in vals}) > 1:
                rows.append((k, *[str(v) if v is not None else "all" for v in vals]))
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


def incomplete_banner(an: dict) -> list:
    inc = an["incomplete"]
    if not inc:
        return []
    parts = [f"**Incomplete run**: {inc['finished']} of {inc['expected']} (model, seed) units finished."]
    if inc["no_data"]:
        parts.append(f"No finished unit for {_names(inc['no_data'])}: nothing is concluded about "
                     f"{'its' if len(inc['no_data']) == 1 else 'their'} accuracy or train time.")
    if inc["partial"]:
        parts.append("Missing seeds: " + "; ".join(f"{n} ({', '.join(str(s) for s in seeds)})"
                                                   for n, seeds in inc["partial"].items()) + ".")
    if inc["failed"]:
        parts.append("Failed units are listed under Failed units.")
    if any(n not in inc["failed"] for n in [*inc["no_data"], *inc["partial"]]):
        parts.append("`archbench run --resume RUN_DIR` finishes an interrupted run.")
    return [Para(" ".join(parts))]


def conditions_table(an: dict) -> list:
    rows: list[tuple[str, ...]] = []
    for n, s in an["models"].items():
        c = s["conditions"]
        if not any(v is not None for v in s["costs"].values()):
            continue
        mem = f"batch {c['batch_size']}, {c['memory_precision']}, {c['memory_optimizer']}"
        lat = "batch 1" + (f", {c['measure_threads']} threads" if c.get("measure_threads") else "")
        train = (f"{c['epochs']} × {c['samples_per_epoch']} images, batch {c['recipe_batch_size']}, "
                 f"{c['precision']}, {c['optimizer']}, {c['formulation']}, {c['device']}"
                 + (f", {c['threads']} threads" if c.get("threads") else "")) if c.get("samples_per_epoch") \
            else "not trained"
        rows.append((n, mem, lat, train))
    if not rows:
        return []
    return [Para("Conditions each cost was measured under (costs compare like for like only where these agree):"),
            Table(("Model", "Memory, training FLOPs", "Latency", "Train time"), rows)]


def timing_blocks(an: dict, record: RunRecord) -> list:
    host = an["host"]
    env = record.get("environment") or {}
    if not host.get("recorded"):
        return [Para("Host load was not recorded in this record (made before archbench recorded it), so whether "
                     "other work competed with the timings is unknown.")]
    units = [(n, u) for n, e in record.get("models", {}).items() for u in e.get("units", []) if u.get("host")]
    envs = record.get("environments") or {"": env}
    cpus = sorted({u["host"]["cpu"] for _, u in units} | {e["cpu"] for e in envs.values() if e.get("cpu")})
    cores = sorted({u["host"]["usable_cpus"] for _, u in units}
                   | {e["usable_cpus"] for e in envs.values() if e.get("usable_cpus")})
    threads = sorted({u["host"]["torch_threads"] for _, u in units})
    loads = [x for _, u in units for x in (u["host"].get("load_start") or [None])[:1]
             + (u["host"].get("load_end") or [None])[:1] if x is not None]
    starts = [f"{e['load_average'][0]:.2f}" + (f" ({r})" if r else "") for r, e in envs.items()
              if e.get("load_average")]
    text = (f"Timings ran on {', '.join(cpus)} with {', '.join(str(c) for c in cores)} usable cores"
            + (f"; units trained with {', '.join(str(t) for t in threads)} PyTorch "
               f"thread{'s' if threads != [1] else ''}" if threads else "")
            + ("; 1-minute load average " if starts or loads else "")
            + "; ".join(([f"at the run's start {', '.join(starts)}"] if starts else [])
                        + ([f"at the units' starts and ends {min(loads):.2f} to {max(loads):.2f}"] if loads else []))
            + ". ")
    text += side_by_side_sentence(record)
    if host["loaded"]:
        text += ("The machine was loaded (" + _load_words(host) + "), so the timings are inflated by an unknown "
                 "amount and no model is called cheaper in time.")
    else:
        text += ("The 1-minute load average never exceeded the usable cores when sampled (no sign of other work "
                 "competing for them).")
    return [Para(text)]


def side_by_side_sentence(record: RunRecord) -> str:
    """Where units trained side by side (in a local pool: each unit records
    it), say so: each one's train time was then measured while another unit
    trained next to it."""
    units = [u for e in record.get("models", {}).values() for u in e.get("units", []) if u.get("status") == "ok"]
    pooled = [u["side_by_side"] for u in units if isinstance(u.get("side_by_side"), dict)]
    if not pooled:
        return ""
    sizes = sorted({int(p.get("jobs") or 0) for p in pooled})
    caps = sorted({int(p.get("threads_cap") or 0) for p in pooled} - {0})
    how = ("as --jobs auto chose from each model's probed training step"
           if all(p.get("chosen_by") == "--jobs auto" for p in pooled) else "")
    which = "All units" if len(pooled) == len(units) else f"{len(pooled)} of the {len(units)} units"
    return (f"{which} trained side by side in worker processes, {' or '.join(map(str, sizes))} at a time"
            + (f" ({how})" if how else "")
            + (f", each with up to {' or '.join(map(str, caps))} thread{'s' if caps != [1] else ''}" if caps else "")
            + ", so each one's train time was measured while another unit trained next to it; the latency, "
            "throughput and step-time costs were measured before training, one model at a time. ")


def missing_class_warnings(ds: dict) -> list[str]:
    """Splits that hold no image of some class (a --train-limit/--test-limit
    takes the first images, and a folder's are ordered by class)."""
    classes = ds.get("classes") or []
    out = []
    for split, counts in (ds.get("class_counts") or {}).items():
        empty = [classes[i] if i < len(classes) else str(i) for i, n in enumerate(counts) if n == 0]
        if empty and sum(counts):
            shown = ", ".join(map(str, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            what = {"train": "the models never saw them", "val": "the validation curves leave them out",
                    "test": "the test accuracy says nothing about them"}.get(split, "")
            out.append(f"The {split} split holds no image of {len(empty)} of {len(counts)} classes ({shown}): "
                       f"{what}" + (" (a --train-limit/--test-limit keeps the first images, in the data's order)"
                                    if split != "val" else ""))
    return out


def data_card_blocks(ds: dict, record: RunRecord) -> list:
    """The data card (shape, classes, balance, identity, split, input
    scaling) and which split the learning curves come from; nothing for
    records made before archbench kept a data card."""
    if not ds.get("class_counts"):
        return []
    parts = []
    shape = ds.get("image_shape")
    if shape:
        parts.append(f"images {' × '.join(map(str, shape))} (C × H × W), {ds.get('num_classes') or '?'} classes")
    balance = ds.get("balance") or {}
    if balance:
        parts.append("class balance (smallest ÷ largest class) " + ", ".join(
            f"{split} {v:.2f}" for split, v in balance.items() if isinstance(v, (int, float))))
    if ds.get("identity_sha256"):
        parts.append(f"identity SHA-256 `{str(ds['identity_sha256'])[:16]}…`")
    norm = ds.get("normalization") or {}
    if norm.get("mean") is not None:
        def fmt(v: object) -> str:
            return ", ".join(f"{x:.3f}" for x in v) if isinstance(v, list) else str(v)

        parts.append(f"inputs {norm.get('applied', 'x / 255')}; per-channel mean {fmt(norm['mean'])} and std "
                     f"{fmt(norm.get('std'))} of the training split only")
    split = (ds.get("split") or {}).get("val") or {}
    if ds.get("val_samples"):
        frac, held, before = split.get("fraction"), int(ds["val_samples"]), split.get("train_before")
        what = f"{fmt_count(held)} validation images"
        if isinstance(before, int) and before:
            what = (f"{fmt_count(held)} of {fmt_count(before)} training images ({100 * held / before:.3g} %) "
                    "held out")
            if isinstance(frac, (int, float)) and abs(held / before - frac) > 0.005:
                what += (f"; --val-split asked for {100 * frac:.3g} %, and each class keeps at least one training "
                         "image and gives at least one validation image where it has two")
        curves = (f"Learning curves are on the validation split ({what}; stratified by class, seed "
                  f"{split.get('seed', '?')}); the test set is evaluated once, after training: every test "
                  "accuracy in this report comes from that single evaluation.")
    else:
        curves = ("No validation split: the per-epoch learning curves are on the test set (as in the seed "
                  "notebook), so a recipe chosen by watching them was chosen on the test set; "
                  "`--val-split 0.1` keeps a validation split for that.")
    configs = record.get("configs") or {}
    splits = {run: c.get("val_split") for run, c in configs.items()}
    if len(set(splits.values())) > 1:  # a comparison of runs made with and without a validation split
        curves = ("The merged runs differ in their splits: " + "; ".join(
            f"`{run}` " + (f"held out a validation split ({100 * v:g} % requested) and drew its curves on it"
                           if v else "had no validation split (curves on the test set)")
            for run, v in splits.items()) + ". Test accuracies come from each run's test set either way; the "
            "learning-curve plot draws each model from its own run's held-out split (see its legend).")
    notes = [str(n).rstrip(".") + "." for n in ds.get("notes") or []]  # what loading left out, and why
    notes += [f"**{w}**" for w in missing_class_warnings(ds)]
    return [Para("Data card: " + "; ".join(parts) + ". " + curves + (" " + " ".join(notes) if notes else ""))]


def build_blocks(record: RunRecord, analysis: dict[str, Any] | None = None,
                 plots: list[tuple[str, str]] | None = None) -> list:
    an = analysis or analyze(record)
    cfg = record.get("config", {})
    ds = record.get("dataset", {})
    blocks: list = [Heading(1, f"archbench run `{record.get('name', '?')}`"), *incomplete_banner(an),
                    Heading(2, "Bottom line"), Para(" ".join(bottom_line(an, record)))]
    runs = record.get("merged_from")
    if runs:
        blocks.append(Para("Merged from runs: " + "; ".join(
            f"`{r}` ({', '.join(m for m in record.get('models', {}) if source_run(record, m) == r) or 'no models'})"
            for r in runs) + ". Each model keeps its own run's recipe, seeds and environment."))
    seeds = cfg.get("seeds")
    seeds_text = (f"Seeds {seeds}" if isinstance(seeds, list) else
                  "Seeds per run: " + "; ".join(f"{r} {v}" for r, v in (seeds or {}).items()))
    per_epoch = {n: s["conditions"]["samples_per_epoch"] for n, s in an["models"].items()
                 if s["conditions"].get("samples_per_epoch")}
    if runs and len(set(per_epoch.values())) > 1:
        train_text = ("train images per epoch differ by run (" + ", ".join(f"{n} {v}" for n, v in per_epoch.items())
                      + "); ")
    else:
        train_text = f"{fmt_count(ds.get('train_samples'))} train / "
        if ds.get("val_samples"):
            train_text += f"{fmt_count(ds.get('val_samples'))} validation / "
    blocks += [
        Para(f"Dataset **{ds.get('name', '?')}**: {train_text}{fmt_count(ds.get('test_samples'))} test images"
             + (", the same for every run" if runs else "")
             + _verified_note(ds)
             + f" {seeds_text}, device {record.get('device', '?')}."),
        *data_card_blocks(ds, record),
        *recipe_blocks(cfg, record),
        Heading(2, "Comparison"),
        Table(TABLE_HEAD, comparison_rows(record, an)),
        Para("Test accuracy: mean ± sample standard deviation over seeds, with a 95 % interval (Student t "
             "over seeds; for a single run, the Wilson binomial interval over the test images). FLOPs count "
             "matrix-multiply and convolution arithmetic (1 multiply-accumulate = 2 FLOPs); training FLOPs are "
             "one forward + backward step divided by the batch size. Peak training memory is measured over "
             "one steady-state step. Train time covers the training steps only."),
        *conditions_table(an),
        Heading(2, "Which model is more accurate?"),
        *accuracy_conclusions(an, record),
        Heading(2, "Which model is cheaper?"),
        *cost_conclusions(an),
        *timing_blocks(an, record),
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
    blocks.append(Heading(2, "Environment"))
    envs = record.get("environments") or {}
    blocks += [Para(f"Run `{run}`: " + _env_text(e)) for run, e in envs.items()] if envs else [Para(_env_text(env))]
    blocks += [Heading(2, "Configuration"), Pre(json.dumps(cfg, indent=1, sort_keys=True))]
    for run, c in (record.get("configs") or {}).items():
        blocks += [Heading(3, f"Configuration of run `{run}`"), Pre(json.dumps(c, indent=1, sort_keys=True))]
    return blocks


def _env_text(env: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None)


def _load_cell(h: dict | None) -> str:
    if not h or not h.get("load_start") or not h.get("load_end"):
        return "n/a"
    return f"{h['load_start'][0]:.2f} → {h['load_end'][0]:.2f} ({h['usable_cpus']} cores)"


def _uncounted_text(ops: dict | None) -> str:
    """What a partial FLOP figure leaves out: the ops with no formula."""
    listed = ", ".join(f"`{k}` ×{v}" for k, v in sorted((ops or {}).items()))
    return f"these ops ran and are not counted (no formula): {listed or 'not recorded'}"


def _views_text(d: dict) -> str:
    """ " (10 test-time views)" where evaluation averages several views."""
    views = d.get("inference_views", d.get("views", 1))
    return f" ({views} test-time views, their logits averaged)" if views and views > 1 else ""


def _step_text(desc: dict | None, batch_size: int) -> str:
    """Which step a cost is of (the trained step's recipe, or a record made
    before the step was recorded: archbench's fp32 lean-Adam step)."""
    if not desc:
        return f"batch {batch_size}, fp32, Adam"
    parts = [f"batch {desc.get('batch_size', batch_size)}", str(desc.get("precision", "fp32")),
             str(desc.get("optimizer", "Adam")).split(" (")[0]]
    if desc.get("formulation"):
        parts.append(str(desc["formulation"]).split(" (")[0] + " formulation")
    parts += [str(desc[k]) for k in ("loss",) if desc.get(k)]
    if desc.get("augmentation"):
        parts.append(f"augmentation: {desc['augmentation']}")
    return ", ".join(parts)


def _latency_text(t: dict) -> str:
    """The median, and p90/p99 only where enough samples support them (else the maximum)."""
    parts = [f"p50 {fmt_seconds(t['p50_seconds'])}"]
    if t.get("min_seconds") is not None:
        parts[0] += f" (min {fmt_seconds(t['min_seconds'])})"
    parts += [f"{q} {fmt_seconds(t[q + '_seconds'])}" for q in ("p90", "p99") if t.get(q + "_seconds") is not None]
    if t.get("p99_seconds") is None and t.get("max_seconds") is not None:
        parts.append(f"max {fmt_seconds(t['max_seconds'])}")
    return ", ".join(parts) + (f" ({fmt_count(t['calls'])} calls)" if "calls" in t else "")


def _memory_detail(mem: dict) -> list[str]:
    out = []
    ps = mem.get("per_sample")
    if ps:
        out.append(f"Training-step memory grows by {fmt_bytes(ps['per_sample_bytes'])} per sample over a fixed "
                   f"{fmt_bytes(ps['fixed_bytes'])} (from the peaks at batch {ps['batch_sizes'][0]} and "
                   f"{ps['batch_sizes'][1]}: extrapolate to other batch sizes).")
    inf = [(mem[k]["batch_size"], mem[k]["peak_bytes"]) for k in ("inference_batch1", "inference_eval_batch")
           if mem.get(k)]
    if inf:
        out.append("Inference peak memory: " + ", ".join(f"{fmt_bytes(b)} at batch {n}" for n, b in inf) + ".")
    return out


def _reference_text(ref: dict) -> str:
    """The plain-PyTorch reference step, to relate archbench's numbers to one's own loop."""
    fl, mem = ref["flops"], ref["memory"]["train_step"]
    text = (f"Plain PyTorch reference step (the model as written, torch.optim.Adam in its default "
            f"implementation, fp32, batch {fl['train_step_batch_size']}; not what was trained): "
            f"{fmt_count(fl['train_step'])} matmul/conv + {fmt_count(fl['train_step_other'])} other FLOPs, peak "
            f"memory {fmt_bytes(mem['peak_bytes'])}")
    if lookup(ref, "speed", "train_step"):
        text += f", step time {_latency_text(ref['speed']['train_step'])}"
    return text + "."


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
            f"Inference{_views_text(fl)}: {fmt_count(fl['forward_macs_per_sample'])} MACs = "
            f"{fmt_count(fl['forward_per_sample'])} matmul/conv FLOPs per sample"
            + (f", plus {fmt_count(fl['forward_other_per_sample'])} other FLOPs (bias, activations, pooling)"
               if "forward_other_per_sample" in fl else "")
            + (" — partial: " + _uncounted_text(fl.get("forward_uncounted_ops") or fl.get("uncounted_ops"))
               if partial["forward"] else "") + ".",
            f"Training step ({_step_text(meas.get('step'), fl['train_step_batch_size'])}): "
            f"{fmt_count(fl['train_step'])} matmul/conv FLOPs "
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
            f"Peak training-step memory at batch {fl['train_step_batch_size']} ("
            + (f"{str(meas['step'].get('precision'))}, {str(meas['step'].get('optimizer')).split(' (')[0]}"
               if meas.get("step") else f"{MEASURED_PRECISION}, {MEASURED_OPTIMIZER}")
            + f") {fmt_bytes(mem['peak_bytes'])} ("
            + ", ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in mem["breakdown"].items()) + ")"
            + (f"; first step {fmt_bytes(meas['memory']['first_step']['peak_bytes'])}"
               if "first_step" in meas["memory"] else "")
            + f". The seed notebook's estimate, 4 × params, would say "
            f"{fmt_bytes(meas['memory']['estimate']['params_grads_adam_bytes'])}.")
        if mem.get("cuda_allocator_peak_bytes") is not None:
            items.append(f"CUDA allocator peak during the step: {fmt_bytes(mem['cuda_allocator_peak_bytes'])} "
                         "(includes cuBLAS/cuDNN workspaces).")
        items += _memory_detail(meas["memory"])
        if meas.get("reference"):
            items.append(_reference_text(meas["reference"]))
        if "speed" in meas:
            lat = meas["speed"]["inference_latency_batch1"]
            thr = meas["speed"]["inference_throughput_batch1024"]
            items.append(f"Inference latency at batch 1{_views_text(lat)}: {_latency_text(lat)}; throughput at "
                         f"batch 1024: {thr['items_per_second']:,.0f} samples/s.")
        blocks.append(Bullets(items))
    rows: list[tuple[str, ...]] = []
    for u in entry.get("units", []):
        if u.get("status") != "ok":
            rows.append((str(u.get("seed")), "failed: " + u.get("error", "?"), "", "", "", "", "", ""))
            continue
        epochs = [h["seconds"] for h in u.get("history") or []]
        rows.append((str(u["seed"]), fmt_pct(u["test"]["accuracy"]), f"{u['test']['loss']:.4f}",
                     fmt_seconds(u["timings"]["train_seconds"]),
                     (fmt_seconds(epochs[0]) if len(set(epochs)) == 1 else
                      f"{fmt_seconds(min(epochs))}–{fmt_seconds(max(epochs))}") if epochs else "n/a",
                     f"{u['timings']['samples_per_second']:,.0f}",
                     str(lookup(u, "host", "torch_threads") or "n/a"), _load_cell(u.get("host"))))
    if rows:
        blocks.append(Table(("Seed", "Test accuracy", "Test loss", "Train time", "Epoch times", "Samples/s",
                             "Threads", "Load (1 min, start → end)"), rows))
    blocks += _time_to_result(entry)
    return blocks


def _time_to_result(entry: ModelRecord) -> list:
    """The wall time from nothing to this model's results, beside its training time."""
    ok = [u for u in entry.get("units", []) if u.get("status") == "ok"]
    measure = entry.get("measure_seconds")
    if not ok or measure is None or any(lookup(u, "timings", "eval_seconds") is None for u in ok):
        return []
    # Seeds trained as one batch (--batch-seeds) share one wall time and one training time: each unit's share.
    batch = [len(lookup(u, "training", "batched_with") or [None]) for u in ok]
    walls = [u["timings"]["wall_seconds"] / k for u, k in zip(ok, batch)]
    train = [u["timings"]["train_seconds"] for u in ok]
    ev = [u["timings"]["eval_seconds"] for u in ok]
    views = lookup(ok[0], "test", "views") or 1
    curve_split = (" of the validation split, then the test set once"
                   if any(h.get("val_acc") is not None for h in ok[0].get("history", [])) else "")
    return [Para(f"Time to result: measuring the costs took {fmt_seconds(measure)}; each unit took "
                 f"{fmt_seconds(statistics.fmean(walls))} on average from start to saved files, of which training "
                 f"{fmt_seconds(statistics.fmean(train))} and evaluation {fmt_seconds(statistics.fmean(ev))} (the "
                 "per-epoch learning curve on one view" + curve_split
                 + (f", the final test on {views} test-time views" if views > 1 else "") + ")"
                 + ("; its seeds trained as one batched model, so wall and training times are each unit's share "
                    "of the batch's" if max(batch) > 1 else "") + ".")]
