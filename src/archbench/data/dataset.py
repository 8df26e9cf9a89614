"""The loaded dataset, :class:`Dataset`, whatever its source, and building
one: from checked arrays (:func:`from_arrays`) or from streamed image chunks
(:func:`stream`), with its images in memory or in the array cache as the
memory threshold says (:func:`apply_storage`; :mod:`archbench.data.storage`).
Registry datasets are found, verified and parsed by
:mod:`archbench.data.loader`; the other sources by their format modules."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archbench.data.arrays import (
    LABEL_DTYPE,
    ArrayDigest,
    balance,
    channel_stats,
    class_counts,
    digest_array,
    identity_sha256,
)
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

# How a registry dataset was verified (Dataset.verification; see archbench.data.loader.verify_file).
PAYLOAD_SHA256 = "payload SHA-256"
UPSTREAM_GZ_MD5 = "upstream .gz MD5"

SPLITS = ("train", "test")


def _default_split() -> dict:
    return {"test": {"from": "source"}, "val": None, "operations": []}


IMAGE_ROLES = ("train_images", "val_images", "test_images")


@dataclass
class Dataset:
    """A loaded image-classification dataset.

    Images are uint8 tensors of shape ``(N, C, H, W)`` (values 0..255, as
    stored; nothing is normalised), labels int64 ``(N,)`` with values
    ``0 .. num_classes-1``. ``val_images``/``val_labels`` exist only after
    :func:`archbench.data.with_validation`.

    ``source`` says where it came from (``"registry"``, ``"digits"``,
    ``"npz"``, ``"cifar"``, ``"folder"``), ``format`` in more words;
    ``split`` how the train/val/test splits were made (``"test"``: the
    source's own test split or the rule that made it; ``"val"``: the
    validation split or None; ``"operations"``: subsets and splits applied
    after loading, in order). ``storage`` is ``"memory"`` or ``"memmap"``
    (images backed by memory-mapped ``.npy`` files in the array cache; see
    :mod:`archbench.data.storage`), ``storage_info`` the decision's numbers.
    ``notes``: sentences for a person about the source (entries or files it
    held that are not used).

    ``sha256``: the digest of each part by role: the decompressed payload
    of each IDX file for registry datasets, else the canonical digest of each
    array as loaded (:mod:`archbench.data.arrays`). :attr:`identity` combines
    them with the classes, shape and operations.

    A Dataset pickles whole (process pools, Ray); memory-mapped images are
    pickled as their file paths and mapped again on arrival (the cache must
    be on a file system the receiver shares)."""

    spec: DatasetSpec
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    files: dict[str, str]
    verified: bool
    verification: str | None = None  # how: PAYLOAD_SHA256 / UPSTREAM_GZ_MD5 (mixed: joined with " + ")
    # SHA-256 of each decompressed payload (or array), by role: the data's identity (a resumed run checks it)
    sha256: dict[str, str] = field(default_factory=dict)
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    source: str = "registry"
    format: str = "IDX"
    split: dict = field(default_factory=_default_split)
    storage: str = "memory"
    storage_info: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # source-specific facts for the card (versions, ignored files)
    # sentences a person should read (what was ignored, ...): `data info` prints them, the card keeps them
    notes: list[str] = field(default_factory=list)
    # role -> .npy path for memory-mapped images: the tensor is that file's first len(tensor) images
    backing: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.spec.image_shape
        return int(c), int(h), int(w)

    @property
    def identity(self) -> str:
        """The data card's ``identity_sha256`` (see :func:`archbench.data.arrays.identity_sha256`)."""
        return identity_sha256(self.sha256, self.classes, self.image_shape, self.split.get("operations", []))

    def _splits(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        out = [("train", self.train_images, self.train_labels)]
        if self.val_images is not None and self.val_labels is not None:
            out.append(("val", self.val_images, self.val_labels))
        out.append(("test", self.test_images, self.test_labels))
        return out

    def describe(self) -> dict:
        """The data card (JSON-safe). Keys kept from before: name, files,
        verified_sha256, verified, verification, payload_sha256,
        train_samples, test_samples, image_shape, classes. Added: source,
        format, identity_sha256, num_classes, class_counts, balance,
        val_samples, split, normalization (train split only), storage,
        storage_detail, mirror_symmetric, details, notes (sentences for a
        person: what the source held that is not used)."""
        card = getattr(self, "_card", None)
        if card is None:
            card = self._describe()
            self._card = card
        return copy.deepcopy(card)

    def _describe(self) -> dict:
        if self.source == "registry":
            verification = self.verification if self.verified else "not verified (--no-verify)"
            payload_of = "the decompressed IDX files"
        else:
            verification = "none: no published checksum for this source (identity_sha256 identifies the data)"
            payload_of = "the arrays as loaded (uint8 N,C,H,W images; int64 labels; C order)"
        counts = {name: class_counts(labels, self.num_classes) for name, _, labels in self._splits()}
        mean, std = channel_stats(self.train_images) if self.train_labels.numel() else (None, None)
        return {
            "name": self.spec.name,
            "files": dict(self.files),
            "verified_sha256": self.verified and self.verification == PAYLOAD_SHA256,
            "verified": self.verified,
            "verification": verification,
            "payload_sha256": dict(self.sha256),
            "train_samples": int(self.train_labels.numel()),
            "test_samples": int(self.test_labels.numel()),
            "image_shape": list(self.spec.image_shape),
            "classes": list(self.spec.classes),
            "source": self.source,
            "format": self.format,
            "payload_sha256_of": payload_of,
            "identity_sha256": self.identity,
            "num_classes": self.num_classes,
            "val_samples": 0 if self.val_labels is None else int(self.val_labels.numel()),
            "class_counts": counts,
            "balance": {name: balance(c) for name, c in counts.items()},
            "split": copy.deepcopy(self.split),
            "normalization": {
                "computed_on": "train",
                "samples": int(self.train_labels.numel()),
                "mean": mean,
                "std": std,
                "of": "x / 255 per channel; population std (ddof=0)",
                "applied": "x / 255 (no standardisation)",
            },
            "mirror_symmetric": self.spec.mirror_symmetric,
            "storage": self.storage,
            "storage_detail": dict(self.storage_info),
            "details": copy.deepcopy(self.details),
            "notes": list(self.notes),
        }

    def subset(self, train_limit: int | None = None, test_limit: int | None = None,
               val_limit: int | None = None) -> Dataset:
        """The first ``train_limit`` / ``test_limit`` / ``val_limit`` samples
        of each split (deterministic). A limit that cuts something is
        recorded in ``split["operations"]`` (and so in the identity)."""
        cut = {}
        out = {}
        for name, images, labels, limit in (
            ("train", self.train_images, self.train_labels, train_limit),
            ("val", self.val_images, self.val_labels, val_limit),
            ("test", self.test_images, self.test_labels, test_limit),
        ):
            if images is None or labels is None:
                continue
            kept = labels[:limit]
            if len(kept) < len(labels):
                cut[name] = len(kept)
            out[name] = (images[:limit], kept)
        split = self.split
        if cut:
            split = {**self.split, "operations": [*self.split.get("operations", []),
                                                  {"op": "subset", "rule": "first N of each split", **cut}]}
        val = out.get("val", (None, None))
        return replace(self, train_images=out["train"][0], train_labels=out["train"][1],
                       val_images=val[0], val_labels=val[1],
                       test_images=out["test"][0], test_labels=out["test"][1], split=split)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_card", None)
        for role, path in self.backing.items():
            tensor = state.get(role)
            if tensor is not None:
                state[role] = _Mapped(path, int(tensor.shape[0]))
        return state

    def __setstate__(self, state: dict) -> None:
        for role in IMAGE_ROLES:
            if isinstance(state.get(role), _Mapped):
                state[role] = state[role].open()
        self.__dict__.update(state)


@dataclass(frozen=True)
class _Mapped:
    """A memory-mapped image tensor in a pickle: its file and length."""

    path: str
    length: int

    def open(self) -> torch.Tensor:
        arr = open_array(self.path)
        if arr.shape[0] < self.length:
            raise DataError(f"the cached array {self.path} holds {arr.shape[0]} images, fewer than the "
                            f"{self.length} the dataset was sent with; the cache changed underneath the run. "
                            "Load the dataset again.")
        return torch.from_numpy(arr[:self.length])


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

    def dataset(images: dict[str, torch.Tensor], digests: dict[str, str], **kw: Any) -> Dataset:
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
