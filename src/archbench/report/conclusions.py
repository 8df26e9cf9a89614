"""What the report concludes, from :func:`archbench.report.analysis.analyze`
alone: which model is more accurate, which is cheaper on each cost, the
trade-off between the two, and the bottom line that sums them up.

A claim is printed only where the analysis allows it (an accuracy verdict
under the rule of docs/statistics.md, a cost ranking under like-for-like
conditions, a time ranking beyond the measured spread on an unloaded host).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

from archbench.records import RunRecord, lookup, unit_samples
from archbench.report.analysis import (
    CONDITION_WORDS,
    COST_AXES,
    MEASURED_OPTIMIZER,
    MEASURED_PRECISION,
    TIME_AXES,
    time_cheapest,
    time_order,
)
from archbench.report.document import Bullets, Para
from archbench.report.rerun import seeds_command
from archbench.report.target import epochs_comparison
from archbench.report.tuning import tuned_words, tuning_summary
from archbench.report.units import fmt_bytes, fmt_count, fmt_seconds, fmt_si

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


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a (no test)"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def fmt_pp(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def name_list(names: list[str]) -> str:
    """a, b and c"""
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _in_order(an: dict, names: Iterable[str]) -> list[str]:
    """``names`` in the record's model order."""
    return [n for n in an["models"] if n in set(names)]


def _ratio_phrase(key: str, a: float, b: float) -> str | None:
    """How model A compares with B on a cost axis, in words."""
    if not a or not b or any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return None
    more, less, noun = AXIS_WORDS[key]
    r = a / b
    if abs(r - 1) < 0.005:
        return f"the same {noun}"
    return f"{r:.2f}× {more} {noun}" if r > 1 else f"{1 / r:.2f}× {less} {noun}"


def _recipe_note(pair: dict) -> str:
    if not pair.get("recipe_differs"):
        return ""
    return (f"; their training recipes differ ({', '.join(k.replace('_', ' ') for k in pair['recipe_differs'])}), "
            "so this compares each model with its own recipe")


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
        out += f"; probability of improvement of {a} over {b} " + poi_text(poi)
    seeds = [f"seed {s['seed']}: {fmt_pp(s['difference'])}, p = {fmt_p(s['p_value'])} "
             f"({fmt_count(s['b'])} vs {fmt_count(s['c'])})" for s in p["mcnemar_per_seed"]]
    out += _recipe_note(p)
    if seeds:
        out += (f". Exact McNemar per seed (images only {a} vs only {b} got right): " + "; ".join(seeds))
    return out + "."


def poi_text(poi: dict) -> str:
    """``0.89 (8 of 9 seed pairs; exact Mann-Whitney p = 0.10)``: the value with
    the seed pairs it rests on and how far from 1/2 chance alone takes it."""
    wins = poi.get("wins")
    won = (f"{wins:g} of {poi['pairs']} seed pairs" if wins is not None else f"{poi['pairs']} seed pairs")
    p = poi.get("p_value")
    return f"{poi['value']:.2f} ({won}" + (f"; exact Mann-Whitney p = {fmt_p(p)}" if p is not None else "") + ")"


def seed_noise(an: dict) -> str | None:
    """How far seeds of one architecture fall apart in this run: the seed
    standard deviation of each model with two or more seeds, or None."""
    spread = [(n, m["accuracy"]) for n, m in an["models"].items() if m["accuracy"].get("n", 0) >= 2]
    if not spread:
        return None
    return ", ".join(f"{n} {100 * a['std']:.2f} pp ({a['n']} seeds)" for n, a in spread)


def _one_seed_words(an: dict, record: RunRecord, unmeasured: list[str]) -> str:
    """Why one seed cannot separate architectures, with the training-noise scale or how to measure it."""
    noise = seed_noise(an)
    scale = (f"seeds of one architecture differ in this run by a standard deviation of {noise}" if noise else
             "how far seeds of one architecture differ is not measured in this run; "
             + seeds_command(record, an["ranked"]) + " measures it")
    return (f"one seed for {name_list(unmeasured)} cannot separate architectures, since a second seed of the same "
            f"architecture can land elsewhere ({scale})")


