"""Command-line interface: the only module that knows every part.

(The help's description is ``DESCRIPTION``, for users.)

    archbench run [--models mlp,cnn] [--seeds 0,1,2] [--epochs 5] ...
    archbench report RUN_DIR
    archbench models
    archbench data fetch [--dest DIR] | archbench data info

Exit codes: 0 ok, 2 usage/config, 3 data, 4 runtime failure, 130 interrupted
(Ctrl-C or SIGTERM: finished units are saved, the run can be resumed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from archbench.config import MAX_JOBS, MAX_THREADS
from archbench.errors import EXIT_DATA, EXIT_RUNTIME, EXIT_USAGE, ArchbenchError, UsageError, path_error

if TYPE_CHECKING:
    from archbench.records import RunRecord

EXIT_INTERRUPTED = 130
_Sub = argparse._SubParsersAction  # what add_subparsers returns: each command adds its parser to it
DESCRIPTION = ("Which neural-network architecture gives the most accuracy for its cost? archbench trains "
               "models over seeds, measures their costs (parameters, FLOPs, memory, size, time) and reports "
               "the comparison with its uncertainty. Start with: archbench run (the seed study), archbench models, "
               "archbench profile MODEL.")


class _Parser(argparse.ArgumentParser):
    """argparse with a short error: the message and where help is, not the
    whole usage block before it (the subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def _int_at_least(lo: int, what: str, hi: int | None = None) -> Callable[[str], int]:
    expect = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {expect}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{what} must be {expect}, got {v}")
        return v

    return parse


def _positive_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number > 0, got {text!r}") from None
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number > 0, got {text}")
        return v

    return parse


def _non_negative_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not 0 <= v < float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number >= 0, got {text!r}")
        return v

    return parse


def _seeds(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) > 1 and any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"seeds {text!r} have an empty item (two commas, or one at an end); "
                                         "give comma-separated integers like 0,1,2")
    try:
        seeds = [int(s) for s in parts if s.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("seeds must name at least one integer, e.g. --seeds 0")
    if any(not 0 <= s < 2**63 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be integers from 0 to 2**63-1, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds {text!r} repeat a value")
    return seeds


def _models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give at least one model, e.g. --models mlp,cnn")
    return models


def _train_flag_type(key: str, flag: str) -> Callable[[str], Any]:
    """An argparse type for training option ``key``, checked as resolve checks it."""
    from archbench.config import TRAIN_CHECKS, TRAIN_DEFAULTS

    check = TRAIN_CHECKS[key]
    kind = type(TRAIN_DEFAULTS[key])

    def parse(text: str) -> Any:
        try:
            value = kind(text) if kind in (int, float) else text
            return check.convert(value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{flag} must be {check.expect}, got {text}") from None

    return parse


def _add_train_options(r: argparse.ArgumentParser) -> None:
    """One flag per training option, generated from TrainConfig: the CLI,
    experiment files and the API share one list of keys."""
    from archbench.config import TRAIN_CHECKS, TRAIN_DEFAULTS, TRAIN_DOCS, TRAIN_KEYS

    g = r.add_argument_group("training options (each overrides the experiment file and the model's recipe)")
    for key in TRAIN_KEYS:
        flag = "--" + key.replace("_", "-")
        default = TRAIN_DEFAULTS[key]
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{TRAIN_DOCS[key]} (default: {'on' if default else 'off'})")
        else:
            g.add_argument(flag, type=_train_flag_type(key, flag), default=argparse.SUPPRESS,
                           metavar=key.upper(),
                           help=(TRAIN_DOCS[key] if TRAIN_DOCS[key] == TRAIN_CHECKS[key].expect else
                                 f"{TRAIN_DOCS[key]}: {TRAIN_CHECKS[key].expect}") + f" (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    from archbench._version import __version__

    p = _Parser(prog="archbench", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"archbench {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(sub)
    _add_report_parsers(sub)
    _add_profile_parser(sub)
    _add_data_parser(sub)
    return p


def _add_run_parser(sub: _Sub) -> None:
    r = sub.add_parser("run", help="train and measure models, write runs/<name>/ (default: the seed study)")
    r.add_argument("experiment", nargs="?", default=None,
                   help="an experiment file (TOML; see examples/); options given here override it")
    _add_study_options(r)
    _add_train_options(r)
    _add_execution_options(r)


def _add_study_options(r: argparse.ArgumentParser) -> None:
    """What the study is: its models, seeds and data."""
    from archbench.config import MAX_REPEATS

    S = argparse.SUPPRESS  # an option not given is absent: "given" means explicit, whatever the value
    r.add_argument("--models", type=_models, default=S,
                   help="comma-separated registry names, package.module:function or spec files (default: mlp,cnn)")
    r.add_argument("--seeds", type=_seeds, default=S,
                   help="comma-separated seeds (default: 0,1,2; an architecture is named more accurate only with 2 "
                        "or more seeds per model: one seed compares two trained networks)")
    r.add_argument("--repeats", type=_int_at_least(1, "--repeats", MAX_REPEATS), default=S,
                   help="shorthand for --seeds 0,1,...,N-1")
    r.add_argument("--dataset", default=S, metavar="NAME|PATH",
                   help="the data to train and test on: fashion-mnist (default), mnist, kmnist, digits "
                        "(scikit-learn's 8x8 digits), or a path: an .npz with x_train, y_train, x_test, y_test; "
                        "a CIFAR-10/100 python-batch directory or .tar.gz; an image-folder tree "
                        "(train/<class>/*.png, test/<class>/...). Models are built for its image shape and classes")
    r.add_argument("--val-split", type=float, default=S, metavar="FRACTION",
                   help="hold out this fraction of the training images (seeded, stratified) for the learning "
                        "curves; the test set is then evaluated once, after training (default: no validation "
                        "split, curves on the test set as in the seed notebook)")
    r.add_argument("--match", default=S, choices=("epochs", "flops", "time"),
                   help="what every model gets the same of: epochs (default: the recipe's, as the seed notebook); "
                        "flops: the same training FLOPs, the costliest model's --epochs epochs (or "
                        "--budget-flops), cheaper models training proportionally more steps; or time: the same "
                        "seconds of training steps (--budget-seconds), a comparison that belongs to this machine")
    r.add_argument("--budget-flops", type=_positive_float("--budget-flops"), default=S, metavar="FLOPS",
                   help="with --match flops: the training budget in matmul/conv FLOPs (e.g. 2e12)")
    r.add_argument("--budget-seconds", type=_positive_float("--budget-seconds"), default=S, metavar="SECONDS",
                   help="with --match time: the seconds of training steps every model trains for (evaluation "
                        "not counted)")
    r.add_argument("--target", type=float, default=S, metavar="ACCURACY",
                   help="the report gives each model's training FLOPs, seconds and epochs to reach this held-out "
                        "accuracy (a fraction, e.g. 0.85; default: the lowest final mean accuracy among the models)")
    r.add_argument("--tune", action="append", default=S, metavar="KEY[=LOW:HIGH]",
                   help="equal tuning effort: every model tries --trials values of this recipe key (lr, "
                        "weight_decay, eps, beta1, beta2, warmup, label_smoothing; repeat or comma-separate for "
                        "several), from a tenth to ten times its recipe value or over LOW:HIGH, each trial trained "
                        "on the training split minus --val-split (default 0.1 when tuning) and scored on the "
                        "validation split; each model's seeds then train with its best value")
    r.add_argument("--trials", type=_int_at_least(2, "--trials", 100), default=S, metavar="N",
                   help="with --tune: trials per model, the same for every model (default: 5)")
    r.add_argument("--tune-per-seed", action="store_true", default=S,
                   help="with --tune: each seed tunes on its own trials (the noise of the choice is then in the "
                        "verdict's interval; costs trials x seeds trainings per model)")
    r.add_argument("--data-dir", default=S, help="directory holding the IDX files (.gz or raw)")
    r.add_argument("--no-verify", action="store_true", default=S,
                   help="skip the checksum check of the data files")
    r.add_argument("--out", default=S, help="parent directory of run directories (default: runs)")
    r.add_argument("--name", default=S, help="run directory name (default: a timestamp)")
    r.add_argument("--train-limit", type=_int_at_least(1, "--train-limit"), default=S,
                   help="use only the first N training images")
    r.add_argument("--test-limit", type=_int_at_least(1, "--test-limit"), default=S,
                   help="use only the first N test images")


def _add_execution_options(r: argparse.ArgumentParser) -> None:
    """How the study runs: output, resume, executor, threads and jobs, MLflow."""
    r.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    r.add_argument("--no-timing", action="store_true",
                   help="skip the latency/throughput/step-time measurements (a few seconds per model)")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run: skip finished units, resume the rest from their "
                        "last epoch checkpoint (the stored configuration is used)")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: units run on this machine, in this process or side by side in worker processes "
                        "(--jobs) (default); ray: one Ray task per unit")
    r.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--threads", type=_threads, default=None, metavar="N|auto",
                   help="CPU threads per unit: auto (default) fixes it from the unit's training-step FLOPs and "
                        "the usable cores, never from the load; N pins it. Recorded per unit; a resumed "
                        "unit keeps its count (CPU results depend on it)")
    r.add_argument("--jobs", type=_auto_or_count("--jobs", "units side by side", MAX_JOBS), default=None,
                   metavar="N|auto",
                   help="units trained side by side in worker processes (local executor): auto (default; "
                        "$ARCHBENCH_JOBS sets it) probes each model's step and runs units side by side where "
                        "the free cores hold them and that is predicted to finish sooner; N pins it. One at a time for "
                        "models given as Python objects. Recorded with the run and each unit")
    r.add_argument("--cpus-per-unit", type=_int_at_least(1, "--cpus-per-unit", MAX_THREADS), default=None,
                   help="CPU threads per unit (Ray: its CPU request, default 1; locally: the same as --threads)")
    r.add_argument("--gpus-per-unit", type=_non_negative_float("--gpus-per-unit"), default=0.0,
                   help="GPUs per Ray task (default 0)")
    r.add_argument("--max-retries", type=_int_at_least(0, "--max-retries"), default=2,
                   help="Ray retries of a unit whose worker died (default 2)")
    r.add_argument("--mlflow", nargs="?", const="default", default=None, metavar="URI",
                   help="log the run to MLflow: a parent run, one nested run per unit with its model "
                        "(default store: sqlite:///<out>/mlflow.db; a directory DIR or file://DIR becomes "
                        "sqlite:///DIR/mlflow.db, artifacts in DIR, as MLflow 3 stores runs in a database)")
    r.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                   help="MLflow experiment (default: the experiment file's name, else 'archbench')")
    r.add_argument("--check-determinism", action="store_true",
                   help="after the run, retrain one unit with the same seed and compare the results")


def _add_report_parsers(sub: _Sub) -> None:
    """report, models, index and compare: the commands that read what was run."""
    rep = sub.add_parser("report", help="rebuild the report (md, html, plots) and tables (csv, tex) from "
                                        "RUN_DIR/results.json")
    rep.add_argument("run_dir")
    rep.add_argument("--format", default="md,html,csv,tex",
                     help="comma-separated: md, html, csv, tex (default: all)")

    sub.add_parser("models", help="list the model registry with parameter counts and FLOPs")

    ix = sub.add_parser("index", help="write RUNS_DIR/index.html: every run, sortable, with a side-by-side view")
    ix.add_argument("runs_dir", nargs="?", default="runs", help="directory holding run directories (default: runs)")

    cmp_ = sub.add_parser("compare", help="merge saved runs into one report")
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--out", default=None, help="output directory (default: runs/compare-<timestamp>); "
                      "must not exist yet or be empty. With --name, the parent directory, as in `run`")
    cmp_.add_argument("--name", default=None, help="the merged run's directory name: it goes to OUT/NAME "
                      "(OUT: --out, default runs), as `archbench run --out OUT --name NAME` places a run")
    cmp_.add_argument("--force", action="store_true",
                      help="write into an --out that already holds files (replacing its results.json and reports)")


