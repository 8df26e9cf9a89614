"""The steps archbench measures, built by the training loop's own code.

* the **trained** step: what a unit trains -- :func:`archbench.train.step.build_step`
  (formulation, optimizer as ``make_optimizer`` builds it, precision, label
  smoothing) at the recipe's batch size, fed as the loop feeds it (the batch
  gathered with ``index_select``, then ``augment`` when the recipe augments);
* the **reference** step: the model as written, ``torch.optim.Adam`` in its
  default implementation, fp32, plain cross-entropy, no augmentation, same
  batch size -- what a plain PyTorch training loop costs, so a user can relate
  archbench's numbers to their own. It is a second ``Step`` object, not a copy
  of the loop;
* the **inference** pass: :func:`archbench.train.evaluate.predict` as evaluation
  runs it (eval mode, ``no_grad``, the recipe's test-time views, precision and
  formulation).

Every step works on a deep copy of the model, with random inputs (costs do not
depend on the values) drawn from a fixed generator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import UsageError
from archbench.train.evaluate import predict, tta_views
from archbench.train.optim import LeanAdam, optimizer_state_tensors
from archbench.train.step import (
    Step,
    StepSetup,
    aug_generator,
    augment,
    autocast_dtype,
    build_step,
    formulation_of,
    run_view,
)

TRAINED, REFERENCE = "trained", "reference"


def _device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _optimizer_name(cfg: TrainConfig, opt: LeanAdam | torch.optim.Optimizer) -> str:
    kind = "AdamW" if cfg.optimizer == "adamw" else "Adam"
    if type(opt).__name__ == "LeanAdam":
        return f"{kind} (archbench's lean Adam: torch._fused_{kind.lower()}_ kernel)"
    return f"{kind} (torch.optim.{kind}, fused=True)"


def check_batch_norm_batch(model: nn.Module, batch_size: int, input_shape: tuple[int, ...],
                           dev: torch.device) -> None:
    """A training step of batch 1 cannot compute BatchNorm statistics where a
    channel holds one value (BatchNorm1d on (1, C)); say so by name instead of
    PyTorch's traceback."""
    if batch_size >= 2 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    try:
        with torch.no_grad():
            copy.deepcopy(model).train()(torch.zeros(1, *input_shape, device=dev))
    except ValueError as exc:
        if "value per channel" not in str(exc):
            raise
        raise UsageError(f"batch size {batch_size} cannot train {type(model).__name__}: its batch normalisation "
                         f"needs more than one value per channel in training ({exc}). Measure it with a batch "
                         "size of at least 2 (--batch-size 2).") from None


@dataclass
class MeasuredStep:
    """One training step ready to run: ``step()`` runs it as the loop does
    (gather the batch, augment, the step object). ``on_phase(name)``, when
    set, is told each phase as it starts: data, forward, backward, optimizer,
    bookkeeping."""

    kind: str
    model: nn.Module
    setup: StepSetup
    batch_size: int
    description: dict
    pool_x: torch.Tensor
    pool_y: torch.Tensor
    index: torch.Tensor
    loss_out: torch.Tensor
    pred_out: torch.Tensor
    crop: int = 0
    flip: bool = False
    gen: torch.Generator | None = None
    on_phase: Callable[[str], object] | None = field(default=None, repr=False)

    def __call__(self) -> None:
        phase = self.on_phase
        self.setup.step.on_phase = phase
        try:
            if phase is not None:
                phase("data")
            xb = self.pool_x.index_select(0, self.index)
            if self.crop or self.flip:
                xb = augment(xb, self.crop, self.flip, self.gen)  # type: ignore[arg-type]
            self.setup.step(xb, self.pool_y.index_select(0, self.index), self.loss_out, self.pred_out)
        finally:
            self.setup.step.on_phase = None

    def zero_grad(self) -> None:
        self.setup.opt.zero_grad(set_to_none=True)

    def tensors_before(self) -> list[tuple[torch.Tensor, str]]:
        """Every tensor that exists before a step, by category (the data pool
        the batch is gathered from is the dataset, not the step's)."""
        out: list[tuple[torch.Tensor, str]] = [(p, "parameters") for p in self.model.parameters()]
        out += [(b, "buffers") for b in self.model.buffers()]
        out += [(t, "optimizer_state") for t in optimizer_state_tensors(self.setup.opt)]
        out += [(self.loss_out, "input"), (self.pred_out, "input"), (self.index, "input")]
        out += [(p.grad, "gradients") for p in self.model.parameters() if p.grad is not None]
        return out


