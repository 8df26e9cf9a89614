"""Measurers: pure functions of a model and an input shape. None of them
changes the model it looks at (they work on deep copies)."""

from __future__ import annotations

import math
import tempfile

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
from archbench.measure.profile import count_forward, count_train_step, epoch_flops, layer_table
from archbench.measure.size import measure_saved_sizes, onnx_available, save_model_files
from archbench.measure.timing import inference_latency, time_calls, train_step_time

__all__ = [
    "FlopCount", "LiveTensorTracker", "OpCounter", "StepMemory", "analytic_adam_estimate",
    "count_forward", "count_parameters", "count_train_step", "epoch_flops",
    "inference_latency", "layer_table", "measure_inference_memory", "measure_model",
    "measure_saved_sizes", "measure_step_memory", "onnx_available", "process_peak_rss_bytes",
    "profiler_step_peak", "save_model_files", "time_calls", "train_step_time",
]


def _phase(c: FlopCount) -> dict:
    return {"matmul_conv": c.matmul_conv, "other": dict(c.other), "other_total": c.other_total,
            "total": c.total}


def analytic_activation_bytes(model, input_shape, batch_size: int) -> int:
    """The usual estimate of activation memory: the output bytes of every
    leaf layer in one forward pass (float32), times the batch size."""
    rows = layer_table(model, input_shape)
    return 4 * batch_size * sum(math.prod(r["output_shape"][1:]) for r in rows if r["output_shape"])


def measure_model(model, input_shape=(1, 28, 28), batch_size: int = 64, device=None,
                  train_samples: int | None = None, epochs: int | None = None,
                  timing: bool = True, latency_seconds: float = 1.0) -> dict:
    """Every cost of ``model`` as one JSON-ready dict, in base units (bytes,
    seconds, counts). ``train_samples``/``epochs`` add per-epoch and per-run
    FLOPs; ``timing`` adds latency, throughput and step time."""
    params = count_parameters(model)
    fwd = count_forward(model, input_shape, batch_size=1)
    step = count_train_step(model, input_shape, batch_size=batch_size)
    total = step["total"]
    flops = {
        "convention": "1 MAC = 2 FLOPs. matmul_conv: exact multiply-accumulates of matrix products and "
                      "convolutions; other: bias adds, activations, pooling comparisons, normalisation, "
                      "softmax/loss, element-wise, reductions and the optimizer update, by the per-element "
                      "conventions of docs/measurement.md",
        "forward_per_sample": fwd.matmul_conv,
        "forward_macs_per_sample": fwd.matmul_conv // 2,
        "forward_other_per_sample": fwd.other_total,
        "forward_other_by_category": dict(fwd.other),
        "forward_by_op": {k: v["flops"] for k, v in fwd.by_op.items()},
        "train_step_batch_size": batch_size,
        "train_step": total.matmul_conv,
        "train_step_forward": step["forward"].matmul_conv,
        "train_step_backward": step["backward"].matmul_conv,
        "train_step_other": total.other_total,
        "train_step_phases": {k: _phase(v) for k, v in step.items()},
        "train_per_sample": total.matmul_conv / batch_size,
        "uncounted_ops": total.uncounted,
        "forward_uncounted_ops": fwd.uncounted,
        "data_movement_ops": total.data_movement,
        # A figure with uncounted ops is a lower bound: reports mark it "partial".
        "partial": {"forward": fwd.partial, "train_step": total.partial},
    }
    if train_samples:
        ep = epoch_flops(model, input_shape, batch_size, train_samples, {batch_size: total})
        flops["per_epoch"] = ep
        if epochs:
            flops["per_run"] = {k: v * epochs for k, v in ep.items()}
    act_estimate = analytic_activation_bytes(model, input_shape, batch_size)
    input_bytes = batch_size * math.prod(input_shape) * 4
    memory = {
        "convention": "peak bytes of live tensor storage during one training step (Adam) at the configured "
                      "batch size, tracked at every op boundary; kernel-internal scratch not included",
        "train_step": measure_step_memory(model, input_shape, batch_size, device=device).to_dict(),
        "first_step": measure_step_memory(model, input_shape, batch_size, device=device,
                                          first_step=True).to_dict(),
        "inference_batch1": measure_inference_memory(model, input_shape, 1, device=device),
        "estimate": analytic_adam_estimate(params["param_bytes"], input_bytes, act_estimate),
        "estimate_activation_bytes": act_estimate,
    }
    with tempfile.TemporaryDirectory() as tmp:
        sizes = measure_saved_sizes(model, tmp, input_shape)
    out = {"params": params, "flops": flops, "memory": memory, "saved_size_bytes": sizes}
    if timing:
        out["speed"] = {
            "inference_latency_batch1": inference_latency(model, input_shape, 1, device,
                                                          min_seconds=latency_seconds),
            "inference_throughput_batch1024": inference_latency(model, input_shape, 1024, device,
                                                                min_calls=20, min_seconds=latency_seconds),
            "train_step": train_step_time(model, input_shape, batch_size, device, min_seconds=latency_seconds),
        }
    out["memory"]["process_peak_rss_bytes"] = process_peak_rss_bytes()
    return out