def _time_words(record: RunRecord, budget: dict) -> str:
    """What each model reached in an equal-time comparison (``--match time``): mean steps and epochs over its seeds."""
    each = []
    for m, b in budget["models"].items():
        units = [u for u in lookup(record, "models", m, "units") or [] if u.get("status") == "ok"]
        if not units:
            continue
        steps = sum(float(u["timings"]["steps"]) for u in units) / len(units)
        samples = sum(unit_samples(u) for u in units) / len(units)
        flops = f", {fmt_si(samples * b['flops_per_sample'], 'FLOPs')}" if b.get("flops_per_sample") else ""
        each.append(f"{m} {samples / budget['n_train']:.2f} epochs ({steps:,.0f} steps{flops}"
                    + (", mean over seeds" if len(units) > 1 else "") + ")")
    cpu = lookup(record, "environment", "cpu") or "this machine's CPU"
    shared = any(u.get("side_by_side") for e in record["models"].values() for u in e.get("units", []))
    return (f"at equal training time — {fmt_seconds(budget['budget_seconds'])} of training steps each, on "
            f"{cpu} under the load recorded with each unit (a comparison that belongs to this machine and load"
            + ("; units trained side by side (--jobs), sharing the cores, so a second bought less than alone"
               if shared else "") + "): " + ", ".join(each))


def compute_words(record: RunRecord) -> str | None:
    """What each model trained for in an equal-compute comparison (``--match flops``), or None."""
    budget = record.get("budget")
    if not budget or not budget.get("models"):
        return None
    if budget.get("match") == "time":
        return _time_words(record, budget)
    each = ", ".join(f"{m} {b['epochs']:.2f} epochs ({b['steps']:,} steps, {fmt_si(b['train_flops'], 'FLOPs')})"
                     for m, b in budget["models"].items())
    return (f"at equal training compute — a budget of {fmt_si(budget['budget_flops'], 'FLOPs')} "
            f"(matmul/conv, set by {budget['by']}): {each}")


def _spread_text(s: dict, fmt: Callable[[float], str], n: int) -> str:
    ci = s.get("ci")
    if ci and ci["high"] > ci["low"]:
        return f"{fmt(s['mean'])} (95 % CI {fmt(ci['low'])}–{fmt(ci['high'])}, {n} seeds)"
    if n > 1 and s["max"] > s["min"]:
        return f"{fmt(s['mean'])} ({fmt(s['min'])}–{fmt(s['max'])}, {n} seeds)"
    return fmt(s["mean"]) + (f" ({n} seeds)" if n > 1 else " (1 seed)")


def target_conclusions(tg: dict | None) -> list:
    """Each model's training FLOPs, seconds and epochs to the target accuracy
    (:func:`archbench.report.target.target_costs`)."""
    if not tg:
        return []
    items = []
    for m, r in tg["models"].items():
        if not r["units"]:
            continue
        if not r["reached"]:
            best = f" (final mean {100 * r['best']:.2f} %)" if r.get("best") is not None else ""
            items.append(f"{m}: not reached within its training{best}.")
            continue
        part = f"{r['reached']} of {r['units']} seeds reached it" if r["reached"] < r["units"] else ""
        items.append(f"{m}: {_spread_text(r['flops'], lambda v: fmt_si(v, 'FLOPs'), r['reached'])}, "
                     f"{_spread_text(r['seconds'], fmt_seconds, r['reached'])} of training steps, "
                     f"{_spread_text(r['epochs'], lambda v: f'{v:.2f} epochs', r['reached'])}"
                     + (f"; {part}" if part else "")
                     + ("; at its first evaluation already (an upper bound)" if r["at_first_point"] else "") + ".")
    reached = {m: r["flops"]["mean"] for m, r in tg["models"].items() if r["reached"] and r["reached"] == r["units"]}
    lead = ""
    if len(reached) >= 2:
        low = min(reached, key=lambda m: reached[m])
        lead = f" Fewest training FLOPs to it, by the seeds' means: **{low}**."
    when = "at each eighth of the budget" if tg.get("budget") else "after each epoch"
    return [Para(f"Target: {100 * tg['value']:.2f} % held-out accuracy ({tg['source']}). Cost where each model's "
                 f"learning curve (held-out accuracy {when}) first reaches it, interpolated linearly "
                 "between the evaluations around it:" + lead), Bullets(items)]


