"""Command-line interface: the only module that knows every part.

    archbench run [--models mlp,cnn] [--seeds 0,1,2] [--epochs 5] ...
    archbench report RUN_DIR
    archbench models
    archbench data fetch [--dest DIR] | archbench data info

Exit codes: 0 ok, 2 usage/config, 3 data, 4 runtime failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archbench.errors import EXIT_RUNTIME, EXIT_USAGE, ArchbenchError, UsageError


def _int_at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= {lo}, got {v}")
        return v

    return parse


def _positive_float(what: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number > 0, got {text!r}") from None
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number > 0, got {text}")
        return v

    return parse


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("seeds must name at least one integer, e.g. --seeds 0")
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds {text!r} repeat a value")
    return seeds


def _models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give at least one model, e.g. --models mlp,cnn")
    return models


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from archbench import __version__

    p = argparse.ArgumentParser(prog="archbench", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"archbench {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="train and measure models, write runs/<name>/ (default: the seed study)")
    r.add_argument("experiment", nargs="?", default=None,
                   help="an experiment file (TOML; see examples/); options given here override it")
    r.add_argument("--models", type=_models, default=["mlp", "cnn"],
                   help="comma-separated registry names or package.module:function (default: mlp,cnn)")
    r.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    r.add_argument("--repeats", type=_int_at_least(1, "--repeats"), default=None,
                   help="shorthand for --seeds 0,1,...,N-1")
    r.add_argument("--epochs", type=_int_at_least(1, "--epochs"), default=5)
    r.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"), default=64)
    r.add_argument("--lr", type=_positive_float("--lr"), default=1e-3)
    r.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    r.add_argument("--dataset", default="fashion-mnist",
                   help="registered IDX dataset to train and test on: fashion-mnist, mnist or kmnist (default: fashion-mnist)")
    r.add_argument("--data-dir", default=None, help="directory holding the IDX files (.gz or raw)")
    r.add_argument("--no-verify", action="store_true", help="skip the checksum check of the data files")
    r.add_argument("--out", default="runs", help="parent directory of run directories (default: runs)")
    r.add_argument("--name", default=None, help="run directory name (default: a timestamp)")
    r.add_argument("--train-limit", type=_int_at_least(1, "--train-limit"), default=None,
                   help="use only the first N training images")
    r.add_argument("--test-limit", type=_int_at_least(1, "--test-limit"), default=None,
                   help="use only the first N test images")
    r.add_argument("--formulation", choices=("fast", "plain"), default="fast",
                   help="CPU training formulation: fast (channels-last, same maths) or plain eager")
    r.add_argument("--no-cuda-graphs", action="store_true", help="on CUDA, run the step eagerly")
    r.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    r.add_argument("--no-timing", action="store_true",
                   help="skip the latency/throughput/step-time measurements (a few seconds per model)")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run: skip finished units, resume the rest from their "
                        "last epoch checkpoint (the stored configuration is used)")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: units run in this process (default); ray: one Ray task per unit")
    r.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--cpus-per-unit", type=_int_at_least(1, "--cpus-per-unit"), default=None,
                   help="CPU threads per unit (Ray: its CPU request; default 1 on Ray, all cores locally)")
    r.add_argument("--gpus-per-unit", type=float, default=0.0, help="GPUs per Ray task (default 0)")
    r.add_argument("--max-retries", type=_int_at_least(0, "--max-retries"), default=2,
                   help="Ray retries of a unit whose worker died (default 2)")
    r.add_argument("--mlflow", nargs="?", const="default", default=None, metavar="URI",
                   help="log every unit to MLflow (default store: sqlite:///<out>/mlflow.db)")
    r.add_argument("--check-determinism", action="store_true",
                   help="after the run, retrain one unit with the same seed and compare the results")

    rep = sub.add_parser("report", help="rebuild report.md, report.html and plots from RUN_DIR/results.json")
    rep.add_argument("run_dir")

    sub.add_parser("models", help="list the model registry with parameter counts and FLOPs")

    cmp_ = sub.add_parser("compare", help="merge saved runs into one report")
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--out", default=None, help="output directory (default: runs/compare-<timestamp>)")

    pr = sub.add_parser("profile", help="measure one model's costs (no training): layers, FLOPs, memory, size, speed")
    pr.add_argument("model", help="registry name or package.module:function")
    pr.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"), default=64)
    pr.add_argument("--device", type=_device, default="auto")
    pr.add_argument("--train-samples", type=_int_at_least(1, "--train-samples"), default=60000,
                    help="samples per epoch for the per-epoch/per-run FLOPs (default 60000)")
    pr.add_argument("--epochs", type=_int_at_least(1, "--epochs"), default=5)
    pr.add_argument("--no-timing", action="store_true", help="skip latency/throughput/step-time measurements")
    pr.add_argument("--json", action="store_true", help="print the measurements as JSON")

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
    return p


def _log(quiet: bool):
    return (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))


# CLI option -> where it lives in the resolved configuration
_RUN_OPTIONS = {
    "models": ("models",), "seeds": ("seeds",), "repeats": ("seeds",), "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"), "lr": ("train", "lr"), "device": ("train", "device"),
    "dataset": ("dataset",), "data_dir": ("data_dir",), "no_verify": ("verify",), "train_limit": ("train_limit",),
    "test_limit": ("test_limit",), "formulation": ("train", "formulation"),
    "no_cuda_graphs": ("train", "cuda_graphs"),
}


def _config_from_args(args) -> dict:
    seeds = list(range(args.repeats)) if args.repeats else args.seeds
    return {
        "models": args.models, "seeds": seeds, "dataset": args.dataset, "data_dir": args.data_dir,
        "verify": not args.no_verify, "train_limit": args.train_limit, "test_limit": args.test_limit,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "beta1": 0.9,
                  "beta2": 0.999, "eps": 1e-7, "device": args.device, "formulation": args.formulation,
                  "cuda_graphs": not args.no_cuda_graphs, "eval_batch_size": 1000},
    }


def _overlay(base: dict, wanted: dict, explicit: set[str]) -> dict:
    """``base`` (a resolved configuration) with the options given explicitly
    on the command line (as found in ``wanted``) laid over it."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for dest in explicit:
        path = _RUN_OPTIONS.get(dest)
        if path and len(path) == 1:
            out[path[0]] = wanted[path[0]]
        elif path:
            out[path[0]][path[1]] = wanted[path[0]][path[1]]
    return out


