"""One entry point for every kind of image-classification dataset:
:func:`load_data`.

``dataset`` is, in this order of precedence:

1. a registry name (``fashion-mnist``, ``mnist``, ``kmnist``): IDX files
   found and verified by :func:`archbench.data.loader.load_dataset`;
2. ``digits``: scikit-learn's bundled 8x8 handwritten digits (see
   :func:`load_digits_dataset`);
3. a path (to use a path that is also a name above, write ``./digits``):

   * a ``.npz`` file in Keras' layout (:func:`load_npz`);
   * a CIFAR-10 or CIFAR-100 python-batch directory, or its ``.tar.gz``
     (:func:`load_cifar`);
   * an image-folder tree ``train/<class>/*``, ``test/<class>/*``
     (:func:`load_folder`).

Every source gives the same :class:`~archbench.data.loader.Dataset`: uint8
``(N, C, H, W)`` images, int64 labels, a spec with the class names and
``(C, H, W)``, and the data card (``describe()``). Bad data is a
:class:`~archbench.errors.DataError` naming the file, the field and the fix.
Whether the images stay in memory or are memory-mapped from the array cache
is decided by :mod:`archbench.data.storage` (``memory_limit``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import math
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archbench.data.arrays import (
    LABEL_DTYPE,
    ArrayDigest,
    check_class_names,
    check_counts,
    check_labels,
    check_no_empty_class,
    check_not_empty,
    check_two_classes,
    digest_array,
    infer_classes,
    rows_per_chunk,
)
from archbench.data.loader import Dataset, load_dataset
from archbench.data.registry import DatasetSpec, get_dataset_spec, list_datasets
from archbench.data.split import RULE as SPLIT_RULE
from archbench.data.split import RULE_ID as SPLIT_RULE_ID
from archbench.data.split import stratified_split
from archbench.data.storage import (
    CacheEntry,
    Threshold,
    choose_storage,
    float32_bytes,
    lookup_source,
    open_array,
    read_entry,
    remember_source,
    resolve_threshold,
    storage_info,
    write_entry,
)
from archbench.env import physical_memory
from archbench.errors import DataError, UsageError

DIGITS = "digits"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0
DIGITS_SCALE = "round(v * 255 / 16), half up: (v * 255 + 8) // 16 for the integer values v = 0..16"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Image files of other formats: not read (their decoding has more choices: frames, bit depths, colour spaces), but
# named in the notes, as data the user likely meant to use.
OTHER_IMAGE_SUFFIXES = (".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".heic", ".heif",
                        ".jfif", ".jp2", ".avif", ".tga", ".psd", ".svg")
# Image modes accepted from a folder, and their channel counts. Others (palette "P", bilevel "1", 16-bit "I;16",
# "CMYK", ...) are refused rather than converted: the user decides how their pixels become 8-bit L/RGB.
FOLDER_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
# Channel counts an NHWC .npz may have (grey, grey+alpha, RGB, RGBA); a last axis above 4 is read as an error
# (most likely an NCHW array, which is not Keras' layout).
NPZ_CHANNELS = (1, 2, 3, 4)
SPLITS = ("train", "test")


def load_data(dataset: str | os.PathLike | DatasetSpec = "fashion-mnist",
              data_dir: str | os.PathLike | None = None, verify: bool = True, *,
              memory_limit: int | None = None) -> Dataset:
    """Load ``dataset`` (a registry name, ``digits``, or a path: see the
    module doc). ``data_dir`` and ``verify`` apply to registry datasets
    (where to look; whether to check the published checksums); other sources
    have no published checksum, and their card's ``identity_sha256`` names
    the data. ``memory_limit``: the threshold in bytes for the trainer's
    float32 copy, above which images are memory-mapped (default: see
    :mod:`archbench.data.storage`)."""
    threshold = resolve_threshold(memory_limit)
    if isinstance(dataset, DatasetSpec):
        return _registry(dataset, data_dir, verify, threshold)
    name = os.fspath(dataset)
    if not isinstance(name, str) or not name:
        raise UsageError(f"dataset {dataset!r} is not a dataset name or path.")
    if name in list_datasets():
        return _registry(get_dataset_spec(name), data_dir, verify, threshold)
    if name == DIGITS:
        _no_data_dir(name, data_dir)
        return load_digits_dataset(threshold)
    path = Path(name).expanduser()
    if not path.exists():
        raise UsageError(
            f"unknown dataset {name!r}: not a known name ({', '.join(list_datasets() + [DIGITS])}) and no such "
            "file or directory. Give a registry name, 'digits', or the path of a .npz file, a CIFAR-10/100 "
            "batch directory or .tar.gz, or an image folder with train/<class>/ and test/<class>/."
        )
    _no_data_dir(name, data_dir)
    if path.is_dir():
        if (path / "train").is_dir() or (path / "test").is_dir():
            return load_folder(path, threshold)
        if _cifar_dir_kind(path):
            return load_cifar(path, threshold)
        raise UsageError(
            f"directory {str(path)!r} is not a dataset archbench can read: expected an image folder (train/<class>/ "
            "and test/<class>/ holding PNG/JPEG/BMP files) or a CIFAR python-batch directory (data_batch_1..5, "
            "test_batch, batches.meta; or CIFAR-100's train, test, meta)."
        )
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return load_npz(path, threshold)
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        return load_cifar(path, threshold)
    raise UsageError(f"file {str(path)!r} is not a dataset archbench can read: expected a .npz (x_train, y_train, "
                     "x_test, y_test) or a CIFAR-10/100 python .tar.gz.")


def _no_data_dir(name: str, data_dir: object) -> None:
    if data_dir is not None:
        raise UsageError(f"--data-dir applies to registry datasets ({', '.join(list_datasets())}); dataset "
                         f"{name!r} is found by its own path. Leave --data-dir out.")


# --------------------------------------------------------------------------------------------------- storage


def _apply_storage(ds: Dataset, threshold: Threshold) -> Dataset:
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
        return identity, _entry_meta(ds)

    found = read_entry(identity) or write_entry(n * math.prod(ds.image_shape), fill)[1]
    return _mapped(ds, found[0], needed, threshold)


def _entry_meta(ds: Dataset) -> dict:
    return {"name": ds.spec.name, "classes": list(ds.classes), "image_shape": list(ds.image_shape),
            "sha256": dict(ds.sha256), "source": ds.source}


def _mapped(ds: Dataset, directory: Path, needed: int, threshold: Threshold) -> Dataset:
    paths = {role: str(directory / f"{role}.npy") for role in ("train_images", "test_images")}
    return replace(ds, train_images=torch.from_numpy(open_array(paths["train_images"])),
                   test_images=torch.from_numpy(open_array(paths["test_images"])),
                   storage="memmap", storage_info=storage_info(needed, threshold, "memmap", directory),
                   backing=paths)


def _registry(spec: DatasetSpec, data_dir, verify: bool, threshold: Threshold) -> Dataset:
    return _apply_storage(load_dataset(spec, data_dir, verify), threshold)


def _from_arrays(spec: DatasetSpec, arrays: dict[str, np.ndarray], *, files: dict[str, str], source: str,
                 fmt: str, details: dict, test_split: dict, threshold: Threshold) -> Dataset:
    """A Dataset from checked in-memory arrays (images uint8 NCHW, labels
    int64), with their canonical digests."""
    digests = {role: digest_array(role, arr) for role, arr in arrays.items()}
    ds = Dataset(spec, torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]),
                 torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]),
                 files, False, None, digests, source=source, format=fmt,
                 split={"test": test_split, "val": None, "operations": []}, details=details)
    return _apply_storage(ds, threshold)


# ---------------------------------------------------------------------------------------------------- digits


def load_digits_dataset(threshold: Threshold | None = None) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images of 10 classes,
    bundled inside the scikit-learn wheel: no download).

    Pixels: the integer values 0..16 become uint8 by ``(v * 255 + 8) // 16``
    (round half up of v * 255 / 16: 0 -> 0, 1 -> 16, 8 -> 128, 16 -> 255).
    Split: scikit-learn ships no test set, so a fixed one is made by
    :mod:`archbench.data.split`'s rule with fraction 0.2 and seed 0
    (stratified; 359 test / 1,438 train images with scikit-learn's data),
    both parts in the original order. Digits are not mirror-symmetric.
    Needs scikit-learn: ``pip install 'archbench[datasets]'``."""
    threshold = threshold or resolve_threshold()
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("dataset 'digits' needs scikit-learn, which is not installed (" + str(exc) + "). Install it "
                        "with: pip install 'archbench[datasets]' (or pip install scikit-learn).") from exc
    bunch = load_digits()
    where = f"scikit-learn {sklearn.__version__} load_digits()"
    values = np.asarray(bunch.images)
    if values.ndim != 3 or values.shape[1:] != (8, 8):
        raise DataError(f"{where}: images have shape {values.shape}; expected (N, 8, 8).")
    if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() > 16:
        raise DataError(f"{where}: pixel values are not the integers 0..16 this loader scales ({DIGITS_SCALE}).")
    images = ((values.astype(np.int64) * 255 + 8) // 16).astype(np.uint8)[:, None]
    labels = check_labels(np.asarray(bunch.target), where, "target", 10)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SEED)
    spec = DatasetSpec(name=DIGITS, files=(), classes=tuple(str(d) for d in range(10)), image_shape=(1, 8, 8),
                       description="scikit-learn's 8x8 handwritten digits (UCI optical recognition of handwritten "
                                   "digits, test part): 1,797 images, 10 classes",
                       mirror_symmetric=False)
    arrays = {"train_images": np.ascontiguousarray(images[train_idx]), "train_labels": labels[train_idx],
              "test_images": np.ascontiguousarray(images[test_idx]), "test_labels": labels[test_idx]}
    data_file = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    test_split = {"from": f"{where}: its {len(labels)} images divided by archbench", "fraction": DIGITS_TEST_FRACTION,
                  "seed": DIGITS_SEED, "stratified": True, "rule": SPLIT_RULE, "rule_id": SPLIT_RULE_ID}
    return _from_arrays(spec, arrays, files={"digits": str(data_file)} if data_file.is_file() else {},
                        source=DIGITS, fmt=f"scikit-learn load_digits ({sklearn.__version__})",
                        details={"scikit_learn": sklearn.__version__, "pixel_scaling": DIGITS_SCALE},
                        test_split=test_split, threshold=threshold)


