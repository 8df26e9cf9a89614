"""Faster formulations of the same maths, for training on a CPU.

Profiling the seed CNN's eager training step on a 2-core CPU (see
``benchmarks/seed_study.py`` and docs/performance.md) shows the convolutions
are not the main wall: ``max_pool2d`` on NCHW tensors and the ReLU before it
take more time than the two convolutions' forward passes. Two rewrites remove
most of that without changing the function or its gradients:

* **channels-last layout.** Conv, pooling and ReLU kernels run on NHWC memory,
  vectorised over channels; oneDNN convolutions skip their layout reorders.
* **ReLU after max-pooling.** ``relu(maxpool(x)) == maxpool(relu(x))`` because
  ReLU is monotone; the gradient is the same too (the max's argmax among
  positive values is unchanged, and where the max is <= 0 both give zero). The
  ReLU then runs on 4x fewer elements.

The rewrite builds a *view* of the model: new ``nn.Sequential`` containers
holding the very same layer objects (so the same ``Parameter`` tensors). The
user's model is left untouched apart from the memory format of its
convolution weights, which does not change their values.
"""

from __future__ import annotations

import torch
from torch import nn

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _commutes(act: nn.Module, pool: nn.Module) -> bool:
    return type(act) is nn.ReLU and isinstance(pool, _POOLS) and not pool.return_indices


def _reorder(module: nn.Module) -> nn.Module:
    if type(module) is not nn.Sequential:
        return module
    children = [_reorder(m) for m in module]
    i = 0
    while i + 1 < len(children):
        if _commutes(children[i], children[i + 1]):
            children[i], children[i + 1] = children[i + 1], children[i]
            i += 2
        else:
            i += 1
    return nn.Sequential(*children)


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def fast_cpu_view(model: nn.Module) -> tuple[nn.Module, bool]:
    """Return ``(module_to_run, channels_last)`` for training ``model`` on CPU."""
    view = _reorder(model)
    channels_last = has_conv2d(model)
    if channels_last:
        # torch's Module.to stub has no memory_format keyword, which Module.to accepts at run time.
        view = view.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return view, channels_last
