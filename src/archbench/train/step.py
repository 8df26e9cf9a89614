"""One training step, built once from the recipe: the recipe -> runtime
decisions (formulation, optimizer, precision, loss, augmentation) are made
here and nowhere else, and the training loop, archbench.measure's cost
measurers and the thread probe all run the step built here.

This module knows nothing about measuring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import UsageError
from archbench.train.formulation import fast_cpu_view
from archbench.train.optim import LeanAdam, optimizer_state_tensors

# The augmentation generator of a unit is seeded with its seed plus this offset (the shuffling generator
# with the seed itself): one place for the training loop and the measured step.
AUG_SEED_OFFSET = 1_000_003


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} requested but PyTorch sees no CUDA GPU (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no'}). Use --device cpu or --device auto."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible.")
        return dev
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"device {name!r} is invalid: expected auto, cpu, cuda or cuda:N.")


def autocast_dtype(cfg: TrainConfig) -> torch.dtype | None:
    """The autocast dtype of the recipe's precision (None: fp32, no autocast)."""
    return torch.bfloat16 if cfg.precision == "bf16" else None


def run_view(model: nn.Module, cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, bool]:
    """(the module that runs, whether its inputs are channels-last): the fast
    CPU view of ``model`` under the fast formulation on a CPU, else the model."""
    if cfg.formulation == "fast" and device.type == "cpu":
        return fast_cpu_view(model)
    return model, False


def aug_generator(seed: int, device: torch.device) -> torch.Generator:
    """The unit's augmentation generator (crops and flips are drawn from it)."""
    return torch.Generator(device=device).manual_seed(seed + AUG_SEED_OFFSET)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig,
                   device: torch.device) -> LeanAdam | torch.optim.Optimizer:
    """Adam with the recipe's hyper-parameters. On CPU the lean wrapper around
    the fused kernel (same updates, less Python); on CUDA torch's fused,
    capturable Adam (its state lives on the GPU, so it can be graph-captured)."""
    kwargs: dict[str, Any] = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if device.type == "cuda":
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # A tensor lr can be changed between graph replays (schedules).
        lr = torch.tensor(cfg.lr, device=device) if cfg.schedule != "constant" else cfg.lr
        return cls(params, lr=lr, fused=True, capturable=True, **kwargs)
    return LeanAdam(params, lr=cfg.lr, decoupled=cfg.optimizer == "adamw", **kwargs)


def set_lr(opt: LeanAdam | torch.optim.Optimizer, lr: float) -> None:
    if isinstance(opt, LeanAdam):
        opt.lr = lr
        return
    for group in opt.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def augment(xb: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crops (after zero padding by ``pad``) and horizontal flips, one
    draw per image, on the batch's device; no Python per sample.

    Crop and flip are one ``gather``: each output pixel's source index in the
    padded image is computed from the image's offsets (and mirrored column
    when flipped). Draws: ``dy``, ``dx`` (when padding), then the flip mask."""
    b, c, h, w = xb.shape
    dev = xb.device
    wp = w + 2 * pad
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if pad:
        rows = rows + torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=gen)
    if flip:
        mask = torch.rand(b, device=dev, generator=gen) < 0.5
        cols = torch.where(mask[:, None], (w - 1) - cols, cols)
    if pad:
        cols = cols + dx
    src = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    xp = F.pad(xb, (pad, pad, pad, pad)) if pad else xb
    out = xp.reshape(b, c, -1).gather(2, src).view(b, c, h, w)
    return out.contiguous(memory_format=torch.channels_last) if xb.is_contiguous(
        memory_format=torch.channels_last) and c > 1 else out


class Step:
    """One eager training step. It writes the batch's mean loss into
    ``loss_out`` (a 0-d slot) and its predicted classes into ``pred_out``: two
    cheap ops, where running sums would cost five; the epoch's statistics are
    computed from those buffers at its end."""

    def __init__(self, model: nn.Module, opt: LeanAdam | torch.optim.Optimizer, zero_grad: bool = True,
                 label_smoothing: float = 0.0, autocast_dtype: torch.dtype | None = None) -> None:
        self.model, self.opt, self.zero_grad = model, opt, zero_grad
        self.label_smoothing, self.autocast_dtype = label_smoothing, autocast_dtype
        # archbench.measure's hook, told each phase as it starts (forward, backward,
        # optimizer, bookkeeping); None while training.
        self.on_phase: Callable[[str], object] | None = None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, loss_out: torch.Tensor, pred_out: torch.Tensor) -> None:
        phase = self.on_phase
        if phase is not None:
            phase("forward")
        if self.autocast_dtype is None:  # the fp32 hot path: no autocast bookkeeping per step
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing)
        else:
            with torch.autocast(xb.device.type, dtype=self.autocast_dtype, cache_enabled=False):
                logits = self.model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=self.label_smoothing)
        if phase is not None:
            phase("backward")
        loss.backward()
        if phase is not None:
            phase("optimizer")
        self.opt.step()
        if phase is not None:
            phase("bookkeeping")
        with torch.no_grad():
            loss_out.copy_(loss.detach())
            torch.argmax(logits.detach(), 1, out=pred_out)
        if self.zero_grad:
            # Released as soon as the update has used them, not when the next step starts: between steps
            # (while the loop gathers the next batch) nothing of this step is held. None, not zeros:
            # the next backward writes gradients instead of adding to zeros (the same arithmetic).
            self.opt.zero_grad(set_to_none=True)


@dataclass
class StepSetup:
    """What one training step runs, built from the recipe by :func:`build_step`:
    the module that runs (the fast CPU view, or the model itself), whether
    inputs are channels-last, the optimizer, the step object and the autocast
    dtype. The training loop and archbench.measure both build their step here."""

    run_model: nn.Module
    channels_last: bool
    opt: Any
    step: Step
    autocast_dtype: torch.dtype | None


def formulation_of(setup: StepSetup, model: nn.Module) -> str:
    """The formulation a step really trains ``model`` in: "fast" where its
    CPU view changed something (a reordered module, channels-last inputs),
    "plain" where the model runs as written (a recipe's "fast" finds nothing
    to rewrite in a Keras model or a custom module without convolutions)."""
    return "fast" if setup.run_model is not model or setup.channels_last else "plain"


def build_step(model: nn.Module, cfg: TrainConfig, device: torch.device) -> StepSetup:
    """The training step of ``model`` (already on ``device``) under ``cfg``:
    formulation, optimizer (:func:`make_optimizer`), precision and loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError(f"the model {type(model).__name__} has no trainable parameters (every parameter has "
                         "requires_grad=False, or it has none), so there is nothing to train. Unfreeze at least "
                         "one layer (param.requires_grad_(True)).")
    run_model, channels_last = run_view(model, cfg, device)
    opt = make_optimizer(params, cfg, device)
    amp = autocast_dtype(cfg)
    step = Step(run_model, opt, label_smoothing=cfg.label_smoothing, autocast_dtype=amp)
    return StepSetup(run_model, channels_last, opt, step, amp)


