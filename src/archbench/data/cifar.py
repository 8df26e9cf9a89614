"""CIFAR-10 and CIFAR-100 python batches, as a directory or its tar archive
(:func:`load_cifar`), read with an unpickler that accepts only what a batch
holds."""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
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
)
from archbench.data.dataset import Dataset, from_arrays
from archbench.data.registry import DatasetSpec
from archbench.data.storage import Threshold, read_raw, resolve_threshold
from archbench.env import physical_memory
from archbench.errors import DataError

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
    return {as_text(k): v for k, v in obj.items()}


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
    return check_class_names((as_text(v) for v in meta[key]), where, key)


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
        raws = {f: read_raw(path / f) for f in names}
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
    return from_arrays(spec, arrays, files=files, source="cifar", fmt=fmt, details=details,
                        test_split={"from": "source"}, threshold=threshold)


