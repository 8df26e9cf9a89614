"""The run directory: its one owner. Layout, file stems, the lock, leftovers
of interrupted writes, and removing what a failed new run wrote.

::

    <run_dir>/results.json          the record (rewritten atomically after each unit)
    <run_dir>/.lock                 flock'd by the process that owns the run, holding its pid
    <run_dir>/checkpoints/<stem>-seed<k>.pt            a unit's last epoch (removed when it finishes)
    <run_dir>/checkpoints/<stem>-seed<k>.threads.json  the thread count it started with
    <run_dir>/models/<stem>-seed<k>.{safetensors,pt,onnx}
    <run_dir>/report.md, report.html, plots/, tables/
    <run_dir>/trials/trial-<t>/checkpoints/...         a tuning trial's units (--tune): checkpoints only

A model's file stem is its name where that is a safe, short file name, and
otherwise its safe characters plus a hash of the whole name (so ``net 1`` and
``net_1`` never share files, and a 300-character name still fits).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from archbench.errors import Interrupted, UsageError
from archbench.records import OutputError, RecordError, RunRecord, write_error

MAX_STEM = 100


def safe_name(model: str) -> str:
    """The file-name stem of ``model``'s files, distinct for distinct names:
    the name itself when it is made of ``A-Za-z0-9_.-`` only, does not start
    with a dot and has at most 100 characters; else its safe characters
    (shortened to 80) and 12 hex digits of the SHA-256 of the whole name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    if safe == model and len(model) <= MAX_STEM and not model.startswith("."):
        return model
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe.lstrip('.')[:80]}-{digest}"


@dataclass(frozen=True)
class RunDir:
    """Where a run's files go (see the module docstring)."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / "results.json"

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @staticmethod
    def stem(ref: str, seed: int) -> str:
        return f"{safe_name(ref)}-seed{seed}"

    def checkpoint(self, ref: str, seed: int) -> Path:
        """The unit's epoch checkpoint."""
        return self.checkpoints / f"{self.stem(ref, seed)}.pt"

    def thread_decision(self, ref: str, seed: int) -> Path:
        """The unit's thread decision, kept beside its checkpoint."""
        return self.checkpoints / f"{self.stem(ref, seed)}.threads.json"

    def trial(self, t: int) -> RunDir:
        """Where tuning trial ``t``'s units keep their checkpoints (their stems are those of the seeds')."""
        return RunDir(self.path / "trials" / f"trial-{t}")

    def check_layout(self) -> None:
        """A run directory to resume holds its parts as directories (a file
        named ``checkpoints`` or ``models`` is a damaged run, named here
        before anything is trained or written)."""
        for sub in ("checkpoints", "models", "plots", "tables", "trials"):
            d = self.path / sub
            if d.exists() and not d.is_dir():
                raise RecordError(f"{d}: expected the run's {sub} directory, found a file. The run directory is "
                                  f"damaged: move {d} away, then resume again.")

    def remove_leftovers(self) -> int:
        """Remove temporary files of writes that a kill -9 cut short
        (results.json, epoch checkpoints, model files); the lock says no one
        else writes here. Returns how many."""
        removed = 0
        for sub in ("", "checkpoints", "models", "plots", "tables"):
            d = self.path / sub
            if not d.is_dir():
                continue
            for tmp in d.glob("*.tmp"):
                if tmp.is_file():
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                        removed += 1
        return removed

    def drop_empty_checkpoints(self) -> None:
        """Every unit is done: the epoch checkpoints' folder is empty (and
        so, once every tuning trial is done, are ``trials/`` and its folders)."""
        with contextlib.suppress(OSError):
            self.checkpoints.rmdir()
        trials = self.path / "trials"
        if trials.is_dir():
            for d in trials.glob("trial-*"):
                with contextlib.suppress(OSError):
                    (d / "checkpoints").rmdir()
                    d.rmdir()
            with contextlib.suppress(OSError):
                trials.rmdir()


class RunDirLock:
    """An exclusive lock on a run directory: ``<run_dir>/.lock``, locked with
    ``flock`` and holding the owner's pid. The kernel drops the lock when its
    process dies (even by kill -9), so a lock file left behind never blocks
    anyone; the owner removes the file when it is done."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self.fd: int | None = None

    def __enter__(self) -> RunDirLock:
        for _ in range(50):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise write_error(exc, f"the lock file {self.path}", "Choose another --out.") from exc
                raise UsageError(
                    f"run directory {self.run_dir} is in use by another archbench process ({self._owner()}; "
                    f"lock file {self.path}). Wait for it to finish (or stop it), or choose another --name."
                ) from None
            # The owner before us removes the file when done: the file we locked must still be the one there.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise UsageError(f"could not lock {self.path}: other processes keep replacing it.")

    def _open(self) -> int:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(exc, f"run directory {self.run_dir}",
                              "The --out directory must be a writable directory (or a path where one can be "
                              "created); choose another --out.") from exc

    def _owner(self) -> str:
        for _ in range(20):  # the owner writes its pid right after locking
            try:
                pid = self.path.read_text().strip()
            except OSError:
                pid = ""
            if pid.isdigit():
                return f"pid {pid}"
            time.sleep(0.01)
        return "pid unknown"

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


class DiscardIfFailed:
    """On leaving a new run's block with an error before any unit finished,
    remove what the run wrote: a run directory holding a results.json with no
    units would only block the same --name. Kept: an interrupted run, and one
    that a full disk stopped (its error says to resume it once there is room)."""

    def __init__(self, run_dir: Path, created: bool, record: RunRecord):
        self.run_dir, self.created, self.record = run_dir, created, record

    def __enter__(self) -> DiscardIfFailed:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, (KeyboardInterrupt, Interrupted)):
            return
        if issubclass(exc_type, OutputError) and (self.run_dir / "results.json").exists():
            return
        if any(u.get("status") == "ok" for e in self.record["models"].values()
               for u in [*e.get("units", []), *e.get("trials", [])]):
            return
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in ("results.json", "report.md", "report.html"):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink()
