"""How each model was tuned (``--tune``): its trials, the value chosen, what
the tuning cost, and what the verdict's interval does and does not cover."""

from __future__ import annotations

import math
from typing import Any

from archbench.records import RunRecord, lookup, unit_samples
from archbench.report.document import Bullets, Heading, Para, Table
from archbench.report.units import fmt_count, fmt_seconds, fmt_si


def _values(params: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in params.items())


def tuning_summary(record: RunRecord) -> dict[str, Any] | None:
    """Per model: its trials (values, seed, status, validation accuracy), the
    chosen values per seed, the keys at the edge of the range, and the cost
    of the trials (training seconds; training FLOPs where measured). None
    when the run did not tune."""
    cfg = record.get("config") or {}
    tune = cfg.get("tune")
    if not tune:
        return None
    models: dict[str, Any] = {}
    for m, e in record.get("models", {}).items():
        trials = e.get("trials") or []
        fps = lookup(e, "measurements", "flops", "train_per_sample")
        seconds = sum(float((u.get("timings") or {}).get("train_seconds") or 0.0) for u in trials)
        samples = sum(unit_samples(u) for u in trials)
        tuned = e.get("tuned") or {}
        models[m] = {
            "trials": [{"trial": u.get("trial"), "seed": u.get("seed"), "params": u.get("params") or {},
                        "status": u.get("status"), "accuracy": (u.get("validation") or {}).get("accuracy"),
                        "error": u.get("error")}
                       for u in trials],
            "chosen": tuned.get("by_seed") or {}, "failed": tuned.get("failed") or [],
            "seconds": seconds, "flops": samples * fps if fps else None,
        }
    return {"keys": list(tune), "ranges": tune, "trials": cfg.get("trials", 5),
            "per_seed": bool(cfg.get("tune_per_seed")), "models": models}


def tuned_words(ts: dict[str, Any] | None) -> str | None:
    """One clause for the bottom line: what was tuned and what each model chose."""
    if not ts:
        return None
    chosen = []
    for m, r in ts["models"].items():
        picks = list(r["chosen"].values())
        if not picks:
            chosen.append(f"{m} none (every trial failed)")
        elif ts["per_seed"] and len({_values(p["params"]) for p in picks}) > 1:
            chosen.append(f"{m} " + " / ".join(_values(p["params"]) for p in picks) + " by seed")
        else:
            chosen.append(f"{m} {_values(picks[0]['params'])}")
    each = " each" if len(ts["models"]) > 1 else ""
    return (f"tuned by validation accuracy over {ts['trials']} trials{each} of {' and '.join(ts['keys'])}"
            + (" per seed" if ts["per_seed"] else "") + f": {', '.join(chosen)}")


def tuning_blocks(record: RunRecord) -> list:
    """The report's section on tuning (empty without --tune)."""
    ts = tuning_summary(record)
    if not ts:
        return []
    val = fmt_count(lookup(record, "dataset", "val_samples"))
    ranges = "; ".join(f"{k} " + (f"from {r[0]:g} to {r[1]:g}" if r else "from a tenth to ten times each model's own "
                                  "recipe value") for k, r in ts["ranges"].items())
    blocks: list = [
        Heading(2, "How was each model tuned?"),
        Para(f"Equal tuning effort: every model had the same number of trials, {ts['trials']} ({ranges}; geometric "
             "spacing where the range is positive), each trial trained with the study's budget on the training "
             f"split less the {val} validation images and scored by its final validation accuracy; the test set was "
             "not looked at. The best score wins; among equal scores, the value nearest the middle of the range "
             "(with few validation images, ties happen). Each model's seeds then trained with its best value"
             + (", each seed with the value its own trials chose." if ts["per_seed"] else
                " (chosen from the trials of the first seed).")),
    ]
    rows: list[tuple[str, ...]] = []
    for m, r in ts["models"].items():
        for t in r["trials"]:
            acc = t["accuracy"]
            picked = r["chosen"].get(str(t["seed"]), {}).get("trial") == t["trial"]
            failed = "failed: " + str(t.get("error") or "?").splitlines()[0][:160]
            rows.append((str(m), str(t["trial"] + 1 if isinstance(t["trial"], int) else "?"), str(t["seed"]),
                         _values(t["params"]),
                         (f"{100 * acc:.2f} %" if isinstance(acc, float) and math.isfinite(acc) else failed)
                         + (" (chosen)" if picked else "")))
    blocks.append(Table(("model", "trial", "seed", "values", "validation accuracy"), rows))
    items = []
    for m, r in ts["models"].items():
        cost = fmt_seconds(r["seconds"]) + " of training steps" + (
            f", {fmt_si(r['flops'], 'FLOPs')}" if r["flops"] else "")
        edges = sorted({e for c in r["chosen"].values() for e in c.get("edge", [])})
        scored = sum(1 for t in r["trials"] if t["status"] == "ok")
        lost = f" ({len(r['trials']) - scored} failed, so the choice is among {scored})" if scored < len(r["trials"]) \
            else ""
        items.append(f"{m}: tuning cost {cost} over {len(r['trials'])} trials{lost}"
                     + (f"; **warning**: the best value is at the {', '.join(edges)} edge of the range tried, so a "
                        "better one may lie outside it (widen the range)" if edges else "")
                     + (f"; every trial of seed(s) {r['failed']} failed" if r["failed"] else "") + ".")
    blocks.append(Bullets(items))
    blocks.append(Para(
        "What the verdict's interval covers: the seeds' training randomness and the test images, at the chosen "
        + ("values. Each seed chose its own value from its own trials, so the noise of that choice is part of the "
           "seeds' spread and of the interval." if ts["per_seed"] else
           "values. It does not cover the noise of the choice itself: the values were picked from one seed's "
           "trials, and another seed's trials might pick others. `--tune-per-seed` puts that noise in the "
           "interval.")))
    return blocks
