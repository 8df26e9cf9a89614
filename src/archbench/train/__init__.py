"""Training and evaluation (knows nothing about measuring): the step
(:mod:`~archbench.train.step`), evaluation (:mod:`~archbench.train.evaluate`)
and the loop (:mod:`~archbench.train.loop`)."""

from archbench.config import TrainConfig
from archbench.train.evaluate import EvalResult, evaluate, to_input
from archbench.train.formulation import fast_cpu_view
from archbench.train.loop import EpochStats, TrainResult, train
from archbench.train.step import resolve_device

__all__ = ["EpochStats", "EvalResult", "TrainConfig", "TrainResult", "evaluate", "fast_cpu_view",
           "resolve_device", "to_input", "train"]
