"""What every non-registry source shares: building a
:class:`~archbench.data.loader.Dataset` from checked arrays
(:func:`from_arrays`) or from streamed image chunks (:func:`stream`), and
putting its images in memory or in the array cache as the memory threshold
says (:mod:`archbench.data.storage`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archbench.data.arrays import LABEL_DTYPE, ArrayDigest, digest_array
from archbench.data.loader import Dataset
from archbench.data.registry import DatasetSpec
from archbench.data.storage import (
    CacheEntry,
    Threshold,
    choose_storage,
    float32_bytes,
    lookup_source,
    open_array,
    read_entry,
    remember_source,
    storage_info,
    write_entry,
)
from archbench.errors import DataError

SPLITS = ("train", "test")


def apply_storage(ds: Dataset, threshold: Threshold) -> Dataset:
    """``ds`` (images in memory) as the threshold wants it: unchanged, or
    moved into the array cache and memory-mapped."""
    n = sum(int(t.shape[0]) for t in (ds.train_images, ds.test_images))
    needed = float32_bytes(n, ds.image_shape)
    if choose_storage(needed, threshold) == "memory":
        return replace(ds, storage="memory", storage_info=storage_info(needed, threshold, "memory"))
    identity = ds.identity

    def fill(entry: CacheEntry) -> tuple[str, dict]:
        for role in ("train_images", "test_images"):
            entry.save(role, getattr(ds, role).numpy())
        for role in ("train_labels", "test_labels"):
            entry.save(role, getattr(ds, role).numpy().astype(LABEL_DTYPE))
        return identity, entry_meta(ds)

    found = read_entry(identity) or write_entry(n * math.prod(ds.image_shape), fill)[1]
    return mapped(ds, found[0], needed, threshold)


def entry_meta(ds: Dataset) -> dict:
    return {"name": ds.spec.name, "classes": list(ds.classes), "image_shape": list(ds.image_shape),
            "sha256": dict(ds.sha256), "source": ds.source}


def mapped(ds: Dataset, directory: Path, needed: int, threshold: Threshold) -> Dataset:
    paths = {role: str(directory / f"{role}.npy") for role in ("train_images", "test_images")}
    return replace(ds, train_images=torch.from_numpy(open_array(paths["train_images"])),
                   test_images=torch.from_numpy(open_array(paths["test_images"])),
                   storage="memmap", storage_info=storage_info(needed, threshold, "memmap", directory),
                   backing=paths)


def from_arrays(spec: DatasetSpec, arrays: dict[str, np.ndarray], *, files: dict[str, str], source: str,
                 fmt: str, details: dict, test_split: dict, threshold: Threshold) -> Dataset:
    """A Dataset from checked in-memory arrays (images uint8 NCHW, labels
    int64), with their canonical digests."""
    digests = {role: digest_array(role, arr) for role, arr in arrays.items()}
    ds = Dataset(spec, torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]),
                 torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]),
                 files, False, None, digests, source=source, format=fmt,
                 split={"test": test_split, "val": None, "operations": []}, details=details)
    return apply_storage(ds, threshold)




def stream(spec: DatasetSpec, n: dict[str, int], chunks: Mapping[str, Callable[[], Iterator[np.ndarray]]],
           labels: dict[str, np.ndarray], *, storage: str, needed: int, threshold: Threshold,
           source_key: Callable[[], str], files: dict[str, str], source: str, fmt: str, details: dict,
           test_split: dict, notes: list[str] | None = None) -> Dataset:
    """Build a Dataset from image chunks (NCHW uint8), hashing as they pass:
    into memory, or into a cache entry (reused when ``source_key()`` was
    extracted before)."""
    c, h, w = spec.image_shape
    split: dict[str, Any] = {"test": test_split, "val": None, "operations": []}
    label_digests = {f"{s}_labels": digest_array(f"{s}_labels", labels[s]) for s in SPLITS}

    def fill(s: str, out: np.ndarray) -> str:
        d = ArrayDigest(f"{s}_images", np.dtype(np.uint8), (n[s], c, h, w))
        i = 0
        for chunk in chunks[s]():
            out[i:i + len(chunk)] = chunk
            d.update(chunk)
            i += len(chunk)
        if i != n[s]:
            raise DataError(f"{files}: {s} split yielded {i} images, expected {n[s]}.")
        return d.hexdigest()

    def dataset(images: dict[str, torch.Tensor], digests: dict[str, str], **kw) -> Dataset:
        return Dataset(spec, images["train"], torch.from_numpy(labels["train"]), images["test"],
                       torch.from_numpy(labels["test"]), files, False, None, digests, source=source, format=fmt,
                       split=split, details=details, notes=list(notes or []), **kw)

    if storage == "memory":
        arrays = {s: np.empty((n[s], c, h, w), dtype=np.uint8) for s in SPLITS}
        digests = {**{f"{s}_images": fill(s, arrays[s]) for s in SPLITS}, **label_digests}
        return dataset({s: torch.from_numpy(a) for s, a in arrays.items()}, digests,
                       storage="memory", storage_info=storage_info(needed, threshold, "memory"))
    key = source_key()
    identity = lookup_source(key)
    found = read_entry(identity) if identity else None
    if found is None:
        def write(entry: CacheEntry) -> tuple[str, dict]:
            digests = dict(label_digests)
            for s in SPLITS:
                out = entry.create(f"{s}_images", (n[s], c, h, w))
                digests[f"{s}_images"] = fill(s, out)
                out.flush()
                del out
                entry.save(f"{s}_labels", labels[s].astype(LABEL_DTYPE))
            probe = dataset({s: torch.zeros((0, c, h, w), dtype=torch.uint8) for s in SPLITS}, digests)
            return probe.identity, {**entry_meta(probe), "source_key": key}

        identity, found = write_entry((n["train"] + n["test"]) * c * h * w, write)
        remember_source(key, identity)
    directory, meta = found
    ds = dataset({s: torch.zeros((0, c, h, w), dtype=torch.uint8) for s in SPLITS}, dict(meta["sha256"]))
    if ds.identity != meta.get("identity_sha256"):
        raise DataError(f"the array cache entry {directory} does not match {files} (identity differs); delete "
                        f"{directory} and load again.")
    return mapped(ds, directory, needed, threshold)


