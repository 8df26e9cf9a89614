"""Executors: where (model, seed) units run. They only schedule; each unit
runs :func:`archbench.unit.run_unit`.

- ``local``: one unit after another in this process.
- ``ray``: each unit becomes one Ray task with its resource request, on an
  existing cluster (``--address`` or ``$RAY_ADDRESS``) or on a local Ray
  instance started for the run. The dataset is put into Ray's object store
  once; tasks read it from there instead of re-reading and re-verifying the
  files. Finished units stream back to the driver, which writes each into the
  run directory with the same atomic writes as the local executor. A task
  whose worker dies is retried (``max_retries``, resuming from the unit's last
  epoch checkpoint), then recorded as failed; the other units go on.

  The run directory must be reachable from the workers (it is, on one
  machine; on a cluster, put it on a shared filesystem): workers write
  checkpoints and model files there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archbench.config import StudyConfig
from archbench.errors import Interrupted, UsageError
from archbench.unit import run_unit, safe_name

OnResult = Callable[[str, int, Any], None]
Log = Callable[[str], None]


def run_units_locally(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, run_dir: Path,
                      on_result: OnResult, log: Log, progress: Any, device: torch.device,
                      threads: int | None = None) -> None:
    """Each unit in turn, in this process (``threads``: torch intra-op
    threads while the units run; the caller's setting is restored after)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    ref = seed = None
    try:
        for ref, seed in pending:
            log(f"[{ref}] seed {seed}: training {cfg.train_config_for(ref).epochs} epochs on "
                f"{len(data.train_labels):,} images ({device})")
            unit = run_unit(ref, seed, cfg, data, run_dir, progress, log)
            done, ref, seed = (ref, seed), None, None
            on_result(*done, unit)
    except KeyboardInterrupt:
        where = f"during {ref} seed {seed} (its last finished epoch is checkpointed)" if ref is not None else ""
        raise Interrupted(where) from None
    finally:
        torch.set_num_threads(before)


def _ray_unit(ref: str, seed: int, cfg_dict: dict, data: dict, run_dir: str, threads: int,
              sys_path: list[str]) -> Any:
    """One unit inside a Ray worker."""
    for p in reversed(sys_path):  # the driver's import path: user models import the same
        if p not in sys.path:
            sys.path.insert(0, p)
    torch.set_num_threads(max(1, threads))
    from archbench.data.loader import Dataset

    workers = Path(run_dir) / ".workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"{safe_name(ref)}-seed{seed}.pid").write_text(str(os.getpid()))
    cfg = StudyConfig.from_dict(cfg_dict)
    ds = Dataset(data["spec"], torch.from_numpy(data["train_images"].copy()),
                 torch.from_numpy(data["train_labels"].copy()), torch.from_numpy(data["test_images"].copy()),
                 torch.from_numpy(data["test_labels"].copy()), data["files"], data["verified"])
    return run_unit(ref, seed, cfg, ds, Path(run_dir), None, lambda s: None)


def require_ray() -> Any:
    """The ray module, or a UsageError with the install hint."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install 'archbench[ray]' "
                         "(or use --executor local).") from None
    return ray


def run_units_on_ray(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, run_dir: Path,
                     on_result: OnResult, log: Log, address: str | None = None, cpus_per_unit: int = 1,
                     gpus_per_unit: float = 0, max_retries: int = 2) -> None:
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            os.environ.pop("RAY_ADDRESS", None)  # an empty value would be read as an address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Check --address "
                             "(or $RAY_ADDRESS), or leave it out to start a local Ray instance.") from exc
        started = True
    try:
        data_ref = ray.put({
            "spec": data.spec, "files": data.files, "verified": data.verified,
            "train_images": data.train_images.numpy(), "train_labels": data.train_labels.numpy(),
            "test_images": data.test_images.numpy(), "test_labels": data.test_labels.numpy(),
        })
        task = ray.remote(_ray_unit).options(num_cpus=cpus_per_unit, num_gpus=gpus_per_unit,
                                             max_retries=max_retries)
        cfg_dict = cfg.to_dict()
        path = [os.getcwd()] + [p for p in sys.path if p]
        futures = {task.remote(ref, seed, cfg_dict, data_ref, str(run_dir), cpus_per_unit, path): (ref, seed)
                   for ref, seed in pending}
        done = failed = 0
        log(f"ray: {len(futures)} units submitted ({cpus_per_unit} CPU, {gpus_per_unit} GPU each)")
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1)
            ref, seed = futures.pop(ready[0])
            try:
                unit = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a lost unit is recorded, the rest go on
                unit = {"seed": seed, "status": "failed", "error_type": type(exc).__name__,
                        "error": f"{type(exc).__name__}: the unit's Ray task failed after {max_retries} "
                                 f"retries: {str(exc).splitlines()[0] if str(exc) else ''}"}
            done += unit.get("status") == "ok"
            failed += unit.get("status") != "ok"
            on_result(ref, seed, unit)
            log(f"ray: units done {done}, running {len(futures)}, failed {failed} "
                f"(last: {ref} seed {seed}, {unit.get('status')})")
    finally:
        if started:
            ray.shutdown()