def leads_conclusions(leads: list[dict] | None) -> list:
    """Who leads at each eighth of a FLOP budget, and where the established lead changes."""
    if not leads:
        return []
    items = []
    for p in leads:
        accs = ", ".join(f"{m} {100 * a:.2f} % (at " + (fmt_si(p['flops'][m], 'FLOPs') if math.isfinite(p["flops"][m])
                                                      else fmt_seconds(p["seconds"][m])) + ")"
                         for m, a in p["accuracy"].items())
        lead = (f"**{p['leader']}** leads, established" if p["established"] else
                f"{p['leader']} ahead by the means, not established")
        items.append(f"{p['point']}/{p['of']} of the budget: {accs} — {lead}.")
    changes = [(a, b) for a, b in zip(leads, leads[1:])
               if a["established"] and b["established"] and a["leader"] != b["leader"]]
    said = "; ".join(f"from {a['leader']} to {b['leader']} between {a['point']}/{a['of']} and "
                     f"{b['point']}/{b['of']} of the budget" for a, b in changes)
    timed = leads[0].get("match") == "time"
    return [Para("Along the budget (held-out accuracy, mean over seeds, at each model's step nearest the same "
                 f"fraction of the training {'seconds' if timed else 'FLOPs'}; a lead is established where the "
                 "verdict rule calls it):"),
            Bullets(items),
            Para(f"The established lead changes {said}." if changes else
                 "The established lead does not change along the budget.")]


def accuracy_conclusions(an: dict, record: RunRecord) -> list:
    ranked, models, pairs = an["ranked"], an["models"], an["pairs"]
    n_test = lookup(record, "dataset", "test_samples") or 0
    blocks: list[Para | Bullets] = [Para("Rule: " + an["rule"])]
    compute = compute_words(record)
    if compute:
        blocks.append(Para(f"Every model trained {compute}; the verdicts below compare them at that budget, not "
                           "after equal epochs."))
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
        unmeasured = _in_order(an, {u for p in one_seed for u in p["unmeasured"]})
        blocks.append(Para(f"{top} has the highest accuracy{among}, but {_one_seed_words(an, record, unmeasured)}. "
                           "The comparisons below with a model of one seed cover test-set noise only: they are "
                           "about those trained networks, not the architectures."))
    else:
        rivals = [p["b"] if p["a"] == top else p["a"] for p in top_pairs if not p["significant"]]
        blocks.append(Para(f"**{top}** has the highest mean accuracy{among}, but is not significantly ahead of "
                           f"{name_list(rivals)} (α = {an['alpha']}): "
                           f"{'that difference is' if len(rivals) == 1 else 'those differences are'} within the "
                           "noise of training randomness and test-set sampling."))
    items = []
    for p in pairs:
        ahead = p["winner"] or p["observed_winner"]
        other = (p["b"] if ahead == p["a"] else p["a"]) if ahead else None
        if ahead and not p["winner"]:
            items.append(f"On these trained networks, {ahead} scored higher than {other} on the test set "
                         f"(training variance of {name_list(p['unmeasured'])} unmeasured, so nothing is said about "
                         "the architectures): " + _pair_detail(p, n_test))
        elif p["winner"]:
            items.append(f"**{p['winner']}** is more accurate than {other}: " + _pair_detail(p, n_test))
        else:
            items.append(f"{p['a']} vs {p['b']}: no significant difference — " + _pair_detail(p, n_test))
    if items:
        blocks.append(Bullets(items))
    missing = (an["incomplete"] or {}).get("no_data") or no_data
    if missing:
        blocks.append(Para(f"No claim is made about {name_list(missing)}: no finished unit."))
    return blocks


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


def load_words(load: dict) -> str:
    return (f"1-minute load average {load['max_load']:.2f} on {load['cores']} usable cores at {load['when']}: "
            "other work competed for the cores")


def time_verdict_text(an: dict, axis: dict) -> str:
    """The cheapest model on a time axis, or why none is named."""
    names = list(axis["values"])
    if axis["reason"] == "loaded":
        return "no winner on time: the machine was loaded (" + load_words(axis["load"]) + ")"
    if axis["reason"] == "conditions":
        return "no winner: measured under different conditions"
    if axis["reason"] == "one unit":
        return ("no winner: one unit of a model shows no spread between units (its epochs share one moment's "
                "load); two or more seeds per model measure it")
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


