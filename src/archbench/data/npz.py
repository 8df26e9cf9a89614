"""``.npz`` files in Keras' layout (:func:`load_npz`): read member by member
from the zip, never unpickled."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archbench.data.arrays import (
    as_text,
    check_class_names,
    check_counts,
    check_labels,
    check_no_empty_class,
    check_not_empty,
    check_two_classes,
    infer_classes,
    rows_per_chunk,
)
from archbench.data.dataset import SPLITS, Dataset, stream
from archbench.data.registry import DatasetSpec
from archbench.data.storage import Threshold, choose_storage, float32_bytes, resolve_threshold
from archbench.errors import DataError

# Channel counts an NHWC .npz may have (grey, grey+alpha, RGB, RGBA); a last axis above 4 is read as an error
# (most likely an NCHW array, which is not Keras' layout).
NPZ_CHANNELS = (1, 2, 3, 4)


@dataclass
class _Member:
    """One array inside an ``.npz``: its header, and where its data starts."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes of the .npy header


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_member(zf: zipfile.ZipFile, names: dict[str, str], key: str, where: str) -> _Member:
    try:
        with zf.open(names[key]) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: {key} is not a readable .npy array ({exc}); write the file with "
                        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).") from exc
    info = zf.getinfo(names[key])
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise DataError(f"{where}: {key} is an object array ({dtype}), which only pickle can load; archbench does "
                        "not unpickle .npz contents. Store numbers (images uint8, labels integers) or, for "
                        "class_names, a string array: np.array(names, dtype=str).")
    expected = offset + math.prod(shape) * dtype.itemsize
    if info.file_size != expected:
        raise DataError(f"{where}: {key} is {info.file_size:,} bytes but its header (shape {shape}, {dtype}) implies "
                        f"{expected:,}; the file is truncated or damaged. Write it again.")
    return _Member(key, tuple(int(d) for d in shape), dtype, bool(fortran), offset)


def _read_whole(zf: zipfile.ZipFile, name: str, where: str, key: str) -> np.ndarray:
    try:
        with zf.open(name) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: cannot read {key} ({exc}); the file is damaged. Write it again.") from exc


def _image_layout_of(m: _Member, where: str, declared: str | None = None) -> tuple[tuple[int, int, int], str]:
    """``((C, H, W), layout)`` of an NHW, NHWC or (declared) NCHW image
    member, with named errors (images of zero height or width included). The 4-D rule (see :func:`load_npz`): without a
    declared layout, (N, A, B, D) is NHWC when D is 1..4 and A is not; when
    both are (e.g. (N, 3, 4, 4)), it reads as 3x4 images of 4 channels or as
    4x4 images of 3 channels, and is refused rather than guessed."""
    if m.dtype != np.uint8:
        hint = (" If they are floats in 0..1, write (x * 255).round().astype(np.uint8); if 0..255, "
                "x.astype(np.uint8)." if m.dtype.kind == "f" else
                " If the values are 0..255, convert with x.astype(np.uint8).")
        raise DataError(f"{where}: {m.key} has dtype {m.dtype}; images must be uint8 (0..255).{hint}")
    if len(m.shape) == 3:
        return (1, m.shape[1], m.shape[2]), "NHW"
    if len(m.shape) != 4:
        raise DataError(f"{where}: {m.key} has shape {m.shape}; images must be (N, H, W) or (N, H, W, C).")
    n, a, b, d = m.shape
    if declared == "NCHW":
        if a not in NPZ_CHANNELS:
            raise DataError(f"{where}: {m.key} has shape {m.shape} but the file's layout says NCHW, which needs "
                            f"C (axis 1) in {NPZ_CHANNELS}; fix the array or the layout entry.")
        return (a, b, d), "NCHW"
    if d not in NPZ_CHANNELS:
        raise DataError(f"{where}: {m.key} has shape {m.shape}; a 4-D image array must be NHWC (Keras' layout) "
                        f"with C in {NPZ_CHANNELS}. If it is NCHW, write np.transpose(x, (0, 2, 3, 1)).")
    if declared is None and a in NPZ_CHANNELS and (a, b, d) != (1, 1, 1):
        raise DataError(
            f"{where}: {m.key} has shape {m.shape}, which reads two ways: NHWC (Keras' layout) as {a}x{b} (HxW) "
            f"images of {d} channel{'s' if d > 1 else ''}, or NCHW as {b}x{d} images of {a} channel"
            f"{'s' if a > 1 else ''}; archbench does not guess. Say which: add layout='NHWC' or layout='NCHW' to "
            "the file (np.savez(path, ..., layout='NCHW')); an NCHW array with larger images can instead be "
            "transposed to NHWC, np.transpose(x, (0, 2, 3, 1)).")
    return (d, a, b), "NHWC"