def _add_profile_parser(sub: _Sub) -> None:
    pr = sub.add_parser("profile", help="measure one model's costs (no training): layers, FLOPs, memory, size, speed")
    pr.add_argument("model", help="registry name or package.module:function")
    pr.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"), default=None,
                    help="training batch size (default: the model's recipe, 64 for the seed recipe)")
    pr.add_argument("--device", type=_train_flag_type("device", "--device"), default="auto",
                    help="auto, cpu, cuda or cuda:N (default: auto)")
    pr.add_argument("--train-samples", type=_int_at_least(1, "--train-samples"), default=None,
                    help="samples per epoch for the per-epoch/per-run FLOPs (default: the dataset's training "
                         "images, 60000 for Fashion-MNIST)")
    pr.add_argument("--epochs", type=_int_at_least(1, "--epochs"), default=None,
                    help="epochs for the per-run FLOPs (default: the model's recipe)")
    pr.add_argument("--no-timing", action="store_true", help="skip latency/throughput/step-time measurements")
    pr.add_argument("--json", action="store_true", help="print the measurements as JSON")
    pr.add_argument("--dataset", default=None, metavar="NAME|PATH",
                    help="build the model for this dataset's image shape and classes, and count its training "
                         "images per epoch (as `run --dataset`; default: Fashion-MNIST's 1x28x28, 10 classes)")
    pr.add_argument("--data-dir", default=None, help="directory holding a registered dataset's IDX files")
    pr.add_argument("--out", default=None, metavar="DIR",
                    help="keep the files whose sizes are measured (safetensors, .pt, ONNX) in DIR")


