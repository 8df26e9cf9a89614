"""Saved model size: the bytes of files actually written, per format."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _native_output_muted() -> Iterator[None]:
    """The exporter's C++ logger writes the whole TorchScript graph to the
    process's stdout when an export fails (the failure itself is raised and
    recorded), which would corrupt ``profile --json``: file descriptors 1 and
    2 point at /dev/null inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        for fd, kept in zip((1, 2), saved):
            os.dup2(kept, fd)
            os.close(kept)


def export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, ...] = (1, 28, 28)) -> None:
    """ONNX export of an eval-mode copy (batch dimension dynamic). Needs the
    optional ``onnx`` package (``pip install archbench[onnx]``)."""
    import copy
    import warnings

    m = copy.deepcopy(model).eval().cpu()
    x = torch.zeros(1, *input_shape)
    with warnings.catch_warnings(), _native_output_muted():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _plain_state(model: nn.Module, aliases: bool = False) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, each tensor once: a tensor reachable under
    several names (tied weights; a Keras model's parameters, listed by both
    the model and its functional graph) is kept under its first name only,
    as safetensors requires and as the weights take space once on disk. With
    ``aliases`` every name is kept, each alias the very tensor of its first
    name: ``torch.save`` writes shared storage once, and the file loads back
    into the model with ``load_state_dict`` (strict)."""
    state: dict[str, torch.Tensor] = {}
    first: dict[tuple, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if v.numel():
            key = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()),
                   v.dtype)
            if key in first:
                if aliases:
                    state[k] = first[key]
                continue
            state[k] = first[key] = v.detach().to("cpu").contiguous()
            continue
        state[k] = v.detach().to("cpu").contiguous()
    return state


def save_model_files(model: nn.Module, directory: str | os.PathLike, stem: str,
                     formats: Sequence[str] = ("safetensors", "state_dict"),
                     input_shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, dict]:
    """Write the model's weights in each format under ``directory`` and return
    ``{format: {"path": relative file name, "bytes": size on disk}}``.

    ``safetensors``: the safetensors file of the state dict; ``state_dict``:
    ``torch.save(model.state_dict())`` as ``.pt``; ``onnx``: the eval-mode
    graph with its weights (needs the optional ``onnx`` package). Files are written to a
    temporary name and renamed, so a crash never leaves a partial file (a failed
    write removes its temporary file; a killed one's is removed by the next
    run or resume). They get the mode the umask gives, whatever the writer
    used (safetensors writes 0600).
    """
    from archbench.records import file_mode

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _plain_state(model)
    out: dict[str, dict] = {}
    for fmt in formats:
        if fmt not in ("safetensors", "state_dict", "onnx"):
            raise ValueError(f"unknown format {fmt!r}; known: safetensors, state_dict, onnx")
        path = directory / f"{stem}.{'pt' if fmt == 'state_dict' else fmt}"
        tmp = path.with_name(path.name + ".tmp")
        try:
            if fmt == "safetensors":
                from safetensors.torch import save_file

                save_file(state, str(tmp))
            elif fmt == "state_dict":
                torch.save(_plain_state(model, aliases=True), tmp)
            else:
                export_onnx(model, tmp, input_shape)
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        out[fmt] = {"path": path.name, "bytes": path.stat().st_size}
    return out


def measure_saved_sizes(model: nn.Module, directory: str | os.PathLike, input_shape: tuple[int, ...] = (1, 28, 28),
                        onnx: bool | None = None, stem: str = "model") -> dict:
    """Bytes per format of a model written into ``directory`` as ``stem.*``
    (files kept; their paths under ``"files"``). ONNX is included when
    ``onnx`` is importable (or ``onnx=True``); when it is not, ``"onnx"`` maps
    to None and the reason is in ``"onnx_note"``."""
    want_onnx = onnx_available() if onnx is None else onnx
    written = save_model_files(model, directory, stem, ("safetensors", "state_dict"), input_shape)
    note = None if want_onnx else "onnx not installed (pip install archbench[onnx])"
    if want_onnx:
        try:  # a model ONNX cannot export (an LSTM with proj_size, ...) keeps its other sizes
            written.update(save_model_files(model, directory, stem, ("onnx",), input_shape))
        except Exception as exc:  # noqa: BLE001 - recorded as the reason ONNX has no size
            note = f"the ONNX export failed ({type(exc).__name__}: {_first_line(exc)})"
    out: dict = {fmt: d["bytes"] for fmt, d in written.items()}
    out["files"] = {fmt: str(Path(directory) / d["path"]) for fmt, d in written.items()}
    if note is not None:
        out["onnx"] = None
        out["onnx_note"] = note
    return out


def _first_line(exc: BaseException) -> str:
    """An exporter's message without the graph dump that follows it."""
    lines = str(exc).strip().splitlines()
    return lines[0].split("  [Caused by")[0].split(" Please feel free")[0] if lines else ""
