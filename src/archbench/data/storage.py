"""Where a dataset's images live: in memory, or memory-mapped from a cache.

**The rule.** The trainer's fast path converts every image to float32 at
once, which takes ``(N_train + N_val + N_test) * C * H * W * 4`` bytes.
When that fits the *threshold* the images are ordinary in-memory uint8
tensors (``storage = "memory"``). Otherwise they are uint8 tensors backed by
memory-mapped ``.npy`` files (``storage = "memmap"``) and the trainer
converts one batch at a time.

**The threshold**, first found of:

1. the ``memory_limit`` argument of :func:`archbench.data.load_data` (bytes);
2. ``$ARCHBENCH_MEMORY_LIMIT`` (bytes, an integer);
3. :data:`MEMORY_FRACTION` (half) of ``MemAvailable`` in ``/proc/meminfo``;
4. half of the physical memory (where ``/proc/meminfo`` is missing);
5. none (nothing known): memory.

**The cache.** Memory-mapped arrays live in
``$XDG_CACHE_HOME/archbench/arrays/<identity>/`` (default
``~/.cache/archbench/arrays/``): one entry per distinct data, ``<identity>``
being the dataset's ``identity_sha256``, holding one ``.npy`` per image
array plus the labels and a ``meta.json``. An entry is written into a
temporary directory beside it and renamed into place when complete, so a
directory under its final name is always whole, and concurrent writers need
no lock: two processes writing the same entry each write their own copy,
the first rename wins and the other discards its copy and maps the
winner's. ``arrays/sources/<key>.json`` remembers which identity a source
file (an ``.npz`` by its SHA-256; a folder by the SHA-256 of every image
file's name and bytes) was extracted to, so it is extracted once.

**Its size.** An entry is a full uint8 copy of the images it serves: one
per distinct source content above the threshold, and one more per distinct
operation on it (each ``--val-split``/seed writes the divided training split
as an entry of its own, under the derived identity). Nothing is evicted:
the cache grows with every distinct split of a large dataset. To clear it,
delete the directory, ``rm -r "${XDG_CACHE_HOME:-$HOME/.cache}/archbench/arrays"``,
while no archbench process is running (a deleted entry is written again
when next needed).

Also :func:`read_raw`: a source file's bytes, or a DataError naming it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from archbench.env import physical_memory
from archbench.errors import DataError, UsageError

ENV_MEMORY_LIMIT = "ARCHBENCH_MEMORY_LIMIT"
MAX_MEMORY_LIMIT = 1 << 60  # 1 EiB: a larger threshold is a typo, not a machine
MEMORY_FRACTION = 0.5
CACHE_VERSION = 1
RULE = ("memmap when the trainer's float32 copy of every image (N_train + N_val + N_test) * C * H * W * 4 bytes "
        "exceeds the threshold, else in memory")


@dataclass(frozen=True)
class Threshold:
    """The most bytes the float32 copy may take in memory (None: no limit
    known) and where that number came from."""

    bytes: int | None
    source: str


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def resolve_threshold(memory_limit: int | None = None) -> Threshold:
    """The threshold in force (see the module doc for the order)."""
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or \
                not 0 <= memory_limit <= MAX_MEMORY_LIMIT:
            raise UsageError(f"memory_limit {memory_limit!r} is not a number of bytes; give an integer from 0 to "
                             f"{MAX_MEMORY_LIMIT:,} (e.g. 8_000_000_000), or None for the default.")
        return Threshold(memory_limit, "memory_limit argument")
    env = os.environ.get(ENV_MEMORY_LIMIT)
    if env is not None and env.strip():
        digits = env.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 30 else -1
        if not 0 <= value <= MAX_MEMORY_LIMIT:
            raise UsageError(f"${ENV_MEMORY_LIMIT}={env!r} is not a number of bytes; set it to an integer from 0 "
                             f"to {MAX_MEMORY_LIMIT:,} (e.g. {ENV_MEMORY_LIMIT}=8000000000) or unset it.")
        return Threshold(value, f"${ENV_MEMORY_LIMIT}")
    available = _meminfo_available()
    if available is not None:
        return Threshold(int(available * MEMORY_FRACTION),
                         f"{MEMORY_FRACTION:.0%} of MemAvailable ({available:,} bytes) in /proc/meminfo")
    physical = physical_memory()
    if physical is not None:
        return Threshold(int(physical * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of physical memory "
                                                          f"({physical:,} bytes)")
    return Threshold(None, "no memory size known on this system: no limit")


def float32_bytes(n_images: int, image_shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of the trainer's float32 copy of ``n_images`` images."""
    return int(n_images) * math.prod(int(d) for d in image_shape) * 4


def choose_storage(needed: int, threshold: Threshold) -> str:
    return "memory" if threshold.bytes is None or needed <= threshold.bytes else "memmap"


def storage_info(needed: int, threshold: Threshold, storage: str, path: str | Path | None = None) -> dict:
    """The card's record of the decision."""
    return {"rule": RULE, "float32_bytes": int(needed), "threshold_bytes": threshold.bytes,
            "threshold_from": threshold.source, "path": None if path is None else str(path)}