def _add_data_parser(sub: _Sub) -> None:
    d = sub.add_parser("data", help="dataset commands")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    f = dsub.add_parser("fetch", help="download and verify the dataset")
    f.add_argument("--dest", default=None, help="target directory (default: the user cache, searched by `run`)")
    f.add_argument("--dataset", default="fashion-mnist")
    f.add_argument("--mirror", action="append", default=None, help="base URL to download from (repeatable)")
    f.add_argument("--timeout", type=_positive_float("--timeout"), default=60.0)
    i = dsub.add_parser("info", help="where the dataset is found, and whether it verifies")
    i.add_argument("--data-dir", default=None)
    i.add_argument("--dataset", default="fashion-mnist")


def _log(quiet: bool) -> Callable[[str], None]:
    from archbench.run.progress import write

    return (lambda s: None) if quiet else write  # above any live progress bars, never into them


# Command-line dests that are configuration keys (everything else is how to run).
_STUDY_DESTS = ("models", "seeds", "repeats", "dataset", "data_dir", "no_verify", "out", "name", "train_limit",
                "test_limit", "val_split", "match", "budget_flops", "budget_seconds", "target", "tune", "trials",
                "tune_per_seed")


def _auto_or_count(what: str, unit: str, maximum: int) -> Callable[[str], int | str]:
    from archbench.config import auto_or_count

    def parse(v: str) -> int | str:
        parsed = auto_or_count(v, maximum)
        if parsed is None:
            raise argparse.ArgumentTypeError(f"{what} {v!r} is invalid: expected auto or an integer from 1 to "
                                             f"{maximum} ({unit}).")
        return parsed
    return parse


