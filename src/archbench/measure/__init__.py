"""Measurers: pure functions of a model and an input shape. None of them
changes the model it looks at (they work on deep copies)."""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import ArchbenchError
from archbench.measure.counting import FlopCount, OpCounter
from archbench.measure.memory import (
    LiveTensorTracker,
    StepMemory,
    analytic_adam_estimate,
    measure_inference_memory,
    measure_step_memory,
    process_peak_rss_bytes,
    profiler_step_peak,
)
from archbench.measure.params import count_parameters
from archbench.measure.profile import (
    count_forward,
    count_inference,
    count_step,
    count_train_step,
    epoch_flops,
    layer_table,
)
from archbench.measure.size import measure_saved_sizes, onnx_available, save_model_files
from archbench.measure.timing import inference_latency, time_calls, train_step_time

if TYPE_CHECKING:
    from archbench.measure.step import MeasuredStep
__all__ = [
    "FlopCount", "LiveTensorTracker", "OpCounter", "StepMemory", "analytic_adam_estimate",
    "count_forward", "count_inference", "count_parameters", "count_step", "count_train_step", "epoch_flops",
    "inference_latency", "layer_table", "measure_inference_memory", "measure_model",
    "measure_saved_sizes", "measure_step_memory", "onnx_available", "process_peak_rss_bytes",
    "profiler_step_peak", "save_model_files", "time_calls", "train_step_time",
]


def _phase(c: FlopCount) -> dict:
    return {"matmul_conv": c.matmul_conv, "other": dict(c.other), "other_total": c.other_total,
            "total": c.total}


def analytic_activation_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """The usual estimate of activation memory: the output bytes of every
    leaf layer in one forward pass (float32), times the batch size."""
    rows = layer_table(model, input_shape)
    return 4 * batch_size * sum(math.prod(r["output_shape"][1:]) for r in rows if r["output_shape"])


def _step_flops(step: dict[str, FlopCount], batch_size: int) -> dict:
    total = step["total"]
    return {
        "train_step_batch_size": batch_size,
        "train_step": total.matmul_conv,
        "train_step_forward": step["forward"].matmul_conv,
        "train_step_backward": step["backward"].matmul_conv,
        "train_step_other": total.other_total,
        "train_step_phases": {k: _phase(v) for k, v in step.items()},
        "train_per_sample": total.matmul_conv / batch_size,
        "uncounted_ops": total.uncounted,
        "data_movement_ops": total.data_movement,
    }


def _per_sample_memory(make_step: Callable[[int], MeasuredStep], batch_size: int, peak: int) -> dict | None:
    """Activation bytes per sample and fixed bytes, from the steady-state
    peaks at the batch size and at half of it: peak(B) = fixed + B x per_sample."""
    half = batch_size // 2
    if half < 2:
        return None
    from archbench.measure.memory import step_peak

    low = step_peak(make_step(half))
    per = (peak - low) / (batch_size - half)
    return {"batch_sizes": [half, batch_size], "peak_bytes": [low, peak], "per_sample_bytes": per,
            "fixed_bytes": peak - per * batch_size,
            "note": "steady-state step peak = fixed_bytes + batch size x per_sample_bytes (a line through "
                    "the two measured points)"}


def _flops_section(model: nn.Module, inference: Any, first: Any, input_shape: tuple, bs: int,
                   train_samples: int | None, epochs: int | None, cfg: TrainConfig, dev: torch.device,
                   num_classes: int) -> dict:
    """The FLOPs of the evaluation's prediction and of the trained step (per
    epoch and per run with ``train_samples`` and ``epochs``)."""
    fwd = count_inference(inference)
    one_view = count_forward(model, input_shape, batch_size=1)
    step = count_step(first)
    total = step["total"]
    flops = {
        "convention": "1 MAC = 2 FLOPs. matmul_conv: exact multiply-accumulates of matrix products and "
                      "convolutions; other: bias adds, activations, pooling comparisons, normalisation, "
                      "softmax/loss, element-wise, reductions and the optimizer update, by the per-element "
                      "conventions of docs/measurement.md. Inference: the evaluation's prediction of one "
                      "sample over every test-time view; training: the step this unit trains",
        "inference_views": len(inference.views),
        "forward_per_sample": fwd.matmul_conv,
        "forward_macs_per_sample": fwd.matmul_conv // 2,
        "forward_other_per_sample": fwd.other_total,
        "forward_other_by_category": dict(fwd.other),
        "forward_by_op": {k: v["flops"] for k, v in fwd.by_op.items()},
        "forward_one_view_per_sample": one_view.matmul_conv,
        "forward_one_view_other_per_sample": one_view.other_total,
        **_step_flops(step, bs),
        "forward_uncounted_ops": fwd.uncounted,
        # A figure with uncounted ops is a lower bound: reports mark it "partial".
        "partial": {"forward": fwd.partial, "train_step": total.partial},
    }
    if train_samples:
        ep = epoch_flops(model, input_shape, bs, train_samples, {bs: total}, cfg=cfg, device=dev,
                         num_classes=num_classes)
        flops["per_epoch"] = ep
        if epochs:
            flops["per_run"] = {k: v * epochs for k, v in ep.items()}
    return flops