# ------------------------------------------------------------------------------------------------------- npz


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


def _image_layout(m: _Member, where: str, declared: str | None = None) -> tuple[tuple[int, int, int], str]:
    """``((C, H, W), layout)`` of an NHW, NHWC or (declared) NCHW image
    member, with named errors. The 4-D rule (see :func:`load_npz`): without a
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
                (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw.tolist()),
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
        return _stream(spec, n, chunks, labels, storage=storage, needed=needed, threshold=threshold,
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


def _stream(spec: DatasetSpec, n: dict[str, int], chunks: Mapping[str, Callable[[], Iterator[np.ndarray]]],
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
            return probe.identity, {**_entry_meta(probe), "source_key": key}

        identity, found = write_entry((n["train"] + n["test"]) * c * h * w, write)
        remember_source(key, identity)
    directory, meta = found
    ds = dataset({s: torch.zeros((0, c, h, w), dtype=torch.uint8) for s in SPLITS}, dict(meta["sha256"]))
    if ds.identity != meta.get("identity_sha256"):
        raise DataError(f"the array cache entry {directory} does not match {files} (identity differs); delete "
                        f"{directory} and load again.")
    return _mapped(ds, directory, needed, threshold)


# ----------------------------------------------------------------------------------------------------- CIFAR

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
CIFAR_ROW = 3 * 32 * 32


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold (dicts, lists, numbers,
    strings, NumPy arrays): any other global is refused, so a hostile
    pickle cannot call arbitrary functions through this loader. This is
    defence in depth, not a licence: load only archives you trust."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.endswith("multiarray"):  # numpy 1 wrote numpy.core, numpy 2 numpy._core: map to the one we have
            try:
                multiarray = importlib.import_module("numpy._core.multiarray")
            except ImportError:
                multiarray = importlib.import_module("numpy.core.multiarray")
            return getattr(multiarray, name)
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure inside a pickle is a bad file
        raise DataError(f"{where}: not a CIFAR python batch ({type(exc).__name__}: {exc}). Use the 'python version' "
                        "download of CIFAR-10/100 (cifar-10-python.tar.gz / cifar-100-python.tar.gz).") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR batch.")
    return {k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_dir_kind(path: Path) -> str | None:
    if any((path / f).is_file() for f in ("data_batch_1", "test_batch", "batches.meta")):
        return "cifar-10"
    if all((path / f).is_file() for f in CIFAR100_FILES):
        return "cifar-100"
    return None


def _tar_members(path: Path) -> dict[str, bytes]:
    """The regular files of a CIFAR archive that the loader needs, by base
    name, read without extracting anything. Refused: absolute names, ``..``,
    links, devices and other non-regular members, more than one top folder,
    a member named twice, a member larger than this machine's memory."""
    wanted = set(CIFAR10_FILES) | set(CIFAR100_FILES)
    where = str(path)
    limit = physical_memory()
    out: dict[str, bytes] = {}
    tops: set[str] = set()
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                parts = m.name.replace("\\", "/").split("/")
                if m.name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
                    raise DataError(f"{where}: member {m.name!r} has an unsafe path; this is not a CIFAR archive "
                                    "as published. Download cifar-10-python.tar.gz / cifar-100-python.tar.gz again.")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{where}: member {m.name!r} is a {'link' if m.issym() or m.islnk() else 'special'}"
                                    " file; a CIFAR archive holds only regular files. Download it again.")
                parts = [p for p in parts if p not in ("", ".")]
                if len(parts) > 1:
                    tops.add(parts[0])
                if not m.isfile() or parts[-1] not in wanted or len(parts) > 2:
                    continue
                if parts[-1] in out:
                    raise DataError(f"{where}: holds {parts[-1]!r} twice; a CIFAR archive holds each batch once.")
                if limit is not None and m.size > limit:
                    raise DataError(f"{where}: member {m.name!r} declares {m.size:,} bytes, more than this "
                                    "machine's memory; not a CIFAR batch.")
                f = tf.extractfile(m)
                if f is None:
                    raise DataError(f"{where}: cannot read member {m.name!r}.")
                out[parts[-1]] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{where}: not a readable tar archive ({exc}); it is damaged or truncated. Download "
                        "it again.") from exc
    if len(tops) > 1:
        raise DataError(f"{where}: holds several top-level folders ({', '.join(sorted(tops))}); a CIFAR archive "
                        "holds one (cifar-10-batches-py/ or cifar-100-python/).")
    return out


