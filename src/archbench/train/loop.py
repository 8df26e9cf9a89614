"""The training loop.

Data is preloaded as tensors on the device; each step gathers its batch with
one ``index_select`` (no DataLoader, no per-sample Python). Running loss and
accuracy are accumulated in device tensors: on a GPU nothing synchronises the
host inside an epoch, and with ``cuda_graphs`` the whole step (forward,
backward, Adam) is captured once and replayed. The step is built by
:mod:`archbench.train.step`; evaluation is :mod:`archbench.train.evaluate`.

This module knows nothing about measuring.
"""

from __future__ import annotations

import base64
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import TrainingError, UsageError
from archbench.records import EpochRow
from archbench.train.evaluate import EvalResult, evaluate, to_input, tta_views
from archbench.train.step import (
    GraphedStep,
    Step,
    StepSetup,
    aug_generator,
    augment,
    build_step,
    formulation_of,
    resolve_device,
    set_lr,
)


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


def samples_of(steps: int, n_train: int, batch_size: int) -> int:
    """The training images ``steps`` steps go through: epochs of ``n_train``
    images in batches of ``batch_size``, each epoch's last batch partial."""
    bs = min(batch_size, n_train)
    per_epoch = math.ceil(n_train / bs)
    full, rest = divmod(steps, per_epoch)
    return full * n_train + min(rest * bs, n_train)


