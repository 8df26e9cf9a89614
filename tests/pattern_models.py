"""Models written for the cost tests (tests/test_every_cost.py): ordinary
patterns that used to lose their costs. A module of its own so that the CLI
can load them as ``tests.pattern_models:NAME``."""

import torch
from torch import nn

E, HEADS, TOK = 32, 4, 28  # embedding width, heads, tokens (the image's rows)


class Queries(nn.Module):
    """Learned queries passed to cross-attention as an ``expand()`` view."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(28, E)
        self.queries = nn.Parameter(torch.randn(1, 4, E))
        self.attn = nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.head = nn.Linear(4 * E, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(1, 2))
        o, _ = self.attn(self.queries.expand(x.shape[0], -1, -1), t, t)
        return self.head(o.flatten(1))


class ProjLSTM(nn.Module):
    """An LSTM with ``proj_size``: ONNX cannot export it."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, 32, batch_first=True, proj_size=16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, _ = self.lstm(x.flatten(1, 2))
        return self.head(o[:, -1])


PAD = 4  # padded tokens per sequence


class MaskedEncoder(nn.Module):
    """nn.TransformerEncoder with a padding mask: nested tensors in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(28, E)
        layer = nn.TransformerEncoderLayer(E, HEADS, 2 * E, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(E, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(1, 2))
        mask = torch.zeros(t.shape[:2], dtype=torch.bool, device=t.device)
        mask[:, -PAD:] = True
        return self.head(self.enc(t, src_key_padding_mask=mask)[:, 0])


class LazyMLP(nn.Module):
    """Lazy layers: their shapes come from the first forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BrokenLazy(nn.Module):
    """A lazy layer that cannot get its shape from these images."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.LazyLinear(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)[:, :5].reshape(-1, 7))
