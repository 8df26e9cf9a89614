"""Finding, verifying and loading IDX datasets.

Search order for a dataset's directory:

1. ``data_dir`` passed explicitly (``--data-dir``): must hold every file;
2. ``$ARCHBENCH_DATA``: likewise, when set;
3. the system directories of the spec (Debian's ``dataset-fashion-mnist``
   installs ``/usr/share/datasets/fashion-mnist``);
4. the user cache, ``$XDG_CACHE_HOME/archbench/<dataset>`` (default
   ``~/.cache/archbench/<dataset>``), where ``archbench data fetch`` writes.

Each file may be raw IDX or ``.gz``. The SHA-256 of the decompressed payload
is checked against the registry, so Debian's recompressed copies verify.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archbench.data.idx import parse_idx
from archbench.data.registry import ROLES, DataFile, DatasetSpec, get_dataset_spec
from archbench.errors import DataError

ENV_VAR = "ARCHBENCH_DATA"


def user_cache_dir(dataset: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archbench" / dataset


def candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str, bool]]:
    """(directory, where it came from, strict) in search order. A *strict*
    directory was named by the user: if it lacks files that is an error, not a
    reason to look elsewhere."""
    out: list[tuple[Path, str, bool]] = []
    if data_dir is not None:
        out.append((Path(data_dir), "--data-dir", True))
    env = os.environ.get(ENV_VAR)
    if env:
        # One folder can hold one MNIST-layout dataset (they share file names):
        # $ARCHBENCH_DATA/<name>/ is that dataset's, where it exists.
        sub = Path(env) / spec.name
        out.append((sub, f"${ENV_VAR}/{spec.name}", True) if sub.is_dir() else (Path(env), f"${ENV_VAR}", True))
    out += [(Path(d), "system package", False) for d in spec.system_dirs]
    out.append((user_cache_dir(spec.name), "user cache", False))
    return out


def find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_help(spec: DatasetSpec) -> str:
    parts = []
    if spec.apt_package:
        parts.append(f"install Debian's package (`sudo apt-get install {spec.apt_package}`)")
    if spec.mirrors:
        parts.append("download it with `archbench data fetch"
                     + ("`" if spec.name == "fashion-mnist" else f" --dataset {spec.name}`"))
    parts.append("or point `--data-dir DIR` (or $ARCHBENCH_DATA) at a directory holding "
                 + ", ".join(f.name + "[.gz]" for f in spec.files))
    return "; ".join(parts) + "."


def locate(spec: DatasetSpec | str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return ``{role: path}`` for the first directory in the search order that
    holds every file of ``spec``."""
    if isinstance(spec, str):
        spec = get_dataset_spec(spec)
    looked = []
    for directory, origin, strict in candidate_dirs(spec, data_dir):
        if strict and not directory.is_dir():
            raise DataError(
                f"{origin} {str(directory)!r} is not a directory (or is unreadable). "
                f"Expected a directory holding the {spec.name} IDX files; {_missing_help(spec)}"
            )
        found = {f.role: find_file(directory, f.name) for f in spec.files}
        missing = [f.name for f in spec.files if found[f.role] is None]
        if not missing:
            return {role: path for role, path in found.items() if path is not None}
        if strict:
            raise DataError(
                f"{origin} {str(directory)!r} lacks {', '.join(m + '[.gz]' for m in missing)} "
                f"of dataset {spec.name}. {_missing_help(spec)}"
            )
        looked.append(f"{directory} ({origin})")
    raise DataError(
        f"dataset {spec.name} not found; looked in: {'; '.join(looked)}. To get it, {_missing_help(spec)}"
    )


def read_raw(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}. Check its permissions.") from exc


def decompress(raw: bytes, path: Path) -> bytes:
    """``raw`` itself, or its gunzipped bytes when it is gzip."""
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: not a valid gzip file ({exc}); it is corrupt or truncated. "
                "Delete it and fetch it again (`archbench data fetch`)."
            ) from exc
    return raw


def check_size(payload: bytes, expected_nbytes: int | None, source: str) -> None:
    if expected_nbytes is not None and len(payload) != expected_nbytes:
        raise DataError(
            f"{source}: decompressed size {len(payload)} bytes, expected {expected_nbytes}. "
            "The file is truncated or a different file; delete it and fetch it again."
        )


PAYLOAD_SHA256 = "payload SHA-256"
UPSTREAM_GZ_MD5 = "upstream .gz MD5"


