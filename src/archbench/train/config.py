"""Training configuration: the seed recipe is the default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from archbench.errors import UsageError


@dataclass
class TrainConfig:
    """The seed notebook's recipe: Adam(lr 1e-3, betas 0.9/0.999, eps 1e-7 as
    Keras), cross-entropy on logits, batch 64, 5 epochs, reshuffled every
    epoch, last partial batch kept."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    device: str = "auto"
    formulation: str = "fast"  # "fast" (same maths, faster layout) or "plain"
    cuda_graphs: bool = True
    eval_batch_size: int = 1000
    # Recipe options beyond the seed (defaults reproduce it):
    optimizer: str = "adam"          # "adam" (L2 weight decay) or "adamw" (decoupled)
    weight_decay: float = 0.0
    schedule: str = "constant"       # "constant", "onecycle" (linear up, linear down) or "cosine"
    warmup: float = 0.2              # fraction of steps spent rising (onecycle, cosine)
    label_smoothing: float = 0.0
    augment_crop: int = 0            # random crop after zero padding by this many pixels; 0 = off
    augment_flip: bool = False       # random horizontal flip
    precision: str = "fp32"          # "fp32" or "bf16" (autocast; weights and optimizer stay fp32)
    tta_flip: bool = False           # evaluate on each image and its mirror image, averaging the logits
    tta_shift: int = 0               # also average over the image shifted this many pixels up/down/left/right

    def validate(self) -> "TrainConfig":
        def need(cond: bool, field: str, value, expect: str):
            if not cond:
                raise UsageError(f"{field} = {value!r} is invalid: expected {expect}.")

        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch size", self.batch_size, "an integer >= 1")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "eval batch size",
             self.eval_batch_size, "an integer >= 1")
        need(self.lr > 0 and self.lr == self.lr and self.lr != float("inf"), "learning rate", self.lr, "a finite number > 0")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "betas", (self.beta1, self.beta2), "values in [0, 1)")
        need(self.eps > 0, "eps", self.eps, "a number > 0")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             self.device, "auto, cpu, cuda or cuda:N")
        need(self.formulation in ("fast", "plain"), "formulation", self.formulation, "fast or plain")
        need(self.optimizer in ("adam", "adamw"), "optimizer", self.optimizer, "adam or adamw")
        need(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        need(self.schedule in ("constant", "onecycle", "cosine"), "schedule", self.schedule,
             "constant, onecycle or cosine")
        need(0 <= self.warmup < 1, "warmup", self.warmup, "a fraction in [0, 1)")
        need(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        need(isinstance(self.augment_crop, int) and 0 <= self.augment_crop <= 8, "augment_crop",
             self.augment_crop, "an integer number of pixels from 0 (off) to 8")
        need(isinstance(self.augment_flip, bool), "augment_flip", self.augment_flip, "true or false")
        need(self.precision in ("fp32", "bf16"), "precision", self.precision, "fp32 or bf16")
        need(isinstance(self.tta_flip, bool), "tta_flip", self.tta_flip, "true or false")
        need(isinstance(self.tta_shift, int) and not isinstance(self.tta_shift, bool) and 0 <= self.tta_shift <= 4,
             "tta_shift", self.tta_shift, "an integer number of pixels from 0 (off) to 4")
        return self

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate for 0-based ``step`` of ``total`` steps."""
        if self.schedule == "constant" or total <= 1:
            return self.lr
        import math

        t = step / (total - 1)
        w = self.warmup
        if w > 0 and t < w:
            return self.lr * (0.04 + 0.96 * t / w)
        u = (t - w) / (1 - w) if w < 1 else 1.0
        if self.schedule == "onecycle":
            return self.lr * max(0.0, 1.0 - u)
        return self.lr * 0.5 * (1 + math.cos(math.pi * u))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(names)}.")
        return cls(**d)
