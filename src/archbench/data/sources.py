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

Every source gives the same :class:`~archbench.data.dataset.Dataset`: uint8
``(N, C, H, W)`` images, int64 labels, a spec with the class names and
``(C, H, W)``, and the data card (``describe()``). Bad data is a
:class:`~archbench.errors.DataError` naming the file, the field and the fix.
Whether the images stay in memory or are memory-mapped from the array cache
is decided by :mod:`archbench.data.storage` (``memory_limit``).

This module is the dispatch; each format has its own module
(:mod:`~archbench.data.digits`, :mod:`~archbench.data.npz`,
:mod:`~archbench.data.cifar`, :mod:`~archbench.data.folder`), sharing
:mod:`archbench.data.dataset` (building a Dataset, :func:`apply_storage`).
Their loaders are importable from here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from archbench.data.cifar import _cifar_dir_kind, load_cifar
from archbench.data.dataset import Dataset, apply_storage
from archbench.data.digits import DIGITS, load_digits_dataset
from archbench.data.folder import load_folder
from archbench.data.loader import load_dataset
from archbench.data.npz import load_npz
from archbench.data.registry import DatasetSpec, get_dataset_spec, list_datasets
from archbench.data.storage import Threshold, resolve_threshold
from archbench.errors import UsageError, check_regular, path_exists

__all__ = ["DIGITS", "load_cifar", "load_data", "load_digits_dataset", "load_folder", "load_npz"]


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
    if not path_exists(path, "dataset"):
        raise UsageError(
            f"unknown dataset {name!r}: not a known name ({', '.join(list_datasets() + [DIGITS])}) and no such "
            "file or directory. Give a registry name, 'digits', or the path of a .npz file, a CIFAR-10/100 "
            "batch directory or .tar.gz, or an image folder with train/<class>/ and test/<class>/."
        )
    _no_data_dir(name, data_dir)
    if not path.is_dir():
        check_regular(path, "dataset")  # a FIFO or device would block or never end
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


def _registry(spec: DatasetSpec, data_dir: str | os.PathLike | None, verify: bool, threshold: Threshold) -> Dataset:
    return apply_storage(load_dataset(spec, data_dir, verify), threshold)
