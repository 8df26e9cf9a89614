"""Preflight: everything that can be checked before a run directory is
touched -- the data's splits, every model's input shape and output, the
smallest training batch each model will see, distinct file names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from archbench.config import StudyConfig
from archbench.data.sources import load_data
from archbench.data.split import with_validation
from archbench.errors import DataError, ModelError, UsageError
from archbench.models.registry import check_model_io, create_model, is_reference
from archbench.run import Log
from archbench.run.rundir import safe_name
from archbench.run.unit import data_shape

VAL_SPLIT_SEED = 0  # one validation split for every model and seed of a study: their curves compare


def load_study_data(cfg: StudyConfig) -> Any:
    """The study's data: loaded and checked, limited to ``train_limit`` /
    ``test_limit`` images, then (with ``val_split``) its training images split
    into training and validation."""
    data = load_data(cfg.dataset, cfg.data_dir, verify=cfg.verify).subset(cfg.train_limit, cfg.test_limit)
    if cfg.val_split:
        data = with_validation(data, cfg.val_split, seed=VAL_SPLIT_SEED)
    check_data(data)
    return data




def check_data(data: Any) -> None:
    """Both splits must hold images (an empty split is a data problem, found
    before anything is written)."""
    splits = [("training", data.train_labels), ("test", data.test_labels)]
    if getattr(data, "val_labels", None) is not None:
        splits.append(("validation", data.val_labels))
    for split, labels in splits:
        if labels.numel() == 0:
            role = "train" if split == "training" else "test"
            files = ", ".join(p for r, p in data.files.items() if r.startswith(role))
            raise DataError(f"the {split} split of {data.spec.name} is empty (0 images in {files}): there is "
                            f"nothing to {'train on' if split == 'training' else 'evaluate'}. Check the files "
                            "(their IDX headers say 0 images), or point --data-dir at the complete dataset.")


def check_models(cfg: StudyConfig, data: Any, log: Log | None = None) -> StudyConfig:
    """Every model must build for the dataset's images and classes, map a
    batch to logits, and survive the smallest training batch it will see;
    distinct models must have distinct file names. All before anything is
    written. A model the user named that cannot take the images is refused
    (its error names the layer and the fix); from the *default* models, one
    that cannot is left out, said in the log and in the run's notes. Returns
    the configuration that runs."""
    shape, classes = data_shape(data)
    if cfg.sources.get("models") == "default" and not any(is_reference(m) for m in cfg.models):
        keep, left_out = [], []
        for ref in cfg.models:
            try:
                create_model(ref, input_shape=shape, num_classes=classes)
            except ModelError as exc:
                left_out.append(f"{ref} left out of the default models: {exc}")
                continue
            keep.append(ref)
        if left_out:
            if not keep:
                raise UsageError("none of the default models can take these images: " + " ".join(left_out)
                                 + " Name models that can with --models.")
            for note in left_out:
                (log or (lambda s: None))(note)
            cfg = replace(cfg, models=tuple(keep), notes=(*cfg.notes, *left_out),
                          train={m: t for m, t in cfg.train.items() if m in keep})
    _check_models(cfg, data, shape, classes)
    return cfg


def _check_models(cfg: StudyConfig, data: Any, shape: tuple[int, ...], classes: int) -> None:
    stems: dict[str, str] = {}
    for ref in cfg.models:
        stem = safe_name(ref)
        if stem in stems:
            raise UsageError(f"models {stems[stem]!r} and {ref!r} would share the file name {stem!r}; "
                             "rename one.")
        stems[stem] = ref
    for ref in cfg.models:
        before = _global_state()
        try:
            model = create_model(ref, input_shape=shape, num_classes=classes)
            _same_global_state(before, ref, "built")
            check_model_io(model, ref, shape, classes)
            _same_global_state(before, ref, "run")
            _check_smallest_batch(model, ref, cfg.train_config_for(ref).batch_size, len(data.train_labels), shape)
            _check_training_step(model, ref, cfg.train_config_for(ref), data)
            _same_global_state(before, ref, "trained")
        finally:
            _restore_global_state(before)


def _global_state() -> dict[str, Any]:
    """The global PyTorch settings a model's code could change for every later model and unit."""
    return {"default dtype": torch.get_default_dtype(), "grad mode": torch.is_grad_enabled()}


def _restore_global_state(state: dict[str, Any]) -> None:
    torch.set_default_dtype(state["default dtype"])
    torch.set_grad_enabled(state["grad mode"])


def _same_global_state(before: dict[str, Any], ref: str, when: str) -> None:
    """Refuse a model whose code changed PyTorch's global state (``when``:
    as it was built, run or trained): every later model and unit would train
    under it, and the run's numbers would depend on the order of the models."""
    now = _global_state()
    changed = [f"{k} {before[k]} -> {now[k]}" for k in before if now[k] != before[k]]
    if changed:
        _restore_global_state(before)
        raise ModelError(
            f"model {ref!r} changes PyTorch's global state when {when}: {'; '.join(changed)}. Every model and unit "
            "after it would run under that setting. Remove the call from the model's code (torch.set_default_dtype, "
            "torch.set_grad_enabled, a torch.no_grad() entered and not left); set a layer's dtype with "
            "module.to(dtype) instead.")


def _check_training_step(model: torch.nn.Module, ref: str, tcfg: Any, data: Any) -> None:
    """One training step of a copy of ``model`` under its recipe (optimizer,
    loss, precision), on CPU, on the first two training images, so that a
    model whose code changes PyTorch's global state only when it trains is
    refused too (the caller compares the state after). An error the step
    raises is not a refusal: the model's units fail with it, recorded, as a
    model that fails later in training does. Torch's RNG state is restored
    (dropout draws from it). Skipped where the recipe runs on an
    accelerator."""
    import copy

    from archbench.train.evaluate import to_input
    from archbench.train.step import build_step, resolve_device

    cpu = torch.device("cpu")
    if resolve_device(tcfg.device).type != "cpu":
        return
    n = min(2, len(data.train_labels))
    rng = torch.get_rng_state()
    try:
        work = copy.deepcopy(model).to(cpu).train()
        setup = build_step(work, tcfg, cpu)
        x = to_input(data.train_images[:n], cpu)
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        setup.step(x, data.train_labels[:n].to(cpu), torch.zeros(()), torch.zeros(n, dtype=torch.long))
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001, S110 - user code: its units fail with this error, each recorded
        pass
    finally:
        torch.set_rng_state(rng)


def _check_smallest_batch(model: torch.nn.Module, ref: str, batch_size: int, n: int, shape: tuple) -> None:
    """Every epoch keeps its last partial batch (the seed recipe). Where that
    batch holds a single sample, a model that cannot train on one (BatchNorm
    needs two values per channel) is refused now, saying how to avoid it.
    Nothing else changes: a run without such a batch never gets here."""
    bs = min(batch_size, n)
    smallest = n % bs or bs
    if smallest != 1:
        return
    model.train()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code (any BaseException): reported with the way out
        batches = (f"{n:,} = {n // bs:,} x {bs} + 1" if n > bs else f"batch size {bs}")
        raise UsageError(
            f"model {ref!r} cannot train on a batch of one sample ({type(exc).__name__}: {exc}), and its training "
            f"would end every epoch with one ({n:,} training images, {batches}). Change --train-limit (e.g. to "
            f"{n - 1 if n > bs else 2}) or --batch-size so that no batch holds a single image."
        ) from exc