def cmd_run(args) -> int:
    from archbench.experiment import load_experiment, resolve_models
    from archbench.records import load_record
    from archbench.report import TABLE_HEAD, comparison_rows, text_table
    from archbench.study import StudyConfig, run_study

    wanted = _config_from_args(args)
    explicit_train = {path[1]: (wanted["train"][path[1]]) for dest in args.explicit
                      if len((path := _RUN_OPTIONS.get(dest, ()))) == 2}
    if args.experiment and args.resume:
        raise UsageError("give an experiment file or --resume RUN_DIR, not both (a run stores its configuration).")
    if args.experiment:
        cfg = load_experiment(args.experiment, args.dataset if "dataset" in args.explicit else None)
        base = _overlay(cfg.to_dict(), wanted, args.explicit)  # command-line options override the file
        base["model_train"] = {m: {k: v for k, v in o.items() if k not in explicit_train}
                               for m, o in base["model_train"].items()}
        cfg = StudyConfig.from_dict(base, out=args.out if "out" in args.explicit else cfg.out,
                                    name=args.name or cfg.name)
    elif args.resume:
        # The stored configuration, with any option given explicitly on this
        # command line laid over it (run_study refuses if that changes it).
        cfg = StudyConfig.from_dict(_overlay(load_record(args.resume)["config"], wanted, args.explicit))
    else:
        wanted["model_train"] = resolve_models(wanted["models"], explicit_train, dataset=wanted["dataset"])
        cfg = StudyConfig.from_dict(wanted, out=args.out, name=args.name)
    mlflow_uri = None
    if args.mlflow is not None:
        from archbench.tracking import _client, default_uri

        parent = Path(args.resume).parent if args.resume else Path(cfg.out)
        mlflow_uri = default_uri(parent) if args.mlflow == "default" else args.mlflow
        parent.mkdir(parents=True, exist_ok=True)
        _client(mlflow_uri)  # fails now, with the install hint, if MLflow is missing
    if args.executor == "ray":
        from archbench.executors import require_ray

        require_ray()  # before anything is written
    options = {"cpus_per_unit": args.cpus_per_unit}
    if args.executor == "ray":
        options.update(address=args.address, cpus_per_unit=args.cpus_per_unit or 1,
                       gpus_per_unit=args.gpus_per_unit, max_retries=args.max_retries)
    record, run_dir = run_study(cfg, quiet=args.quiet or args.executor == "ray", log=_log(args.quiet),
                                resume=args.resume, check_determinism=args.check_determinism,
                                timing=not args.no_timing, executor=args.executor, executor_options=options,
                                mlflow_uri=mlflow_uri)
    print(text_table(TABLE_HEAD, comparison_rows(record)))
    print(f"\nwrote {run_dir / 'results.json'}, {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    failed = sum(u.get("status") != "ok" for e in record["models"].values() for u in e["units"])
    det = record.get("determinism_check")
    if det is not None:
        print(f"determinism check ({det.get('model')}, seed {det.get('seed')}): "
              + ("identical results" if det.get("identical") else f"results DIFFER: {det}"))
        if det.get("identical") is False:
            return EXIT_RUNTIME
    if failed:
        print(f"{failed} unit(s) failed; see the report's 'Failed units'.", file=sys.stderr)
    return EXIT_RUNTIME if failed else 0


def cmd_report(args) -> int:
    from archbench.records import load_record
    from archbench.report import write_reports

    record = load_record(args.run_dir)
    paths = write_reports(record, args.run_dir)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0


def cmd_models(args) -> int:
    from archbench.measure import count_forward, count_parameters
    from archbench.models import create_model, get_entry, list_models
    from archbench.report import text_table
    from archbench.report.units import fmt_count

    rows = []
    for name in list_models():
        e = get_entry(name)
        m = create_model(name)
        recipe = ", ".join(f"{k}={v}" for k, v in (e.recipe or {}).items()) or "seed recipe"
        expected = "; ".join(f"{k}: {v}" for k, v in (e.expected or {}).items()) or "n/a"
        rows.append((name, fmt_count(count_parameters(m)["trainable"]),
                     fmt_count(count_forward(m, e.input_shape).matmul_conv), expected, e.description))
        rows.append(("", "", "", "", "  recipe: " + recipe))
    print(text_table(("Model", "Params", "FLOPs/sample", "Expected (measured)", "Description"), rows))
    return 0


def cmd_compare(args) -> int:
    from archbench.merge import merge_records
    from archbench.records import load_record, save_record
    from archbench.report import TABLE_HEAD, comparison_rows, text_table, write_reports
    from archbench.study import default_run_name

    records = [load_record(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else Path("runs") / f"compare-{default_run_name()}"
    merged = merge_records(records, out.name)
    out.mkdir(parents=True, exist_ok=True)
    save_record(merged, out)
    paths = write_reports(merged, out)
    print(text_table(TABLE_HEAD, comparison_rows(merged)))
    print(f"\nwrote {out / 'results.json'}, {paths['markdown']} and {paths['html']}")
    return 0


def cmd_profile(args) -> int:
    import json

    from archbench.measure import layer_table, measure_model
    from archbench.models import check_model_io, create_model, input_shape_of
    from archbench.report.profile import render_profile
    from archbench.train import resolve_device

    device = resolve_device(args.device)
    shape = input_shape_of(args.model)
    model = create_model(args.model)
    check_model_io(model, args.model, shape)
    record = {
        "model": args.model, "batch_size": args.batch_size, "device": str(device),
        "input_shape": list(shape), "layers": layer_table(model, shape),
        "measurements": measure_model(model, shape, args.batch_size, device, args.train_samples, args.epochs,
                                      timing=not args.no_timing),
    }
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(render_profile(record))
    return 0


def cmd_data(args) -> int:
    from archbench.data import fetch_dataset, get_dataset_spec, load_dataset, locate

    if args.data_command == "fetch":
        paths = fetch_dataset(args.dataset, args.dest, args.mirror, args.timeout, log=_log(False))
        print(f"{args.dataset}: {len(paths)} files verified in {Path(next(iter(paths.values()))).parent}")
        return 0
    if args.data_command == "info":
        spec = get_dataset_spec(args.dataset)
        paths = locate(spec, args.data_dir)
        ds = load_dataset(spec, args.data_dir)
        for role, path in paths.items():
            print(f"{role:13s} {path}")
        print(f"verified ({ds.verification}): all {len(paths)} files match; "
              f"{len(ds.train_labels):,} train / {len(ds.test_labels):,} test images, {spec.num_classes} classes")
        return 0
    print("usage: archbench data {fetch,info} (see archbench data --help)", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        run_parser = parser._subparsers._group_actions[0].choices["run"]
        args.explicit = {dest for dest, value in vars(args).items()
                         if (dest in _RUN_OPTIONS or dest in ("out", "name"))
                         and value != run_parser.get_default(dest)}
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"run": cmd_run, "report": cmd_report, "models": cmd_models, "data": cmd_data,
               "profile": cmd_profile, "compare": cmd_compare}[args.command]
    try:
        return handler(args)
    except ArchbenchError as exc:
        if args.debug:
            raise
        print(f"archbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\narchbench: interrupted; finished units are saved in the run directory's results.json.",
              file=sys.stderr)
        return 130