def _compared_axes(an: dict) -> Iterator[tuple[str, str, str, dict]]:
    """(key, label, kind, axis) of each cost axis that two or more models
    have values on: the time axes among the models with accuracy."""
    for key, label, kind in COST_AXES:
        axis = an["time_axes"][key] if key in TIME_AXES else an["axes"][key]
        if len(axis["values"]) >= 2:
            yield key, label, kind, axis


def _cheapest(vals: dict) -> list[str]:
    """The models within 0.5 % of the lowest value (a tie)."""
    low = min(vals.values())
    return [n for n, v in vals.items() if v <= low * 1.005]


def _pair(an: dict, a: str, b: str) -> dict:
    return next(p for p in an["pairs"] if {p["a"], p["b"]} == {a, b})


def cost_conclusions(an: dict) -> list:
    items = []
    for key, label, kind, axis in _compared_axes(an):
        vals = axis["values"]
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
            best = _cheapest(vals)
            low = min(vals.values())
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
        verdict = ("test-set noise only: these trained networks" if p["unmeasured"] else "significant") \
            if p["significant"] else "not significant"
        items.append(f"**{a}** vs {b}: {', '.join(phrases) or 'no cost compared'}; {fmt_pp(p['difference'])} "
                     f"accuracy (p = {fmt_p(p['p_value'])}, {verdict}).")
    blocks: list[Para | Bullets] = [Bullets(items)] if items else []
    if any(key in TIME_AXES and key not in an["pareto"] for key, _, _ in COST_AXES) and an["pairs"]:
        blocks.append(Para("Time costs appear above only where the difference exceeds the measured spread."))
    pareto_items = []
    for key, label, _ in COST_AXES:
        fr = (an.get("fronts") or {}).get(key)
        if fr and fr["front"]:
            dominated = [f"{n} (by {by})" for n, by in fr["dominated"].items()]
            close = [f"{a} vs {b}" for a, b in fr["indistinct"]]
            pareto_items.append(f"accuracy vs {label}: **{', '.join(fr['front'])}**"
                                + (f"; dominated: {', '.join(dominated)}" if dominated else "")
                                + (f"; not distinguishable (one leads on both by the means, but the accuracy "
                                   f"difference is not established): {', '.join(close)}" if close else ""))
    if pareto_items and len(an["ranked"]) > 1:
        blocks += [Para("Pareto-optimal models: a model is dominated only by one that is established more "
                        "accurate (the verdict above) and costs no more (on time axes: less, beyond the measured "
                        "spread); time and memory axes only where comparable:"),
                   Bullets(pareto_items)]
    return blocks


def _accuracy_sentence(an: dict, record: RunRecord) -> str:
    ranked, models = an["ranked"], an["models"]
    if not ranked:
        return "No model finished a unit, so nothing is known about accuracy."
    if len(ranked) == 1:
        a = models[ranked[0]]["accuracy"]
        who = (f"Only **{ranked[0]}** finished" if len(models) > 1 else f"One model, **{ranked[0]}**")
        return (f"{who}: {100 * a['mean']:.2f} % test accuracy "
                f"(95 % CI {100 * a['ci']['low']:.2f}–{100 * a['ci']['high']:.2f} %).")
    top, second = ranked[0], ranked[1]
    pair = _pair(an, top, second)
    ci = pair["difference_ci"]
    poi = pair["probability_of_improvement"]
    gap = (f"{fmt_pp(pair['difference'])} over {second} (95 % CI {fmt_pp(ci['low'])} to {fmt_pp(ci['high'])}"
           + (f"; probability of improvement {poi_text(poi)}" if poi else "")
           + ")")
    n_test = fmt_count(lookup(record, "dataset", "test_samples"))
    if pair["unmeasured"]:
        return (f"Which architecture is more accurate is not established: "
                f"{_one_seed_words(an, record, pair['unmeasured'])}. On these {n_test} test "
                f"image{'s' if n_test != '1' else ''} {top} scored "
                f"{fmt_pp(pair['difference'])} against {second}.")
    lead = "the most accurate" if len(ranked) > 2 else "more accurate"
    recipe = _recipe_note(pair)
    rivals = [p for p in an["pairs"] if top in (p["a"], p["b"])]
    if all(p["winner"] == top for p in rivals):
        return (f"**{top}** is {lead}: {gap}, with training randomness ({pair['seeds_a']} and "
                f"{pair['seeds_b']} seeds) and test-set sampling ({n_test} images) included{recipe}.")
    if pair["winner"] == top:  # ahead of the runner-up, not (established) of every other model
        open_ = [(p["b"] if p["a"] == top else p["a"], p) for p in rivals if p["winner"] != top]
        why = "; ".join(f"against {o}: " + ("one seed, so not established" if p["unmeasured"] else
                                              f"{fmt_pp(p['difference'])}, within the noise") for o, p in open_)
        return (f"**{top}** is more accurate than {second}: {gap}, with training randomness and test-set sampling "
                f"included{recipe}; whether it is {lead} is not established ({why}).")
    who = "No single model is shown the most accurate" if len(ranked) > 2 else \
        "Neither model is shown more accurate"
    if fmt_pp(pair["difference"]) in ("+0.00 pp", "-0.00 pp", "0.00 pp"):  # a tie is no lead
        return (f"{who}: **{top}** and **{second}** tie, 0.00 pp apart (95 % CI {fmt_pp(ci['low'])} to "
                f"{fmt_pp(ci['high'])}), within the noise of {pair['seeds_a']} and {pair['seeds_b']} seeds and "
                f"{n_test} test images{recipe}.")
    return (f"{who}: **{top}** leads by {gap}, within the noise of {pair['seeds_a']} and {pair['seeds_b']} "
            f"seeds and {n_test} test images{recipe}.")