@dataclass
class _Run:
    """One training run's state, shared by the loop's steps."""

    model: nn.Module
    cfg: TrainConfig
    device: torch.device
    setup: StepSetup
    X: torch.Tensor
    Y: torch.Tensor
    held: tuple[torch.Tensor | None, torch.Tensor | None, str]  # the curve's split: (images, labels, name)
    stream: bool
    gen: torch.Generator
    aug_gen: torch.Generator
    history: list[EpochStats] = field(default_factory=list)
    total_train: float = 0.0
    first_epoch: int = 1
    max_steps: int | None = None  # a step budget (equal-compute comparisons); None: the recipe's epochs
    eval_at: dict[int, int] = field(default_factory=dict)  # global step -> evaluations of the held-out split
    points: list[dict[str, Any]] = field(default_factory=list)  # those evaluations (budget_point)
    max_seconds: float | None = None  # a time budget: seconds of training steps (equal-time comparisons)
    time_evals: int = 0               # a time budget's curve points evaluated so far (at k/8 of its seconds)
    steps_done: int = 0

    @property
    def total_steps(self) -> int:
        """The steps the run trains (a time budget: an upper bound, never reached)."""
        if self.max_seconds is not None:
            return 1 << 40
        return self.max_steps if self.max_steps is not None else self.steps_per_epoch * self.cfg.epochs

    @property
    def epochs(self) -> int:
        """Epochs to run: the recipe's, or as many as the step budget reaches into (the last may be partial)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def time_up(self) -> bool:
        return self.max_seconds is not None and self.total_train >= self.max_seconds

    def steps_in(self, epoch: int) -> int:
        return min(self.steps_per_epoch, self.total_steps - (epoch - 1) * self.steps_per_epoch)

    def samples_in(self, epoch: int) -> int:
        return min(self.steps_in(epoch) * self.bs, self.n)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def bs(self) -> int:
        return min(self.cfg.batch_size, self.n)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.bs)


def _resume(run: _Run, state: dict) -> None:
    """Continue from an epoch checkpoint: weights, optimizer, RNG states, history."""
    opt, device = run.setup.opt, run.device
    with torch.no_grad():
        run.model.load_state_dict(state["model"])
    # The learning rate is the recipe's (set per step when scheduled): keep
    # this optimizer's own lr objects (a device tensor on CUDA), not the saved ones.
    lrs = [g["lr"] for g in getattr(opt, "param_groups", [])]
    opt.load_state_dict(state["optimizer"])
    for g, lr in zip(getattr(opt, "param_groups", []), lrs):
        g["lr"] = lr
    run.gen.set_state(state["generator"].cpu())
    if state.get("aug_generator") is not None:
        run.aug_gen.set_state(state["aug_generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    run.history = [EpochStats(**h) for h in state["history"]]
    run.total_train = state["train_seconds"]
    run.points = list(state.get("points") or [])
    run.time_evals = int(state.get("time_evals") or 0)
    run.first_epoch = state["epoch"] + 1
    run.steps_done = int(state.get("steps_done", state["epoch"] * run.steps_per_epoch))


def _step_runner(run: _Run, stream: bool) -> Step | GraphedStep:
    """The step to call: eager, or captured as CUDA graphs. Captured only
    after resuming: a graph holds the optimizer-state tensors it saw, so they
    must be the resumed ones (load_state_dict replaces them)."""
    if not (run.device.type == "cuda" and run.cfg.cuda_graphs):
        return run.setup.step
    bs, n = run.bs, run.n
    example = to_input(run.X[:bs], run.device) if stream else run.X[:bs]
    step = GraphedStep(run.setup.run_model, run.setup.opt, example, run.Y[:bs],
                       label_smoothing=run.cfg.label_smoothing, autocast_dtype=run.setup.autocast_dtype)
    step.capture(sorted({bs, n % bs} - {0}))
    return step


def _spent(run: _Run, t0: float, paused: float) -> float:
    """Seconds of training steps so far (a time budget's clock): the device's
    queued work waited for, evaluation left out."""
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return run.total_train + (time.perf_counter() - t0 - paused)


def _time_points(run: _Run, done: int, t0: float, paused: float) -> tuple[float, bool]:
    """Under a time budget, after global step ``done``: evaluate the curve's
    points whose fraction of the budget has passed; (seconds the evaluations
    took, whether the budget is spent)."""
    assert run.max_seconds is not None
    spent = _spent(run, t0, paused)
    took = 0.0
    while run.time_evals < CURVE_FRACTIONS and spent >= run.max_seconds * (run.time_evals + 1) / CURVE_FRACTIONS:
        t_eval = time.perf_counter()
        run.time_evals += 1
        budget_point(run, done, spent, 1, run.time_evals / CURVE_FRACTIONS)
        took += time.perf_counter() - t_eval
    return took, spent >= run.max_seconds


CURVE_FRACTIONS = 8  # a time budget's curve points: at each eighth of its seconds


def _epoch(run: _Run, epoch: int, step: Step | GraphedStep, bar: ProgressBar | None,
           buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[float, float, float, int]:
    """One pass over the training images, or its first part where the step
    or time budget ends inside it: (seconds of steps, mean loss, accuracy,
    steps) over the images it trained on. The learning-rate schedule runs
    over the whole budget (a schedule with warm-up or decay stretches to the
    model's steps, or under a time budget to its seconds)."""
    cfg, device, X, Y, n, bs = run.cfg, run.device, run.X, run.Y, run.n, run.bs
    step_loss, step_size, preds = buffers
    spe, channels_last = run.steps_per_epoch, run.setup.channels_last
    k, total, timed = run.steps_in(epoch), run.total_steps, run.max_seconds is not None
    augmenting = bool(cfg.augment_crop or cfg.augment_flip)
    perm = torch.randperm(n, generator=run.gen).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, paused = time.perf_counter(), 0.0
    for i in range(k):
        lo, hi = i * bs, min((i + 1) * bs, n)
        idx = perm[lo:hi]
        if cfg.schedule != "constant":
            set_lr(run.setup.opt, cfg.lr_at_fraction(_spent(run, t0, paused) / run.max_seconds)
                   if run.max_seconds is not None else cfg.lr_at((epoch - 1) * spe + i, total))
        xb = gather(X, idx, device, channels_last, run.stream)
        if augmenting:
            xb = augment(xb, cfg.augment_crop, cfg.augment_flip, run.aug_gen)
        step(xb, Y.index_select(0, idx), step_loss[i], preds[lo:hi])
        del xb  # released before the next batch is gathered: between steps the loop holds no batch
        if bar is not None:
            bar.update(hi - lo)
            if device.type == "cpu" and i % 100 == 99:
                bar.set_postfix_str(f"loss {float(step_loss[i - 99:i + 1].mean()):.4f}")
        done = (epoch - 1) * spe + i + 1
        if done in run.eval_at:
            t_eval = time.perf_counter()  # evaluation is not training: its time is left out
            budget_point(run, done, run.total_train + (t_eval - t0 - paused), run.eval_at[done])
            paused += time.perf_counter() - t_eval
        if timed:
            took, up = _time_points(run, done, t0, paused)
            paused += took
            if up:
                k = i + 1
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0 - paused
    seen = min(k * bs, n)
    train_loss = float((step_loss[:k] * step_size[:k]).sum()) / seen
    train_acc = int((preds[:seen] == Y.index_select(0, perm[:seen])).sum()) / seen
    return seconds, train_loss, train_acc, k


def budget_point(run: _Run, step: int, seconds: float, times: int = 1, fraction: float | None = None) -> None:
    """Evaluate the held-out split after global ``step`` (a point of the
    accuracy-against-compute curve) and keep it in ``run.points`` ``times``
    times (a step the plan names twice): the step, the training images seen,
    the training seconds so far, loss, accuracy and which images it got
    right (bits, base64: the verdict at that point pairs them across models)."""
    held_x, held_y, split = run.held
    if held_x is None or held_y is None:
        return
    s = run.setup
    ev = evaluate(s.run_model, held_x, held_y, run.cfg.eval_batch_size, s.channels_last, s.autocast_dtype)
    correct = (ev.predictions == held_y.cpu()).numpy()
    point = {"step": step, "samples": samples_of(step, run.n, run.bs), "seconds": seconds, "split": split,
             "loss": ev.loss, "accuracy": ev.accuracy,
             "correct": base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")}
    if fraction is not None:  # a time budget's point: at this fraction of its seconds
        point["fraction"] = fraction
    run.points += [dict(point) for _ in range(times)]


def _curve_point(run: _Run, epoch: int) -> tuple[EvalResult | None, float]:
    """The learning curve's evaluation after ``epoch``: one view, on the
    validation split where there is one, else the test set (the test set is
    then evaluated once more only for test-time views). (result, seconds)."""
    held_x, held_y, split = run.held
    t1 = time.perf_counter()
    if held_x is None:
        return None, time.perf_counter() - t1
    assert held_y is not None  # images and labels are passed together
    s = run.setup
    curve = evaluate(s.run_model, held_x, held_y, run.cfg.eval_batch_size, s.channels_last, s.autocast_dtype)
    if held_y.numel() and not math.isfinite(curve.loss):
        raise _non_finite_evaluation(curve.loss, epoch, split)
    return curve, time.perf_counter() - t1


def _checkpoint_state(run: _Run, epoch: int) -> dict:
    device = run.device
    return {
        "epoch": epoch, "model": run.model.state_dict(), "optimizer": run.setup.opt.state_dict(),
        "generator": run.gen.get_state(), "aug_generator": run.aug_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "history": [h.to_dict() for h in run.history], "train_seconds": run.total_train,
        "points": list(run.points), "time_evals": run.time_evals, "steps_done": run.steps_done,
    }


def _postfix(stats: EpochStats, n: int) -> str:
    post = f"loss {stats.train_loss:.4f} acc {stats.train_acc:.4f} {n / stats.seconds:,.0f} img/s"
    if stats.test_acc is not None:
        post += f" | test acc {stats.test_acc:.4f}"
    if stats.val_acc is not None:
        post += f" | val acc {stats.val_acc:.4f}"
    return post


def _final_test(run: _Run, test: tuple[torch.Tensor | None, torch.Tensor | None],
                last_curve: EvalResult | None) -> tuple[EvalResult, float]:
    """The test set's result after training: the last curve point's when it
    was the test set's and one view suffices, else evaluated now (with the
    recipe's test-time views). (result, seconds of that evaluation)."""
    Xt, Yt = test
    cfg, s = run.cfg, run.setup
    if Xt is None:
        return EvalResult(float("nan"), float("nan"), torch.empty(0, dtype=torch.long)), 0.0
    assert Yt is not None  # test_x and test_y are passed together
    views = len(tta_views(cfg.tta_flip, cfg.tta_shift))
    if last_curve is not None and views == 1:
        return last_curve, 0.0
    t1 = time.perf_counter()
    ev = evaluate(s.run_model, Xt, Yt, cfg.eval_batch_size, s.channels_last, s.autocast_dtype, cfg.tta_flip,
                  cfg.tta_shift)
    seconds = time.perf_counter() - t1
    if Yt.numel() and not math.isfinite(ev.loss):
        raise _non_finite_evaluation(ev.loss, run.epochs)
    return ev, seconds


def _check_budgets(max_steps: int | None, max_seconds: float | None) -> None:
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"a step budget of {max_steps} trains nothing: give at least one step.")
    if max_seconds is not None and not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise UsageError(f"a time budget of {max_seconds} s trains nothing: give a positive number of seconds.")
    if max_seconds is not None and max_steps is not None:
        raise UsageError("give a step budget or a time budget, not both.")


def _buffers(run: _Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An epoch's per-step losses and sizes and per-image predictions, kept on the device."""
    n, spe, device = run.n, run.steps_per_epoch, run.device
    step_size = torch.full((spe,), float(run.bs), device=device)
    if n % run.bs:
        step_size[-1] = n % run.bs
    return torch.zeros(spe, device=device), step_size, torch.zeros(n, dtype=torch.long, device=device)


def train(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
          test_x: torch.Tensor | None, test_y: torch.Tensor | None, cfg: TrainConfig,
          seed: int, progress: ProgressFactory | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None,
          checkpoint: Callable[[dict], None] | None = None,
          resume_from: dict | None = None, val_x: torch.Tensor | None = None,
          val_y: torch.Tensor | None = None, stream: bool = False, max_steps: int | None = None,
          eval_at: Sequence[int] = (), max_seconds: float | None = None) -> TrainResult:
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

    ``max_steps``: train for this many steps instead of the recipe's epochs
    (equal-compute comparisons): whole epochs, then the first steps of one
    more; the schedule runs over the ``max_steps`` steps. ``eval_at``: global
    step counts after which the held-out split is evaluated too (the
    accuracy-against-compute curve; :func:`budget_point`), in
    ``TrainResult.extra["curve"]``; training is the same with or without them.
    ``max_seconds``: train until this many seconds of training steps are
    spent (equal-time comparisons; evaluation is not counted), whole epochs
    and then part of one; the held-out split is evaluated at each eighth of
    the seconds too (``extra["curve"]``). The result depends on the machine's
    speed and load: it is not reproducible to the bit.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    model.train()
    setup = build_step(model, cfg, device)
    X, Y, Xt, Yt, Xv, Yv = prepare_splits(train_x, train_y, test_x, test_y, val_x, val_y, device,
                                          setup.channels_last, stream)
    if X.shape[0] == 0:
        raise UsageError("the training set is empty (check --train-limit).")
    held = (Xv, Yv, "validation") if Xv is not None else (Xt, Yt, "test")
    run = _Run(model, cfg, device, setup, X, Y, held, stream, torch.Generator().manual_seed(seed),
               aug_generator(seed, device), max_steps=max_steps, eval_at=dict(Counter(eval_at)),
               max_seconds=max_seconds)
    _check_budgets(max_steps, max_seconds)
    n = run.n
    buffers = _buffers(run)
    if resume_from is not None:
        _resume(run, resume_from)
    step = _step_runner(run, stream)
    curve: EvalResult | None = None
    for epoch in range(run.first_epoch, run.epochs + 1):
        if run.time_up:  # resumed after the last epoch of a time budget
            break
        desc = f"epoch {epoch}" + (" (time budget)" if max_seconds is not None else f"/{run.epochs}")
        bar = progress(total=run.samples_in(epoch), desc=desc, unit="img") if progress else None
        try:
            seconds, train_loss, train_acc, k = _epoch(run, epoch, step, bar, buffers)
            run.total_train += seconds
            run.steps_done += k
            if not math.isfinite(train_loss):
                raise TrainingError(f"training loss became {train_loss} in epoch {epoch} (lr {cfg.lr}); "
                                    "lower the learning rate or check the model.")
            point, eval_seconds = _curve_point(run, epoch)
        except TrainingError:
            if bar is not None:
                bar.close()
            raise
        on_test = held[2] == "test" and point is not None
        curve = point if on_test else None
        stats = EpochStats(epoch, train_loss, train_acc, point.loss if on_test and point else None,
                           point.accuracy if on_test and point else None, seconds, eval_seconds,
                           point.loss if point is not None and not on_test else None,
                           point.accuracy if point is not None and not on_test else None)
        run.history.append(stats)
        if bar is not None:
            bar.set_postfix_str(_postfix(stats, min(k * run.bs, n)))
            bar.close()
        if on_epoch:
            on_epoch(stats)
        if checkpoint is not None:
            checkpoint(_checkpoint_state(run, epoch))
        if k < run.steps_in(epoch):  # a time budget ended inside the epoch
            break
    final, final_seconds = _final_test(run, (Xt, Yt), curve)
    return TrainResult(run.history, final, run.total_train, run.steps_done,
                       samples_of(run.steps_done, n, run.bs), str(device),
                       formulation_of(run.setup, model) if device.type == "cpu" else "plain",
                       isinstance(step, GraphedStep),
                       test_views=len(tta_views(cfg.tta_flip, cfg.tta_shift)), final_eval_seconds=final_seconds,
                       extra={"curve": run.points} if run.points else {})
