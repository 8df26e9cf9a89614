"""Tuning trials (``--tune``) as ordinary units of the study.

Trial ``t`` of a model is a unit trained with the model's recipe and the
trial's values (:mod:`archbench.tuning`), on the training split minus the
validation split, scored by its final validation accuracy; the test set is
not evaluated and no model file is kept. Trials run through the study's
executor (in this process, side by side or on Ray), are written to the
record as they finish (``models[m].trials``) and resume like seeds: a
trial's checkpoints live in ``trials/trial-<t>/``. Trial ``t`` trains with
the first seed, or with ``--tune-per-seed`` once per seed. Once a model's
trials are done, the value with the best validation accuracy is chosen
(``models[m].tuned``), and the model's seeds train with it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from archbench.config import StudyConfig
from archbench.errors import TrainingError
from archbench.records import RunRecord, Unit
from archbench.tuning import at_edge, choose, trial_values, with_values

Grid = dict[str, list[dict[str, float]]]  # model -> each trial's values


def trial_seeds(cfg: StudyConfig) -> tuple[int, ...]:
    """The seeds trials train with: every seed with --tune-per-seed, else the first."""
    return tuple(cfg.seeds) if cfg.tune_per_seed else tuple(cfg.seeds[:1])


def grid(cfg: StudyConfig) -> Grid:
    assert cfg.tune
    return {m: trial_values(cfg.train_config_for(m), dict(cfg.tune), cfg.trials, m) for m in cfg.models}


def trial_config(cfg: StudyConfig, values: Grid, t: int) -> StudyConfig:
    """The study as trial ``t`` runs it: each model's recipe with the trial's
    values, the trial seeds, validation only (no curve points of a budget)."""
    return replace(cfg, train={m: with_values(cfg.train_config_for(m), values[m][t]) for m in cfg.models},
                   seeds=trial_seeds(cfg), trial_run=True, budget_points={}, epochs_steps={})


def pending_trials(record: RunRecord, cfg: StudyConfig, t: int) -> list[tuple[str, int]]:
    """The (model, seed) units of trial ``t`` not yet finished."""
    return [(m, s) for m in cfg.models for s in trial_seeds(cfg)
            if not any(u.get("trial") == t and u["seed"] == s and u["status"] == "ok"
                       for u in record["models"][m].get("trials", []))]


def trial_record(unit: Unit, t: int, params: dict[str, float]) -> Unit:
    """A finished (or failed) unit as trial ``t``'s record: its values, and
    its score (final validation loss and accuracy) in place of a test result."""
    out = cast(Unit, {k: v for k, v in unit.items() if k not in ("test", "files", "saved_size_bytes")})
    out["trial"], out["params"] = t, dict(params)
    hist = out.get("history") or []
    if out["status"] == "ok" and hist:
        last = hist[-1]
        out["validation"] = {"loss": float(last.get("val_loss") or 0.0), "accuracy": float(last.get("val_acc") or 0.0)}
    return out


def choices(record: RunRecord, cfg: StudyConfig, values: Grid) -> dict[str, dict[str, Any]]:
    """Each model's chosen values, per trial seed: ``{model: {"by_seed":
    {seed: {"trial", "params", "validation_accuracy", "edge"}}, "failed":
    [seeds whose every trial failed]}}``, from the trials in the record."""
    out: dict[str, dict[str, Any]] = {}
    for m in cfg.models:
        by_seed: dict[str, Any] = {}
        failed: list[int] = []
        trials = record["models"][m].get("trials", [])
        for s in trial_seeds(cfg):
            scores: list[float | None] = [None] * cfg.trials
            for u in trials:
                if u["seed"] == s and u["status"] == "ok" and u.get("validation") and 0 <= u["trial"] < cfg.trials:
                    scores[u["trial"]] = u["validation"]["accuracy"]
            best = choose(values[m], scores)
            if best is None:
                failed.append(s)
                continue
            by_seed[str(s)] = {"trial": best, "params": values[m][best], "validation_accuracy": scores[best],
                               "edge": at_edge(values[m], best)}
        out[m] = {"by_seed": by_seed, "failed": failed}
    return out


def tuned_groups(cfg: StudyConfig, chosen: dict[str, dict[str, Any]]) -> list[StudyConfig]:
    """The studies that train the seeds with the chosen values: one (every
    seed with the values the trials of the first seed chose), or with
    --tune-per-seed one per seed. A model without a choice is left out (its
    seeds are recorded as failed: :func:`untuned_failure`)."""
    def study_for(seed: int, seeds: tuple[int, ...]) -> StudyConfig:
        models = tuple(m for m in cfg.models if str(seed) in chosen[m]["by_seed"])
        return replace(cfg, models=models, seeds=seeds,
                       train={m: with_values(cfg.train_config_for(m), chosen[m]["by_seed"][str(seed)]["params"])
                              for m in models})

    if cfg.tune_per_seed:
        return [study_for(s, (s,)) for s in cfg.seeds]
    return [study_for(cfg.seeds[0], tuple(cfg.seeds))]


def untuned_failure(model: str, record: RunRecord) -> TrainingError:
    """Why a model's seeds did not train: every trial failed."""
    errors = [u.get("error", "") for u in record["models"][model].get("trials", []) if u["status"] != "ok"]
    first = f" (the first: {errors[0]})" if errors else ""
    return TrainingError(f"every tuning trial of {model} failed{first}, so no value was chosen for its seeds; fix "
                         "the model and resume the run (archbench run --resume RUN_DIR), or start a new run with "
                         "another --tune range.")
