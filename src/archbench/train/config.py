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
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(names)}.")
        return cls(**d)
