"""A local pool: units side by side in ``spawn`` worker processes.

The workers are started with ``spawn`` (a fresh interpreter: no forked
OpenMP state). Each receives the configuration and the dataset once, pickled
whole, and the parent's ``sys.path`` (``module:callable`` models import the
same). Models that exist only as Python objects in this process (given to
the API as objects, or registered by code in ``__main__``) cannot be rebuilt
there and are refused. Progress of every running unit is forwarded to the
parent: a progress bar per worker (``position``), or one log line per unit
per epoch without bars. Ctrl-C (or SIGTERM to the parent, where the CLI
handles it) stops the workers (SIGTERM, once each): each keeps its last
epoch checkpoint, units that finished are recorded, and
:class:`~archbench.errors.Interrupted` is raised as in one process. A worker
whose parent dies gets SIGTERM too (Linux: ``PR_SET_PDEATHSIG``).

With the same thread count, a unit trained in the pool gives bit for bit
the results it gives in this process (tested).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from archbench.env import usable_cpus
from archbench.errors import Interrupted, UsageError
from archbench.models.registry import local_only_models
from archbench.records import JobsDecision, SideBySide, Unit
from archbench.run import Log, OnResult
from archbench.run.threads import free_cores
from archbench.run.unit import UnitContext, failed_unit, train_unit


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

    from archbench.resolve import register_specs

    for m in modules:
        importlib.import_module(m)
    # A warning in a worker is a log line of the parent's (above its bars), not a write into the terminal.
    import warnings

    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: _send(
        "log", None, warnings.formatwarning(message, category, filename, lineno, line).rstrip())
    cfg, data = pickle.loads(payload)
    register_specs(cfg)  # registered specs live in the parent's registry
    # A worker's exit never waits for its progress messages to be written: where another worker was killed while
    # writing (holding the queue's lock), waiting would keep this one alive for ever, and the pool's shutdown with it.
    queue.cancel_join_thread()
    _W.update(cfg=cfg, data=data, queue=queue)
    _send("pid", None, os.getpid())


def _pool_unit(ref: str, seed: int, spec: int | str, run_dir: str, device: str, side_by_side: SideBySide) -> Unit:
    """One unit inside a pool worker; the unit records ``side_by_side`` (the
    pool's size, and what chose it)."""
    try:
        return _pool_unit_run(ref, seed, spec, run_dir, device, side_by_side)
    except (KeyboardInterrupt, Interrupted):
        if _W.get("parent") and os.getppid() != _W["parent"]:
            # Stopped because the parent died: the checkpoint is kept; nobody is left to take a result or
            # give more work, so the worker ends here rather than idle on as an orphan.
            os._exit(128 + int(signal.SIGTERM))
        raise


def _pool_unit_run(ref: str, seed: int, spec: int | str, run_dir: str, device: str,
                   side_by_side: SideBySide) -> Unit:
    from archbench.run.signals import stop_on_signals

    key = (ref, seed)
    cfg, data = _W["cfg"], _W["data"]
    _send("start", key, os.getpid())  # which worker runs it: a worker that dies names its unit
    with stop_on_signals(sigterm=True):
        unit = train_unit(ref, seed, cfg, data, Path(run_dir), torch.device(device), spec,
                          lambda **kw: _RemoteBar(key, **kw), lambda s: _send("log", key, s),
                          where=f", pid {os.getpid()}")
    unit["side_by_side"] = side_by_side
    return unit


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


class _Progress:
    """The parent's view of the workers' progress: bars at fixed positions
    (one per worker slot), or a log line per unit per epoch without bars."""

    def __init__(self, progress: Any, log: Log):
        self.progress, self.log = progress, log
        self.overall: Any = None  # the run's own bar, below the units' (see start)
        self.units, self.done = 0, 0
        self.bars: dict[Any, Any] = {}
        self.slots: dict[Any, int] = {}
        self.pids: set[int] = set()
        self.unit_pid: dict[Any, int] = {}  # (ref, seed) -> the worker that started it

    def handle(self, msg: tuple[str, Any, Any]) -> None:
        kind, key, payload = msg
        if kind == "pid":
            self.pids.add(int(payload))
        elif kind == "start":
            self.pids.add(int(payload))
            self.unit_pid[key] = int(payload)
        elif kind == "log":
            self.log(payload)
        elif kind == "open" and self.progress is not None:
            old = self.bars.pop(key, None)
            if old is not None:
                old.close()
            self.bars[key] = self.progress(total=payload["total"], desc=payload["desc"], unit=payload["unit"],
                                           position=self.slots.get(key, 0))
        elif kind == "update" and key in self.bars:
            self.bars[key].update(payload)
        elif kind == "close":
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar.set_postfix_str(payload["postfix"])
                bar.close()
            else:
                self.log(f"{payload['desc']}: {payload['postfix']}")

    def drain(self, q: Any) -> None:
        while True:
            try:
                with _signals_deferred():  # a Ctrl-C mid-read would leave the queue's pipe half read
                    msg = q.get_nowait()
            except (queue_mod.Empty, OSError, ValueError, EOFError):
                return
            self.handle(msg)

    def start(self, units: int, jobs: int) -> None:
        """The run's progress: a bar of finished units below the ``jobs`` unit slots."""
        self.units = units
        if self.progress is not None:
            self.overall = self.progress(total=units, desc="run", unit="unit", position=jobs, overall=True)

    def finished(self) -> None:
        self.done += 1
        if self.overall is not None:
            self.overall.update(1)

    def close_all(self) -> None:
        for bar in self.bars.values():
            with contextlib.suppress(Exception):
                bar.close()
        self.bars.clear()
        if self.overall is not None:
            with contextlib.suppress(Exception):
                self.overall.set_postfix_str(f"{self.done} of {self.units} units finished")
                self.overall.close()
            self.overall = None


class PoolExecutor:
    """Units side by side in ``jobs`` worker processes, each unit with its
    own thread decision (fixed by its model and the machine, never by the
    pool: ``decided`` is the ``--jobs auto`` decision that chose its size)."""

    def __init__(self, ctx: UnitContext, threads: int | str, jobs: int, decided: JobsDecision | None = None):
        self.ctx, self.spec, self.jobs, self.decided = ctx, threads, jobs, decided
        self.queue: Any = None  # the current pool's progress queue (each pool has its own)

    def _layout(self, pending: list[tuple[str, int]]) -> tuple[int, SideBySide]:
        """(jobs, what each unit records), said in the log."""
        jobs, spec, log = min(self.jobs, len(pending)), self.spec, self.ctx.log
        usable = usable_cpus()
        free = int(self.decided["free_cores"]) if self.decided is not None else free_cores()

        def threads(n: int) -> str:
            return f"{n} thread{'s' if n != 1 else ''}"
        if spec == "auto":
            log(f"local pool: {len(pending)} units, {jobs} side by side, each with its model's thread count "
                f"({free} of {usable} cores free)" + ("; more jobs than free cores: units will wait for cores"
                                                       if jobs > free else ""))
        else:
            log(f"local pool: {len(pending)} units, {jobs} side by side, {threads(int(spec))} each"
                + (f"; warning: {jobs} x {spec} threads exceed the {usable} usable core(s), so threads will wait "
                   "for each other (--threads auto avoids it)" if jobs * int(spec) > usable else ""))
        side_by_side: SideBySide = {"jobs": jobs, "threads_cap": None,
                                    "chosen_by": "--jobs auto" if self.decided is not None else "--jobs"}
        return jobs, side_by_side

    def run(self, pending: list[tuple[str, int]], on_result: OnResult) -> None:
        ctx = self.ctx
        check_parallel_models([ref for ref, _ in pending], self.jobs)
        jobs, side_by_side = self._layout(pending)
        mpc = mp.get_context("spawn")
        payload = pickle.dumps((ctx.cfg, ctx.data), protocol=pickle.HIGHEST_PROTOCOL)
        common = ([os.getcwd()] + [p for p in sys.path if p], _user_modules([ref for ref, _ in pending]), os.getpid())
        queues: list[Any] = []

        def new_pool() -> ProcessPoolExecutor:
            # Each pool its own progress queue: a worker killed while writing may hold the old one's lock for ever.
            queues.append(mpc.Queue())
            self.queue = queues[-1]
            return ProcessPoolExecutor(max_workers=jobs, mp_context=mpc, initializer=_worker_init,
                                       initargs=(payload, queues[-1], *common))

        view = _Progress(ctx.progress, ctx.log)
        view.start(len(pending), jobs)
        running: dict[Future, tuple[str, int, int]] = {}
        pool = new_pool()
        try:
            pool = self._schedule(list(pending), pool, new_pool, view, running, on_result, side_by_side)
            view.drain(self.queue)
        except KeyboardInterrupt:
            _stop_workers(view, self.queue, running, on_result, pool)
            pool.shutdown(wait=True, cancel_futures=True)
            names = ", ".join(f"{r} seed {s}" for r, s, _ in running.values())
            each = "each one's" if len(running) > 1 else "its"
            raise Interrupted(f"during {names} ({each} last finished epoch is checkpointed)" if names else "") \
                from None
        finally:
            view.close_all()
            pool.shutdown(wait=True, cancel_futures=True)
            for q in queues:  # this process only reads them: nothing of its own to flush
                q.cancel_join_thread()
                q.close()

    def _schedule(self, todo: list[tuple[str, int]], pool: ProcessPoolExecutor,
                  new_pool: Callable[[], ProcessPoolExecutor], view: _Progress,
                  running: dict[Future, tuple[str, int, int]], on_result: OnResult,
                  side_by_side: SideBySide) -> ProcessPoolExecutor:
        """Keep every worker slot busy until ``todo`` is done; returns the pool
        in use. A worker that dies (killed: the kernel's out-of-memory killer
        sends SIGKILL) breaks the pool: its unit fails, named; the units the
        pool stopped with it continue in a new pool from their last epoch
        checkpoint (at most :data:`POOL_RETRIES` times each)."""
        slots = list(range(min(self.jobs, len(todo))))
        run_dir, device = str(self.ctx.run_dir.path), str(self.ctx.device)
        procs: dict[int, Any] = {}  # pid -> the pool's worker Process (its exit code names a killed worker)
        retries: dict[tuple[str, int], int] = {}
        while todo or running:
            while todo and slots:
                ref, seed = todo.pop(0)
                slot = slots.pop(0)
                view.slots[(ref, seed)] = slot
                with _main_not_rerun():  # workers are spawned inside submit
                    fut = pool.submit(_pool_unit, ref, seed, self.spec, run_dir, device, side_by_side)
                running[fut] = (ref, seed, slot)
            procs.update(getattr(pool, "_processes", None) or {})
            done, _ = wait(list(running), timeout=0.1, return_when=FIRST_COMPLETED)
            view.drain(self.queue)
            broken: list[tuple[str, int, BaseException]] = []
            if any(_broke(f) for f in done):  # the pool marks every unit it ran failed: take them all at once
                done = set(done) | wait(list(running), timeout=60)[0]
            for fut in done:
                ref, seed, slot = running.pop(fut)
                slots = sorted(slots + [slot])
                try:
                    unit = fut.result()
                except KeyboardInterrupt:  # the worker was stopped (a signal sent to it alone): stop the run
                    running[fut] = (ref, seed, slot)
                    raise
                except BrokenProcessPool as exc:
                    broken.append((ref, seed, exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - run_unit records failures; this is the pool's own
                    unit = failed_unit(seed, exc, why="the unit's worker failed")
                view.drain(self.queue)
                view.finished()
                on_result(ref, seed, unit)
            if broken:
                self._after_break(broken, pool, procs, view, todo, retries, on_result)
                procs.clear()
                pool = new_pool()
        return pool

    def _after_break(self, broken: list[tuple[str, int, BaseException]], pool: ProcessPoolExecutor,
                     procs: dict[int, Any], view: _Progress, todo: list[tuple[str, int]],
                     retries: dict[tuple[str, int], int], on_result: OnResult) -> None:
        """A broken pool's units: the one whose worker died fails, named with
        the signal that killed it; the others go back to ``todo`` (they resume
        from their epoch checkpoints). Where no worker is known to have died
        by a signal, every unit fails, as does one retried too often."""
        view.drain(self.queue)
        pool.shutdown(wait=False, cancel_futures=True)
        killed = _killed_workers(procs)
        for ref, seed, exc in broken:
            pid = view.unit_pid.get((ref, seed))
            if killed and pid not in killed and retries.get((ref, seed), 0) < POOL_RETRIES:
                retries[(ref, seed)] = retries.get((ref, seed), 0) + 1
                todo.insert(0, (ref, seed))
                self.ctx.log(f"[{ref}] seed {seed}: stopped when worker {', '.join(map(str, killed))} died; it "
                             "continues from its last epoch checkpoint in a new worker")
                continue
            how = f"killed by {killed[pid]}" if pid in killed else "stopped when the pool broke"
            why = (f"the worker process running this unit (pid {pid}) died, {how} (the kernel's out-of-memory killer "
                   "sends SIGKILL); its last epoch checkpoint is kept" if pid is not None else
                   "its worker process died before it started (killed, out of memory?)")
            view.finished()
            on_result(ref, seed, failed_unit(seed, exc, why=why))


POOL_RETRIES = 2  # times a unit stopped by another worker's death continues in a new pool


def _broke(fut: Future) -> bool:
    return not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool)


def _killed_workers(procs: dict[int, Any], grace: float = 30.0) -> dict[int, str]:
    """{pid: signal name} of the pool's workers that a signal other than
    SIGTERM (the pool's own stop) ended. Waits up to ``grace`` seconds for
    the workers to end, then kills what is left (a worker that cannot stop
    would keep the pool's shutdown waiting for ever)."""
    deadline = time.monotonic() + grace
    for p in procs.values():
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            with contextlib.suppress(OSError):
                p.kill()
            p.join(5)
    out = {}
    for pid, p in procs.items():
        code = p.exitcode
        if code is not None and code < 0 and -code != signal.SIGTERM:
            try:
                out[pid] = signal.Signals(-code).name
            except ValueError:
                out[pid] = f"signal {-code}"
    return out


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