def _image_layout(m: _Member, where: str, declared: str | None = None) -> tuple[tuple[int, int, int], str]:
    """``((C, H, W), layout)`` of an NHW, NHWC or (declared) NCHW image
    member (:func:`_image_layout_of`); images of zero height or width are
    refused (they would train on nothing and show NaN statistics)."""
    (c, h, w), layout = _image_layout_of(m, where, declared)
    if h < 1 or w < 1:
        raise DataError(f"{where}: {m.key} has shape {m.shape}: images of {h}x{w} pixels (HxW); every image needs "
                        "a height and a width of at least 1. Check how the array was written.")
    return (c, h, w), layout


NPZ_LAYOUTS = ("NHWC", "NCHW")


def _declared_layout(zf: zipfile.ZipFile, names: dict[str, str], where: str) -> str | None:
    """The optional ``layout`` entry: 'NHWC' or 'NCHW' (for 4-D images)."""
    if "layout" not in names:
        return None
    _npz_member(zf, names, "layout", where)
    raw = _read_whole(zf, names["layout"], where, "layout")
    value = raw.reshape(-1)[0] if raw.dtype.kind in "US" and raw.size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if value is None or str(value).upper() not in NPZ_LAYOUTS:
        raise DataError(f"{where}: layout is {raw.dtype} {raw.shape} {raw.tolist()!r}; it must be one string, "
                        f"{' or '.join(repr(x) for x in NPZ_LAYOUTS)} (np.savez(path, ..., layout='NHWC')).")
    return str(value).upper()