def verify_file(raw: bytes, payload: bytes, f: DataFile, source: str) -> str:
    """Check one file against the registry; return how it was verified.

    The payload's SHA-256 (when the registry knows it) verifies any copy, raw
    or recompressed. Otherwise only the upstream mirrors' MD5 of the ``.gz``
    bytes is known, which verifies an unmodified download and nothing else."""
    check_size(payload, f.nbytes, source)
    if f.sha256:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != f.sha256:
            raise DataError(
                f"{source}: SHA-256 of the decompressed payload is {digest}, expected {f.sha256}. "
                "The file is corrupt or not the published one; delete it and fetch it again "
                "(`archbench data fetch`), or pass --no-verify if you deliberately use other data."
            )
        return PAYLOAD_SHA256
    if f.gz_md5:
        if raw is payload or raw[:2] != b"\x1f\x8b":
            raise DataError(
                f"{source}: cannot verify a decompressed copy: the registry knows only the upstream "
                f".gz file's MD5 ({f.gz_md5}). Keep the downloaded {f.name}.gz (`archbench data fetch`), "
                "or pass --no-verify to use this copy unchecked."
            )
        digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if digest != f.gz_md5:
            raise DataError(
                f"{source}: MD5 of the .gz file is {digest}, expected the upstream {f.gz_md5}. The file is "
                "corrupt, recompressed or not the published one (another dataset with the same file names?); "
                "delete it and fetch it again "
                "(`archbench data fetch`), or pass --no-verify to use it unchecked."
            )
        return UPSTREAM_GZ_MD5
    raise DataError(f"{source}: the registry has no checksum for {f.name}; pass --no-verify to use it unchecked.")


@dataclass
class Dataset:
    """Images as uint8 ``(N, H, W)`` tensors and labels as int64 ``(N,)``."""

    spec: DatasetSpec
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    files: dict[str, str]
    verified: bool
    verification: str | None = None  # how: PAYLOAD_SHA256 / UPSTREAM_GZ_MD5 (mixed: joined with " + ")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def describe(self) -> dict:
        return {
            "name": self.spec.name,
            "files": self.files,
            "verified_sha256": self.verified and self.verification == PAYLOAD_SHA256,
            "verified": self.verified,
            "verification": self.verification if self.verified else "not verified (--no-verify)",
            "train_samples": int(self.train_labels.numel()),
            "test_samples": int(self.test_labels.numel()),
            "image_shape": list(self.spec.image_shape),
            "classes": list(self.spec.classes),
        }

    def subset(self, train_limit: int | None = None, test_limit: int | None = None) -> Dataset:
        """The first ``train_limit`` / ``test_limit`` samples (deterministic)."""
        return Dataset(
            self.spec,
            self.train_images[:train_limit], self.train_labels[:train_limit],
            self.test_images[:test_limit], self.test_labels[:test_limit],
            self.files, self.verified, self.verification,
        )


def _check_images(arr: np.ndarray, spec: DatasetSpec, source: str) -> None:
    _, h, w = spec.image_shape
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (h, w):
        raise DataError(
            f"{source}: images must be unsigned bytes of shape (N, {h}, {w}); "
            f"found {arr.dtype} {arr.shape}."
        )


def _check_labels(arr: np.ndarray, spec: DatasetSpec, source: str) -> None:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be a 1-D integer IDX array; found {arr.dtype} {arr.shape}.")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= spec.num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{source}: label {bad} out of range; expected 0..{spec.num_classes - 1} "
                f"({spec.num_classes} classes of {spec.name})."
            )


def load_arrays(paths: dict[str, Path], spec: DatasetSpec,
                verify: bool = True) -> tuple[dict[str, np.ndarray], set[str]]:
    """Read, verify and parse the four files; return the arrays and the
    verification methods used (empty without ``verify``)."""
    arrays: dict[str, np.ndarray] = {}
    methods: set[str] = set()
    for role in ROLES:
        path = paths[role]
        raw = read_raw(path)
        payload = decompress(raw, path)
        if verify:
            methods.add(verify_file(raw, payload, spec.file(role), str(path)))
        arr = parse_idx(payload, str(path))
        (_check_images if role.endswith("images") else _check_labels)(arr, spec, str(path))
        arrays[role] = arr
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{split} split: {n_img} images ({paths[split + '_images']}) but {n_lab} labels "
                f"({paths[split + '_labels']}); the counts must agree."
            )
    return arrays, methods


def load_dataset(
    name: str | DatasetSpec = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> Dataset:
    spec = get_dataset_spec(name) if isinstance(name, str) else name
    paths = locate(spec, data_dir)
    arrays, methods = load_arrays(paths, spec, verify=verify)
    return Dataset(
        spec,
        torch.from_numpy(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        torch.from_numpy(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        {role: str(p) for role, p in paths.items()},
        verify,
        " + ".join(sorted(methods)) or None,
    )
