"""Measurers: pure functions of a model and an input shape. None of them
changes the model it looks at (they work on deep copies)."""

from archbench.measure.flops import forward_flops, train_step_flops
from archbench.measure.memory import LiveTensorTracker, StepMemory, analytic_adam_estimate, measure_step_memory
from archbench.measure.params import count_parameters
from archbench.measure.size import measure_saved_sizes, save_model_files

__all__ = [
    "LiveTensorTracker", "StepMemory", "analytic_adam_estimate", "count_parameters", "forward_flops",
    "measure_saved_sizes", "measure_step_memory", "save_model_files", "train_step_flops",
]


def measure_model(model, input_shape=(1, 28, 28), batch_size: int = 64, device=None) -> dict:
    """Every static cost of ``model`` as one JSON-ready dict (base units)."""
    import tempfile

    params = count_parameters(model)
    fwd = forward_flops(model, input_shape, batch_size=1)
    step = train_step_flops(model, input_shape, batch_size=batch_size)
    mem = measure_step_memory(model, input_shape, batch_size=batch_size, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = measure_saved_sizes(model, tmp)
    input_bytes = batch_size * int(__import__("math").prod(input_shape)) * 4
    return {
        "params": params,
        "flops": {
            "convention": "matmul/conv FLOPs (1 MAC = 2 FLOPs), counted by torch.utils.flop_counter",
            "forward_per_sample": fwd["flops"],
            "forward_macs_per_sample": fwd["macs"],
            "forward_by_op": fwd["by_op"],
            "train_step": step["flops"],
            "train_step_forward": step["forward_flops"],
            "train_step_backward": step["backward_flops"],
            "train_step_batch_size": batch_size,
            "train_per_sample": step["flops"] / batch_size,
        },
        "memory": {
            "convention": "peak bytes of live tensor storage during one steady-state training step "
                          "(Adam), at the configured batch size; kernel-internal scratch not included",
            "train_step": mem.to_dict(),
            "estimate": analytic_adam_estimate(params["param_bytes"], input_bytes),
        },
        "saved_size_bytes": sizes,
    }


__all__.append("measure_model")
