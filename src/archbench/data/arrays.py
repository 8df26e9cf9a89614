"""Facts about image/label arrays that every source shares: checks with
named errors, content digests, class counts and channel statistics.

Conventions (the data card states them too):

* images are ``uint8`` arrays of shape ``(N, C, H, W)``, C-order; labels are
  ``int64`` of shape ``(N,)``, values ``0 .. K-1``, with K >= 2 (one class
  measures nothing) and every class present in the training split;
* an array's digest is the SHA-256 of ``"<role>|<dtype>|<shape>\\n"``
  followed by its C-order bytes in that canonical form (images as uint8
  NCHW, labels as little-endian int64), so the same pixels give the same
  digest whatever file layout they came from (NHW, NHWC, pickled rows);
* channel statistics are exact: a 256-bin histogram per channel, from which
  the sum and the sum of squares are integers; mean and (population, ddof=0)
  standard deviation are of ``x / 255``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from archbench.errors import DataError

# Images processed at a time by chunked passes (hashing, statistics, copies): bounded memory on memmaps.
CHUNK_BYTES = 16 << 20
HISTOGRAM_CHUNK_BYTES = 1 << 20

LABEL_DTYPE = np.dtype("<i8")
# The most classes inferred from labels alone (no class names given): a larger largest label is a stray value, not
# a class count (building its names and counts would take memory in proportion to it).
MAX_INFERRED_CLASSES = 100_000


def rows_per_chunk(row_bytes: int) -> int:
    """How many images of ``row_bytes`` bytes make one chunk (at least 1)."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


