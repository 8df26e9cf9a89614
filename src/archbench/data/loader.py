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
Decompression is bounded by the size the payload must have (the registry's
size when verifying, else the size the IDX header declares): a ``.gz`` that
inflates to more (a decompression bomb) is refused after that many bytes.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from archbench.data.dataset import PAYLOAD_SHA256, UPSTREAM_GZ_MD5, Dataset
from archbench.data.idx import IDX_DTYPES, MAX_DIMS, parse_idx
from archbench.data.registry import ROLES, DataFile, DatasetSpec, get_dataset_spec
from archbench.data.storage import cache_home, read_raw
from archbench.env import physical_memory
from archbench.errors import DataError

ENV_VAR = "ARCHBENCH_DATA"


def user_cache_dir(dataset: str) -> Path:
    return cache_home() / dataset


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


def is_gzip(raw: bytes, path: Path | str) -> bool:
    return str(path).endswith(".gz") or raw[:2] == b"\x1f\x8b"


def _not_gzip(source: str, why: object) -> DataError:
    return DataError(f"{source}: not a valid gzip file ({why}); it is corrupt or truncated. "
                     "Delete it and fetch it again (`archbench data fetch`).")


def gunzip(raw: bytes, limit: int | None, source: str, why: str = "the most this file can hold") -> bytes:
    """The decompressed bytes of a gzip file (every member, as
    :func:`gzip.decompress`), never more than ``limit`` bytes of output: a
    file that would inflate further is refused as soon as it has (``why``
    says where the limit comes from)."""
    out: list[bytes] = []
    total = 0
    data = raw
    while True:
        d = zlib.decompressobj(wbits=31)  # gzip header and trailer, CRC-32 and size checked
        try:
            chunk = d.decompress(data, 0 if limit is None else limit + 1 - total)
        except zlib.error as exc:
            raise _not_gzip(source, exc) from exc
        total += len(chunk)
        if limit is not None and total > limit:
            raise DataError(
                f"{source}: decompresses to more than {limit:,} bytes, {why}; it is not the expected file (or "
                "it is a decompression bomb). Delete it and fetch it again (`archbench data fetch`)."
            )
        if not d.eof:
            raise _not_gzip(source, "compressed data ends before the end-of-stream marker")
        out.append(chunk)
        data = d.unused_data.lstrip(b"\0")  # gzip.decompress also ignores trailing zero padding
        if not data:
            return b"".join(out)
        if data[:2] != b"\x1f\x8b":
            raise _not_gzip(source, "trailing bytes after the last gzip member")


def declared_size(raw: bytes, source: str) -> int | None:
    """The file size an IDX header inside ``raw`` (a gzip file) declares, or
    None when the first bytes are not an IDX header (the parser then says why)."""
    try:
        head = zlib.decompressobj(wbits=31).decompress(raw, 4 + 4 * MAX_DIMS)
    except zlib.error as exc:
        raise _not_gzip(source, exc) from exc
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES or not 1 <= head[3] <= MAX_DIMS:
        return None
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return None
    count = 1
    for i in range(ndim):
        count *= int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big")
    return 4 + 4 * ndim + count * np.dtype(IDX_DTYPES[head[2]][0]).itemsize


def decompress(raw: bytes, path: Path, limit: tuple[int, str] | None = None) -> bytes:
    """``raw`` itself, or its gunzipped bytes when it is gzip (at most
    ``limit[0]`` bytes; ``limit[1]`` says why, see :func:`payload_limit`)."""
    if is_gzip(raw, path):
        return gunzip(raw, None, str(path)) if limit is None else gunzip(raw, limit[0], str(path), limit[1])
    return raw


def payload_limit(raw: bytes, path: Path, f: DataFile, verify: bool) -> tuple[int, str]:
    """The most bytes ``path``'s payload may decompress to, and why: the
    registry's size when verifying (the payload must be exactly that), else
    what its IDX header declares (a header declaring more than this machine's
    memory is refused before anything is inflated)."""
    published = (f.nbytes, f"the size of the published {f.name}")
    if verify or not is_gzip(raw, path):
        return published
    declared = declared_size(raw, str(path))
    if declared is None:
        return published
    memory = physical_memory()
    if memory is not None and declared > memory:
        raise DataError(f"{path}: its IDX header declares {declared:,} bytes of data, more than this machine's "
                        f"memory ({memory:,} bytes); the file is damaged or not an IDX file.")
    return declared, "the size its IDX header declares"


def check_size(payload: bytes, expected_nbytes: int | None, source: str) -> None:
    if expected_nbytes is not None and len(payload) != expected_nbytes:
        raise DataError(
            f"{source}: decompressed size {len(payload)} bytes, expected {expected_nbytes}. "
            "The file is truncated or a different file; delete it and fetch it again."
        )


def verify_file(raw: bytes, payload: bytes, f: DataFile, source: str, sha256: str | None = None) -> str:
    """Check one file against the registry; return how it was verified.

    The payload's SHA-256 (when the registry knows it) verifies any copy, raw
    or recompressed. Otherwise only the upstream mirrors' MD5 of the ``.gz``
    bytes is known, which verifies an unmodified download and nothing else.
    ``sha256``: the payload's digest where the caller has it already."""
    check_size(payload, f.nbytes, source)
    if f.sha256:
        digest = sha256 or hashlib.sha256(payload).hexdigest()
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


def load_arrays(paths: dict[str, Path], spec: DatasetSpec, verify: bool = True,
                digests: dict[str, str] | None = None) -> tuple[dict[str, np.ndarray], set[str]]:
    """Read, verify and parse the four files; return the arrays and the
    verification methods used (empty without ``verify``). ``digests``, when
    given, receives each payload's SHA-256 by role."""
    arrays: dict[str, np.ndarray] = {}
    methods: set[str] = set()
    for role in ROLES:
        path = paths[role]
        raw = read_raw(path)
        payload = decompress(raw, path, payload_limit(raw, path, spec.file(role), verify))
        digest = hashlib.sha256(payload).hexdigest()
        if digests is not None:
            digests[role] = digest
        if verify:
            methods.add(verify_file(raw, payload, spec.file(role), str(path), sha256=digest))
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
    """A registry dataset's IDX files, found (:func:`locate`), verified and
    parsed, in memory. Images ``(N, 1, H, W)``: a view of the parsed
    ``(N, H, W)`` arrays with a channel axis added. :func:`archbench.data.load_data`
    is the general entry point (every source, and the memory threshold)."""
    spec = get_dataset_spec(name) if isinstance(name, str) else name
    paths = locate(spec, data_dir)
    digests: dict[str, str] = {}
    arrays, methods = load_arrays(paths, spec, verify=verify, digests=digests)
    return Dataset(
        spec,
        torch.from_numpy(arrays["train_images"]).unsqueeze(1),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        torch.from_numpy(arrays["test_images"]).unsqueeze(1),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        {role: str(p) for role, p in paths.items()},
        verify,
        " + ".join(sorted(methods)) or None,
        digests,
        storage_info={"threshold_bytes": None,
                      "threshold_from": "not applied: load_dataset keeps the data in memory (load_data applies it)"},
    )
