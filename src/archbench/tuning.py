"""Equal tuning effort (``--tune KEY --trials N``): which values each model
tries, and which one it keeps.

Every model gets the same number of trials, each trained with the same
budget (the study's epochs, or its FLOP budget) on the training split minus
the validation split, and scored by validation accuracy; the test set is
not looked at. The values of a key are spaced around the model's own recipe
value -- from a tenth to ten times it, geometrically, so that the recipe's
value is the middle trial when N is odd -- or over a range given as
``KEY=LOW:HIGH`` (geometric when LOW > 0, else linear). With several keys
each trial takes one value of each, the keys' orders shuffled against each
other by a fixed permutation (a Latin hypercube), so that N trials cover N
values of every key.

Pure functions of the configuration and the trials' results: a resumed run
chooses the same values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from archbench.config import Ranges, TrainConfig
from archbench.errors import UsageError

# Keys that have a default range (a tenth to ten times the recipe's value): those unbounded above.
DEFAULT_RANGE = ("lr", "weight_decay", "eps")
EXAMPLE_RANGE = {"lr": "1e-4:1e-2", "weight_decay": "1e-5:1e-2", "eps": "1e-8:1e-6", "beta1": "0.8:0.95",
                 "beta2": "0.99:0.9999", "warmup": "0:0.3", "label_smoothing": "0:0.2"}


def _grid(key: str, rng: tuple[float, float] | None, recipe: float, n: int, model: str) -> list[float]:
    if rng is None:
        if key not in DEFAULT_RANGE or recipe <= 0:
            why = "there is no tenth or ten times of 0" if recipe <= 0 else f"{key} is bounded"
            raise UsageError(f"--tune {key}: {model}'s recipe has {key} {recipe:g} and {why}, so there is no default "
                             f"range: give one, e.g. --tune {key}={EXAMPLE_RANGE[key]}.")
        return [recipe * 10 ** (-1 + 2 * i / (n - 1)) for i in range(n)]
    lo, hi = rng
    if lo > 0:
        return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def with_values(tcfg: TrainConfig, values: Mapping[str, float]) -> TrainConfig:
    """The recipe ``tcfg`` with a trial's ``values`` (checked as any recipe value)."""
    return replace(tcfg, **cast(dict[str, Any], dict(values)))


def trial_values(tcfg: TrainConfig, tune: Ranges, trials: int, model: str) -> list[dict[str, float]]:
    """The N trials' values for one model (its recipe ``tcfg``): one dict of
    key -> value per trial. Every value is checked as the recipe checks it."""
    grids = {k: _grid(k, rng, float(getattr(tcfg, k)), trials, model) for k, rng in tune.items()}
    orders = {}
    for j, k in enumerate(tune):
        order = list(range(trials))
        if j:
            random.Random(1000 + j).shuffle(order)
        orders[k] = order
    out = [{k: grids[k][orders[k][t]] for k in tune} for t in range(trials)]
    for values in out:
        try:
            with_values(tcfg, values)
        except UsageError as exc:
            raise UsageError(f"--tune: a trial value for {model} is out of range ({exc}); give a range inside the "
                             "allowed values, e.g. " + ", ".join(f"--tune {k}={EXAMPLE_RANGE[k]}" for k in values)
                             + ".") from None
    return out


def grid_index(values: list[dict[str, float]], trial: int, key: str) -> int:
    """Where trial ``trial``'s value of ``key`` lies among the key's sorted values (0: the low edge)."""
    return sorted(v[key] for v in values).index(values[trial][key])


def choose(values: list[dict[str, float]], scores: Sequence[float | None]) -> int | None:
    """The trial with the highest validation accuracy (``scores``; None: a
    failed trial); among equal scores, the one nearest the middle of the
    values. None when every trial failed."""
    n = len(values)
    done = [t for t in range(n) if scores[t] is not None and math.isfinite(float(scores[t] or 0.0))]
    if not done:
        return None
    return max(done, key=lambda t: (float(scores[t] or 0.0), -abs(t - (n - 1) / 2)))


def at_edge(values: list[dict[str, float]], chosen: int) -> list[str]:
    """The keys whose chosen value is the lowest or highest tried: the best may lie outside the range."""
    n = len(values)
    edges = []
    for k in values[chosen]:
        i = grid_index(values, chosen, k)
        if i in (0, n - 1):
            edges.append(f"{k} {'low' if i == 0 else 'high'}")
    return edges