def _npz_chunks(zf: zipfile.ZipFile, name: str, m: _Member, where: str,
                declared: str | None = None) -> Iterator[np.ndarray]:
    """The images of member ``m`` as NCHW uint8 chunks of whole images."""
    (c, h, w), layout = _image_layout(m, where, declared)
    n = m.shape[0]
    shape = (c, h, w) if layout == "NCHW" else (h, w, c)

    def nchw(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a if layout == "NCHW" else a.transpose(0, 3, 1, 2))

    step = rows_per_chunk(c * h * w)
    if m.fortran:  # rare (np.save of a Fortran-ordered array): read it whole and reorder
        arr = _read_whole(zf, name, where, m.key).reshape(n, *shape)
        for i in range(0, n, step):
            yield nchw(arr[i:i + step])
        return
    try:
        with zf.open(name) as f:
            f.read(m.offset)
            for i in range(0, n, step):
                k = min(step, n - i)
                buf = f.read(k * c * h * w)
                if len(buf) != k * c * h * w:
                    raise DataError(f"{where}: {m.key} ends after {i + len(buf) // (c * h * w)} of {n} images; the "
                                    "file is truncated. Write it again.")
                yield nchw(np.frombuffer(buf, np.uint8).reshape(k, *shape))
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: cannot read {m.key} ({exc}); the file is damaged. Write it again.") from exc


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_npz(path: str | os.PathLike, threshold: Threshold | None = None) -> Dataset:
    """An ``.npz`` in Keras' layout: ``x_train``, ``y_train``, ``x_test``,
    ``y_test``; images uint8 ``(N, H, W)`` (one channel) or ``(N, H, W, C)``
    with C in 1..4; labels integers ``0..K-1``, shape ``(N,)`` or ``(N, 1)``.
    An optional ``class_names`` string array names the K classes (else they
    are ``"0" .. str(K-1)`` with K = the largest label + 1, refused when that
    is more classes than training images or than
    :data:`~archbench.data.arrays.MAX_INFERRED_CLASSES`); at least two
    classes, and every class needs training images. Nothing is unpickled
    (``allow_pickle=False``). Mirror symmetry is unknown
    (``spec.mirror_symmetric`` None). Other entries (``x_val``, ``y_val``,
    ...) are not used: the card's ``details.extra_keys`` lists them and
    ``notes`` says so.

    **4-D layout.** ``(N, A, B, D)`` is read as NHWC when D is 1..4 and A is
    not (``(N, 32, 32, 3)``, ``(N, 28, 28, 1)``). When A is 1..4 too (e.g.
    ``(N, 3, 4, 4)``: 3x4 images of 4 channels, or NCHW 4x4 images of 3
    channels) the array is refused, not guessed (``(N, 1, 1, 1)``, the same
    either way, excepted). An optional ``layout`` entry, ``'NHWC'`` or
    ``'NCHW'``, settles it (and lets NCHW arrays be read as they are).

    The arrays are read a chunk at a time from the zip members, straight
    into memory or, above the memory threshold, into the array cache (once
    per distinct file content; a second load maps the cache)."""
    threshold = threshold or resolve_threshold()
    path = Path(path)
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: not a readable .npz (zip) file ({exc}); write it with np.savez.") from exc
    with zf:
        names = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in NPZ_KEYS if k not in names]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (it holds {', '.join(sorted(names)) or 'nothing'});"
                            " an .npz dataset needs x_train, y_train, x_test, y_test as Keras writes them: "
                            "np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).")
        members = {k: _npz_member(zf, names, k, where) for k in NPZ_KEYS}
        declared = _declared_layout(zf, names, where)
        read = {s: _image_layout(members[f"x_{s}"], where, declared) for s in SPLITS}
        shapes = {s: read[s][0] for s in SPLITS}
        if shapes["train"] != shapes["test"]:
            what = "channel counts" if shapes["train"][0] != shapes["test"][0] else "image sizes"
            raise DataError(f"{where}: mixed {what}: x_train images are (C, H, W) = {shapes['train']} but x_test "
                            f"images are {shapes['test']}; both splits must have one shape.")
        image_shape = shapes["train"]
        class_names: tuple[str, ...] | None = None
        if "class_names" in names:
            _npz_member(zf, names, "class_names", where)  # refuses an object (pickled) array before reading it
            raw = _read_whole(zf, names["class_names"], where, "class_names")
            if raw.ndim != 1 or raw.dtype.kind not in "US":
                raise DataError(f"{where}: class_names has {raw.dtype} {raw.shape}; it must be a 1-D string array, "
                                "e.g. np.array(['cat', 'dog']).")
            class_names = check_class_names(
                (as_text(v) for v in raw.tolist()),
                where, "class_names")
            check_two_classes(class_names, where, "class_names",
                              "Name every class in class_names and label the images 0..K-1.")
        labels: dict[str, np.ndarray] = {}
        for s in SPLITS:
            m = members[f"y_{s}"]
            if m.dtype.kind not in "iu":  # before reading the data: the header says enough
                check_labels(np.zeros((0,), m.dtype), where, m.key, None)
            check_counts(members[f"x_{s}"].shape[0], m.shape[0] if m.shape else 0, where, f"x_{s}", f"y_{s}")
            check_not_empty(members[f"x_{s}"].shape[0], where, f"x_{s}")
            labels[s] = check_labels(_read_whole(zf, names[m.key], where, m.key), where, m.key, None)
        if class_names is None:
            class_names = infer_classes({f"y_{s}": labels[s] for s in SPLITS}, where, len(labels["train"]))
        else:
            lowest = min(int(labels[s].min()) for s in SPLITS)
            for s in SPLITS:
                check_labels(labels[s], where, f"y_{s}", len(class_names),
                             f" class_names names {len(class_names)} classes.", lowest=lowest)
        check_no_empty_class(labels["train"], class_names, where, "y_train")
        spec = DatasetSpec(name=path.name, files=(), classes=class_names, image_shape=image_shape,
                           description=f"arrays from {path.name}", mirror_symmetric=None)
        layout = {s: read[s][1] for s in SPLITS}
        fmt = f"npz (Keras layout: x_train {layout['train']}, x_test {layout['test']})"
        extra = sorted(set(names) - set(NPZ_KEYS) - {"class_names", "layout"})
        details = {"layout": layout, "extra_keys": extra}
        n = {s: members[f"x_{s}"].shape[0] for s in SPLITS}
        needed = float32_bytes(n["train"] + n["test"], image_shape)
        storage = choose_storage(needed, threshold)
        common: dict[str, Any] = dict(files={"npz": where}, source="npz", fmt=fmt, details=details,
                                      test_split={"from": "source"}, notes=_npz_notes(path.name, extra))
        chunks = {s: functools.partial(_npz_chunks, zf, names[f"x_{s}"], members[f"x_{s}"], where, declared)
                  for s in SPLITS}
        return stream(spec, n, chunks, labels, storage=storage, needed=needed, threshold=threshold,
                       source_key=(lambda: "npz-" + _file_sha256(path)), **common)


def _npz_notes(name: str, extra: list[str]) -> list[str]:
    """A sentence for the entries of an .npz that are not used."""
    if not extra:
        return []
    shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
    val = [k for k in extra if "val" in k.lower()]
    hint = (f" In particular {', '.join(val[:4])} {'is' if len(val) == 1 else 'are'} not a validation split here: "
            "--val-split FRACTION holds one out of x_train (or merge your validation arrays into x_train/y_train "
            "first)." if val else "")
    return [f"{name}: {len(extra)} entr{'y' if len(extra) == 1 else 'ies'} ignored ({shown}): archbench reads "
            f"only x_train, y_train, x_test, y_test (and class_names, layout).{hint}"]


