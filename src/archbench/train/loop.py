"""The training loop and evaluation.

Data is preloaded as tensors on the device; each step gathers its batch with
one ``index_select`` (no DataLoader, no per-sample Python). Running loss and
accuracy are accumulated in device tensors: on a GPU nothing synchronises the
host inside an epoch, and with ``cuda_graphs`` the whole step (forward,
backward, Adam) is captured once and replayed.

This module knows nothing about measuring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import TrainingError, UsageError
from archbench.records import EpochRow
from archbench.train.formulation import fast_cpu_view
from archbench.train.optim import LeanAdam, optimizer_state_tensors


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


def to_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (or ``(N, H, W)``: one channel) -> float32
    ``(N, C, H, W)`` in [0, 1], as the seed does (x / 255, no standardisation)."""
    x = images_u8.to(device)
    return (x.unsqueeze(1) if x.dim() == 3 else x).float().div_(255.0)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    seconds: float  # training steps only
    eval_seconds: float
    # With a validation split the curve is evaluated on it (and test_* stay None):
    # the test set is evaluated once, after training.
    val_loss: float | None = None
    val_acc: float | None = None

    def to_dict(self) -> EpochRow:
        row = dict(self.__dict__)
        if self.val_loss is None and self.val_acc is None:  # records without a validation split keep their keys
            del row["val_loss"], row["val_acc"]
        return cast(EpochRow, row)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 (N,), on CPU


@dataclass
class TrainResult:
    history: list[EpochStats]
    test: EvalResult
    train_seconds: float
    steps: int
    samples_seen: int
    device: str
    formulation: str
    cuda_graphs: bool
    test_views: int = 1               # views averaged by the final test (the per-epoch curve uses one)
    final_eval_seconds: float = 0.0   # the final test's own evaluation, when it is not the last epoch's
    extra: dict = field(default_factory=dict)


def make_optimizer(params, cfg: TrainConfig, device: torch.device):
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