def _pools(batch_size: int, input_shape: tuple[int, ...], num_classes: int, dev: torch.device, channels_last: bool,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(batch_size, *input_shape, generator=gen).to(dev)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    return x, y


def trained_step(model: nn.Module, cfg: TrainConfig, input_shape: tuple[int, ...] = (1, 28, 28),
                 device: torch.device | str | None = None, batch_size: int | None = None, num_classes: int = 10,
                 seed: int = 0) -> MeasuredStep:
    """The unit's own training step under ``cfg``, on a deep copy of ``model``."""
    dev = _device(model, device)
    m = copy.deepcopy(model).to(dev).train()
    bs = batch_size or cfg.batch_size
    check_batch_norm_batch(m, bs, input_shape, dev)
    setup = build_step(m, cfg, dev)
    x, y = _pools(bs, input_shape, num_classes, dev, setup.channels_last, seed)
    crop, flip = cfg.augment_crop, cfg.augment_flip
    augmenting = bool(crop or flip) and x.dim() == 4
    desc = {
        "kind": TRAINED,
        "what": "the step this unit trains: the training loop's own step object",
        "optimizer": _optimizer_name(cfg, setup.opt),
        "weight_decay": cfg.weight_decay,
        "precision": "bf16 autocast" if cfg.precision == "bf16" else "fp32",
        "formulation": ("fast (channels-last, ReLU after max-pool)" if formulation_of(setup, m) == "fast"
                        else "plain"),
        "batch_size": bs,
        "loss": "cross-entropy" + (f", label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else ""),
        "augmentation": (", ".join(([f"crop {crop}"] if crop else []) + (["flip"] if flip else []))
                         if augmenting else "none"),
        "device": str(dev),
    }
    return MeasuredStep(TRAINED, m, setup, bs, desc, x, y, torch.arange(bs, device=dev),
                        torch.zeros((), device=dev), torch.zeros(bs, dtype=torch.long, device=dev),
                        crop if augmenting else 0, flip if augmenting else False,
                        aug_generator(seed, dev))


def reference_step(model: nn.Module, cfg: TrainConfig, input_shape: tuple[int, ...] = (1, 28, 28),
                   device: torch.device | str | None = None, batch_size: int | None = None, num_classes: int = 10,
                   seed: int = 0) -> MeasuredStep:
    """A plain PyTorch step at the unit's batch size: the model as written,
    ``torch.optim.Adam`` with its default implementation, fp32, plain
    cross-entropy, no augmentation."""
    dev = _device(model, device)
    m = copy.deepcopy(model).to(dev).train()
    bs = batch_size or cfg.batch_size
    check_batch_norm_batch(m, bs, input_shape, dev)
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        build_step(m, cfg, dev)  # raises the named error
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    setup = StepSetup(m, False, opt, Step(m, opt), None)
    x, y = _pools(bs, input_shape, num_classes, dev, False, seed)
    desc = {
        "kind": REFERENCE,
        "what": "plain PyTorch: the model as written, torch.optim.Adam (default implementation), fp32",
        "optimizer": "Adam (torch.optim.Adam, default implementation)",
        "weight_decay": 0.0,
        "precision": "fp32",
        "formulation": "plain (the model as written)",
        "batch_size": bs,
        "loss": "cross-entropy",
        "augmentation": "none",
        "device": str(dev),
    }
    return MeasuredStep(REFERENCE, m, setup, bs, desc, x, y, torch.arange(bs, device=dev),
                        torch.zeros((), device=dev), torch.zeros(bs, dtype=torch.long, device=dev))


@dataclass
class Inference:
    """The evaluation's forward pass on a deep copy: ``run()`` predicts one
    batch over the recipe's test-time views."""

    model: nn.Module
    run_model: nn.Module
    x: torch.Tensor
    views: list
    channels_last: bool
    autocast_dtype: torch.dtype | None
    description: dict

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return predict(self.run_model, self.x, self.views, self.channels_last, self.autocast_dtype)

    def tensors_before(self) -> list[tuple[torch.Tensor, str]]:
        return ([(p, "parameters") for p in self.model.parameters()] + [(b, "buffers") for b in self.model.buffers()]
                + [(self.x, "input")])


def inference_pass(model: nn.Module, cfg: TrainConfig | None = None, input_shape: tuple[int, ...] = (1, 28, 28),
                   device: torch.device | str | None = None, batch_size: int = 1, seed: int = 0) -> Inference:
    """Evaluation as the unit runs it (``cfg`` None: one view, fp32, the fast
    formulation on CPU)."""
    cfg = cfg or TrainConfig()
    dev = _device(model, device)
    m = copy.deepcopy(model).to(dev)
    run, channels_last = run_view(m, cfg, dev)
    run.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(batch_size, *input_shape, generator=gen).to(dev)
    views = tta_views(cfg.tta_flip, cfg.tta_shift) if x.dim() == 4 else tta_views(False, 0)
    amp = autocast_dtype(cfg)
    desc = {"batch_size": batch_size, "views": len(views), "tta_flip": cfg.tta_flip, "tta_shift": cfg.tta_shift,
            "precision": "bf16 autocast" if amp is not None else "fp32",
            "formulation": "fast" if run is not m or channels_last else "plain", "device": str(dev)}
    return Inference(m, run, x, views, channels_last, amp, desc)


def describe(step: MeasuredStep) -> dict[str, Any]:
    return dict(step.description)