class ArrayDigest:
    """Incremental SHA-256 of one array in canonical form (see module doc)."""

    def __init__(self, role: str, dtype: np.dtype, shape: Sequence[int]):
        self._h = hashlib.sha256(f"{role}|{np.dtype(dtype).str}|{tuple(int(d) for d in shape)}\n".encode())

    def update(self, chunk: np.ndarray) -> None:
        self._h.update(np.ascontiguousarray(chunk).data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def digest_array(role: str, arr: np.ndarray | torch.Tensor) -> str:
    """The canonical digest of ``arr`` (read in chunks: fine on a memmap)."""
    a = arr.numpy() if isinstance(arr, torch.Tensor) else arr
    if a.dtype.kind in "iu" and a.ndim == 1:
        a = a.astype(LABEL_DTYPE, copy=False)
    d = ArrayDigest(role, a.dtype, a.shape)
    step = rows_per_chunk(int(np.prod(a.shape[1:], dtype=np.int64)) * a.itemsize)
    for i in range(0, len(a), step):
        d.update(a[i:i + step])
    if len(a) == 0:
        d.update(a)
    return d.hexdigest()


def identity_sha256(digests: dict[str, str], classes: Sequence[str], image_shape: Sequence[int],
                    operations: Sequence[dict]) -> str:
    """One SHA-256 naming the data actually used: over the per-role digests
    (of the files' payloads, or of the arrays), the class names, the image
    shape and the operations applied after loading (subset, validation
    split), as canonical JSON."""
    doc = {"sha256": dict(sorted(digests.items())), "classes": list(classes),
           "image_shape": [int(d) for d in image_shape], "operations": list(operations)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def class_counts(labels: torch.Tensor | np.ndarray, num_classes: int) -> list[int]:
    """Images per class, ``0 .. num_classes-1``."""
    lab = labels.numpy() if isinstance(labels, torch.Tensor) else labels
    return np.bincount(lab.astype(np.int64, copy=False), minlength=num_classes)[:num_classes].tolist()


def balance(counts: Sequence[int]) -> float | None:
    """Smallest class count over the largest (1.0 balanced, 0.0 a class is
    missing); None for an empty split."""
    return None if not counts or max(counts) == 0 else min(counts) / max(counts)


def channel_histograms(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(C, 256)`` int64: how many pixels of each channel take each value."""
    a = images.numpy() if isinstance(images, torch.Tensor) else images
    channels = a.shape[1]
    hist = np.zeros((channels, 256), dtype=np.int64)
    # np.bincount widens its input to int64 (8 bytes per pixel): chunks of 1 MiB keep that copy at 8 MiB
    # (16 MiB chunks raised a Fashion-MNIST run's peak RSS by 86 MB).
    step = max(1, HISTOGRAM_CHUNK_BYTES // max(1, int(np.prod(a.shape[1:], dtype=np.int64))))
    for i in range(0, len(a), step):
        chunk = a[i:i + step]
        for c in range(channels):
            hist[c] += np.bincount(chunk[:, c].ravel(), minlength=256)
    return hist


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of ``images / 255``, exact up to
    the final float division (integer sums from a histogram)."""
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for h in channel_histograms(images):
        n = int(h.sum())
        if n == 0:
            means.append(float("nan"))
            stds.append(float("nan"))
            continue
        s = int((h * values).sum())
        q = int((h * values * values).sum())
        # var(x) = (n*q - s^2) / n^2, exact in integers; then scale by 255^2.
        means.append(s / (n * 255))
        stds.append(float(np.sqrt((n * q - s * s) / (n * n))) / 255)
    return means, stds


def check_labels(labels: np.ndarray, where: str, field: str, num_classes: int | None, fix: str = "", *,
                 lowest: int | None = None) -> np.ndarray:
    """``labels`` as int64 ``(N,)``: a 1-D (or ``(N, 1)``, as Keras' CIFAR)
    integer array with values in ``0 .. num_classes-1`` (only ``>= 0`` when
    ``num_classes`` is None). Anything else is a DataError naming ``where``
    (the file) and ``field``. ``lowest``: the smallest label of every split
    (default: of these labels); labels from 1 to ``num_classes`` are named
    as counting from 1, with the fix (subtract 1)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: {field} has shape {labels.shape}; labels must be one integer per image, "
                        f"shape (N,) or (N, 1).")
    if labels.dtype.kind not in "iu":
        hint = (" If they are whole numbers, convert them with .astype(np.int64); if they are one-hot rows, "
                "take .argmax(axis=1)." if labels.dtype.kind == "f" else "")
        raise DataError(f"{where}: {field} has dtype {labels.dtype}; labels must be integers 0..K-1 "
                        f"(class indices).{hint}{fix}")
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0:
            raise DataError(f"{where}: {field} holds the negative label {lo}; labels must be class indices "
                            f"0..K-1.{fix}")
        if hi > np.iinfo(np.int64).max:  # unsigned: it would wrap to a negative index
            raise DataError(f"{where}: {field} holds the label {hi} (2^63 or more; {labels.dtype}): far beyond any "
                            f"class index; labels must be class indices 0..K-1.{fix}")
        if num_classes is not None and hi >= num_classes:
            one_based = hi == num_classes and (lo if lowest is None else lowest) == 1
            hint = (f" The labels run from 1 to {hi}: subtract 1 ({field} - 1) so that they run "
                    f"0..{num_classes - 1}." if one_based else "")
            raise DataError(f"{where}: {field} holds label {hi}, out of range for {num_classes} classes "
                            f"(0..{num_classes - 1}).{hint}{fix}")
    return labels.astype(np.int64, copy=False)


def check_not_empty(n: int, where: str, field: str) -> None:
    if n == 0:
        raise DataError(f"{where}: {field} is empty (0 images); every split needs at least one image.")


def check_counts(n_images: int, n_labels: int, where: str, images_field: str, labels_field: str) -> None:
    if n_images != n_labels:
        raise DataError(f"{where}: {images_field} holds {n_images} images but {labels_field} holds {n_labels} "
                        "labels; the counts must agree (one label per image).")


def check_no_empty_class(labels: np.ndarray, classes: Sequence[str], where: str, field: str) -> None:
    """Every class must have at least one image in ``labels`` (the training
    split): a class that cannot be learned is a mistake in the data."""
    counts = class_counts(labels, len(classes))
    empty = [f"{i} ({classes[i]!r})" for i, c in enumerate(counts) if c == 0]
    if empty:
        raise DataError(f"{where}: {field} has no images of class {', '.join(empty[:10])}"
                        + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
                        + f" of {len(classes)}; every class needs training images. Remove the empty classes "
                        "and renumber the labels 0..K-1 without gaps.")


def check_two_classes(classes: Sequence[str], where: str, field: str, fix: str) -> None:
    """A classifier needs at least two classes: one class makes every
    prediction right (100 % accuracy, loss 0) and measures nothing."""
    if len(classes) < 2:
        found = f"only one class, {classes[0]!r}," if classes else "no class"
        raise DataError(f"{where}: {field}: {found} found; a classification needs at least two classes (with one, "
                        f"every prediction is right and nothing is measured). {fix}")


def _largest_label_fix(lo: int, hi: int, distinct: int) -> str:
    return (f"labels must be class indices 0..K-1 with every class in y_train ({distinct} distinct label"
            f"{'s' if distinct != 1 else ''} found, from {lo} to {hi:,})")


def infer_classes(labels: dict[str, np.ndarray], where: str, n_train: int) -> tuple[str, ...]:
    """Class names ``"0" .. str(K-1)`` for labels given without names, K the
    largest label + 1 (``labels``: field name -> checked int64 labels, the
    training field first). Refused with a named error before anything of
    size K is built: labels that run 1..K (the fix is to subtract 1), and a
    largest label far beyond the data (more classes than training images,
    or more than :data:`MAX_INFERRED_CLASSES`), a stray value."""
    every = np.concatenate([np.asarray(v).ravel() for v in labels.values()])
    lo, hi = int(every.min()), int(every.max())
    distinct = int(np.unique(every).size)
    field = next(f for f, v in labels.items() if v.size and int(v.max()) == hi)
    fields = ", ".join(labels)
    if distinct < 2:
        raise DataError(f"{where}: {fields}: only one class (every label is {lo}) found; a classification needs at "
                        "least two classes (with one, every prediction is right and nothing is measured). Add the "
                        "images of the other classes, labelled 0..K-1.")
    if lo == 1 and distinct == hi:
        raise DataError(f"{where}: {fields} run from 1 to {hi} (no label 0): the labels count from 1. Subtract 1 "
                        f"({' and '.join(f'{f} - 1' for f in labels)}) so that they run 0..{hi - 1}; "
                        "labels must be class indices 0..K-1.")
    k = hi + 1
    if k > n_train or k > MAX_INFERRED_CLASSES:
        limit = (f"more classes than the {n_train:,} training images" if k > n_train else
                 f"more than the {MAX_INFERRED_CLASSES:,} classes archbench infers from labels alone")
        raise DataError(f"{where}: {field} holds label {hi:,}, which would make {k:,} classes (0..{hi:,}), "
                        f"{limit}; {_largest_label_fix(lo, hi, distinct)}. Fix or remove the stray label"
                        f"{'' if k > n_train else ', or name the classes (a class_names array)'}.")
    return tuple(str(i) for i in range(k))


def as_text(value: object) -> str:
    """A name read from a file: bytes as UTF-8 (undecodable bytes
    replaced), anything else through ``str``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_class_names(names: Iterable[str], where: str, field: str) -> tuple[str, ...]:
    out = tuple(names)
    if not out:
        raise DataError(f"{where}: {field} is empty; it must name every class.")
    seen: set[str] = set()
    for n in out:
        if n in seen:
            raise DataError(f"{where}: {field} names class {n!r} twice; class names must be unique.")
        seen.add(n)
    return out