def _undecided_reason(axis: dict) -> str:
    return {"loaded": "the machine was loaded", "batch sizes differ": "batch sizes differ",
            "conditions": "measured under different conditions",
            "no spread": "no spread measured", "one unit": "one unit per model"}.get(
                axis["reason"], "the measured ranges overlap")


def _cheaper_sentence(an: dict) -> str | None:
    names = [n for n in an["models"] if any(v is not None for v in an["models"][n]["costs"].values())]
    if len(names) < 2:
        return None
    by_winner: dict[tuple[str, ...], list[str]] = {}
    undecided: dict[str, list[str]] = {}
    for key, label, _, axis in _compared_axes(an):
        vals = axis["values"]
        w: list[str] = []
        if key in TIME_AXES:
            cheapest, beaten = time_cheapest(axis)
            w = cheapest if beaten and axis["comparable"] else []
        elif axis["comparable"]:
            w = _cheapest(vals)
            if len(w) == len(vals):
                continue  # all the same: nothing to say in one line
        if w:
            by_winner.setdefault(tuple(w), []).append(label)
        else:
            undecided.setdefault(_undecided_reason(axis), []).append(label)
    parts = [name_list([f"**{n}**" for n in w]) + (" (tied)" if len(w) > 1 else "") + f" in {name_list(labels)}"
             for w, labels in by_winner.items()]
    text = ("Cheapest: " + "; ".join(parts)) if parts else "No model is cheapest on any single cost"
    if undecided:
        text += "; no winner on " + "; ".join(f"{name_list(labels)} ({why})" for why, labels in undecided.items())
    return text + "."


def _tradeoff_sentence(an: dict) -> str | None:
    ranked = an["ranked"]
    if len(ranked) < 2:
        return None
    top, second = ranked[0], ranked[1]
    pair = _pair(an, top, second)
    phrases = _pair_cost_phrases(an, top, second)
    costlier = [ph for ph in phrases if any(ph.split("× ", 1)[-1].startswith(AXIS_WORDS[k][0] + " ")
                                            for k in AXIS_WORDS)]
    cheaper = [ph for ph in phrases if ph not in costlier and not ph.startswith("the same")]
    if pair["winner"] == top and not pair["unmeasured"]:
        if not costlier:
            return (f"Trade-off: none against {second} — **{top}** is more accurate and costs no more on any axis "
                    "compared.")
        return (f"Trade-off: **{top}**'s {fmt_pp(pair['difference'])} over {second} costs {name_list(costlier)}"
                + (f", with {name_list(cheaper)}" if cheaper else "") + ".")
    if not phrases:
        return None
    if not costlier and not cheaper:
        return (f"Trade-off: none — {top} and {second} cost the same on every axis compared, and their accuracy "
                "difference is not established.")
    return (f"Trade-off: {top} has {name_list(costlier + cheaper)} than {second}, for an accuracy difference that is "
            "not established.")


