"""Running a study: preflight, open the run directory, measure each model's
costs, train every (model, seed) unit through an executor, write the report.

Each finished unit is written into ``results.json`` atomically before the
next one starts; a unit that fails (NaN loss, an exception) is recorded with
its error and the study goes on. A run directory belongs to one process at a
time (:class:`~archbench.run.rundir.RunDirLock`). Everything that can be
checked is checked before the directory is touched
(:mod:`archbench.run.preflight`); a new run that fails before any unit
finished removes what it wrote, so the same ``--name`` can be used again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from archbench._version import __version__
from archbench.config import ExecutionConfig, StudyConfig
from archbench.env import environment
from archbench.errors import DataError, Interrupted, UsageError
from archbench.measure import measure_model
from archbench.models.registry import build_model, get_entry, is_reference
from archbench.records import (
    JobsDecision,
    ModelRecord,
    RunRecord,
    Unit,
    load_record,
    lookup,
    model_entry,
    new_record,
    save_record,
    write_error,
)
from archbench.report import write_reports
from archbench.report.datacheck import missing_class_warnings
from archbench.resolve import config_differences, register_specs
from archbench.run import Log, OnResult
from archbench.run.executors import Executor, Pending, RayExecutor, SerialExecutor
from archbench.run.jobs import decide_jobs, describe_jobs, order_for_pool
from archbench.run.pool import PoolExecutor, check_parallel_models
from archbench.run.preflight import check_models, load_study_data
from archbench.run.progress import progress_factory
from archbench.run.rundir import DiscardIfFailed, RunDir, RunDirLock
from archbench.run.signals import check_stop, stop_on_signals, stop_requested
from archbench.run.unit import UnitContext, data_shape, failed_unit, train_as_unit, unit_model
from archbench.train.step import resolve_device


@dataclass
class RunOptions:
    """How to run a study (not what it is: that is the StudyConfig): where
    its output goes, what to resume, and the :class:`ExecutionConfig`."""

    quiet: bool = False
    log: Log | None = None
    resume: str | Path | None = None        # a run directory to continue
    notebook: bool = False                  # progress bars for Jupyter (tqdm.auto)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig.build)


def default_run_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _same_data(record: RunRecord, data: Any, run_dir: Path) -> None:
    """A resumed run must train on the data it started with: compared by
    identity (each payload's SHA-256, where the record has them; else the
    sizes and the test labels), not by where the files are."""
    stored = record.get("dataset") or {}
    now = data.describe()
    diffs = []
    a, b = stored.get("payload_sha256") or {}, now.get("payload_sha256") or {}
    if a:
        diffs += [f"{role}: SHA-256 {a.get(role)} when the run started, now {b.get(role)}"
                  + (f" ({data.files[role]})" if data.files.get(role) else "")
                  for role in sorted(set(a) | set(b)) if a.get(role) != b.get(role)]
    if stored.get("identity_sha256") and stored.get("identity_sha256") != now.get("identity_sha256"):
        diffs.append(f"identity SHA-256 {stored['identity_sha256']} when the run started, now "
                     f"{now.get('identity_sha256')}")
    for k in ("name", "train_samples", "val_samples", "test_samples"):
        if stored.get(k) is not None and stored.get(k) != now.get(k):
            diffs.append(f"{k}: {stored.get(k)!r} when the run started, now {now.get(k)!r}")
    if stored.get("test_labels") is not None and stored["test_labels"] != data.test_labels.tolist():
        diffs.append("the test labels differ")
    if diffs:
        registered = stored.get("source", "registry") == "registry"
        raise DataError(f"cannot resume {run_dir}: the data differs from the data it started with ("
                        + "; ".join(diffs) + "). Resume with the original data ("
                        + ("--data-dir DIR where its files are now" if registered else
                           f"{stored.get('name') or 'the dataset'} as it was: restore the file, or the folder's "
                           "images") + "), or start a new run.")


def _resume_run(cfg: StudyConfig, resume: str | Path, data: Any, log: Log, stack: contextlib.ExitStack
                ) -> tuple[RunRecord, RunDir]:
    run_dir = RunDir(Path(resume))
    if not run_dir.record.is_file():
        load_record(run_dir.path)  # the named error: no run here
    stack.enter_context(RunDirLock(run_dir.path))
    record = load_record(run_dir.path)
    run_dir.check_layout()
    stored, new = dict(record["config"]), cfg.to_dict()
    moved = stored.get("data_dir") != new.get("data_dir")
    diffs = config_differences({**stored, "data_dir": None}, {**new, "data_dir": None})
    if diffs:
        raise UsageError(f"cannot resume {run_dir.path}: the configuration differs from the stored one ("
                         + "; ".join(diffs) + "). Resume with the stored options, or start a new run "
                         "with --name.")
    _same_data(record, data, run_dir.path)
    if moved:  # the same data (checked above), found somewhere else
        log(f"{run_dir.path}: the data is now read from {new.get('data_dir')} (same files as when the run started)")
        record["config"]["data_dir"] = new.get("data_dir")
        record["dataset"]["files"] = dict(data.files)
    _leftovers(run_dir, log)
    log(f"resuming {run_dir.path}: " + ", ".join(
        f"{m} {sum(u['status'] == 'ok' for u in e['units'])}/{len(cfg.seeds)} done"
        for m, e in record["models"].items()))
    return record, run_dir


def _leftovers(run_dir: RunDir, log: Log) -> None:
    removed = run_dir.remove_leftovers()
    if removed:
        log(f"{run_dir.path}: removed {removed} temporary file(s) left by an interrupted write")


def _open_run(cfg: StudyConfig, opts: RunOptions, data: Any, device: torch.device, log: Log,
              stack: contextlib.ExitStack) -> tuple[RunRecord, RunDir]:
    """The run directory, locked for this process until ``stack`` closes, and
    its record: a new one, or the one to resume."""
    if opts.resume is not None:
        return _resume_run(cfg, opts.resume, data, log, stack)
    run_dir = RunDir(Path(cfg.out) / (cfg.name or default_run_name()))
    created = not run_dir.path.exists()
    stack.enter_context(RunDirLock(run_dir.path))
    if run_dir.record.exists():
        raise UsageError(f"run directory {run_dir.path} already holds results.json; choose another --name, "
                         f"or continue it with --resume {run_dir.path}.")
    _leftovers(run_dir, log)
    described = data.describe()
    described["test_labels"] = data.test_labels.tolist()  # paired statistics need them
    record = new_record(run_dir.path.name, cfg.to_dict(), environment(__version__), described)
    record["device"] = str(device)
    stack.enter_context(DiscardIfFailed(run_dir.path, created, record))
    save_record(record, run_dir.path)
    return record, run_dir


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> tuple[RunRecord, Path]:
    """Run every (model, seed) unit of ``cfg``; return (record, run_dir).

    With ``opts.resume`` (a run directory), finished units are kept and the
    rest run (from their last epoch checkpoint, if any); ``cfg`` must be the
    configuration stored there. Ctrl-C saves what finished and raises
    :class:`Interrupted` with the command that resumes (also when the
    KeyboardInterrupt itself was swallowed on its way: see archbench.run.signals).
    """
    with stop_on_signals(sigterm=False), contextlib.ExitStack() as stack:
        return _Study(cfg, opts or RunOptions(), stack).run()


def stored_jobs(execution: ExecutionConfig, resume: object, record: RunRecord, log: Log) -> ExecutionConfig:
    """A resumed run without --jobs (or $ARCHBENCH_JOBS) keeps the jobs it was started with."""
    stored = lookup(record, "execution", "jobs")
    if resume is None or execution.jobs_given or execution.executor != "local" or stored in (None, execution.jobs):
        return execution
    log(f"resuming with the run's jobs: --jobs {stored}")
    return replace(execution, jobs=stored, jobs_given=True)


def thread_policy(execution: ExecutionConfig, resume: object, record: RunRecord, log: Log) -> int | str:
    """The local executor's thread policy ("auto" or a count): the one given
    (--threads, else --cpus-per-unit, else $ARCHBENCH_THREADS, else auto),
    recorded with a new run; a resumed run without one keeps its stored
    policy (units that had started keep their own count in any case)."""
    stored = lookup(record, "execution", "threads")
    if resume is not None and not execution.threads_given and stored is not None:
        log(f"resuming with the run's thread policy: --threads {stored}")
        return stored
    if resume is None and execution.executor == "local":
        record["execution"] = {"threads": execution.threads, "jobs": execution.jobs}
    return execution.threads


class _Study:
    """One study's run: the steps of :func:`run_study`, sharing its state."""

    def __init__(self, cfg: StudyConfig, opts: RunOptions, stack: contextlib.ExitStack):
        self.cfg, self.opts, self.stack = cfg, opts, stack
        self.x = opts.execution
        self.log: Log = opts.log or (lambda s: None)
        self.tracker: Any = None
        self.decided_jobs: int | None = None
        self.unit_configs: dict[tuple[str, int], StudyConfig] = {}  # with --tune: the tuned study of each unit

    def preflight(self) -> None:
        """Data and models checked, executor options and MLflow usable, before anything is written."""
        self.device = resolve_device(self.cfg.device)
        self.data = load_study_data(self.cfg)
        for warning in missing_class_warnings(self.data.describe()):
            self.log(f"warning: {warning}")
        self.cfg = check_models(self.cfg, self.data, self.log)
        if self.x.executor == "local" and self.x.jobs != "auto" and int(self.x.jobs) > 1:
            check_parallel_models(list(self.cfg.models), int(self.x.jobs), self.x.jobs_source)
        if self.x.mlflow_uri is not None:
            from archbench.run.tracking import Tracker

            self.tracker = Tracker(self.x.mlflow_uri, self.x.mlflow_experiment)

    def open(self) -> None:
        self.record, self.run_dir = _open_run(self.cfg, self.opts, self.data, self.device, self.log, self.stack)
        if self.cfg.match == "time" and self.x.executor == "local" and self.x.jobs == "auto":
            self.log("--match time: units train one at a time (side by side they would share the cores, and the "
                     "clock would measure the sharing); --jobs N overrides")
            self.x = replace(self.x, jobs=1)
        self.threads = thread_policy(self.x, self.opts.resume, self.record, self.log)
        self.x = stored_jobs(self.x, self.opts.resume, self.record, self.log)
        if self.tracker is not None:
            try:
                self.tracker.start(self.record, self.run_dir.path)
            except Exception as exc:  # noqa: BLE001 - named, before any unit runs
                raise UsageError(f"cannot log to MLflow at {self.x.mlflow_uri}: {type(exc).__name__}: {exc}. Check "
                                 "the --mlflow URI (or leave --mlflow out).") from exc

    def on_result(self, ref: str, seed: int, unit: Unit) -> None:
        entry, seeds = self.record["models"][ref], self.cfg.seeds
        entry["units"] = [u for u in entry["units"] if u["seed"] != seed] + [unit]
        entry["units"].sort(key=lambda u: seeds.index(u["seed"]) if u["seed"] in seeds else 1 << 30)
        if unit["status"] != "ok":
            self.log(f"[{ref}] seed {seed}: FAILED — {unit['error']}")
        if self.tracker is not None:
            self.tracker.log_unit(self.record, ref, unit, self.run_dir.path, self.log)
        save_record(self.record, self.run_dir.path)
        check_stop()  # a Ctrl-C swallowed during the unit (in a __del__, say) stops the run here

    def on_jobs_decision(self, decision: JobsDecision) -> None:
        self.decided_jobs = int(decision["jobs"])
        execution = self.record.setdefault("execution", {})
        if self.opts.resume is not None:
            decision["resumed"] = True
            if execution.get("jobs_decision"):  # the earlier sessions' decisions are kept, oldest first
                execution.setdefault("earlier_jobs_decisions", []).append(execution["jobs_decision"])
        execution["jobs_decision"] = decision
        save_record(self.record, self.run_dir.path)

    def train(self) -> None:
        """Measure each model's costs (once), then train every unit not yet done."""
        cfg, record, data = self.cfg, self.record, self.data
        for ref in cfg.models:
            entry = model_entry(record, ref)
            if not entry.get("measurements") or (entry.get("measurements") or {}).get("errors"):  # again if one failed
                measure_entry(entry, ref, cfg, len(data.train_labels), self.device, self.x.timing, self.log,
                              *data_shape(data))
                save_record(record, self.run_dir.path)
        if cfg.match in ("flops", "time"):
            cfg = self.cfg = self.plan_budget()
        groups = self.tune(cfg) if cfg.tune else [cfg]
        self.unit_configs = {(m, s): g for g in groups for m in g.models for s in g.seeds}
        for group in groups:
            pending = [(ref, seed) for ref in group.models for seed in group.seeds
                       if not any(u["seed"] == seed and u["status"] == "ok" for u in record["models"][ref]["units"])]
            if pending:
                self.execute(group, pending, self.on_result, self.run_dir)
        check_stop()
        self.run_dir.drop_empty_checkpoints()

    def execute(self, cfg: StudyConfig, pending: Pending, on_result: OnResult, run_dir: RunDir) -> None:
        """Run ``pending`` units of ``cfg`` with the study's executor. Jobs
        chosen by measuring ("auto") are measured once: later batches of
        units (tuning trials, the seeds after them) keep the count."""
        ctx = UnitContext(cfg, self.data, run_dir, self.device, self.log,
                          progress_factory(self.opts.quiet or self.x.executor == "ray", self.opts.notebook))
        executor, pending = choose_executor(ctx, self.x, self.threads, pending, self.on_jobs_decision)
        executor.run(pending, on_result)
        if self.x.jobs == "auto" and self.decided_jobs is not None:
            self.x = replace(self.x, jobs=self.decided_jobs)

    def tune(self, cfg: StudyConfig) -> list[StudyConfig]:
        """Equal tuning effort (:mod:`archbench.run.tune`): every model's
        trials, then its chosen values; the studies its seeds train in."""
        from archbench.run import tune

        values = tune.grid(cfg)
        for t in range(cfg.trials):
            pending = tune.pending_trials(self.record, cfg, t)
            if not pending:
                continue
            self.log(f"tuning trial {t + 1}/{cfg.trials}: " + "; ".join(
                f"{m} " + ", ".join(f"{k} {v:.3g}" for k, v in values[m][t].items()) for m in cfg.models))

            def on_trial(ref: str, seed: int, unit: Unit, t: int = t) -> None:
                self.on_trial(ref, seed, tune.trial_record(unit, t, values[ref][t]))

            self.execute(tune.trial_config(cfg, values, t), pending, on_trial, self.run_dir.trial(t))
        chosen = tune.choices(self.record, cfg, values)
        for m in cfg.models:
            self.record["models"][m]["tuned"] = {"values": values[m], **chosen[m]}
            for s, c in chosen[m]["by_seed"].items():
                self.log(f"[{m}] tuned" + (f" (seed {s})" if cfg.tune_per_seed else "") + ": " + ", ".join(
                    f"{k} {v:.3g}" for k, v in c["params"].items()) + f" (validation accuracy "
                    f"{100 * c['validation_accuracy']:.2f} %, trial {c['trial'] + 1}/{cfg.trials})"
                    + (f"; warning: at the {' and '.join(c['edge'])} edge of the range tried" if c["edge"] else ""))
            for s in chosen[m]["failed"]:
                seeds = cfg.seeds if not cfg.tune_per_seed else (s,)
                for seed in seeds:
                    if not any(u["seed"] == seed and u["status"] == "ok" for u in self.record["models"][m]["units"]):
                        self.on_result(m, seed, failed_unit(seed, tune.untuned_failure(m, self.record)))
        save_record(self.record, self.run_dir.path)
        return [g for g in tune.tuned_groups(cfg, chosen) if g.models]

    def on_trial(self, ref: str, seed: int, unit: Unit) -> None:
        entry = self.record["models"][ref]
        t, order = unit["trial"], self.cfg.seeds
        entry["trials"] = [u for u in entry.get("trials", []) if (u.get("trial"), u["seed"]) != (t, seed)] + [unit]
        entry["trials"].sort(key=lambda u: (u.get("trial", 0), order.index(u["seed"]) if u["seed"] in order else 0))
        if unit["status"] != "ok":
            self.log(f"[{ref}] trial {t + 1} seed {seed}: FAILED — {unit['error']}")
        if self.tracker is not None:
            self.tracker.log_unit(self.record, ref, unit, self.run_dir.path, self.log)
        save_record(self.record, self.run_dir.path)
        check_stop()

    def plan_budget(self) -> StudyConfig:
        """Equal compute: each model's step budget from its measured FLOPs
        (:mod:`archbench.run.budget`), recorded as ``record["budget"]``."""
        from archbench.run.budget import plan, plan_time

        fps = {m: lookup(self.record["models"][m], "measurements", "flops", "train_per_sample")
               for m in self.cfg.models}
        if self.cfg.match == "time":
            timed = plan_time(self.cfg, fps, len(self.data.train_labels))
            self.record["budget"] = timed
            save_record(self.record, self.run_dir.path)
            self.log(f"equal training time: {timed['budget_seconds']:g} s of training steps per unit, on this machine")
            return replace(self.cfg, epochs_steps={m: b["epochs_step"] for m, b in timed["models"].items()})
        budget = plan(self.cfg, fps, len(self.data.train_labels))
        self.record["budget"] = budget
        for m in self.cfg.models:  # the recipe's whole-run FLOPs are not this run's: its budget is
            flops = lookup(self.record["models"][m], "measurements", "flops")
            if isinstance(flops, dict):
                flops.pop("per_run", None)
        save_record(self.record, self.run_dir.path)
        self.log(f"equal training compute: {budget['budget_flops']:.4g} FLOPs ({budget['by']}): " + ", ".join(
            f"{m} {b['steps']:,} steps ({b['epochs']:.2f} epochs)" for m, b in budget["models"].items()))
        return replace(self.cfg, budget_steps={m: b["steps"] for m, b in budget["models"].items()},
                       budget_points={m: tuple(b["points"]) for m, b in budget["models"].items()},
                       epochs_steps={m: b["epochs_step"] for m, b in budget["models"].items()
                                     if b.get("epochs_step")})

    def run(self) -> tuple[RunRecord, Path]:
        register_specs(self.cfg)  # a stored configuration (--resume) builds its spec models by name
        self.preflight()
        self.open()
        run_dir = self.run_dir.path
        try:
            self.train()
        except (KeyboardInterrupt, Interrupted) as exc:
            save_record(self.record, run_dir)
            if self.tracker is not None:
                self.tracker.finish(self.record, run_dir, "KILLED")
            where = f" {exc}" if isinstance(exc, Interrupted) and str(exc) else ""
            raise Interrupted(f"interrupted{where}. Finished units are saved in {run_dir / 'results.json'}; "
                              f"continue with: archbench run --resume {run_dir}") from None
        if self.x.check_determinism:
            self.record["determinism_check"] = determinism_check(self.record, self.cfg, self.data, self.device,
                                                                 self.log, self.unit_configs)
            save_record(self.record, run_dir)
        try:
            write_reports(self.record, run_dir)
        except OSError as exc:
            raise write_error(exc, f"the report in {run_dir}", "The results are saved in results.json; once the "
                              f"directory is writable again, `archbench report {run_dir}` rebuilds the report.") \
                from exc
        if self.tracker is not None:
            self.tracker.finish(self.record, run_dir)
        return self.record, run_dir