_threads = _auto_or_count("--threads", "intra-op threads per unit", MAX_THREADS)


def explicit_options(args: argparse.Namespace) -> dict:
    """The configuration options given on this command line (absent ones
    are absent: the parser's defaults are SUPPRESS), as config keys."""
    from archbench.config import TRAIN_KEYS

    given = vars(args)
    out = {k: given[k] for k in (*_STUDY_DESTS, *TRAIN_KEYS) if k in given}
    if "repeats" in out:
        if "seeds" in out:
            raise UsageError("give either --seeds or --repeats, not both.")
        out["seeds"] = list(range(out.pop("repeats")))
    if out.pop("no_verify", False):
        out["verify"] = False
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from archbench.config import ExecutionConfig, Source
    from archbench.records import load_record
    from archbench.report.terminal import terminal_summary
    from archbench.resolve import load_experiment, resolve, resume_config
    from archbench.run.study import RunOptions, run_study

    explicit = explicit_options(args)
    if args.experiment and args.resume:
        raise UsageError("give an experiment file or --resume RUN_DIR, not both (a run stores its configuration).")
    if args.resume:
        # Where the data is may change (it is compared by checksums, not by path); what the study is may not.
        data_dir = explicit.pop("data_dir", None)
        cfg = resume_config(load_record(args.resume)["config"], explicit, where=args.resume)
        if data_dir is not None:
            import dataclasses

            from archbench.config import STUDY_CHECKS, check_value

            cfg = dataclasses.replace(cfg, data_dir=check_value("data_dir", data_dir, STUDY_CHECKS["data_dir"]))
    else:
        experiment = load_experiment(args.experiment) if args.experiment else None
        cfg = resolve(explicit, experiment=experiment, source=Source.CLI)
    mlflow_uri = None
    if args.mlflow is not None:
        from archbench.records import write_error
        from archbench.run.tracking import probe, store_uri

        parent = Path(args.resume).parent if args.resume else Path(cfg.out)
        mlflow_uri, note = store_uri(args.mlflow, parent)  # a directory becomes a SQLite store in it
        if note and not args.quiet:
            _log(False)(note)
        if args.mlflow == "default":
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(exc, f"the MLflow store's directory {parent}", "Choose another --out.") from exc
        probe(mlflow_uri)  # fails now, in seconds, if MLflow is missing, the URI unusable or the server down
    if args.executor == "ray":
        from archbench.run.executors import require_ray

        require_ray()  # before anything is written
    execution = ExecutionConfig.build(
        executor=args.executor, threads=args.threads, jobs=args.jobs, cpus_per_unit=args.cpus_per_unit,
        address=args.address, gpus_per_unit=args.gpus_per_unit, max_retries=args.max_retries,
        mlflow_uri=mlflow_uri, timing=not args.no_timing, check_determinism=args.check_determinism,
        mlflow_experiment=args.mlflow_experiment or (Path(args.experiment).stem if args.experiment else "archbench"))
    from archbench.run.progress import warnings_above_bars

    with warnings_above_bars():  # a warning raised while bars run goes above them
        record, run_dir = run_study(cfg, RunOptions(quiet=args.quiet, log=_log(args.quiet), resume=args.resume,
                                                    execution=execution))
    refresh_index(run_dir.parent, _log(args.quiet))
    if mlflow_uri is not None:
        from archbench.run.tracking import ui_command

        print(f"logged to MLflow ({mlflow_uri}); to browse: {ui_command(mlflow_uri)}")
    failed = sum(u["status"] != "ok" for e in record["models"].values() for u in e["units"])
    det = record.get("determinism_check")
    if det is not None:
        print(f"determinism check ({det.get('model')}, seed {det.get('seed')}): "
              + ("identical results" if det.get("identical") else f"results DIFFER: {det}"))
    if failed:
        print(f"{failed} unit(s) failed; see the report's 'Failed units'.", file=sys.stderr)
    # The answer last, where the user looks: the comparison, the bottom line, the report's path.
    sys.stdout.flush()
    print(terminal_summary(record, run_dir))
    if det is not None and det.get("identical") is False:
        return EXIT_RUNTIME
    return EXIT_RUNTIME if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from archbench.records import load_record, write_error
    from archbench.report import write_reports

    record = load_record(args.run_dir)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():  # given results.json itself: the report goes next to it
        run_dir = run_dir.parent
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    try:
        paths = write_reports(record, run_dir, formats=formats)
    except OSError as exc:
        raise write_error(exc, f"the report into {run_dir}", "Copy results.json into a writable directory and "
                          "run `archbench report` there.") from exc
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def refresh_index(runs_dir: Path, log: Callable[[str], None]) -> None:
    """Rewrite RUNS_DIR/index.html after a run; a failure is reported, not fatal."""
    from archbench.report.index import write_index

    try:
        log(f"updated {write_index(runs_dir)[0]}")
    except OSError as exc:
        log(f"could not update {runs_dir / 'index.html'}: {exc.strerror or exc}")