def set_lr(opt, lr: float) -> None:
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


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` translated by ``dy`` rows and ``dx`` columns, zero-filled."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (p, p, p, p))[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(tta_flip: bool, tta_shift: int) -> list[tuple[int, int, bool]]:
    """(dy, dx, mirrored) of every view whose logits are averaged."""
    offsets = [(0, 0)] + ([(tta_shift, 0), (-tta_shift, 0), (0, tta_shift), (0, -tta_shift)] if tta_shift else [])
    return [(dy, dx, m) for dy, dx in offsets for m in ((False, True) if tta_flip else (False,))]


def predict(model: nn.Module, xb: torch.Tensor, views: list[tuple[int, int, bool]], channels_last: bool = False,
            autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The logits evaluation uses for a batch: the model's outputs on every
    test-time view (:func:`tta_views`) averaged (call in eval mode under
    ``no_grad``). :func:`evaluate` and archbench.measure's inference costs run this."""
    with torch.autocast(xb.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        logits = None
        for dy, dx, mirrored in views:
            v = shift(xb, dy, dx)
            v = v.flip(3) if mirrored else v
            if channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            out = model(v)
            logits = out if len(views) == 1 else (out.float() if logits is None else logits + out.float())
        assert logits is not None  # views is never empty: it always holds the unshifted view
        if len(views) > 1:
            logits = logits / len(views)
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             channels_last: bool = False, autocast_dtype: torch.dtype | None = None,
             tta_flip: bool = False, tta_shift: int = 0) -> EvalResult:
    """Mean cross-entropy, accuracy and per-sample predictions over a split.
    ``images`` is float ``(N, C, H, W)`` on the model's device, or uint8
    (streamed: each batch converted with :func:`to_input` as it is read). With
    test-time augmentation the logits of each image's views (mirror image;
    shifts by ``tta_shift`` pixels up, down, left, right) are averaged."""
    was_training = model.training
    model.eval()
    views = tta_views(tta_flip, tta_shift)
    try:
        loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
        preds = []
        dev = labels.device
        for s in range(0, images.shape[0], batch_size):
            xb = images[s:s + batch_size]
            if xb.dtype == torch.uint8:
                xb = to_input(xb, dev)
            logits = predict(model, xb, views, channels_last, autocast_dtype)
            loss_sum += F.cross_entropy(logits.float(), labels[s:s + batch_size], reduction="sum").double()
            preds.append(logits.argmax(1))
        pred = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
        n = labels.numel()
        acc = float((pred == labels.cpu()).sum()) / n if n else float("nan")
        return EvalResult(float(loss_sum) / n if n else float("nan"), acc, pred)
    finally:
        model.train(was_training)


class _Step:
    """One eager training step. It writes the batch's mean loss into
    ``loss_out`` (a 0-d slot) and its predicted classes into ``pred_out``: two
    cheap ops, where running sums would cost five; the epoch's statistics are
    computed from those buffers at its end."""

    def __init__(self, model, opt, zero_grad: bool = True, label_smoothing: float = 0.0,
                 autocast_dtype: torch.dtype | None = None):
        self.model, self.opt, self.zero_grad = model, opt, zero_grad
        self.label_smoothing, self.autocast_dtype = label_smoothing, autocast_dtype
        # archbench.measure's hook, told each phase as it starts (forward, backward,
        # optimizer, bookkeeping); None while training.
        self.on_phase: Callable[[str], object] | None = None

    def __call__(self, xb, yb, loss_out, pred_out):
        phase = self.on_phase
        if self.zero_grad:
            # None, not zeros: backward then writes gradients instead of adding to zeros.
            self.opt.zero_grad(set_to_none=True)
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


@dataclass
class StepSetup:
    """What one training step runs, built from the recipe by :func:`build_step`:
    the module that runs (the fast CPU view, or the model itself), whether
    inputs are channels-last, the optimizer, the step object and the autocast
    dtype. The training loop and archbench.measure both build their step here."""

    run_model: nn.Module
    channels_last: bool
    opt: Any
    step: _Step
    autocast_dtype: torch.dtype | None


def build_step(model: nn.Module, cfg: TrainConfig, device: torch.device) -> StepSetup:
    """The training step of ``model`` (already on ``device``) under ``cfg``:
    formulation, optimizer (:func:`make_optimizer`), precision and loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError(f"the model {type(model).__name__} has no trainable parameters (every parameter has "
                         "requires_grad=False, or it has none), so there is nothing to train. Unfreeze at least "
                         "one layer (param.requires_grad_(True)).")
    run_model, channels_last = model, False
    if cfg.formulation == "fast" and device.type == "cpu":
        run_model, channels_last = fast_cpu_view(model)
    opt = make_optimizer(params, cfg, device)
    amp = torch.bfloat16 if cfg.precision == "bf16" else None
    step = _Step(run_model, opt, label_smoothing=cfg.label_smoothing, autocast_dtype=amp)
    return StepSetup(run_model, channels_last, opt, step, amp)


class _GraphedStep:
    """The training step captured as one CUDA graph per batch shape.

    Capturing needs warm-up iterations (lazy cuBLAS/cuDNN and optimizer-state
    initialisation); they run on a copy of a real batch and are then undone:
    parameters, buffers and optimizer state are restored, so training starts
    from the same state an eager run would. Each replay reads its batch from
    static input tensors and writes loss and predictions to static outputs,
    which are copied to the epoch's buffers (device-side copies, no sync).
    """

    def __init__(self, model, opt, example_x, example_y, **step_kwargs):
        self.model, self.opt = model, opt
        self.step_kwargs = step_kwargs
        self.eager = _Step(model, opt, **step_kwargs)
        self.graphs: dict[int, tuple] = {}
        self._example = (example_x, example_y)

    def _restore(self, state, opt_before: dict):
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

    def capture(self, batch_sizes):
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
        captured = _Step(self.model, self.opt, zero_grad=False, **self.step_kwargs)
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

    def __call__(self, xb, yb, loss_out, pred_out):
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


def prepare_splits(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor | None,
                   test_y: torch.Tensor | None, val_x: torch.Tensor | None, val_y: torch.Tensor | None,
                   device: torch.device, channels_last: bool, stream: bool) -> tuple[Any, ...]:
    """(X, Y, Xt, Yt, Xv, Yv) as the training loop reads them: labels on the
    device; images as float32 on the device (channels-last training images
    where the step wants them), or with ``stream`` the uint8 images where
    they are (each batch is converted as it is read)."""
    if stream:
        X = train_x
    else:
        X = to_input(train_x, device)
        if channels_last:
            X = X.contiguous(memory_format=torch.channels_last)
    Xt = (test_x if stream else to_input(test_x, device)) if test_x is not None else None
    Xv = (val_x if stream else to_input(val_x, device)) if val_x is not None else None
    return (X, train_y.to(device), Xt, test_y.to(device) if test_y is not None else None,
            Xv, val_y.to(device) if val_y is not None else None)


def gather(X: torch.Tensor, idx: torch.Tensor, device: torch.device, channels_last: bool,
           stream: bool) -> torch.Tensor:
    """The images at ``idx`` as the step takes them: rows of the prepared
    float images, or (``stream``) of the uint8 images where they are,
    converted now (channels-last where the step wants it)."""
    if not stream:
        return X.index_select(0, idx)
    xb = to_input(X.index_select(0, idx.to(X.device)), device)
    return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb


def _non_finite_evaluation(loss: float, epoch: int, split: str = "test") -> TrainingError:
    return TrainingError(f"evaluation loss became {loss} after epoch {epoch}: the model's outputs on the {split} "
                         "split are not finite (inf or nan logits), so its accuracy cannot be trusted. Check the "
                         "model's last layers (an unbounded output, a division), or lower the learning rate.")


class ProgressBar(Protocol):
    """A tqdm-like progress bar."""

    def update(self, n: int, /) -> object: ...

    def set_postfix_str(self, s: str, /) -> object: ...

    def close(self) -> object: ...


ProgressFactory = Callable[..., ProgressBar]


def train(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
          test_x: torch.Tensor | None, test_y: torch.Tensor | None, cfg: TrainConfig,
          seed: int, progress: ProgressFactory | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None,
          checkpoint: Callable[[dict], None] | None = None,
          resume_from: dict | None = None, val_x: torch.Tensor | None = None,
          val_y: torch.Tensor | None = None, stream: bool = False) -> TrainResult:
    """Train ``model`` in place with the recipe in ``cfg``.

    ``train_x``/``val_x``/``test_x`` are uint8 ``(N, C, H, W)`` (or
    ``(N, H, W)``) images, ``*_y`` int64 labels. With a validation split the
    per-epoch curve is evaluated on it, and the test set once, after the last
    epoch; without one, the curve is the test set's (as the seed notebook).
    ``stream``: keep the images as uint8 where they are (memory-mapped, say)
    and convert each batch as it is read, instead of converting whole splits
    to float32 on the device first; the arithmetic is the same.
    The shuffling order is drawn from a generator seeded with ``seed``; model
    initialisation is the caller's (seed the global RNG before building it).
    ``progress(total=..., desc=...)`` returns a tqdm-like bar (``update``,
    ``set_postfix_str``, ``close``), or None for no bar.

    ``checkpoint(state)`` is called after every epoch with everything needed to
    continue (weights, optimizer state, RNG states, history); passing that
    state back as ``resume_from`` continues training where it stopped, with
    the same result as an uninterrupted run on CPU.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    model.train()
    setup = build_step(model, cfg, device)
    run_model, channels_last = setup.run_model, setup.channels_last
    X, Y, Xt, Yt, Xv, Yv = prepare_splits(train_x, train_y, test_x, test_y, val_x, val_y, device,
                                          channels_last, stream)
    n = X.shape[0]
    if n == 0:
        raise UsageError("the training set is empty (check --train-limit).")
    opt = setup.opt
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    step_loss = torch.zeros(steps_per_epoch, device=device)
    step_size = torch.full((steps_per_epoch,), float(bs), device=device)
    if n % bs:
        step_size[-1] = n % bs
    preds = torch.zeros(n, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    augmenting = bool(cfg.augment_crop or cfg.augment_flip)
    total_steps = steps_per_epoch * cfg.epochs
    history: list[EpochStats] = []
    total_train = 0.0
    first_epoch = 1
    if resume_from is not None:
        with torch.no_grad():
            model.load_state_dict(resume_from["model"])
        # The learning rate is the recipe's (set per step when scheduled): keep
        # this optimizer's own lr objects (a device tensor on CUDA), not the saved ones.
        lrs = [g["lr"] for g in getattr(opt, "param_groups", [])]
        opt.load_state_dict(resume_from["optimizer"])
        for g, lr in zip(getattr(opt, "param_groups", []), lrs):
            g["lr"] = lr
        gen.set_state(resume_from["generator"].cpu())
        if resume_from.get("aug_generator") is not None:
            aug_gen.set_state(resume_from["aug_generator"].cpu())
        torch.set_rng_state(resume_from["torch_rng"].cpu())
        if device.type == "cuda" and resume_from.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume_from["cuda_rng"].cpu(), device)
        history = [EpochStats(**h) for h in resume_from["history"]]
        total_train = resume_from["train_seconds"]
        first_epoch = resume_from["epoch"] + 1
    # Captured only now: a CUDA graph holds the optimizer-state tensors it saw,
    # so they must be the resumed ones (load_state_dict replaces them).
    amp = setup.autocast_dtype
    step_kwargs: dict[str, Any] = dict(label_smoothing=cfg.label_smoothing, autocast_dtype=amp)
    step: _Step | _GraphedStep = setup.step
    use_graphs = device.type == "cuda" and cfg.cuda_graphs
    if use_graphs:
        example = to_input(X[:bs], device) if stream else X[:bs]
        step = _GraphedStep(run_model, opt, example, Y[:bs], **step_kwargs)
        sizes = sorted({bs, n % bs} - {0})
        step.capture(sizes)
    ev = None
    for epoch in range(first_epoch, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(device)
        bar = progress(total=n, desc=f"epoch {epoch}/{cfg.epochs}", unit="img") if progress else None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            lo, hi = i * bs, min((i + 1) * bs, n)
            idx = perm[lo:hi]
            if cfg.schedule != "constant":
                set_lr(opt, cfg.lr_at((epoch - 1) * steps_per_epoch + i, total_steps))
            xb = gather(X, idx, device, channels_last, stream)
            if augmenting:
                xb = augment(xb, cfg.augment_crop, cfg.augment_flip, aug_gen)
            step(xb, Y.index_select(0, idx), step_loss[i], preds[lo:hi])
            if bar is not None:
                bar.update(hi - lo)
                if device.type == "cpu" and i % 100 == 99:
                    bar.set_postfix_str(f"loss {float(step_loss[i - 99:i + 1].mean()):.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        total_train += seconds
        train_loss = float((step_loss * step_size).sum()) / n
        train_acc = int((preds == Y.index_select(0, perm)).sum()) / n
        if not math.isfinite(train_loss):
            if bar is not None:
                bar.close()
            raise TrainingError(f"training loss became {train_loss} in epoch {epoch} (lr {cfg.lr}); "
                                "lower the learning rate or check the model.")
        t1 = time.perf_counter()
        test_loss = test_acc = val_loss = val_acc = None
        # The learning curve is evaluated on one view, on the validation split where there is one (the test
        # set is then evaluated once, after training); test-time augmentation is for the final test only.
        held_x, held_y, split = (Xv, Yv, "validation") if Xv is not None else (Xt, Yt, "test")
        if held_x is not None:
            assert held_y is not None  # images and labels are passed together
            curve = evaluate(run_model, held_x, held_y, cfg.eval_batch_size, channels_last, amp)
            if held_y.numel() and not math.isfinite(curve.loss):
                if bar is not None:
                    bar.close()
                raise _non_finite_evaluation(curve.loss, epoch, split)
            if split == "validation":
                val_loss, val_acc = curve.loss, curve.accuracy
            else:
                ev, test_loss, test_acc = curve, curve.loss, curve.accuracy
        eval_seconds = time.perf_counter() - t1
        stats = EpochStats(epoch, train_loss, train_acc, test_loss, test_acc, seconds, eval_seconds,
                           val_loss, val_acc)
        history.append(stats)
        if bar is not None:
            post = f"loss {train_loss:.4f} acc {train_acc:.4f} {n / seconds:,.0f} img/s"
            if test_acc is not None:
                post += f" | test acc {test_acc:.4f}"
            if val_acc is not None:
                post += f" | val acc {val_acc:.4f}"
            bar.set_postfix_str(post)
            bar.close()
        if on_epoch:
            on_epoch(stats)
        if checkpoint is not None:
            checkpoint({
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "aug_generator": aug_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": [h.to_dict() for h in history], "train_seconds": total_train,
            })
    views = len(tta_views(cfg.tta_flip, cfg.tta_shift))
    final_seconds = 0.0
    if Xt is not None:
        assert Yt is not None  # test_x and test_y are passed together
        if ev is None or views > 1:  # resumed after the last epoch, or the final test's views
            t1 = time.perf_counter()
            ev = evaluate(run_model, Xt, Yt, cfg.eval_batch_size, channels_last, amp, cfg.tta_flip, cfg.tta_shift)
            final_seconds = time.perf_counter() - t1
            if Yt.numel() and not math.isfinite(ev.loss):
                raise _non_finite_evaluation(ev.loss, cfg.epochs)
        final = ev
    else:
        final = EvalResult(float("nan"), float("nan"), torch.empty(0, dtype=torch.long))
    return TrainResult(history, final, total_train, steps_per_epoch * cfg.epochs, n * cfg.epochs,
                       str(device), str(cfg.formulation) if device.type == "cpu" else "plain", use_graphs,
                       test_views=views, final_eval_seconds=final_seconds)
