"""Validation splits: :func:`with_validation` divides a dataset's training
split by the seeded, stratified, order-preserving rule of
:mod:`archbench.data.stratify` (``stratified-splitmix64-v1``, stated there).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from archbench.data.arrays import rows_per_chunk
from archbench.data.dataset import Dataset
from archbench.data.storage import CacheEntry, open_array, read_entry, write_entry
from archbench.data.stratify import RULE, RULE_ID, stratified_split
from archbench.errors import DataError, UsageError


def check_fraction(fraction: object, what: str = "validation fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < float(fraction) < 1:
        raise UsageError(f"{what} {fraction!r} must be a number strictly between 0 and 1 (e.g. 0.1 holds out "
                         "10 % of the training images).")
    return float(fraction)


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise UsageError(f"split seed {seed!r} must be an integer from 0 to 2**64 - 1.")
    return seed


def _take(images: torch.Tensor, idx: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = images[idx]`` a chunk at a time (``images`` may be a memmap)."""
    src = images.numpy()
    step = rows_per_chunk(int(np.prod(src.shape[1:], dtype=np.int64)))
    for i in range(0, len(idx), step):
        out[i:i + step] = src[idx[i:i + step]]


def with_validation(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``ds`` with its training split divided into train and validation by
    the module's rule (stratified by label, seeded, order-preserving); the
    test split is untouched. The data card records the split and the
    identity changes with it. Without this call nothing changes.

    Errors: ``fraction`` outside (0, 1) or a bad seed (UsageError); a
    dataset that already has a validation split, an empty training split,
    or one in which no class has two images to divide (DataError)."""
    fraction = check_fraction(fraction)
    seed = check_seed(seed)
    where = f"dataset {ds.spec.name}"
    if ds.val_labels is not None:
        raise UsageError(f"{where} already has a validation split ({ds.split.get('val')}); split it once.")
    n = int(ds.train_labels.numel())
    if n == 0:
        raise DataError(f"{where}: the training split is empty; there is nothing to hold out for validation.")
    keep, held = stratified_split(ds.train_labels.numpy(), fraction, seed)
    if len(held) == 0:
        raise DataError(f"{where}: no class has two training images, so a validation split would take a class's "
                        "only image; use more training data or no validation split.")
    operation = {"op": "validation", "fraction": fraction, "seed": seed, "rule": RULE_ID}
    ops = [*ds.split.get("operations", []), operation]
    split = {**ds.split, "operations": ops,
             "val": {"fraction": fraction, "seed": seed, "stratified": True, "from": "train", "rule": RULE,
                     "rule_id": RULE_ID, "train_before": n, "train": len(keep), "val": len(held)}}
    keep_t, held_t = torch.from_numpy(keep), torch.from_numpy(held)
    train_labels, val_labels = ds.train_labels[keep_t], ds.train_labels[held_t]
    if ds.storage != "memmap":
        return replace(ds, train_images=ds.train_images[keep_t], train_labels=train_labels,
                       val_images=ds.train_images[held_t], val_labels=val_labels, split=split)
    # Memory-mapped: write the two parts as a new cache entry (the derived identity) instead of copying to memory.
    derived = replace(ds, split=split)
    identity = derived.identity
    c, h, w = ds.image_shape

    def fill(entry: CacheEntry) -> tuple[str, dict]:
        for role, idx in (("train_images", keep), ("val_images", held)):
            out = entry.create(role, (len(idx), c, h, w))
            _take(ds.train_images, idx, out)
            out.flush()
            del out
        return identity, {"name": ds.spec.name, "derived_from": ds.identity, "operations": ops}

    found = read_entry(identity) or write_entry((len(keep) + len(held)) * c * h * w, fill)[1]
    directory = found[0]
    paths = {role: str(directory / f"{role}.npy") for role in ("train_images", "val_images")}
    return replace(derived, train_images=torch.from_numpy(open_array(paths["train_images"])),
                   train_labels=train_labels, val_images=torch.from_numpy(open_array(paths["val_images"])),
                   val_labels=val_labels,
                   backing={**ds.backing, **paths},
                   storage_info={**ds.storage_info, "path": str(directory)})