def cmd_index(args: argparse.Namespace) -> int:
    from archbench.report.index import write_index

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory: give the directory that holds your run directories "
                         "(the --out of `archbench run`, default: runs).")
    try:
        path, runs, skipped = write_index(root)
    except OSError as exc:
        from archbench.records import write_error

        raise write_error(exc, str(root / "index.html"), "Make the directory writable, or index a copy.") from exc
    print(f"wrote {path} ({runs} runs" + (f"; {skipped} unreadable, listed on the page" if skipped else "") + ")")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import shutil

    from archbench.measure import count_forward, count_parameters
    from archbench.models import create_model, get_entry, list_models
    from archbench.report.table import wrapped_table
    from archbench.report.units import fmt_count
    from archbench.train.evaluate import tta_views

    rows = []
    for name in list_models():
        e = get_entry(name)
        m = create_model(name)
        recipe = ", ".join(f"{k}={v}" for k, v in (e.recipe or {}).items()) or "seed recipe"
        expected = "; ".join(f"{k}: {v}" for k, v in (e.expected or {}).items()) or "n/a"
        fwd = count_forward(m, e.input_shape)
        # One view; a recipe that averages test-time views evaluates (and a run's table shows) that many times it.
        views = len(tta_views(bool((e.recipe or {}).get("tta_flip")), int((e.recipe or {}).get("tta_shift") or 0)))
        flops = fmt_count(fwd.matmul_conv) + (f"; {fmt_count(views * fwd.matmul_conv)} as evaluated ({views} views)"
                                              if views > 1 else "") \
            + (" (partial: " + ", ".join(sorted(fwd.uncounted)) + " uncounted)" if fwd.partial else "")
        mi = e.min_input
        smallest = "fixed " + "x".join(map(str, e.input_shape)) if mi is None else f"{mi[0]}x{mi[1]}"
        rows.append((name, fmt_count(count_parameters(m)["trainable"]), flops, smallest, expected, e.description))
        rows.append(("", "", "", "", "", "  recipe: " + recipe))
    width = shutil.get_terminal_size((100, 24)).columns  # fitted to the terminal ($COLUMNS), 100 in a pipe
    print(wrapped_table(("Model", "Params", "FLOPs/sample (1 view)", "Smallest input", "Expected (measured)",
                         "Description"), rows, width, wrap=(2, 4, 5)))
    import textwrap

    print("\n" + textwrap.fill("Params and FLOPs for 1x28x28 images in 10 classes (Fashion-MNIST); each model is "
                               "built for the data it is run on (`archbench profile NAME --dataset ...`). Smallest "
                               "input: the least height x width it takes.", width))
    return 0


