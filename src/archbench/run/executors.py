"""Executors: where (model, seed) units run. They only schedule: every one
has the shape of :class:`Executor` (``run(pending, on_result)``) and runs
each unit with :func:`archbench.run.unit.train_unit`.

- :class:`SerialExecutor`: in this process, one unit after another.
- :class:`~archbench.run.pool.PoolExecutor` (its own module): ``jobs``
  worker processes, units side by side.
- :class:`RayExecutor`: each unit one Ray task with its resource request, on
  an existing cluster (``--address`` or ``$RAY_ADDRESS``) or on a local Ray
  instance started for the run. The dataset is put into Ray's object store
  once. Finished units stream back to the driver, which records each with
  the same atomic writes as the local executors. A task whose worker dies is
  retried (``max_retries``, resuming from the unit's last epoch checkpoint),
  then recorded as failed; the other units go on. The run directory must be
  reachable from the workers (it is, on one machine; on a cluster, put it on
  a shared filesystem).

Each unit's intra-op thread count is decided once, at its start, by
:mod:`archbench.run.threads` (``"auto"``: fixed by the unit's model, recipe
and the machine's usable cores, never by the load; or a fixed count),
recorded in the unit and never switched while it trains: the thread count
changes PyTorch's CPU arithmetic.
:func:`archbench.run.study.choose_executor` picks one (``--jobs auto`` measures).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Protocol

import torch

from archbench.config import ExecutionConfig, StudyConfig
from archbench.env import usable_cpus
from archbench.errors import Interrupted, UsageError
from archbench.records import Unit
from archbench.resolve import register_specs
from archbench.run import OnResult
from archbench.run.rundir import RunDir
from archbench.run.unit import UnitContext, failed_unit, train_unit

Pending = list[tuple[str, int]]

__all__ = ["Executor", "RayExecutor", "SerialExecutor", "require_ray"]


class Executor(Protocol):
    """Runs units and hands each finished one (trained or failed) to
    ``on_result(model, seed, unit)`` as soon as it is done. Ctrl-C raises
    :class:`~archbench.errors.Interrupted` saying which units were running."""

    def run(self, pending: Pending, on_result: OnResult) -> None: ...


class SerialExecutor:
    """In this process, one unit after another."""

    def __init__(self, ctx: UnitContext, threads: int | str):
        self.ctx, self.threads = ctx, threads

    def run(self, pending: Pending, on_result: OnResult) -> None:
        ctx, usable = self.ctx, usable_cpus()
        if self.threads != "auto" and int(self.threads) > usable:
            ctx.log(f"warning: --threads {self.threads} exceeds the {usable} usable core(s) of this process: "
                    "threads will wait for each other (each op waits for its slowest thread); --threads auto "
                    "avoids it")
        current: tuple[str, int] | None = None
        before = torch.get_num_threads()
        try:
            for ref, seed in pending:
                current = (ref, seed)
                unit = train_unit(ref, seed, ctx.cfg, ctx.data, ctx.run_dir.path, ctx.device, self.threads,
                                  ctx.progress, ctx.log)
                current = None
                on_result(ref, seed, unit)
        except KeyboardInterrupt:
            where = (f"during {current[0]} seed {current[1]} (its last finished epoch is checkpointed)"
                     if current is not None else "")
            raise Interrupted(where) from None
        finally:
            torch.set_num_threads(before)


# --------------------------------------------------------------------------- Ray

def _ray_unit(ref: str, seed: int, cfg_dict: dict, data: Any, run_dir: str, threads: int,
              sys_path: list[str], budget: tuple[dict[str, int], dict[str, tuple[int, ...]]] | None = None) -> Unit:
    """One unit inside a Ray worker (``data``: the Dataset, whole)."""
    for p in reversed(sys_path):  # the driver's import path: user models import the same
        if p not in sys.path:
            sys.path.insert(0, p)
    workers = Path(run_dir) / ".workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"{RunDir.stem(ref, seed)}.pid").write_text(str(os.getpid()))
    steps, points = budget or ({}, {})
    cfg = dataclasses.replace(StudyConfig.from_dict(cfg_dict), budget_steps=steps, budget_points=points)
    register_specs(cfg)  # the worker's registry has not seen them
    return train_unit(ref, seed, cfg, data, Path(run_dir), torch.device("cpu"), max(1, threads), None,
                      lambda s: None)


def require_ray() -> Any:
    """The ray module, or a UsageError with the install hint."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install 'archbench[ray]' "
                         "(or use --executor local).") from None
    return ray


class RayExecutor:
    """Each unit one Ray task (see the module docstring)."""

    def __init__(self, ctx: UnitContext, execution: ExecutionConfig):
        self.ctx, self.x = ctx, execution

    def _init(self, ray: Any) -> bool:
        """Connect to (or start) Ray; True when this executor started it."""
        if ray.is_initialized():
            return False
        address = self.x.address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            os.environ.pop("RAY_ADDRESS", None)  # an empty value would be read as an address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Check --address "
                             "(or $RAY_ADDRESS), or leave it out to start a local Ray instance.") from exc
        return True

    def run(self, pending: Pending, on_result: OnResult) -> None:
        ray, ctx, x = require_ray(), self.ctx, self.x
        started = self._init(ray)
        try:
            data_ref = ray.put(ctx.data)  # the Dataset whole: whatever fields it has travel with it
            task = ray.remote(_ray_unit).options(num_cpus=x.cpus_per_unit, num_gpus=x.gpus_per_unit,
                                                 max_retries=x.max_retries)
            cfg_dict, path = ctx.cfg.to_dict(), [os.getcwd()] + [p for p in sys.path if p]
            futures = {task.remote(ref, seed, cfg_dict, data_ref, str(ctx.run_dir.path), x.cpus_per_unit, path,
                                   (dict(ctx.cfg.budget_steps), dict(ctx.cfg.budget_points))):
                       (ref, seed) for ref, seed in pending}
            done = failed = 0
            ctx.log(f"ray: {len(futures)} units submitted ({x.cpus_per_unit} CPU, {x.gpus_per_unit} GPU each)")
            while futures:
                ready, _ = ray.wait(list(futures), num_returns=1)
                ref, seed = futures.pop(ready[0])
                try:
                    unit = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - a lost unit is recorded, the rest go on
                    unit = failed_unit(seed, exc, why=f"the unit's Ray task failed after {x.max_retries} retries")
                done += unit.get("status") == "ok"
                failed += unit.get("status") != "ok"
                on_result(ref, seed, unit)
                ctx.log(f"ray: units done {done}, running {len(futures)}, failed {failed} "
                        f"(last: {ref} seed {seed}, {unit.get('status')})")
        finally:
            if started:
                ray.shutdown()
