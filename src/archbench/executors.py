"""Executors: where (model, seed) units run. They only schedule; each unit
runs :func:`archbench.unit.run_unit`.

- ``local``: in this process, one unit after another (``jobs=1``), or in a
  pool of ``jobs`` worker processes, units side by side (``jobs > 1``). Each
  unit's intra-op thread count is decided once, at its start, by
  :mod:`archbench.threads` (``threads="auto"``: the free cores, then a short
  probe of the unit's own step; or a fixed count), recorded in the unit
  (``unit["threads"]``) and never switched while it trains: the thread count
  changes PyTorch's CPU arithmetic. A unit that resumes from an epoch
  checkpoint keeps the count it started with (persisted beside the
  checkpoint as ``<stem>-seed<seed>.threads.json``). With the same thread
  count, a unit trained in the pool gives bit for bit the results it gives
  in this process (tested).
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

The pool's workers are started with ``spawn`` (a fresh interpreter: no
forked OpenMP state). Each receives the configuration and the dataset once,
pickled whole, and the parent's ``sys.path`` (``module:callable`` models
import the same). Models that exist only as Python objects in this process
(given to the API as objects, or registered by code in ``__main__``) cannot
be rebuilt there and are refused with ``jobs > 1``. Progress of every running
unit is forwarded to the parent: a progress bar per worker (``position``), or
one log line per unit per epoch without bars. Ctrl-C (or SIGTERM to the
parent, where the CLI handles it) stops the workers (SIGTERM, once each):
each keeps its last epoch checkpoint, units that finished are recorded, and
:class:`~archbench.errors.Interrupted` is raised as in one process.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import signal
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from archbench.config import StudyConfig
from archbench.env import usable_cpus
from archbench.errors import Interrupted, UsageError
from archbench.jobs import decide_jobs, describe_jobs, local_only_models, order_for_pool, parse_jobs
from archbench.records import Unit, atomic_write_text
from archbench.threads import decide_threads, describe, free_cores, parse_threads
from archbench.unit import run_batched_units, run_unit, safe_name

OnResult = Callable[[str, int, Any], None]
Log = Callable[[str], None]

# --------------------------------------------------------------------------- thread decisions


def checkpoint_paths(run_dir: Path, ref: str, seed: int) -> tuple[Path, Path]:
    """(the unit's epoch checkpoint, its thread decision beside it)."""
    d = Path(run_dir) / "checkpoints"
    stem = f"{safe_name(ref)}-seed{seed}"
    return d / f"{stem}.pt", d / f"{stem}.threads.json"


def _read_decision(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    n = d.get("threads") if isinstance(d, dict) else None
    return d if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def unit_threads(spec: int | str, ref: str, seed: int, cfg: StudyConfig, data: Any, run_dir: Path,
                 device: torch.device, cap: int | None = None) -> dict[str, Any]:
    """The unit's thread decision (see :func:`archbench.threads.decide_threads`).
    A unit resuming from its epoch checkpoint gets the decision it started
    with (``reused``: true, ``requested``: what this run asked for): its
    arithmetic must not change halfway. A new decision is written beside the
    checkpoint (atomically) before the unit trains."""
    ckpt, saved = checkpoint_paths(run_dir, ref, seed)
    note = None
    if ckpt.exists():
        prev = _read_decision(saved)
        if prev is not None:
            return {**prev, "reused": True, "requested": spec}
        note = "resumed from a checkpoint whose thread count was not recorded (an older run?): chosen anew"
    decision = decide_threads(spec, ref, seed, cfg.train_config_for(ref), data, device, cap)
    if note:
        decision["note"] = f"{decision['note']}; {note}" if decision.get("note") else note
    atomic_write_text(saved, json.dumps(decision))
    return decision


def _forget_decision(run_dir: Path, ref: str, seed: int) -> None:
    """Once the unit's checkpoint is gone (finished), its decision goes too."""
    ckpt, saved = checkpoint_paths(run_dir, ref, seed)
    if not ckpt.exists():
        saved.unlink(missing_ok=True)


def _attach(unit: Unit, decision: dict[str, Any]) -> Unit:
    unit["threads"] = decision
    return unit


# --------------------------------------------------------------------------- one process


def plan_batches(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, run_dir: Path,
                 log: Log) -> list[tuple[str, list[int]]]:
    """``pending`` as (model, seeds) groups for ``--batch-seeds``: a model's
    seeds that start from scratch train as one batch where the model can be
    batched (each seed's results those of its own run); a seed resuming from
    its epoch checkpoint, and every seed of a model that cannot be batched
    (said in the log, with the reason), train alone."""
    from archbench.unit import batch_reason

    groups: dict[str, list[int]] = {}
    for ref, seed in pending:
        groups.setdefault(ref, []).append(seed)
    out: list[tuple[str, list[int]]] = []
    for ref, seeds in groups.items():
        fresh = [s for s in seeds if not checkpoint_paths(run_dir, ref, s)[0].exists()]
        out += [(ref, [s]) for s in seeds if s not in fresh]
        if len(fresh) > 1:
            reason = batch_reason(ref, fresh[0], cfg, data)
            if reason is None:
                out.append((ref, fresh))
                continue
            log(f"[{ref}] seeds {', '.join(map(str, fresh))} train one by one, not as one batch: {reason}")
        out += [(ref, [s]) for s in fresh]
    return out


def run_units_locally(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, run_dir: Path,
                      on_result: OnResult, log: Log, progress: Any, device: torch.device,
                      threads: int | str | None = None, jobs: int | str | None = 1, batch_seeds: bool = False,
                      on_jobs_decision: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run ``pending`` units here (``jobs=1``) or in ``jobs`` worker
    processes side by side. ``threads``: ``"auto"`` (also None) or a fixed
    intra-op thread count per unit. ``jobs``: a number, or ``"auto"`` (None:
    ``$ARCHBENCH_JOBS``, else auto): measured by :func:`archbench.jobs.decide_jobs`,
    whose record goes to ``on_jobs_decision``. ``batch_seeds``: a model's
    seeds train as one batched model where it can be (:func:`plan_batches`;
    here only, not with ``jobs`` > 1). The caller's torch thread count is
    restored after."""
    spec = parse_threads(threads)
    jobs_spec = parse_jobs(jobs)
    usable = usable_cpus()
    if batch_seeds and jobs_spec != "auto" and int(jobs_spec) > 1:
        raise UsageError("--batch-seeds trains a model's seeds as one batch in this process; it does not combine "
                         "with --jobs > 1. Give one of them.")
    decision: dict[str, Any] | None = None
    if jobs_spec == "auto":
        decision = decide_jobs(pending, cfg, data, device, spec, batch_seeds)
        if len(pending) > 1:
            log(describe_jobs(decision))
        if on_jobs_decision is not None:
            on_jobs_decision(decision)
        jobs = int(decision["jobs"])
        if jobs > 1:
            pending = order_for_pool(pending, decision, cfg, len(data.train_labels))
    else:
        jobs = int(jobs_spec)
    if jobs > 1 and len(pending) > 1:
        check_parallel_models([ref for ref, _ in pending], jobs)
        _run_pool(pending, cfg, data, run_dir, on_result, log, progress, device, spec, jobs, decision)
        return
    if spec != "auto" and int(spec) > usable:
        log(f"warning: --threads {spec} exceeds the {usable} usable core(s) of this process: threads will wait "
            "for each other (each op waits for its slowest thread); --threads auto avoids it")
    before = torch.get_num_threads()
    ref = seed = None
    batch: list[int] | None = None
    try:
        if batch_seeds:
            plan = plan_batches(pending, cfg, data, run_dir, log)
            pending = [(r, s[0]) for r, s in plan if len(s) == 1]
            for ref, seeds in (g for g in plan if len(g[1]) > 1):
                seed, batch = seeds[0], seeds
                # One thread decision for the batch: it is one training loop (probed on one seed's step).
                decision = unit_threads(spec, ref, seed, cfg, data, run_dir, device)
                torch.set_num_threads(decision["threads"])
                log(f"[{ref}] seeds {', '.join(map(str, seeds))}: training {cfg.train_config_for(ref).epochs} "
                    f"epochs on {len(data.train_labels):,} images ({device}) as one batched model, "
                    f"{describe(decision)}")
                units = run_batched_units(ref, seeds, cfg, data, run_dir, progress, log)
                _forget_decision(run_dir, ref, seed)
                for s, unit in zip(seeds, units):
                    on_result(ref, s, _attach(unit, dict(decision)))
                ref = seed = batch = None
        for ref, seed in pending:
            decision = unit_threads(spec, ref, seed, cfg, data, run_dir, device)
            torch.set_num_threads(decision["threads"])
            log(f"[{ref}] seed {seed}: training {cfg.train_config_for(ref).epochs} epochs on "
                f"{len(data.train_labels):,} images ({device}), {describe(decision)}")
            unit = run_unit(ref, seed, cfg, data, run_dir, progress, log)
            _forget_decision(run_dir, ref, seed)
            done, ref, seed = (ref, seed), None, None
            on_result(*done, _attach(unit, decision))
    except KeyboardInterrupt:
        where = f"during {ref} seed {seed} (its last finished epoch is checkpointed)" if ref is not None else ""
        if batch:
            where = (f"during {ref} seeds {', '.join(map(str, batch))}, trained as one batch (which keeps no epoch "
                     "checkpoints: they train again from the start)")
        raise Interrupted(where) from None
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- a local process pool


def check_parallel_models(refs: list[str], jobs: int, source: str = "jobs") -> None:
    """Units in worker processes rebuild their models there: a model that
    exists only as an object in this process cannot be. Refused with the fix
    (``source``: where the jobs came from, e.g. ``$ARCHBENCH_JOBS``)."""
    local = local_only_models(refs)
    if local:
        env = source.startswith("$")
        raise UsageError(
            f"{source}={jobs}: model(s) {', '.join(map(repr, local))} exist only in this Python process (given as "
            "Python objects, or registered by the running script itself), and with jobs > 1 each unit runs in "
            "a separate process that must build its model anew. Give each as 'module:callable' (a function in "
            "an importable module that returns the model; the workers get this process's sys.path), or run "
            + (f"with {source[1:]} unset or set to auto or 1." if env else "with jobs=1 (or jobs='auto')."))


def _user_modules(refs: list[str]) -> list[str]:
    """Modules (outside archbench) that registered any of ``refs`` by name:
    the workers import them first, so the names are known there too."""
    from archbench.models import registry

    mods = {registry._REGISTRY[r].factory.__module__ for r in refs if r in registry._REGISTRY}
    return sorted(m for m in mods if m != "__main__" and m.split(".")[0] != "archbench")


# The worker's state, set once per worker process by _worker_init.
_W: dict[str, Any] = {}


def _send(kind: str, key: Any, payload: Any) -> None:
    with contextlib.suppress(Exception):  # progress must never fail a unit
        _W["queue"].put((kind, key, payload))


class _RemoteBar:
    """A tqdm-like bar whose updates go to the parent (at most ~4 per second)."""

    def __init__(self, key: tuple[str, int], **kw: Any):
        self.key, self.desc, self.postfix = key, str(kw.get("desc", "")), ""
        self.pending, self.last = 0, time.monotonic()
        _send("open", key, {"total": kw.get("total"), "desc": self.desc, "unit": kw.get("unit", "it")})

    def update(self, n: int = 1) -> None:
        self.pending += n
        if time.monotonic() - self.last >= 0.25:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            _send("update", self.key, self.pending)
        self.pending, self.last = 0, time.monotonic()

    def set_postfix_str(self, s: str = "") -> None:
        self.postfix = s

    def close(self) -> None:
        self._flush()
        _send("close", self.key, {"desc": self.desc, "postfix": self.postfix})


def _die_with_parent(parent: int) -> None:
    """A worker whose parent dies (kill -9) gets SIGTERM, as if the parent
    had stopped it: it stops after its current write, its last epoch
    checkpoint kept, instead of training on unwatched (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_init(payload: bytes, queue: Any, sys_path: list[str], modules: list[str], parent: int = 0) -> None:
    # Ctrl-C at a terminal reaches every process of the group: the parent alone
    # decides, and stops the workers with one SIGTERM each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent:
        _W["parent"] = parent
        _die_with_parent(parent)
    for p in reversed(sys_path):  # the parent's import path: user models import the same
        if p not in sys.path:
            sys.path.insert(0, p)
    import importlib

    from archbench.models import register_spec

    for m in modules:
        importlib.import_module(m)
    cfg, data = pickle.loads(payload)
    for name, spec in cfg.specs.items():  # registered specs live in the parent's registry
        register_spec(name, spec)
    _W.update(cfg=cfg, data=data, queue=queue)
    _send("pid", None, os.getpid())


def _pool_unit(ref: str, seed: int, spec: int | str, cap: int, run_dir: str, device: str,
               side_by_side: dict[str, Any]) -> Any:
    """One unit inside a pool worker; the unit records ``side_by_side`` (the
    pool's size, the unit's thread cap, and what chose the size)."""
    try:
        return _pool_unit_run(ref, seed, spec, cap, run_dir, device, side_by_side)
    except (KeyboardInterrupt, Interrupted):
        if _W.get("parent") and os.getppid() != _W["parent"]:
            # Stopped because the parent died: the checkpoint is kept; nobody is left to take a result or
            # give more work, so the worker ends here rather than idle on as an orphan.
            os._exit(128 + int(signal.SIGTERM))
        raise


def _pool_unit_run(ref: str, seed: int, spec: int | str, cap: int, run_dir: str, device: str,
                   side_by_side: dict[str, Any]) -> Any:
    from archbench.signals import stop_on_signals

    key = (ref, seed)
    cfg, data = _W["cfg"], _W["data"]
    with stop_on_signals(sigterm=True):
        decision = unit_threads(spec, ref, seed, cfg, data, Path(run_dir), torch.device(device), cap)
        torch.set_num_threads(decision["threads"])
        _send("log", key, f"[{ref}] seed {seed}: training {cfg.train_config_for(ref).epochs} epochs on "
                          f"{len(data.train_labels):,} images ({device}, pid {os.getpid()}), {describe(decision)}")
        unit = run_unit(ref, seed, cfg, data, Path(run_dir), lambda **kw: _RemoteBar(key, **kw),
                        lambda s: _send("log", key, s))
        _forget_decision(Path(run_dir), ref, seed)
        unit["side_by_side"] = side_by_side
        return _attach(unit, decision)


@contextlib.contextmanager
def _main_not_rerun() -> Any:
    """While workers are spawned: keep them from re-running the parent's
    ``__main__`` (spawn's default), so a script that calls archbench with
    ``jobs > 1`` needs no ``if __name__ == "__main__":`` guard, and workers
    start faster. They need nothing from it: models defined there are refused."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _failed(seed: int, exc: BaseException, why: str) -> dict[str, Any]:
    return {"seed": seed, "status": "failed", "error_type": type(exc).__name__,
            "error": f"{type(exc).__name__}: {why}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "traceback": "".join(traceback.format_exception(exc))}


class _Progress:
    """The parent's view of the workers' progress: bars at fixed positions
    (one per worker slot), or a log line per unit per epoch without bars."""

    def __init__(self, progress: Any, log: Log):
        self.progress, self.log = progress, log
        self.bars: dict[Any, Any] = {}
        self.slots: dict[Any, int] = {}
        self.pids: set[int] = set()

    def handle(self, msg: tuple[str, Any, Any]) -> None:
        kind, key, payload = msg
        if kind == "pid":
            self.pids.add(int(payload))
        elif kind == "log":
            self.log(payload)
        elif kind == "open" and self.progress is not None:
            old = self.bars.pop(key, None)
            if old is not None:
                old.close()
            ref, seed = key
            self.bars[key] = self.progress(total=payload["total"], desc=f"{ref} seed {seed} {payload['desc']}",
                                           unit=payload["unit"], position=self.slots.get(key, 0))
        elif kind == "update" and key in self.bars:
            self.bars[key].update(payload)
        elif kind == "close":
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar.set_postfix_str(payload["postfix"])
                bar.close()
            else:
                self.log(f"[{key[0]}] seed {key[1]}: {payload['desc']}: {payload['postfix']}")

    def drain(self, q: Any) -> None:
        while True:
            try:
                with _signals_deferred():  # a Ctrl-C mid-read would leave the queue's pipe half read
                    msg = q.get_nowait()
            except (queue_mod.Empty, OSError, ValueError, EOFError):
                return
            self.handle(msg)

    def close_all(self) -> None:
        for bar in self.bars.values():
            with contextlib.suppress(Exception):
                bar.close()
        self.bars.clear()


def _run_pool(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, run_dir: Path, on_result: OnResult,
              log: Log, progress: Any, device: torch.device, spec: int | str, jobs: int,
              decided: dict[str, Any] | None = None) -> None:
    jobs = min(jobs, len(pending))
    usable = usable_cpus()
    if decided is not None:  # --jobs auto: the cores and the share its prediction was made for
        free, share = int(decided["free_cores"]), int(decided["threads_per_unit"] or 1)
    else:
        free = free_cores()
        share = max(1, free // jobs)
    if spec == "auto":
        log(f"local pool: {len(pending)} units, {jobs} side by side, each with up to {share} thread(s) "
            f"({free} of {usable} cores free)" + ("; more jobs than free cores: units will wait for cores"
                                                   if jobs > free else ""))
    else:
        log(f"local pool: {len(pending)} units, {jobs} side by side, {spec} thread(s) each"
            + (f"; warning: {jobs} x {spec} threads exceed the {usable} usable core(s), so threads will wait for "
               "each other (--threads auto avoids it)" if jobs * int(spec) > usable else ""))
    side_by_side = {"jobs": jobs, "threads_cap": share if spec == "auto" else None,
                    "chosen_by": "--jobs auto" if decided is not None else "--jobs"}
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    refs = [ref for ref, _ in pending]
    payload = pickle.dumps((cfg, data), protocol=pickle.HIGHEST_PROTOCOL)
    initargs = (payload, q, [os.getcwd()] + [p for p in sys.path if p], _user_modules(refs), os.getpid())

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=initargs)

    view = _Progress(progress, log)
    todo = list(pending)
    running: dict[Future, tuple[str, int, int]] = {}
    slots = list(range(jobs))
    pool = new_pool()
    try:
        while todo or running:
            while todo and slots:
                ref, seed = todo.pop(0)
                slot = slots.pop(0)
                view.slots[(ref, seed)] = slot
                with _main_not_rerun():  # workers are spawned inside submit
                    fut = pool.submit(_pool_unit, ref, seed, spec, share, str(run_dir), str(device), side_by_side)
                running[fut] = (ref, seed, slot)
            done, _ = wait(list(running), timeout=0.1, return_when=FIRST_COMPLETED)
            view.drain(q)
            broken = False
            for fut in done:
                ref, seed, slot = running.pop(fut)
                slots = sorted(slots + [slot])
                try:
                    unit = fut.result()
                except KeyboardInterrupt:  # the worker was stopped (a signal sent to it alone): stop the run
                    running[fut] = (ref, seed, slot)
                    raise
                except BrokenProcessPool as exc:
                    broken = True
                    unit = _failed(seed, exc, "the worker process running this unit died (killed, out of memory?)")
                except Exception as exc:  # noqa: BLE001 - run_unit records failures; this is the pool's own
                    unit = _failed(seed, exc, "the unit's worker failed")
                view.drain(q)
                on_result(ref, seed, unit)
            if broken:  # the other units of a broken pool fail too; a new pool runs the rest
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
        view.drain(q)
    except KeyboardInterrupt:
        _stop_workers(view, q, running, on_result, pool)
        pool.shutdown(wait=True, cancel_futures=True)
        names = ", ".join(f"{r} seed {s}" for r, s, _ in running.values())
        raise Interrupted(f"during {names} (each one's last finished epoch is checkpointed)" if names else "") \
            from None
    finally:
        view.close_all()
        pool.shutdown(wait=True, cancel_futures=True)
        q.close()
        q.join_thread()


@contextlib.contextmanager
def _signals_deferred() -> Any:
    """SIGINT and SIGTERM held back (delivered when the block ends), where
    the platform can block signals."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def _stop_workers(view: _Progress, q: Any, running: dict[Future, tuple[str, int, int]], on_result: OnResult,
                  pool: ProcessPoolExecutor | None = None, grace: float = 60.0) -> None:
    """Stop the workers (one SIGTERM each: a unit stops after its current
    write, its last epoch checkpoint kept), then record the units that
    finished meanwhile. Only this process's own pool workers are signalled:
    the pool's own process table, and the pids the workers reported (signalled
    first, before reading their queue)."""
    pids: set[int] = set(view.pids) | {int(pid) for pid in (getattr(pool, "_processes", None) or {})}
    for p in mp.active_children():
        if p.pid is not None and p.pid in pids:
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGTERM)
    view.drain(q)
    wait(list(running), timeout=grace)
    view.drain(q)
    for fut, (ref, seed, _) in list(running.items()):
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            continue
        running.pop(fut)
        with contextlib.suppress(KeyboardInterrupt, Interrupted):  # on_result asks whether to stop: it is
            on_result(ref, seed, fut.result())


# --------------------------------------------------------------------------- Ray


def _ray_unit(ref: str, seed: int, cfg_dict: dict, data: Any, run_dir: str, threads: int,
              sys_path: list[str]) -> Any:
    """One unit inside a Ray worker (``data``: the Dataset, whole)."""
    for p in reversed(sys_path):  # the driver's import path: user models import the same
        if p not in sys.path:
            sys.path.insert(0, p)
    workers = Path(run_dir) / ".workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"{safe_name(ref)}-seed{seed}.pid").write_text(str(os.getpid()))
    cfg = StudyConfig.from_dict(cfg_dict)
    decision = unit_threads(max(1, threads), ref, seed, cfg, data, Path(run_dir), torch.device("cpu"))
    torch.set_num_threads(decision["threads"])
    unit = run_unit(ref, seed, cfg, data, Path(run_dir), None, lambda s: None)
    _forget_decision(Path(run_dir), ref, seed)
    return _attach(unit, decision)


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
        data_ref = ray.put(data)  # the Dataset whole: whatever fields it has travel with it
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