def _check_compare_out(out: Path, run_dirs: list[str], force: bool) -> None:
    """compare never overwrites a run: an --out that is one of the compared
    runs is refused, and one that already holds files needs --force."""
    def run_dir(d: str) -> Path:
        try:
            return (Path(d) if Path(d).is_dir() else Path(d).parent).resolve()
        except OSError:  # a name the OS cannot look up (too long): not the --out
            return Path(d)

    sources = {run_dir(d) for d in run_dirs}
    if out.resolve() in sources:
        raise UsageError(f"--out {out} is one of the runs being compared: writing there would replace that run's "
                         "results.json. Choose another --out.")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory. Choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "holds a run (results.json)" if (out / "results.json").exists() else "is not empty"
        raise UsageError(f"--out {out} already exists and {what}; compare does not overwrite it. Choose another "
                         "--out, or add --force to replace its results.json and reports.")


def cmd_compare(args: argparse.Namespace) -> int:
    from archbench.records import merge_records, save_record, write_error
    from archbench.report import write_reports
    from archbench.report.terminal import terminal_summary
    from archbench.run.study import default_run_name

    records, skipped = readable_records(args.run_dirs)
    if args.name is not None:  # as `run`: --out is the parent
        from archbench.config import STUDY_CHECKS, check_value

        out = Path(args.out or "runs") / check_value("name", args.name, STUDY_CHECKS["name"])
    else:
        out = Path(args.out) if args.out else Path("runs") / f"compare-{default_run_name()}"
    _check_compare_out(out, args.run_dirs, args.force)
    merged = merge_records(records, out.name)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_record(merged, out)
        write_reports(merged, out)
    except OSError as exc:
        raise write_error(exc, f"the comparison into {out}", "Choose a writable --out.") from exc
    print(terminal_summary(merged, out))
    if skipped:
        print(f"archbench: skipped {len(skipped)} run(s) it cannot read (not in the comparison):\n  - "
              + "\n  - ".join(skipped), file=sys.stderr)
        return EXIT_DATA
    return 0