def choose_executor(ctx: UnitContext, execution: ExecutionConfig, threads: int | str, pending: Pending,
                    on_jobs_decision: Callable[[JobsDecision], None] | None = None) -> tuple[Executor, Pending]:
    """The executor for ``pending`` (and the order to give it the units in):
    Ray where asked; else a pool where ``--jobs`` (measured by
    :func:`archbench.run.jobs.decide_jobs` when "auto", whose record goes to
    ``on_jobs_decision``) puts more than one unit side by side; else this process."""
    if execution.executor == "ray":
        return RayExecutor(ctx, execution), pending
    decision: JobsDecision | None = None
    if execution.jobs == "auto":
        decision = decide_jobs(pending, ctx.cfg, ctx.data, ctx.device, threads)
        if len(pending) > 1:
            ctx.log(describe_jobs(decision))
        if on_jobs_decision is not None:
            on_jobs_decision(decision)
        jobs = int(decision["jobs"])
        if jobs > 1:
            pending = order_for_pool(pending, decision, ctx.cfg, len(ctx.data.train_labels))
    else:
        jobs = int(execution.jobs)
    if jobs > 1 and len(pending) > 1:
        return PoolExecutor(ctx, threads, jobs, decision), pending
    return SerialExecutor(ctx, threads), pending