def _caveat_sentence(an: dict, record: RunRecord, said_seeds: bool = False) -> str | None:
    notes = []
    inc = an["incomplete"]
    if inc:
        notes.append(f"the run is incomplete ({inc['finished']} of {inc['expected']} units finished"
                     + (f"; no data for {name_list(inc['no_data'])}" if inc["no_data"] else "") + ")")
    one = _in_order(an, {u for p in an["pairs"] for u in p["unmeasured"]})
    if one and not said_seeds:
        notes.append(f"one seed for {name_list(one)} leaves training variance unmeasured "
                     f"({seeds_command(record, an['ranked'])} measures it)")
    if an["host"].get("loaded"):
        notes.append("the machine was loaded, so no time winner is called")
    return ("Caveat: " + "; ".join(notes) + ".") if notes else None


def _equal_compute_winner(an: dict) -> str | None:
    """The model the verdicts call more accurate than every other (None: no such model)."""
    ranked = an["ranked"]
    if len(ranked) < 2:
        return None
    top = ranked[0]
    rivals = [p for p in an["pairs"] if top in (p["a"], p["b"])]
    return top if rivals and all(p["winner"] == top for p in rivals) else None


def epochs_sentence(ec: dict | None, an: dict) -> str | None:
    """Under a FLOP budget, the equal-epochs comparison the same run answers
    (:func:`archbench.report.target.epochs_comparison`), and whether it agrees
    with the equal-compute verdict."""
    if not ec:
        return None
    lead, other, pair = ec["leader"], ec["runner_up"], ec["pair"]
    each = ", ".join(f"{m} {ec['epochs'][m]:.3g}" for m in ec["accuracy"])
    spend = ""
    if all(math.isfinite(v) and v > 0 for v in ec["flops"].values()):
        cheapest = min(ec["flops"], key=lambda m: ec["flops"][m])
        spend = "; " + "; ".join(f"{m} {ec['flops'][m] / ec['flops'][cheapest]:.1f}× {cheapest}'s training FLOPs"
                                 for m in ec["flops"] if m != cheapest)
    ci = pair["difference_ci"]
    gap = f"{fmt_pp(pair['difference'])} over {other} (95 % CI {fmt_pp(ci['low'])} to {fmt_pp(ci['high'])})"
    split = "test set" if ec["split"] == "test" else "validation split"
    if ec["established"]:
        said = f"**{lead}** is more accurate: {gap}"
    elif pair["unmeasured"]:
        said = f"{lead} scored {gap}, one seed, so nothing is said about the architectures"
    else:
        said = f"{lead} leads by {gap}, not established"
    text = f"At equal epochs instead (epochs {each}{spend}), on the {split}: {said}."
    now = _equal_compute_winner(an)
    then = lead if ec["established"] else None
    if now and then and now != then:
        text += f" The two comparisons disagree: equal epochs favour {then}, equal compute {now}."
    elif now != then:
        text += (f" Only the equal-{'compute' if now else 'epochs'} comparison establishes a more accurate "
                 "model.")
    return text


def _epochs_or_why(record: RunRecord, an: dict) -> str | None:
    """The equal-epochs sentence under a budget, or why there is none (the budget ends before a recipe's epochs)."""
    text = epochs_sentence(epochs_comparison(record, an["alpha"]), an)
    if text or len(an["ranked"]) < 2:
        return text
    short = [m for m, e in record.get("models", {}).items()
             if any(u.get("status") == "ok" and not u.get("at_epochs") for u in e.get("units", []))]
    if not short:
        return None
    return (f"No equal-epochs verdict: the budget ends before the recipe's epochs for {name_list(short)} (a larger "
            "budget, or fewer --epochs, gives one).")


def bottom_line(an: dict, record: RunRecord) -> list[str]:
    """2-5 sentences answering the seed notebook's questions: which model is
    more accurate, which is cheaper, the trade-off (and the caveat that limits them)."""
    accuracy = _accuracy_sentence(an, record)
    compute = compute_words(record)
    if compute:
        accuracy = compute[0].upper() + compute[1:] + ". " + accuracy
    tuned = tuned_words(tuning_summary(record))
    if tuned:
        accuracy = tuned[0].upper() + tuned[1:] + ". " + accuracy
    sentences = [accuracy, _epochs_or_why(record, an) if compute else None,
                 _cheaper_sentence(an), _tradeoff_sentence(an),
                 _caveat_sentence(an, record, said_seeds="cannot separate architectures" in accuracy)]
    return [s for s in sentences if s][:5]