def readable_records(run_dirs: list[str]) -> tuple[list[RunRecord], list[str]]:
    """The records of the runs that read, and the errors of those that do not
    (compare goes on without them); none readable is the error itself."""
    from archbench.records import RecordError, load_record

    records, skipped, errors = [], [], []
    for d in run_dirs:
        try:
            records.append(load_record(d))
        except ArchbenchError as exc:
            errors.append(exc)
            skipped.append(str(exc))
    if not records and len(errors) == 1:
        raise errors[0]
    if not records:
        raise RecordError("none of the runs can be read:\n  - " + "\n  - ".join(skipped))
    return records, skipped


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from archbench.profiling import profile_record
    from archbench.report.profile import render_profile

    record = profile_record(args.model, device=args.device, batch_size=args.batch_size, epochs=args.epochs,
                            dataset=args.dataset, data_dir=args.data_dir, train_samples=args.train_samples,
                            timing=not args.no_timing, files_dir=args.out)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(render_profile(record))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from archbench.data import fetch_dataset

    if args.data_command == "fetch":
        paths = fetch_dataset(args.dataset, args.dest, args.mirror, args.timeout, log=_log(False))
        print(f"{args.dataset}: {len(paths)} files verified in {Path(next(iter(paths.values()))).parent}")
        return 0
    if args.data_command == "info":
        from archbench.data import load_data
        from archbench.resolve import check_dataset

        name = check_dataset(args.dataset, "--dataset: ")
        ds = load_data(name, args.data_dir)
        card = ds.describe()
        for role, path in ds.files.items():
            print(f"{role:13s} {path}")
        if ds.verified and ds.verification:
            print(f"verified ({ds.verification}): all {len(ds.files)} files match")
        k = ds.num_classes
        print(f"{card['name']}: {len(ds.train_labels):,} train / {len(ds.test_labels):,} test images of "
              f"{' x '.join(map(str, ds.image_shape))} (C x H x W), {k} class{'' if k == 1 else 'es'}")
        shown = 20
        names = ", ".join(f"{i} {name}" if name != str(i) else name for i, name in enumerate(ds.classes[:shown]))
        print(f"classes: {names}" + (f", … ({k - shown} more)" if k > shown else ""))
        if card.get("identity_sha256"):
            print(f"identity (SHA-256): {card['identity_sha256']}")
        for split, counts in (card.get("class_counts") or {}).items():
            print(f"{split:5s} class counts: {', '.join(map(str, counts))}")
        balance = {split: b for split, b in (card.get("balance") or {}).items() if b is not None}
        if balance:
            print("balance (smallest class / largest): "
                  + ", ".join(f"{split} {b:.2f}" for split, b in balance.items()))
        norm = card.get("normalization") or {}
        if norm:
            print(f"training split, per channel: mean {norm.get('mean')}, std {norm.get('std')} (of x / 255)")
        for note in card.get("notes") or []:
            print(f"note: {note}")
        return 0
    print("usage: archbench data {fetch,info} (see archbench data --help)", file=sys.stderr)
    return EXIT_USAGE


def _encodable_output() -> None:
    """Where stdout or stderr cannot encode a character archbench prints
    (PYTHONIOENCODING=ascii, a C locale: '–', '±', 'µ'), it is written as a
    backslash escape instead of failing the command with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change: left as it is
                reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (argparse's own exits for
    --help, --version and bad usage included)."""
    from archbench.run.signals import stop_on_signals, stop_requested

    _encodable_output()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help/--version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"run": cmd_run, "report": cmd_report, "models": cmd_models, "data": cmd_data,
               "profile": cmd_profile, "compare": cmd_compare, "index": cmd_index}[args.command]
    interrupted = ("\narchbench: interrupted; finished units are saved in the run directory's results.json "
                   "(archbench run --resume RUN_DIR continues).")
    # SIGTERM stops a run as Ctrl-C does; a stop request is honoured even if its
    # KeyboardInterrupt was swallowed on the way (archbench.run.signals).
    with stop_on_signals(sigterm=True):
        try:
            with warnings.catch_warnings():
                if not sys.warnoptions:  # third-party warnings reach the terminal only when asked (python -W ...)
                    warnings.simplefilter("ignore")
                code = handler(args)
        except ArchbenchError as exc:
            if args.debug:
                raise
            print(f"archbench: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return EXIT_INTERRUPTED
        except OSError as exc:  # a path no option check caught: too long, or a symbolic link loop
            if args.debug or exc.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
                raise
            print(f"archbench: error: {path_error(exc.filename, 'path', exc)}", file=sys.stderr)
            return EXIT_USAGE
        if stop_requested() is not None:
            print(interrupted, file=sys.stderr)
            return EXIT_INTERRUPTED
        return code
