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

import copy
import hashlib
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from archbench.data.arrays import balance, channel_stats, class_counts, identity_sha256
from archbench.data.idx import IDX_DTYPES, MAX_DIMS, parse_idx
from archbench.data.registry import ROLES, DataFile, DatasetSpec, get_dataset_spec
from archbench.data.storage import cache_home, open_array
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


def read_raw(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}. Check its permissions.") from exc


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


PAYLOAD_SHA256 = "payload SHA-256"
UPSTREAM_GZ_MD5 = "upstream .gz MD5"


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