def _cifar_batch(batch: dict, where: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{where}: no {key!r} entry (it has {', '.join(sorted(batch))}); not a CIFAR "
                            f"{'100' if label_key == 'fine_labels' else '10'} batch.")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' is {desc}; a CIFAR batch holds uint8 rows of {CIFAR_ROW} values "
                        "(1024 red, 1024 green, 1024 blue, each 32x32 row-major).")
    try:
        labels = np.asarray(batch[label_key])
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: {label_key!r} is not a list of integers ({exc}).") from exc
    labels = check_labels(labels, where, label_key, num_classes)
    check_counts(len(data), len(labels), where, "data", label_key)
    return data.reshape(-1, 3, 32, 32), labels


def _names(meta: dict, key: str, where: str) -> tuple[str, ...]:
    if key not in meta or not isinstance(meta[key], list | tuple):
        raise DataError(f"{where}: no {key!r} list (it has {', '.join(sorted(meta))}).")
    return check_class_names((v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in meta[key]),
                             where, key)


def load_cifar(path: str | os.PathLike, threshold: Threshold | None = None) -> Dataset:
    """CIFAR-10 or CIFAR-100 in the "python version" layout: a directory
    (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
    or CIFAR-100's ``train``, ``test``, ``meta``) or its ``.tar.gz``, read
    member by member without extracting anything to disk. CIFAR-100 uses the
    100 fine labels. Images ``(N, 3, 32, 32)``; mirror-symmetric.

    **The batches are Python pickles: load only archives you trust** (such
    as the files published by the University of Toronto). The unpickler
    here accepts only the types a CIFAR batch holds and refuses anything
    else, which blocks the usual pickle exploits, but it is no substitute
    for trusting the source."""
    threshold = threshold or resolve_threshold()
    path = Path(path)
    if path.is_dir():
        kind = _cifar_dir_kind(path) or ""
        if not kind:
            raise DataError(f"{path}: not a CIFAR python-batch directory; a CIFAR-10 one holds "
                            f"{', '.join(CIFAR10_FILES)}, a CIFAR-100 one {', '.join(CIFAR100_FILES)}.")
        names = CIFAR10_FILES if kind == "cifar-10" else CIFAR100_FILES
        missing = [f for f in names if not (path / f).is_file()]
        if missing:
            raise DataError(f"{path}: missing {', '.join(missing)} of {kind}; a CIFAR-10 directory holds "
                            f"{', '.join(CIFAR10_FILES)}; a CIFAR-100 one {', '.join(CIFAR100_FILES)}.")
        raws = {}
        for f in names:
            try:
                raws[f] = (path / f).read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read {path / f}: {exc.strerror or exc}.") from exc
        wheres = {f: str(path / f) for f in names}
        files = dict(wheres)
    else:
        raws = _tar_members(path)
        if all(f in raws for f in CIFAR10_FILES):
            kind, names = "cifar-10", CIFAR10_FILES
        elif all(f in raws for f in CIFAR100_FILES):
            kind, names = "cifar-100", CIFAR100_FILES
        else:
            have = sorted(raws) or ["none of them"]
            raise DataError(f"{path}: not a complete CIFAR archive: it holds {', '.join(have)} of the batch files; "
                            f"CIFAR-10 needs {', '.join(CIFAR10_FILES)}, CIFAR-100 {', '.join(CIFAR100_FILES)}.")
        wheres = {f: f"{path}:{f}" for f in names}
        files = {"archive": str(path)}
    if kind == "cifar-10":
        meta_name, names_key, label_key = "batches.meta", "label_names", "labels"
        train_names, test_names = CIFAR10_FILES[:5], ("test_batch",)
    else:
        meta_name, names_key, label_key = "meta", "fine_label_names", "fine_labels"
        train_names, test_names = ("train",), ("test",)
    classes = _names(_unpickle(raws[meta_name], wheres[meta_name]), names_key, wheres[meta_name])
    check_two_classes(classes, wheres[meta_name], names_key, "Use the published CIFAR-10/100 archive.")
    arrays: dict[str, np.ndarray] = {}
    for split, batch_names in (("train", train_names), ("test", test_names)):
        parts = [_cifar_batch(_unpickle(raws[b], wheres[b]), wheres[b], label_key, len(classes)) for b in batch_names]
        arrays[f"{split}_images"] = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
        arrays[f"{split}_labels"] = np.concatenate([p[1] for p in parts]).astype(np.int64)
        check_not_empty(len(arrays[f"{split}_labels"]), ", ".join(wheres[b] for b in batch_names), "data")
    check_no_empty_class(arrays["train_labels"], classes, ", ".join(wheres[b] for b in train_names), label_key)
    spec = DatasetSpec(name=path.name, files=(), classes=classes, image_shape=(3, 32, 32),
                       description=f"{kind.upper()} python batches from {path.name}", mirror_symmetric=True)
    fmt = f"{kind.upper()} python batches ({'archive' if not path.is_dir() else 'directory'})"
    details = {"kind": kind, "labels": label_key}
    return _from_arrays(spec, arrays, files=files, source="cifar", fmt=fmt, details=details,
                        test_split={"from": "source"}, threshold=threshold)


