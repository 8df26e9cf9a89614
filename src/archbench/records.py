"""The run record and its JSON round trip.

A run directory holds ``results.json`` (this record), ``report.md`` and
``models/``. The record is rewritten atomically (temporary file, fsync,
rename) after every finished (model, seed) unit, so it is always valid JSON
and an interrupted run loses at most the unit in progress.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from archbench.errors import UsageError

SCHEMA = "archbench.run/1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write, binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same
    directory, fsync it and rename it over ``path``: readers see the old file
    or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level with dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def new_record(name: str, config: dict, environment: dict, dataset: dict) -> dict:
    return {
        "schema": SCHEMA,
        "name": name,
        "config": config,
        "environment": environment,
        "dataset": dataset,
        "models": {},
    }


def model_entry(record: dict, model: str) -> dict:
    return record["models"].setdefault(model, {"measurements": None, "units": []})


def save_record(record: dict, run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir) / "results.json"
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def load_record(run_dir_or_file: str | os.PathLike) -> dict:
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist: expected a run directory made by `archbench run`.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise UsageError(
            f"{path}: schema {record.get('schema') if isinstance(record, dict) else None!r} is not "
            f"{SCHEMA!r}; this file was not written by this version of archbench."
        )
    return record