def _memory_section(model: nn.Module, trained: Callable[..., Any], input_shape: tuple, bs: int,
                    cfg: TrainConfig, dev: torch.device, param_bytes: int) -> dict:
    """Peak memory of the trained step (steady and first), per sample, of
    evaluation at batch 1 and at the evaluation batch, and the estimates."""
    from archbench.measure.memory import step_memory

    act_estimate = analytic_activation_bytes(model, input_shape, bs)
    input_bytes = bs * math.prod(input_shape) * 4
    steady = step_memory(trained)
    return {
        "convention": "peak bytes the allocator holds during one step of the trained recipe at its batch size "
                      "(CPU: the profiler's allocation events; CUDA: the caching allocator), measured with no "
                      "tracker attached; the breakdown is a dispatch-level tracker's, from a second run of the same "
                      "step, and 'scratch' is what no op returned (kernel workspaces)",
        "train_step": steady.to_dict(),
        "first_step": step_memory(trained, first_step=True).to_dict(),
        "per_sample": _per_sample_memory(trained, bs, steady.peak_bytes),
        "inference_batch1": measure_inference_memory(model, input_shape, 1, device=dev, cfg=cfg),
        # The evaluation batch: its first pass (a warm-up would double the cost of a large batch).
        "inference_eval_batch": measure_inference_memory(model, input_shape, cfg.eval_batch_size, device=dev,
                                                         cfg=cfg, warmup=0),
        "estimate": analytic_adam_estimate(param_bytes, input_bytes, act_estimate),
        "estimate_activation_bytes": act_estimate,
    }


def _saved_sizes(model: nn.Module, input_shape: tuple, files_dir: Any, files_stem: str) -> dict:
    if files_dir is not None:
        return measure_saved_sizes(model, files_dir, input_shape, stem=files_stem)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = measure_saved_sizes(model, tmp, input_shape, stem=files_stem)
        sizes.pop("files", None)
    return sizes


def _speed_section(model: nn.Module, input_shape: tuple, bs: int, dev: torch.device, cfg: TrainConfig,
                   seconds: float, num_classes: int) -> dict:
    return {
        "inference_latency_batch1": inference_latency(model, input_shape, 1, dev, min_seconds=seconds, cfg=cfg),
        "inference_throughput_batch1024": inference_latency(model, input_shape, 1024, dev, min_calls=3,
                                                            min_seconds=seconds, cfg=cfg, warmup=1),
        "train_step": train_step_time(model, input_shape, bs, dev, min_calls=10, min_seconds=seconds,
                                      cfg=cfg, num_classes=num_classes),
    }


def _reference_section(model: nn.Module, plain: Callable[[], Any], input_shape: tuple, bs: int,
                       dev: torch.device, cfg: TrainConfig, timing: bool, seconds: float,
                       num_classes: int) -> dict:
    """The same costs for a plain PyTorch step of the model as written."""
    from archbench.measure.memory import step_memory

    ref = plain()
    ref_flops = count_step(ref)
    out: dict[str, Any] = {
        "step": ref.description,
        "flops": {**_step_flops(ref_flops, bs), "partial": {"train_step": ref_flops["total"].partial}},
        "memory": {"train_step": step_memory(plain).to_dict(),
                   "first_step": step_memory(plain, first_step=True).to_dict()},
    }
    if timing:
        out["speed"] = {"train_step": train_step_time(model, input_shape, bs, dev, min_calls=10, min_seconds=seconds,
                                                      cfg=cfg, reference=True, num_classes=num_classes)}
    return out