# ---------------------------------------------------------------------------------------------- image folder


@dataclass
class _Image:
    path: Path
    label: int


def _ignored_kind(entry: os.DirEntry) -> str:
    if entry.name.startswith("."):
        return "hidden"
    if entry.is_dir():
        return "folder"
    return "image" if entry.name.lower().endswith(OTHER_IMAGE_SUFFIXES) else "other"


def _folder_notes(name: str, ignored: list[tuple[str, str]]) -> list[str]:
    """Sentences for what an image folder held that is not read (hidden
    files, such as .DS_Store, only counted in the card's details)."""
    notes = []
    for kind, what, why in (
        ("image", "image file{s} in a format archbench does not read",
         "only PNG, JPEG and BMP are read; convert {them} (e.g. with Pillow) to use {them}"),
        ("folder", "folder{s} not read",
         "only train/ and test/, and the files directly inside train/<class>/ and test/<class>/, are read; "
         "subfolders of a class folder are not searched"),
        ("other", "other file{s} ignored", "not .png/.jpg/.jpeg/.bmp files"),
    ):
        paths = [p for k, p in ignored if k == kind]
        if paths:
            n = len(paths)
            eg = ", ".join(paths[:3]) + (", ..." if n > 3 else "")
            words = {"s": "" if n == 1 else "s", "them": "it" if n == 1 else "them"}
            notes.append(f"{name}: {n} {what.format(**words)} (e.g. {eg}): {why.format(**words)}.")
    return notes


