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
        model = create_model(ref, input_shape=shape, num_classes=classes)
        check_model_io(model, ref, shape, classes)
        _check_smallest_batch(model, ref, cfg.train_config_for(ref).batch_size, len(data.train_labels), shape)


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
