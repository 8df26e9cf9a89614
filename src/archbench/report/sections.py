"""The report's content, built from a run record alone, as document blocks
(rendered to report.md and report.html by archbench.report.document):
:func:`build_blocks` puts the sections in order; the run-wide sections
(dataset and data card, training recipes, measurement conditions, host
load, environment, configuration) are here, the conclusions in
archbench.report.conclusions and each model's details in
archbench.report.per_model.
"""

from __future__ import annotations

import json
from typing import Any

from archbench.records import RunRecord, lookup, source_run
from archbench.report.analysis import analyze
from archbench.report.conclusions import (
    accuracy_conclusions,
    bottom_line,
    cost_conclusions,
    leads_conclusions,
    load_words,
    name_list,
    target_conclusions,
    tradeoff_conclusions,
)
from archbench.report.datacheck import missing_class_warnings
from archbench.report.document import Bullets, Heading, Image, Para, Pre, Table
from archbench.report.per_model import model_section
from archbench.report.rerun import reproduce_text
from archbench.report.table import TABLE_HEAD, comparison_rows
from archbench.report.target import budget_leads, target_costs
from archbench.report.tuning import tuning_blocks
from archbench.report.units import fmt_count


def _target_blocks(record: RunRecord, an: dict[str, Any]) -> list:
    """The cost of each model to the target accuracy (--target, else the lowest final mean)."""
    if len(an["models"]) < 2:
        return []
    given = lookup(record, "config", "target")
    tg = target_costs(record, given if isinstance(given, float) else None)
    if not tg:
        return []
    return [Heading(2, f"What does each model spend to reach {100 * tg['value']:.2f} %?"), *target_conclusions(tg)]


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
        Para("Test accuracy: mean ± sample standard deviation over seeds, with a 95 % interval over seeds and "
             "test images (Wilson's score interval at the effective sample size; for a single run, the Wilson "
             "interval over the test images). FLOPs count "
             "matrix-multiply and convolution arithmetic (1 multiply-accumulate = 2 FLOPs); training FLOPs are "
             "one forward + backward step divided by the batch size. Peak training memory is measured over "
             "one steady-state step. Train time covers the training steps only."),
        *conditions_table(an),
        *tuning_blocks(record),
        Heading(2, "Which model is more accurate?"),
        *accuracy_conclusions(an, record),
        *leads_conclusions(budget_leads(record, an["alpha"])),
        *_target_blocks(record, an),
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
        blocks += model_section(name, entry)
    env = record.get("environment", {})
    blocks.append(Heading(2, "Environment"))
    envs = record.get("environments") or {}
    blocks += [Para(f"Run `{run}`: " + _env_text(e)) for run, e in envs.items()] if envs else [Para(_env_text(env))]
    if not envs and reproduce_text(record):
        blocks.append(Para(reproduce_text(record)))
    blocks += [Heading(2, "Configuration"), Pre(json.dumps(cfg, indent=1, sort_keys=True))]
    for run, c in (record.get("configs") or {}).items():
        blocks += [Heading(3, f"Configuration of run `{run}`"), Pre(json.dumps(c, indent=1, sort_keys=True))]
    return blocks


def _verified_note(ds: dict) -> str:
    if ds.get("verification") and ds.get("verified"):
        return f" (verified: {ds['verification']})."
    return " (SHA-256 verified)." if ds.get("verified_sha256") else " (not verified)."


def incomplete_banner(an: dict) -> list:
    inc = an["incomplete"]
    if not inc:
        return []
    parts = [f"**Incomplete run**: {inc['finished']} of {inc['expected']} (model, seed) units finished."]
    if inc["no_data"]:
        parts.append(f"No finished unit for {name_list(inc['no_data'])}: nothing is concluded about "
                     f"{'its' if len(inc['no_data']) == 1 else 'their'} accuracy or train time.")
    if inc["partial"]:
        parts.append("Missing seeds: " + "; ".join(f"{n} ({', '.join(str(s) for s in seeds)})"
                                                   for n, seeds in inc["partial"].items()) + ".")
    if inc["failed"]:
        parts.append("Failed units are listed under Failed units.")
    if any(n not in inc["failed"] for n in [*inc["no_data"], *inc["partial"]]):
        parts.append("`archbench run --resume RUN_DIR` finishes an interrupted run.")
    return [Para(" ".join(parts))]


# Training options always shown in the recipe table (others only where a model's value is not its run's default).
CORE_TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "precision")


def _recipe_keys(train: dict, sources: dict) -> list[str]:
    """The options the recipe table shows, in the record's own order: the
    core ones, and any other whose value differs between models or from that
    run's default. Which values were defaults is what the record says (their
    source is "default", or none was recorded), not what archbench's
    defaults are today; an option every model set elsewhere is shown, as the
    record does not say what its default was."""
    def shown(k: str) -> bool:
        values = [train[m][k] for m in train if k in train[m]]
        defaults = [train[m][k] for m in train if k in train[m]
                    and (sources.get(m) or {}).get(k, "default") == "default"]
        return any(v != values[0] or v not in defaults for v in values)

    keys = dict.fromkeys(k for m in train for k in train[m])
    return [k for k in keys if k in CORE_TRAIN_KEYS or shown(k)]


def recipe_blocks(cfg: dict, record: RunRecord | None = None) -> list:
    """Each model's training recipe as the record stores it (``config.train``),
    every value with its source (cli, api, file, file:model, recipe, default;
    ``config.sources``)."""
    train = cfg.get("train") or {}
    if not train:
        return []
    sources = (cfg.get("sources") or {}).get("train") or {}
    models = list(train)
    keys = _recipe_keys(train, sources)
    rows = []
    if record is not None and record.get("merged_from"):
        rows.append(("run", *[source_run(record, m) or "?" for m in models]))
    for k in ("train_limit", "test_limit"):
        if record is not None and record.get("merged_from"):
            vals = [lookup(record, "configs", source_run(record, m) or "", k) for m in models]
            if any(v is not None for v in vals) and len({str(v) for v in vals}) > 1:
                rows.append((k, *[str(v) if v is not None else "all" for v in vals]))
    tuned = {m: (lookup(record, "models", m, "tuned", "by_seed") or {}) if record is not None else {} for m in models}
    for k in keys:
        cells = []
        for m in models:
            src = (sources.get(m) or {}).get(k)
            picks = sorted({f"{c['params'][k]:.3g}" for c in tuned[m].values() if k in (c.get("params") or {})})
            if picks:  # --tune: the value the seeds trained with, not the recipe's
                cells.append(" / ".join(picks) + f" (tuned; recipe {train[m][k]})")
                continue
            cells.append(f"{train[m][k]}" + (f" ({src})" if src and src != "default" else "") if k in train[m]
                         else "–")
        rows.append((k, *cells))
    same = all(train[m] == train[models[0]] for m in models) and all(t == tuned[models[0]] for t in tuned.values())
    intro = ("Training recipe (the same for every model; in brackets where a value came from when not the "
             "default):" if same else
             "Training recipes differ between models; each model's own, with where each value came from "
             "when not the default:")
    blocks: list = [Para(intro), Table(("Option", *models), rows)]
    notes = cfg.get("notes") or []
    if notes:
        blocks.append(Bullets(list(notes)))
    return blocks


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
        text += ("The machine was loaded (" + load_words(host) + "), so the timings are inflated by an unknown "
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


def _env_text(env: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None)