def _scan_folder(root: Path) -> tuple[tuple[str, ...], dict[str, list[_Image]], dict, list[str]]:
    """Class names and ``{split: [images]}`` of an image-folder tree, with
    what was ignored (details, and notes for a person); named errors for a
    missing split, differing class sets, fewer than two classes, and empty
    class folders."""
    for s in SPLITS:
        if not (root / s).is_dir():
            raise DataError(f"{root}: no {s}/ folder; an image-folder dataset needs train/<class>/ and "
                            "test/<class>/ holding the images.")
    ignored: list[tuple[str, str]] = []  # (kind, path relative to root)

    def listdir(d: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(d) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot read the folder {d}: {exc.strerror or exc}.") from exc

    ignored += [(_ignored_kind(e), e.name) for e in listdir(root) if e.name not in SPLITS]
    class_dirs: dict[str, list[str]] = {}
    for s in SPLITS:
        names = []
        for e in listdir(root / s):
            if e.is_dir() and not e.name.startswith("."):
                names.append(e.name)
            else:
                ignored.append((_ignored_kind(e), f"{s}/{e.name}"))
        if not names:
            raise DataError(f"{root / s}: no class folders; put each class's images in {s}/<class name>/.")
        class_dirs[s] = names
    train_set, test_set = set(class_dirs["train"]), set(class_dirs["test"])
    if train_set != test_set:
        only_train, only_test = sorted(train_set - test_set), sorted(test_set - train_set)
        parts = ([f"only in train/: {', '.join(only_train)}"] if only_train else []) + (
            [f"only in test/: {', '.join(only_test)}"] if only_test else [])
        raise DataError(f"{root}: train/ and test/ have different class folders ({'; '.join(parts)}); both splits "
                        "must have the same classes (add the missing folders, or remove the extra ones).")
    classes = tuple(sorted(train_set))
    check_two_classes(classes, str(root / "train"), "class folders",
                      "Put each class's images in its own folder, train/<class>/ and test/<class>/, for at least "
                      "two classes.")
    images: dict[str, list[_Image]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        for label, name in enumerate(classes):
            d = root / s / name
            found = 0
            for e in listdir(d):
                if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES):
                    images[s].append(_Image(Path(e.path), label))
                    found += 1
                else:
                    ignored.append((_ignored_kind(e), f"{s}/{name}/{e.name}"))
            if not found:
                raise DataError(f"{d}: empty class folder (no {'/'.join(x[1:] for x in IMAGE_SUFFIXES)} files); "
                                f"every class needs images in both splits. Add images or remove the class "
                                f"folder from train/ and test/.")
    kinds = {k: sum(1 for kind, _ in ignored if kind == k) for k in ("image", "folder", "other", "hidden")}
    details = {"ignored_entries": len(ignored), "ignored_examples": [p for _, p in ignored[:5]],
               "ignored_kinds": {k: v for k, v in kinds.items() if v}}
    return classes, images, details, _folder_notes(root.name or str(root), ignored)


def _open_image(path: Path, raw: bytes):
    from PIL import Image, UnidentifiedImageError

    buf = io.BytesIO(raw)
    try:
        return Image.open(buf)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (Pillow does not recognise its contents as an image "
                        "format); replace or remove the file.") from exc
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        why = str(exc).replace(repr(buf), path.name)  # Pillow names the stream, not the file
        raise DataError(f"{path}: not a readable image ({why}); replace or remove the file.") from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check its permissions.") from exc


def load_folder(root: str | os.PathLike, threshold: Threshold | None = None) -> Dataset:
    """An image-folder tree: ``train/<class>/*`` and ``test/<class>/*``
    (PNG, JPEG or BMP; hidden files, other files and subfolders of a class
    folder are ignored: counted in the card's details, and, except hidden
    files, named in the dataset's ``notes``). Class names are the folder
    names, sorted (label i is the i-th); both splits must have the same
    classes, at least two, and no class folder may be empty. Images are read with Pillow and kept as they are:
    all must share one size and one mode, L (C=1), LA (2), RGB (3) or RGBA
    (4); anything else (other modes, mixed modes, mixed sizes) is an error
    naming the file, not a silent conversion. Samples are ordered by class,
    then file name. Mirror symmetry is unknown (None).

    JPEG pixels depend on the decoder (libjpeg version): ``identity_sha256``
    is over the decoded pixels, and the card records Pillow's version."""
    import PIL

    threshold = threshold or resolve_threshold()
    root = Path(root)
    classes, images, details, notes = _scan_folder(root)
    # Header pass: every file opened (not decoded) to check mode and size before anything is stored.
    key = hashlib.sha256(b"folder-v1\n")
    first: tuple[Path, str, tuple[int, int]] | None = None
    for s in SPLITS:
        for item in images[s]:
            raw = _read_bytes(item.path)
            key.update(f"{s}/{item.path.parent.name}/{item.path.name}\n".encode())
            key.update(hashlib.sha256(raw).digest())
            with _open_image(item.path, raw) as im:
                mode, size = im.mode, im.size
            if mode not in FOLDER_MODES:
                raise DataError(f"{item.path}: image mode {mode!r} is not one archbench reads as is "
                                f"({', '.join(FOLDER_MODES)}); convert the images, e.g. with Pillow "
                                "im.convert('RGB') or im.convert('L'), and save them again.")
            if first is None:
                first = (item.path, mode, size)
                continue
            if size != first[2]:
                raise DataError(f"{item.path}: ragged images: this one is {size[0]}x{size[1]} (WxH) but {first[0]} "
                                f"is {first[2][0]}x{first[2][1]}; every image must have one size. Resize them all "
                                "to one size first.")
            if mode != first[1]:
                raise DataError(f"{item.path}: mixed channel counts: mode {mode} ({FOLDER_MODES[mode]} channels) "
                                f"but {first[0]} is {first[1]} ({FOLDER_MODES[first[1]]}); convert every image to "
                                "one mode (e.g. all RGB) first.")
    assert first is not None  # _scan_folder refuses empty classes
    c, (w, h) = FOLDER_MODES[first[1]], first[2]
    n = {s: len(images[s]) for s in SPLITS}
    labels = {s: np.array([i.label for i in images[s]], dtype=np.int64) for s in SPLITS}
    check_no_empty_class(labels["train"], classes, str(root / "train"), "class folders")

    def chunks(s: str) -> Iterator[np.ndarray]:
        step = rows_per_chunk(c * h * w)
        for i in range(0, n[s], step):
            part = images[s][i:i + step]
            out = np.empty((len(part), c, h, w), dtype=np.uint8)
            for j, item in enumerate(part):
                with _open_image(item.path, _read_bytes(item.path)) as im:
                    if im.mode != first[1] or im.size != first[2]:
                        raise DataError(f"{item.path}: changed while being read (mode {im.mode}, size {im.size}); "
                                        "load the dataset again.")
                    try:
                        arr = np.asarray(im)
                    except (OSError, ValueError) as exc:
                        raise DataError(f"{item.path}: cannot decode the image ({exc}); replace or remove "
                                        "the file.") from exc
                out[j] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            yield out

    spec = DatasetSpec(name=root.resolve().name or str(root), files=(), classes=classes, image_shape=(c, h, w),
                       description=f"image folder {root}", mirror_symmetric=None)
    suffixes = sorted({i.path.suffix.lower() for s in SPLITS for i in images[s]})
    needed = float32_bytes(n["train"] + n["test"], (c, h, w))
    return _stream(spec, n, {s: functools.partial(chunks, s) for s in SPLITS}, labels,
                   storage=choose_storage(needed, threshold), needed=needed, threshold=threshold,
                   source_key=lambda: "folder-" + key.hexdigest(), files={"folder": str(root)}, source="folder",
                   fmt=f"image folder ({', '.join(x[1:].upper() for x in suffixes)}; mode {first[1]})",
                   details={**details, "pillow": PIL.__version__, "mode": first[1]}, test_split={"from": "source"},
                   notes=notes)