def cache_home() -> Path:
    """archbench's cache folder: ``$XDG_CACHE_HOME/archbench`` (default
    ``~/.cache/archbench``), holding downloads and the array cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archbench"


def arrays_root() -> Path:
    return cache_home() / "arrays"


def open_array(path: str | Path) -> np.ndarray:
    """A cached ``.npy`` memory-mapped copy-on-write (writable for torch,
    never written back)."""
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot map the cached array {path}: {exc}. Delete {Path(path).parent} and load the "
                        "dataset again (it is rebuilt).") from exc


MAX_SOURCE_BYTES = 1 << 34  # 16 GiB: no source file of a dataset archbench reads is larger


def read_raw(path: Path) -> bytes:
    """A source file's bytes, read only if it is a regular file (a FIFO or
    device would block or never end) of at most :data:`MAX_SOURCE_BYTES`; an
    unreadable file is a DataError naming it."""
    from archbench.errors import read_regular

    return read_regular(path, "data file", DataError, MAX_SOURCE_BYTES)


def read_entry(identity: str) -> tuple[Path, dict] | None:
    """``(directory, meta)`` of a complete cache entry, or None."""
    d = arrays_root() / identity
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION:
        return None
    for name, shape in (meta.get("shapes") or {}).items():
        try:
            arr = np.load(d / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if list(arr.shape) != list(shape):
            return None
    return d, meta


def lookup_source(key: str) -> str | None:
    """The identity a source (keyed by its content digest) was extracted to."""
    try:
        doc = json.loads((arrays_root() / "sources" / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    identity = doc.get("identity") if isinstance(doc, dict) else None
    return identity if isinstance(identity, str) and read_entry(identity) else None


def remember_source(key: str, identity: str) -> None:
    d = arrays_root() / "sources"
    with contextlib.suppress(OSError):
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"identity": identity}, f)
        os.replace(tmp, d / f"{key}.json")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Temporary entries of writers that are gone (killed mid-write; also
    ``.trash-*`` directories left by earlier versions, which pruned)."""
    for d in [*root.glob(".tmp-*"), *root.glob(".trash-*")]:
        pid = d.name.split("-")[1] if d.name.count("-") >= 2 else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


class CacheEntry:
    """A cache entry being written: ``create`` memory-maps each array for
    filling, ``commit`` renames the whole directory into place."""

    def __init__(self, nbytes: int):
        self.root = arrays_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _remove_stale(self.root)
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise DataError(f"cannot use the array cache {self.root}: {exc.strerror or exc}. Set $XDG_CACHE_HOME "
                            "to a writable directory with room for the dataset.") from exc
        if nbytes > free:
            raise DataError(f"the dataset needs {nbytes:,} bytes of memory-mapped arrays in {self.root}, which has "
                            f"{free:,} bytes free. Free space there or set $XDG_CACHE_HOME to a larger disk (or "
                            f"raise the memory threshold, ${ENV_MEMORY_LIMIT}, if it fits in memory).")
        self.dir = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=self.root))
        self.shapes: dict[str, list[int]] = {}

    def create(self, name: str, shape: tuple[int, ...], dtype: DTypeLike = np.uint8) -> np.memmap:
        self.shapes[name] = [int(d) for d in shape]
        return np.lib.format.open_memmap(self.dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    def save(self, name: str, arr: np.ndarray) -> None:
        self.shapes[name] = [int(d) for d in arr.shape]
        np.save(self.dir / f"{name}.npy", arr, allow_pickle=False)

    def commit(self, identity: str, meta: dict) -> Path:
        """Rename into ``arrays/<identity>``; an entry already there (another
        writer's) wins and this copy is discarded. Returns the final path."""
        meta = {**meta, "version": CACHE_VERSION, "identity_sha256": identity, "shapes": self.shapes}
        final = self.root / identity
        try:
            (self.dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if final.exists() and read_entry(identity) is None:
                shutil.rmtree(final, ignore_errors=True)  # a damaged entry: replace it
            os.rename(self.dir, final)
        except OSError as exc:
            if read_entry(identity) is None:
                self.abort()
                raise DataError(f"cannot write the array cache {final}: {exc.strerror or exc}. Set "
                                "$XDG_CACHE_HOME to a writable directory.") from exc
            self.abort()  # another process finished the same entry first
        return final

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_entry(nbytes: int, fill: Callable[[CacheEntry], tuple[str, dict]]) -> tuple[str, tuple[Path, dict]]:
    """Write a cache entry of ``nbytes``: ``fill`` writes its arrays and
    returns (identity, metadata); the entry is committed under that identity
    (and removed again on any error, Ctrl-C included), then read back.
    Returns the identity and :func:`read_entry`'s (directory, metadata)."""
    entry = CacheEntry(nbytes)
    try:
        identity, meta = fill(entry)
        entry.commit(identity, meta)
    except BaseException:
        entry.abort()
        raise
    found = read_entry(identity)
    if found is None:
        raise DataError(f"the array cache entry {identity} vanished while being written; load the data again.")
    return identity, found
