"""Per-layer and per-phase operation counts of a model (``archbench profile``).

All functions work on a deep copy: the model looked at is never changed
(mode, weights, hooks, ``requires_grad`` and gradients stay as they were, also
when counting raises).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archbench.measure.counting import FlopCount, OpCounter, adam_update_flops
from archbench.measure.counting import SafeModuleTracker as ModuleTracker

if TYPE_CHECKING:
    from archbench.config import TrainConfig
    from archbench.measure.step import Inference, MeasuredStep


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def count_forward(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int = 1,
                  train_mode: bool = False) -> FlopCount:
    m = copy.deepcopy(model).train(train_mode)
    x = torch.zeros(batch_size, *input_shape, device=_device_of(m))
    with torch.no_grad(), ModuleTracker() as mt, OpCounter(mt) as counter:
        m(x)
    return counter.count


def count_step(step: MeasuredStep, warmup: int = 1) -> dict[str, FlopCount]:
    """Counts of one run of a :class:`archbench.measure.step.MeasuredStep`
    (after ``warmup`` uncounted steps, so lazily created optimizer state
    exists), by phase -- data (gather, augmentation), forward (with the loss),
    backward, optimizer, bookkeeping (the loss and predictions the loop keeps)
    -- and in total."""
    for _ in range(warmup):
        step()
    step.zero_grad()
    with ModuleTracker() as mt, OpCounter(mt) as counter:
        step.on_phase = counter.set_phase
        try:
            step()
        finally:
            step.on_phase = None
    out = {name: counter.phases.get(name, FlopCount())
           for name in ("data", "forward", "backward", "optimizer", "bookkeeping")}
    out["optimizer"] = _adam_by_convention(step.setup.opt, out["optimizer"])
    total = FlopCount()
    for c in out.values():
        total = total.add(c)
    out["total"] = total
    return out


def _adam_by_convention(opt: Any, measured: FlopCount) -> FlopCount:
    """torch.optim.Adam/AdamW in their for-loop or foreach forms run the
    update as a dozen element-wise ops, each counted 1 per element; the fused
    kernels are counted by the per-element convention. So that both steps
    count the same update the same, a non-fused torch.optim Adam's phase is
    counted by the convention too (its per-parameter step counters, 1 each,
    as the lean Adam's): its ops stay listed under ``by_op`` with 0 FLOPs."""
    if not isinstance(opt, torch.optim.Adam | torch.optim.AdamW) or "_fused_adam_" in measured.by_op \
            or "_fused_adamw_" in measured.by_op or opt.defaults.get("amsgrad"):
        return measured
    groups = [(g["weight_decay"], [p for p in g["params"] if p.requires_grad]) for g in opt.param_groups]
    update = sum(adam_update_flops(sum(p.numel() for p in ps), wd) + len(ps) for wd, ps in groups)
    out = FlopCount(measured.matmul_conv)
    out.other["optimizer"] = update
    out.by_op = {op: {**d, "flops": 0} for op, d in measured.by_op.items()}
    out.by_op["adam update (by convention)"] = {"calls": 1, "flops": update, "category": "optimizer"}
    out.by_module = {"Global": {"matmul_conv": measured.matmul_conv, "other": update}}
    out.data_movement, out.uncounted = dict(measured.data_movement), dict(measured.uncounted)
    return out


def count_inference(inference: Inference) -> FlopCount:
    """Counts of one :class:`archbench.measure.step.Inference` pass (every
    test-time view)."""
    with ModuleTracker() as mt, OpCounter(mt) as counter:
        inference()
    return counter.count


def count_train_step(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int = 64,
                     num_classes: int = 10, cfg: TrainConfig | None = None, device: torch.device | str | None = None,
                     reference: bool = False) -> dict[str, FlopCount]:
    """Counts of one training step -- forward with the loss, backward, the
    optimizer update, and the loop's data and bookkeeping ops -- separately
    and in total: the step ``cfg`` trains (default: the default recipe), or
    with ``reference`` the plain PyTorch step."""
    from archbench.config import TrainConfig
    from archbench.measure.step import reference_step, trained_step

    cfg = cfg or TrainConfig(batch_size=batch_size)
    build = reference_step if reference else trained_step
    return count_step(build(model, cfg, input_shape, device, batch_size, num_classes))


def layer_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[dict]:
    """One row per leaf module, in execution order: name, type, output shape
    (batch 1; None for a tuple or nested tensor), own parameters, MACs,
    matmul/conv FLOPs, other FLOPs; then a row for each container module that
    runs arithmetic itself or holds parameters no leaf ran (the root as
    "(model)"), so that the rows add up to the model's counts."""
    m = copy.deepcopy(model).eval()
    names = {mod: name for name, mod in m.named_modules()}
    rows: dict[str, dict] = {}
    order: list[str] = []

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        name = names.get(mod, "?")
        if name not in rows:
            order.append(name)
            # A nested tensor (TransformerEncoder's fast path with a padding mask) has no one shape.
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) and not output.is_nested else None
            rows[name] = {
                "layer": name, "type": type(mod).__name__, "output_shape": shape,
                "params": sum(p.numel() for p in mod.parameters(recurse=False)),
            }

    handles = [mod.register_forward_hook(hook) for mod in m.modules() if not list(mod.children())]
    try:
        x = torch.zeros(1, *input_shape, device=_device_of(m))
        with torch.no_grad(), ModuleTracker() as mt, OpCounter(mt) as counter:
            m(x)
    finally:
        for h in handles:
            h.remove()
    by_module = counter.count.by_module
    out = []
    for name in order:
        r = rows[name]
        c = by_module.get(name, {"matmul_conv": 0, "other": 0})
        r.update(macs=c["matmul_conv"] // 2, matmul_conv_flops=c["matmul_conv"], other_flops=c["other"])
        out.append(r)
    # Arithmetic a container module runs itself (MultiheadAttention's projections from its own weights, a
    # residual add, a Keras functional graph): one row per such module, with the parameters it holds itself.
    modules = dict(m.named_modules())
    for name, c in by_module.items():
        if name in rows:
            continue
        mod = modules.get(name)
        own = [p for p in mod.parameters(recurse=False)] if mod is not None else []
        out.append({"layer": name or "(model)", "type": type(mod).__name__ if mod is not None else "",
                    "output_shape": None, "params": sum(p.numel() for p in own), "macs": c["matmul_conv"] // 2,
                    "matmul_conv_flops": c["matmul_conv"], "other_flops": c["other"]})
    # Parameters of modules that ran no op of their own (used by a parent): a row each, so the rows add up.
    listed = {r["layer"] if r["layer"] != "(model)" else "" for r in out}
    for name, mod in modules.items():
        held = sum(p.numel() for p in mod.parameters(recurse=False))
        if held and name not in listed:
            out.append({"layer": name or "(model)", "type": type(mod).__name__, "output_shape": None,
                        "params": held, "macs": 0, "matmul_conv_flops": 0, "other_flops": 0})
    return out


def epoch_flops(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, samples: int,
                step_cache: dict | None = None, cfg: TrainConfig | None = None,
                device: torch.device | str | None = None, num_classes: int = 10) -> dict:
    """Exact FLOPs of one epoch over ``samples`` images: the full steps plus
    the last partial one (whose optimizer update costs as much as a full one)."""
    full, rest = divmod(samples, batch_size)
    step = (step_cache or {}).get(batch_size) or count_train_step(model, input_shape, batch_size, num_classes,
                                                                  cfg=cfg, device=device)["total"]
    total_mm, total_other = full * step.matmul_conv, full * step.other_total
    if rest:
        last = count_train_step(model, input_shape, rest, num_classes, cfg=cfg, device=device)["total"]
        total_mm += last.matmul_conv
        total_other += last.other_total
    return {"steps": full + (1 if rest else 0), "matmul_conv": total_mm, "other": total_other,
            "total": total_mm + total_other}


__all__ = ["count_forward", "count_inference", "count_step", "count_train_step", "epoch_flops", "layer_table"]