class GraphedStep:
    """The training step captured as one CUDA graph per batch shape.

    Capturing needs warm-up iterations (lazy cuBLAS/cuDNN and optimizer-state
    initialisation); they run on a copy of a real batch and are then undone:
    parameters, buffers and optimizer state are restored, so training starts
    from the same state an eager run would. Each replay reads its batch from
    static input tensors and writes loss and predictions to static outputs,
    which are copied to the epoch's buffers (device-side copies, no sync).
    """

    def __init__(self, model: nn.Module, opt: LeanAdam | torch.optim.Optimizer, example_x: torch.Tensor,
                 example_y: torch.Tensor, **step_kwargs: Any) -> None:
        self.model, self.opt = model, opt
        self.step_kwargs = step_kwargs
        self.eager = Step(model, opt, **step_kwargs)
        self.graphs: dict[int, tuple] = {}
        self._example = (example_x, example_y)

    def _restore(self, state: dict[str, torch.Tensor], opt_before: dict[int, torch.Tensor]) -> None:
        """Undo the warm-up: weights back to ``state``; optimizer tensors back
        to their values before warm-up (zero where warm-up created them)."""
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])
            for t in optimizer_state_tensors(self.opt):
                before = opt_before.get(id(t))
                if before is None:
                    t.zero_()
                else:
                    t.copy_(before)

    def capture(self, batch_sizes: Sequence[int]) -> None:
        x, y = self._example
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_before = {id(t): t.detach().clone() for t in optimizer_state_tensors(self.opt)}
        scratch_loss = torch.zeros((), device=x.device)
        scratch_pred = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in batch_sizes:
                for _ in range(3):
                    self.eager(x[:b], y[:b], scratch_loss, scratch_pred[:b])
        torch.cuda.current_stream().wait_stream(side)
        captured = Step(self.model, self.opt, zero_grad=False, **self.step_kwargs)
        for b in batch_sizes:
            static = (x[:b].clone(), y[:b].clone(), torch.zeros((), device=x.device),
                      torch.zeros(b, dtype=torch.long, device=x.device))
            # Each graph allocates (and then rewrites on every replay) its own gradients.
            self.opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured(*static)
            self.graphs[b] = (graph, static)
        torch.cuda.synchronize()
        self._restore(state, opt_before)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, loss_out: torch.Tensor, pred_out: torch.Tensor) -> None:
        entry = self.graphs.get(yb.shape[0])
        if entry is None:
            self.eager(xb, yb, loss_out, pred_out)
            return
        graph, (sx, sy, sloss, spred) = entry
        sx.copy_(xb)
        sy.copy_(yb)
        graph.replay()
        loss_out.copy_(sloss)
        pred_out.copy_(spred)