def run_units_locally(pending: Pending, cfg: StudyConfig, data: Any, run_dir: Path, on_result: OnResult,
                      log: Callable[[str], None], progress: Any, device: torch.device,
                      threads: int | str | None = None, jobs: int | str | None = 1,
                      on_jobs_decision: Callable[[JobsDecision], None] | None = None) -> None:
    """Run ``pending`` units with the local executor ``threads`` and ``jobs``
    choose (None: their environment defaults): the function form of
    :func:`choose_executor`, for scripts and benchmarks."""
    execution = ExecutionConfig.build(threads=threads, jobs=jobs)
    ctx = UnitContext(cfg, data, RunDir(Path(run_dir)), device, log, progress)
    executor, pending = choose_executor(ctx, execution, execution.threads, pending, on_jobs_decision)
    executor.run(pending, on_result)


def measure_entry(entry: ModelRecord, ref: str, cfg: StudyConfig, train_samples: int, device: torch.device,
                  timing: bool, log: Log, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
    """Fill a model entry's description, recipe and measured costs (or
    ``measurement_error``: training still runs when measuring fails), for
    images of ``input_shape`` in ``num_classes`` classes (the dataset's)."""
    t0 = time.perf_counter()
    model = build_model(ref, cfg.seeds[0], input_shape, num_classes)
    entry["description"] = get_entry(ref).description if not is_reference(ref) else f"user model {ref}"
    log(f"[{ref}] measuring costs (params, FLOPs, memory, saved size" + (", latency)" if timing else ")"))
    tcfg = cfg.train_config_for(ref)
    entry["recipe"] = tcfg.to_dict()
    try:
        # The costs of the step this unit trains (its whole recipe), and of a plain PyTorch reference step.
        # Saved sizes of files named as the units' (a .pt file's bytes include its name).
        entry["measurements"] = measure_model(model, input_shape, device=device, cfg=tcfg,
                                              num_classes=num_classes,
                                              train_samples=train_samples, epochs=tcfg.epochs, timing=timing,
                                              files_stem=RunDir.stem(ref, cfg.seeds[0]))
        entry.pop("measurement_error", None)
        failed = (entry["measurements"] or {}).get("errors")
        if failed:  # the costs that could not be measured, each with its reason; the others stand
            entry["measurement_error"] = "; ".join(f"{k}: {v}" for k, v in failed.items())
            log(f"[{ref}] measuring {', '.join(failed)} FAILED — {entry['measurement_error']}")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded; training still runs
        if stop_requested():
            raise KeyboardInterrupt from None
        entry["measurement_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{ref}] measuring FAILED — {entry['measurement_error']}")
    entry["measure_seconds"] = time.perf_counter() - t0


def determinism_check(record: RunRecord, cfg: StudyConfig, data: Any, device: torch.device, log: Log,
                      configs: dict[tuple[str, int], StudyConfig] | None = None) -> dict[str, Any]:
    """Retrain the first finished unit with the same seed and compare
    (``configs``: each unit's study where it is not ``cfg``, e.g. its tuned values)."""
    for ref in cfg.models:
        for u in record["models"][ref]["units"]:
            if u["status"] != "ok":
                continue
            log(f"[{ref}] seed {u['seed']}: retraining to check determinism")
            threads = lookup(u, "host", "torch_threads")
            before = torch.get_num_threads()
            if threads:  # CPU arithmetic depends on the thread count: retrain with the unit's
                torch.set_num_threads(int(threads))
            try:
                # As the unit trained (a FLOP budget's steps included), from a freshly built model.
                own = (configs or {}).get((ref, u["seed"]), cfg)
                result = train_as_unit(unit_model(ref, u["seed"], data), ref, u["seed"], own, data)
            finally:
                torch.set_num_threads(before)
            same_preds = result.test.predictions.tolist() == u["test"]["predictions"]
            out: dict[str, Any] = {
                "model": ref, "seed": u["seed"], "device": str(device),
                "identical": same_preds and result.test.loss == u["test"]["loss"]
                and [h.train_loss for h in result.history] == [h["train_loss"] for h in u["history"]],
                "test_loss": [u["test"]["loss"], result.test.loss],
                "test_accuracy": [u["test"]["accuracy"], result.test.accuracy],
                "predictions_identical": same_preds,
            }
            log(f"determinism check: {'identical' if out['identical'] else 'DIFFERENT'} "
                f"(test loss {out['test_loss'][0]!r} vs {out['test_loss'][1]!r})")
            return out
    return {"identical": None, "note": "no finished unit to check"}

