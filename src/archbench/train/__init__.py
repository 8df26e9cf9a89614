"""Training and evaluation (knows nothing about measuring)."""

from archbench.config import TrainConfig
from archbench.train.formulation import fast_cpu_view
from archbench.train.loop import EpochStats, EvalResult, TrainResult, evaluate, resolve_device, to_input, train

__all__ = ["EpochStats", "EvalResult", "TrainConfig", "TrainResult", "evaluate", "fast_cpu_view",
           "resolve_device", "to_input", "train"]
