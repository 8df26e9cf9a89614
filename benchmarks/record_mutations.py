"""Issue 29's acceptance: N random mutations of a real 2-model, 2-seed
results.json (delete, retype, NaN, resize or rename 1-3 fields; one in twenty
also cut short) through ``load_run``, ``report``, ``compare``, ``index`` and
``run --resume``: count the exit codes, the tracebacks (an exception out of the
CLI, or "Traceback" printed) and the records changed on disk.

The mutations are tests/test_record_mutations.py's; plots are off (7 s each on
two cores; a record that reads has passed the checks they need). A resume that
accepts a record may train what the record lacks and rewrite it: only a refused
resume must leave it unchanged.

Usage: python benchmarks/record_mutations.py RUN_DIR [--n 1000] [--seed 0] [--resume-n 100]
  RUN_DIR: a finished run, e.g. archbench run --models mlp,logreg --seeds 0,1 --train-limit 300
  --test-limit 200 --epochs 1 --no-timing --out /tmp/m --name good
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import archbench  # noqa: E402
import archbench.report.plots as plots  # noqa: E402
from archbench.cli import main  # noqa: E402
from archbench.errors import ArchbenchError  # noqa: E402
from tests.test_record_mutations import RETYPED, mutate, paths_of  # noqa: E402

OPS = ["delete", "retype", "retype", "nan", "resize", "rename"]


def damaged(good: dict, places: list, rnd: random.Random) -> tuple[bytes, list]:
    rec, what = good, []
    for _ in range(rnd.randint(1, 3)):
        place, op, arg = rnd.choice(places), rnd.choice(OPS), rnd.randint(0, 100)
        try:
            out = mutate(rec, place, op, arg)
        except (KeyError, IndexError, TypeError):
            continue
        rec = out if out is not None else RETYPED[arg % len(RETYPED)]
        what.append((op, place, arg))
    text = json.dumps(rec, allow_nan=True).encode()
    if rnd.random() < 0.05:
        cut = rnd.randint(0, len(text) - 1)
        text, what = text[:cut], [*what, f"truncate at {cut}"]
    return text, what


def one(reader: str, argv: list[str] | None, run_dir: Path) -> tuple[int | None, str | None]:
    """(exit code, None) or (None, the traceback's last line)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            if argv is None:
                try:
                    archbench.load_run(run_dir).summary()
                    rc = 0
                except ArchbenchError as exc:
                    rc = exc.exit_code
            else:
                rc = main(argv)
        return (rc, None) if "Traceback" not in err.getvalue() else (None, f"{reader}: traceback printed")
    except Exception as exc:  # noqa: BLE001 - what the acceptance counts
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return None, f"{reader}: {type(exc).__name__}: {exc} @ {tb.filename.split('archbench/')[-1]}:{tb.lineno}"


def main_(args: argparse.Namespace) -> None:
    plots.make_plots = lambda *a, **k: []
    good = json.loads((Path(args.run_dir) / "results.json").read_text())
    rnd = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="mutations-")) / "handmade"
    shutil.copytree(args.run_dir, root / "good")
    renamed = {**good, "name": "mut"}
    places = paths_of(renamed)
    codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes: collections.Counter = collections.Counter()
    changed = collections.Counter()
    d = root / "mut"
    d.mkdir()
    for _ in range(args.n):
        text, _what = damaged(renamed, places, rnd)
        (d / "results.json").write_bytes(text)
        digest = hashlib.sha256(text).hexdigest()
        for reader, argv in (("load_run", None), ("report", ["report", str(d), "--format", "md,html,csv,tex"]),
                             ("compare", ["compare", str(d), str(root / "good"), "--out", str(root / "cmp"),
                                          "--force"]), ("index", ["index", str(root)])):
            rc, crash = one(reader, argv, d)
            codes[reader][rc] += 1
            if crash:
                crashes[crash] += 1
            if hashlib.sha256((d / "results.json").read_bytes()).hexdigest() != digest:
                changed[reader] += 1
    places = paths_of(good)
    for _ in range(args.resume_n):
        r = root / "runs" / "good"
        shutil.rmtree(r, ignore_errors=True)
        shutil.copytree(args.run_dir, r)
        text, _what = damaged(good, places, rnd)
        (r / "results.json").write_bytes(text)
        digest = hashlib.sha256(text).hexdigest()
        rc, crash = one("resume", ["run", "--resume", str(r), "--quiet", "--no-timing"], r)
        codes["resume"][rc] += 1
        if crash:
            crashes[crash] += 1
        if rc != 0 and hashlib.sha256((r / "results.json").read_bytes()).hexdigest() != digest:
            changed["resume"] += 1
    print(f"{args.n} mutations (load_run, report, compare, index), {args.resume_n} (resume); seed {args.seed}")
    for reader, c in codes.items():
        print(f"  {reader:8s} exit codes {dict(sorted(c.items(), key=str))}; records changed on disk: "
              f"{changed[reader]}")
    print(f"  tracebacks: {sum(crashes.values())}")
    for k, v in crashes.most_common():
        print(f"    {v} x {k[:300]}")
    shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--resume-n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    main_(p.parse_args())
