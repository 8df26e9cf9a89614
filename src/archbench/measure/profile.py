"""Per-layer and per-phase operation counts of a model (``archbench profile``).

All functions work on a deep copy: the model looked at is never changed
(mode, weights, hooks, ``requires_grad`` and gradients stay as they were, also
when counting raises).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.module_tracker import ModuleTracker

from archbench.measure.counting import FlopCount, OpCounter


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def count_forward(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 1,
                  train_mode: bool = False) -> FlopCount:
    m = copy.deepcopy(model).train(train_mode)
    x = torch.zeros(batch_size, *input_shape, device=_device_of(m))
    with torch.no_grad(), ModuleTracker() as mt, OpCounter(mt) as counter:
        m(x)
    return counter.count


def count_train_step(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 64,
                     num_classes: int = 10) -> dict[str, FlopCount]:
    """Counts of one training step — forward with the cross-entropy loss,
    backward, and the Adam update — separately and in total."""
    from archbench.train.optim import LeanAdam

    m = copy.deepcopy(model).train()
    dev = _device_of(m)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, *input_shape, generator=gen).to(dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    opt = LeanAdam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    with ModuleTracker() as mt:
        with OpCounter(mt) as fwd:
            loss = F.cross_entropy(m(x), y)
        with OpCounter(mt) as bwd:
            loss.backward()
    with OpCounter() as upd:
        opt.step()
    out = {"forward": fwd.count, "backward": bwd.count, "optimizer": upd.count}
    out["total"] = fwd.count.add(bwd.count).add(upd.count)
    return out


def layer_table(model: nn.Module, input_shape=(1, 28, 28)) -> list[dict]:
    """One row per leaf module, in execution order: name, type, output shape
    (batch 1), own parameters, MACs, matmul/conv FLOPs, other FLOPs."""
    m = copy.deepcopy(model).eval()
    names = {mod: name for name, mod in m.named_modules()}
    rows: dict[str, dict] = {}
    order: list[str] = []

    def hook(mod, inputs, output):
        name = names.get(mod, "?")
        if name not in rows:
            order.append(name)
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
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
    rest = {k: v for k, v in by_module.items() if k not in rows}
    if rest:
        out.append({"layer": "(outside leaf modules)", "type": "", "output_shape": None, "params": 0,
                    "macs": sum(v["matmul_conv"] for v in rest.values()) // 2,
                    "matmul_conv_flops": sum(v["matmul_conv"] for v in rest.values()),
                    "other_flops": sum(v["other"] for v in rest.values())})
    return out


def epoch_flops(model: nn.Module, input_shape, batch_size: int, samples: int,
                step_cache: dict | None = None) -> dict:
    """Exact FLOPs of one epoch over ``samples`` images: the full steps plus
    the last partial one (whose optimizer update costs as much as a full one)."""
    full, rest = divmod(samples, batch_size)
    step = (step_cache or {}).get(batch_size) or count_train_step(model, input_shape, batch_size)["total"]
    total_mm, total_other = full * step.matmul_conv, full * step.other_total
    if rest:
        last = count_train_step(model, input_shape, rest)["total"]
        total_mm += last.matmul_conv
        total_other += last.other_total
    return {"steps": full + (1 if rest else 0), "matmul_conv": total_mm, "other": total_other,
            "total": total_mm + total_other}


__all__ = ["count_forward", "count_train_step", "epoch_flops", "layer_table"]

