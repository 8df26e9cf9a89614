"""Saved model size: the bytes of files actually written, per format."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_model_files(model: nn.Module, directory: str | os.PathLike, stem: str,
                     formats=("safetensors", "state_dict")) -> dict[str, dict]:
    """Write the model's weights in each format under ``directory`` and return
    ``{format: {"path": relative file name, "bytes": size on disk}}``.

    ``safetensors``: the safetensors file of the state dict; ``state_dict``:
    ``torch.save(model.state_dict())`` as ``.pt``. Files are written to a
    temporary name and renamed, so a crash never leaves a partial file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _plain_state(model)
    out: dict[str, dict] = {}
    for fmt in formats:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            path = directory / f"{stem}.safetensors"
            tmp = path.with_suffix(".safetensors.tmp")
            save_file(state, str(tmp))
        elif fmt == "state_dict":
            path = directory / f"{stem}.pt"
            tmp = path.with_suffix(".pt.tmp")
            torch.save(state, tmp)
        else:
            raise ValueError(f"unknown format {fmt!r}; known: safetensors, state_dict")
        os.replace(tmp, path)
        out[fmt] = {"path": path.name, "bytes": path.stat().st_size}
    return out


def measure_saved_sizes(model: nn.Module, directory: str | os.PathLike) -> dict[str, int]:
    """Bytes per format of a model written into ``directory`` (files kept)."""
    return {fmt: d["bytes"] for fmt, d in save_model_files(model, directory, "model").items()}