def measure_model(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int | None = None,
                  device: torch.device | str | None = None, train_samples: int | None = None,
                  epochs: int | None = None, timing: bool = True, latency_seconds: float = 1.0,
                  cfg: TrainConfig | None = None, reference: bool = True, num_classes: int = 10,
                  files_dir: str | os.PathLike | None = None, files_stem: str = "model") -> dict:
    """Every cost of ``model`` as one JSON-ready dict, in base units (bytes,
    seconds, counts).

    The costs are those of the step the unit trains under ``cfg`` (its
    optimizer, precision, formulation, batch size, loss and augmentation:
    archbench.measure.step; default: the default recipe) and of its
    evaluation (the recipe's test-time views). ``batch_size`` overrides the
    recipe's; ``train_samples`` caps it, as training does, and with
    ``epochs`` adds per-epoch and per-run FLOPs. With ``reference`` (default)
    ``"reference"`` holds the same costs for a plain PyTorch step of the model
    as written (torch.optim.Adam, fp32). ``timing`` adds latency, throughput
    and step times. The saved sizes are those of files written as
    ``files_dir/files_stem.*`` and kept there (ONNX included when the onnx
    package is installed); without ``files_dir``, in a temporary directory
    (the stem is part of a ``.pt`` file's bytes: pass the run's own)."""
    with warnings.catch_warnings(record=True) as caught:
        # Third-party warnings (torch's nested-tensor prototype notice, oneDNN fallbacks, the profiler's) are
        # recorded with the costs, not printed over the user's terminal.
        warnings.simplefilter("always")
        out = _measure_all(model, input_shape, batch_size, device, train_samples, epochs, timing, latency_seconds,
                           cfg, reference, num_classes, files_dir, files_stem)
    seen = list(dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0] if str(w.message) else ''}"
                              for w in caught))
    if seen:
        out["warnings"] = seen
    return out


def _measure_all(model: nn.Module, input_shape: tuple[int, ...], batch_size: int | None,
                 device: torch.device | str | None, train_samples: int | None, epochs: int | None, timing: bool,
                 latency_seconds: float, cfg: TrainConfig | None, reference: bool, num_classes: int,
                 files_dir: str | os.PathLike | None, files_stem: str) -> dict:
    """measure_model's costs, each measured on its own (a failure is
    recorded under "errors" and the other costs stand)."""
    from archbench.measure.step import inference_pass, reference_step, trained_step

    cfg = cfg or TrainConfig(batch_size=batch_size or 64)
    bs = batch_size or cfg.batch_size
    if train_samples:
        bs = min(bs, train_samples)
    p = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))

    def trained(b: int = bs) -> MeasuredStep:
        return trained_step(model, cfg, input_shape, dev, b, num_classes)

    def plain() -> MeasuredStep:
        return reference_step(model, cfg, input_shape, dev, bs, num_classes)

    errors: dict[str, str] = {}

    def attempt(name: str, measure: Callable[[], Any]) -> Any:
        """One cost on its own: a failure is recorded with its reason and the others stand."""
        try:
            return measure()
        except ArchbenchError:
            raise  # a named error about the user's choices (batch size, no trainable parameters)
        except Exception as exc:  # noqa: BLE001 - recorded in "errors"; the other costs stand
            errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    out: dict[str, Any] = {"params": attempt("params", lambda: count_parameters(model))}
    first = attempt("step", trained)  # builds the step: a model it cannot train fails here, by name
    inference = attempt("inference", lambda: inference_pass(model, cfg, input_shape, dev, 1))
    if first is not None:
        out["step"] = first.description
    if inference is not None:
        out["inference"] = inference.description
    for cost, needs in (("flops", ("step", "inference")), ("memory", ("step",)), ("reference", ("step",))):
        failed = [n for n in needs if n in errors]
        if failed:
            errors[cost] = "not measured: " + "; ".join(f"the {n} could not be built ({errors[n]})" for n in failed)
    if first is not None and inference is not None:
        out["flops"] = attempt("flops", lambda: _flops_section(model, inference, first, input_shape, bs,
                                                               train_samples, epochs, cfg, dev, num_classes))
    if first is not None:
        param_bytes = (out["params"] or {}).get("param_bytes", 0)
        out["memory"] = attempt("memory", lambda: _memory_section(model, trained, input_shape, bs, cfg, dev,
                                                                  param_bytes))
    out["saved_size_bytes"] = attempt("saved_size_bytes",
                                      lambda: _saved_sizes(model, input_shape, files_dir, files_stem))
    if timing:
        out["speed"] = attempt("speed", lambda: _speed_section(model, input_shape, bs, dev, cfg, latency_seconds,
                                                               num_classes))
    if reference and first is not None:
        out["reference"] = attempt("reference", lambda: _reference_section(
            model, plain, input_shape, bs, dev, cfg, timing, latency_seconds, num_classes))
    out = {k: v for k, v in out.items() if v is not None}
    if "memory" in out:
        out["memory"]["process_peak_rss_bytes"] = process_peak_rss_bytes()
    if errors:
        # What could not be measured, with the reason; a step that cannot be built takes the costs that run it.
        out["errors"] = errors
    return out
