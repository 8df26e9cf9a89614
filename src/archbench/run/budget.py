"""Equal compute (``--match flops``): every model trains for the same
training FLOPs. The budget is the costliest model's recipe (its ``epochs``
over the training images, at its measured matmul/conv FLOPs per training
sample), or ``--budget-flops``; each model then trains whole epochs and the
first steps of one more, so that its training FLOPs fall short of the
budget by less than one step's. The plan is a pure function of the
configuration and the measured FLOPs, so a resumed run plans the same."""

from __future__ import annotations

import math
from typing import Any

from archbench.config import StudyConfig
from archbench.errors import UsageError
from archbench.train.loop import samples_of

CURVE_POINTS = 8  # evaluations along each model's training, at equal fractions of the budget


def steps_within(samples: int, n_train: int, batch_size: int) -> int:
    """The most training steps whose images add up to at most ``samples``,
    epochs of ``n_train`` images in batches of ``batch_size`` (each epoch's
    last batch partial, as the loop trains them: the inverse of
    :func:`archbench.train.loop.samples_of`)."""
    bs = min(batch_size, n_train)
    per_epoch = math.ceil(n_train / bs)
    full, rest = divmod(samples, n_train)
    return full * per_epoch + rest // bs


def epochs_step(cfg: StudyConfig, model: str, n_train: int) -> int:
    """The step at which ``model`` has trained its recipe's epochs (evaluated
    too under a budget: the equal-epochs comparison)."""
    tcfg = cfg.train_config_for(model)
    return math.ceil(n_train / min(tcfg.batch_size, n_train)) * tcfg.epochs


def nearest_steps(samples: float, n_train: int, batch_size: int) -> int:
    """The step count (at least 1) whose images come nearest ``samples``."""
    low = steps_within(int(samples), n_train, batch_size)
    high = low + 1
    if abs(samples_of(high, n_train, batch_size) - samples) < abs(samples_of(low, n_train, batch_size) - samples):
        return high
    return max(1, low)


def plan(cfg: StudyConfig, flops_per_sample: dict[str, float | None], n_train: int) -> dict[str, Any]:
    """The step budget of each model for ``cfg.match == "flops"``: ``budget_flops``,
    ``by`` (what set it), and per model ``steps``, ``epochs`` (fractional),
    ``samples`` and ``train_flops`` (within one step's FLOPs below the budget).
    A model whose training FLOPs were not measured cannot be budgeted: a
    UsageError names it."""
    missing = [m for m in cfg.models if not flops_per_sample.get(m)]
    if missing:
        raise UsageError(f"--match flops needs each model's training FLOPs, and measuring them failed for "
                         f"{', '.join(missing)} (see the run's measurement_error); compare them with --match epochs.")
    fps = {m: float(flops_per_sample[m] or 0) for m in cfg.models}
    if cfg.budget_flops is not None:
        budget, by = float(cfg.budget_flops), "--budget-flops"
    else:
        costs = {m: fps[m] * n_train * cfg.train_config_for(m).epochs for m in cfg.models}
        top = max(costs, key=lambda m: costs[m])
        epochs = cfg.train_config_for(top).epochs
        budget, by = costs[top], f"{top}'s {epochs} epoch{'s' if epochs != 1 else ''}"
    models = {}
    for m in cfg.models:
        bs = cfg.train_config_for(m).batch_size
        steps = steps_within(int(budget // fps[m]), n_train, bs)
        if steps < 1:
            raise UsageError(f"a budget of {budget:g} training FLOPs is less than one step of {m} "
                             f"({fps[m] * min(bs, n_train):g} FLOPs): give a larger --budget-flops.")
        samples = samples_of(steps, n_train, bs)
        # The curve's points: at k/8 of the budget, the same fractions for every model (the nearest step;
        # a model of few, costly steps may evaluate one step twice).
        points = [min(steps, nearest_steps(k * budget / CURVE_POINTS / fps[m], n_train, bs))
                  for k in range(1, CURVE_POINTS + 1)]
        # The step at the recipe's epochs, where the budget reaches it: evaluated too, so that the run can
        # also answer the equal-epochs question (cnn and mlp after 5 epochs each) beside the equal-compute one.
        at_epochs = epochs_step(cfg, m, n_train)
        models[m] = {"steps": steps, "epochs": samples / n_train, "samples": samples,
                     "train_flops": samples * fps[m], "flops_per_sample": fps[m], "points": points,
                     "epochs_step": at_epochs if at_epochs <= steps else None}
    return {"match": "flops", "budget_flops": budget, "by": by, "n_train": n_train, "models": models}



def plan_time(cfg: StudyConfig, flops_per_sample: dict[str, float | None], n_train: int) -> dict[str, Any]:
    """The record of ``cfg.match == "time"``: every model trains for
    ``budget_seconds`` of training steps, its curve evaluated at each eighth of
    them; how many steps that is, each unit records. Per model, the step at
    its recipe's epochs (evaluated too where the budget reaches it) and the
    FLOPs per training sample (None where not measured)."""
    assert cfg.budget_seconds is not None
    models = {m: {"flops_per_sample": flops_per_sample.get(m), "epochs_step": epochs_step(cfg, m, n_train)}
              for m in cfg.models}
    return {"match": "time", "budget_seconds": float(cfg.budget_seconds), "by": "--budget-seconds",
            "n_train": n_train, "models": models}
