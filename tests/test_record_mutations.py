"""Issue 29: a damaged or hand-edited results.json gets one clear error, never a traceback.

A real run (2 models, 2 seeds, a few hundred Fashion-MNIST images, 1 epoch) is
recorded once per module; hypothesis then mutates its results.json (deletes,
retypes, truncates, NaN, resizes fields, cuts the file) and feeds it to every
reader: ``archbench run --resume``, ``report``, ``compare``, ``index`` and
``load_run``. Each must end with an exit code (0, or a named error: 3 for a
record that does not read, 2 for a usage error such as two incompatible runs),
print no traceback and leave the record on disk byte for byte as it was
(except a resume that accepted it and went on). Plots are off in the
mutation loop (7 s each on two cores; a record that reads has passed the checks
the plots need, and test_plots_of_a_record_that_reads runs them).

``ARCHBENCH_MUTATIONS=1000`` runs the acceptance's 1,000 mutations per reader
(benchmarks/record_mutations.py reports the outcome); the default is a few
dozen, for a test file that runs in well under a minute.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archbench
from archbench.cli import main
from archbench.errors import ArchbenchError
from archbench.records import RecordError, load_record

N = int(os.environ.get("ARCHBENCH_MUTATIONS", "25"))
OUTCOMES: dict[str, Counter] = {}  # reader -> Counter of exit codes (the benchmark prints them)


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, fashion_dir):
    """A real run: mlp and logreg, seeds 0 and 1, 300 training and 200 test images, 1 epoch."""
    import archbench.report.plots as plots

    root = tmp_path_factory.mktemp("mutations")
    with pytest.MonkeyPatch.context() as mp:  # the run's own report: no plots (test_plots_of_a_record_that_reads)
        mp.setattr(plots, "make_plots", lambda *a, **k: [])
        rc = main(["run", "--models", "mlp,logreg", "--seeds", "0,1", "--train-limit", "300", "--test-limit",
                   "200", "--epochs", "1", "--no-timing", "--quiet", "--device", "cpu", "--data-dir",
                   str(fashion_dir), "--out", str(root / "runs"), "--name", "good"])
    assert rc == 0
    good = root / "runs" / "good"
    record = json.loads((good / "results.json").read_text())
    assert len(record["models"]) == 2 and all(len(e["units"]) == 2 for e in record["models"].values())
    return root, good, record


@pytest.fixture
def no_plots(monkeypatch):
    import archbench.report.plots as plots

    monkeypatch.setattr(plots, "make_plots", lambda *a, **k: [])


# --------------------------------------------------------------------------- mutations

RETYPED = [None, True, False, 0, -1, 1, 7, 2**64, -(2**63) - 1, 0.5, -0.5, 1e308, 1.5, "", "x", "ok", "failed",
           [], [0], [1, 2, 3], ["a"], {}, {"a": 1}, {"seed": 0}, [{}]]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def paths_of(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every place in ``obj``, a list's items shortened to its first two and its last."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, (*path, k))
    elif isinstance(obj, list):
        for i in sorted({0, 1, len(obj) - 1} & set(range(len(obj)))):
            out += paths_of(obj[i], (*path, i))
    return out


def _resized(v: Any, how: int) -> Any:
    if isinstance(v, list):
        return [v[:len(v) // 2], v[:-1], v + v[-1:], v + v, [], v * 3][how % 6]
    if isinstance(v, dict):
        keys = list(v)
        return [dict(list(v.items())[: len(keys) // 2]), {**v, "zz_extra": [1, {"x": None}]}, {}][how % 3]
    if isinstance(v, str):
        return ["", v * 50, v[: len(v) // 2]][how % 3]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [v * 1000, -v - 1, v + 0.25, 2**62, -(10**20)][how % 5]
    return v


def mutate(record: dict, place: tuple, op: str, arg: int) -> dict | None:
    """``record`` with one change at ``place``; None for the whole record replaced."""
    rec = copy.deepcopy(record)
    if not place:
        return None
    parent = rec
    for p in place[:-1]:
        parent = parent[p]
    key = place[-1]
    if op == "delete":
        del parent[key]
    elif op == "retype":
        parent[key] = RETYPED[arg % len(RETYPED)]
    elif op == "nan":
        parent[key] = NON_FINITE[arg % len(NON_FINITE)]
    elif op == "resize":
        parent[key] = _resized(parent[key], arg)
    elif op == "rename" and isinstance(parent, dict):
        parent[f"{key}_renamed"] = parent.pop(key)
    return rec


@st.composite
def damaged(draw: Any, record: dict) -> tuple[str, bytes]:
    """(what was done, the bytes of a damaged results.json)."""
    places = paths_of(record)
    rec: Any = record
    done = []
    for _ in range(draw(st.integers(1, 3))):
        place = places[draw(st.integers(0, len(places) - 1))]
        op = draw(st.sampled_from(["delete", "retype", "retype", "nan", "resize", "rename"]))
        arg = draw(st.integers(0, 100))
        try:
            out = mutate(rec, place, op, arg)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or retyped the place
            continue
        rec = out if out is not None else RETYPED[arg % len(RETYPED)]
        done.append(f"{op} {'.'.join(map(str, place)) or '<record>'} ({arg})")
    text = json.dumps(rec, allow_nan=True, indent=1).encode()
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # one in twenty: the file cut short
        cut = draw(st.integers(0, len(text) - 1))
        text = text[:cut]
        done.append(f"truncate at byte {cut}")
    return "; ".join(done) or "unchanged", text


def _write(run_dir: Path, text: bytes, name: str = "mut") -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_bytes(text)
    return hashlib.sha256(text).hexdigest()


def _digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest()


def _renamed(record: dict, name: str) -> dict:
    """The good record under another name (compare refuses two runs of one name)."""
    return {**record, "name": name}


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])  # an exception here is the traceback the issue is about
    out, err = capsys.readouterr()
    assert isinstance(rc, int) and "Traceback" not in out + err, err
    return rc, err


def _reads(run_dir: Path) -> bool:
    try:
        load_record(run_dir)
    except RecordError:
        return False
    return True


def _note(reader: str, rc: int) -> None:
    OUTCOMES.setdefault(reader, Counter())[rc] += 1


# --------------------------------------------------------------------------- the readers


@pytest.fixture(scope="module")
def strategy(recorded):
    return damaged(_renamed(recorded[2], "mut"))


def _handmade(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mutated") / "handmade"  # the session check allows NaN in results.json only here
    d.mkdir()
    return d


def test_load_run_and_load_record(recorded, tmp_path_factory):
    root = _handmade(tmp_path_factory)

    @fuzz(N)
    @given(strategy=st.data())
    def check(strategy):
        what, text = strategy.draw(damaged(_renamed(recorded[2], "mut")))
        run_dir = root / "runs" / "mut"
        digest = _write(run_dir, text)
        try:
            result = archbench.load_run(run_dir)
        except ArchbenchError as exc:
            assert exc.exit_code == 3, (what, exc)
            assert isinstance(exc, RecordError) and str(run_dir / "results.json") in str(exc), (what, exc)
            assert "\n" not in str(exc) and "Traceback" not in str(exc)
            _note("load_run", 3)
        else:
            assert result.record["models"] is not None
            result.summary()  # the Python API's own reading of it
            _note("load_run", 0)
        assert _digest(run_dir) == digest, what

    check()


def test_report(recorded, tmp_path_factory, capsys, no_plots):
    root = _handmade(tmp_path_factory)

    @fuzz(N)
    @given(strategy=st.data())
    def check(strategy):
        what, text = strategy.draw(damaged(_renamed(recorded[2], "mut")))
        run_dir = root / "mut"
        digest = _write(run_dir, text)
        for f in ("report.md", "report.html"):
            (run_dir / f).unlink(missing_ok=True)
        rc, err = _cli(capsys, "report", run_dir, "--format", "md,html")
        assert rc in (0, 3), (what, rc, err)
        assert (rc == 0) == _reads(run_dir), (what, err)
        assert (rc == 0) == (run_dir / "report.md").exists(), (what, err)  # nothing written for a refused record
        if rc == 3:
            assert f"{run_dir / 'results.json'}: " in err and err.count("archbench: error:") == 1, err
        assert _digest(run_dir) == digest, what
        _note("report", rc)

    check()


def test_compare(recorded, tmp_path_factory, capsys, no_plots):
    root = _handmade(tmp_path_factory)
    _, good, _ = recorded

    @fuzz(N)
    @given(strategy=st.data(), n=st.integers(0, 10**9))
    def check(strategy, n):
        what, text = strategy.draw(damaged(_renamed(recorded[2], "mut")))
        run_dir = root / "mut"
        digest, good_digest = _write(run_dir, text), _digest(good)
        out = root / f"cmp{n}"
        rc, err = _cli(capsys, "compare", run_dir, good, "--out", out)
        assert rc in (0, 2, 3), (what, rc, err)
        if not _reads(run_dir):  # skipped and listed; the readable run is still reported
            assert rc == 3 and f"{run_dir / 'results.json'}" in err and "skipped" in err, (what, err)
            assert json.loads((out / "results.json").read_text())["merged_from"] == ["good"]
        assert _digest(run_dir) == digest and _digest(good) == good_digest, what
        shutil.rmtree(out, ignore_errors=True)
        _note("compare", rc)

    check()


def test_index(recorded, tmp_path_factory, capsys):
    root = _handmade(tmp_path_factory)
    _, good, record = recorded
    shutil.copytree(good, root / "good")

    @fuzz(N)
    @given(strategy=st.data())
    def check(strategy):
        what, text = strategy.draw(damaged(_renamed(record, "mut")))
        run_dir = root / "mut"
        digest = _write(run_dir, text)
        rc, err = _cli(capsys, "index", root)
        assert rc == 0, (what, err)
        page = (root / "index.html").read_text()
        reads = _reads(run_dir)
        assert ("mut: " in page) != reads, what  # an unreadable run is listed as skipped, with its reason
        assert '"name": "good"' in page.replace('\\"', '"') or '"name":"good"' in page
        assert _digest(run_dir) == digest, what
        _note("index", 0 if reads else 3)

    check()


def test_resume(recorded, tmp_path_factory, capsys, no_plots):
    root = _handmade(tmp_path_factory)
    _, good, record = recorded

    @fuzz(max(N // 5, 5))
    @given(strategy=st.data())
    def check(strategy):
        what, text = strategy.draw(damaged(record))
        run_dir = root / "runs" / "good"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(good, run_dir)
        digest = _write(run_dir, text)
        reads = _reads(run_dir)
        rc, err = _cli(capsys, "run", "--resume", run_dir, "--quiet", "--no-timing")
        assert rc in (0, 2, 3, 4), (what, rc, err)
        if not reads:
            assert rc == 3 and f"{run_dir / 'results.json'}: " in err, (what, err)
        if rc != 0:  # refused: nothing written (an accepted record may be rewritten as the run goes on)
            assert _digest(run_dir) == digest, what
            assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
        _note("resume", rc)

    check()


# --------------------------------------------------------------------------- targeted cases


def _variant(record: dict, change) -> dict:
    rec = copy.deepcopy(record)
    change(rec)
    return rec


CASES = {
    "no config": (lambda r: r.pop("config"), "config: expected an object (RecordedConfig), found nothing"),
    "train as an int": (lambda r: r["config"]["train"].__setitem__("mlp", 3),
                        "config.train.mlp: expected an object, found the number 3"),
    "models as a list": (lambda r: r.__setitem__("models", []), "models: expected an object, found a list"),
    "a unit as a string": (lambda r: r["models"]["mlp"]["units"].__setitem__(1, "x"),
                           "models.mlp.units[1]: expected an object (Unit), found the string 'x'"),
    "a unit without seed": (lambda r: r["models"]["mlp"]["units"][0].pop("seed"),
                            "models.mlp.units[0].seed: expected an integer, found nothing (the key is missing)"),
    "no dataset": (lambda r: r.pop("dataset"), "dataset: expected an object (DatasetCard)"),
    "short predictions": (lambda r: r["models"]["logreg"]["units"][1]["test"].__setitem__("predictions", [1, 2]),
                          "models.logreg.units[1].test.predictions: expected 200 predictions (one per test image), "
                          "found a list of 2 item(s)"),
    "labels as strings": (lambda r: r["dataset"].__setitem__("test_labels", ["a"] * 200),
                          "dataset.test_labels[0]: expected an integer, found the string 'a'"),
    "a class out of range": (lambda r: r["models"]["mlp"]["units"][0]["test"]["predictions"].__setitem__(5, 18),
                             "models.mlp.units[0].test.predictions[5]: expected a class index from 0 to 9, "
                             "found the number 18"),
    "class names short": (lambda r: r["dataset"].__setitem__("classes", ["a"] * 9),
                          "dataset.classes: expected 10 class names (dataset.num_classes)"),
    "accuracy above 1": (lambda r: r["models"]["mlp"]["units"][0]["history"][0].__setitem__("test_acc", 1.5),
                         "models.mlp.units[0].history[0].test_acc: expected an accuracy from 0 to 1, found the "
                         "number 1.5"),
    "a seed twice": (lambda r: r["models"]["mlp"]["units"][1].__setitem__("seed", 0),
                     "models.mlp.units[1].seed: expected a unit distinct from units[0] (the same seed 0)"),
    "a thread count of 2**64": (lambda r: r["models"]["mlp"]["units"][0]["threads"].__setitem__("threads", 2**64),
                                "models.mlp.units[0].threads.threads: expected an integer, found the number "
                                "18446744073709551616"),
    "a NaN history": (lambda r: r["models"]["mlp"]["units"][0]["history"][0].__setitem__("train_loss",
                                                                                         float("nan")),
                      "models.mlp.units[0].history[0].train_loss: expected a finite number or null, found the "
                      "non-JSON token NaN"),
    "an odd status": (lambda r: r["models"]["mlp"]["units"][0].__setitem__("status", "done"),
                      "models.mlp.units[0].status: expected 'ok' or 'failed', found the string 'done'"),
}


CASES["threads of 2**40"] = (lambda r: r["execution"].__setitem__("threads", 2**40),
                             "execution.threads: expected 'auto' or a count from 1 to 4096, found the number "
                             "1099511627776")
CASES["threads as a word"] = (lambda r: r["execution"].__setitem__("threads", "x"),
                              "execution.threads: expected 'auto' or an integer, found the string 'x'")
CASES["no test labels"] = (lambda r: r["dataset"].pop("test_labels"),
                           "dataset.test_labels: expected a list of integers, found nothing (the key is missing)")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_reported_damage_names_the_file_and_the_field(recorded, tmp_path_factory, capsys, case):
    change, words = CASES[case]
    root = _handmade(tmp_path_factory)
    run_dir = root / "bad"
    digest = _write(run_dir, json.dumps(_variant(recorded[2], change), allow_nan=True).encode())
    for args in (["report", run_dir], ["run", "--resume", run_dir, "--quiet"]):
        rc, err = _cli(capsys, *args)
        assert rc == 3 and f"archbench: error: {run_dir / 'results.json'}: {words}" in err, (args, err)
        assert "restore it from a copy" in err or "Replace it with null" in err
    with pytest.raises(RecordError, match="expected"):
        archbench.load_run(run_dir)
    assert _digest(run_dir) == digest and sorted(p.name for p in run_dir.iterdir()) == ["results.json"]


def test_trials_make_a_seed_appear_twice_legitimately(recorded, tmp_path_factory):
    """A unit with a ``trial`` key is (model, seed, trial): a seed may repeat across trials, not within one."""
    def trials(r):
        units = r["models"]["mlp"]["units"]
        units[0]["trial"], units[1]["trial"], units[1]["seed"] = 0, 1, 0

    run_dir = _handmade(tmp_path_factory) / "trials"
    _write(run_dir, json.dumps(_variant(recorded[2], trials)).encode())
    assert [u["trial"] for u in load_record(run_dir)["models"]["mlp"]["units"]] == [0, 1]
    _write(run_dir, json.dumps(_variant(recorded[2], lambda r: (trials(r), r["models"]["mlp"]["units"][1]
                                                                .__setitem__("trial", 0)))).encode())
    with pytest.raises(RecordError, match=r"units\[1\].seed: expected a unit distinct from units\[0\] "
                                          r"\(the same seed 0, trial 0\)"):
        load_record(run_dir)


def test_unknown_fields_are_kept_and_old_schemas_upgraded(recorded, tmp_path_factory):
    rec = _variant(recorded[2], lambda r: (r.__setitem__("extra", {"a": [1]}),
                                           r["models"]["mlp"]["units"][0].__setitem__("note", "by hand")))
    run_dir = _handmade(tmp_path_factory) / "extra"
    _write(run_dir, json.dumps(rec).encode())
    got = load_record(run_dir)
    assert got["extra"] == {"a": [1]} and got["models"]["mlp"]["units"][0]["note"] == "by hand"  # type: ignore
    v1 = copy.deepcopy(recorded[2])
    v1["schema"] = "archbench.run/1"
    v1["config"]["train"] = v1["config"]["train"]["mlp"]
    v1["config"].pop("sources")
    _write(run_dir, json.dumps(v1).encode())
    assert load_record(run_dir)["config"]["train"]["logreg"]["epochs"] == 1
    v1["config"]["model_train"] = {"mlp": 5}
    _write(run_dir, json.dumps(v1).encode())
    with pytest.raises(RecordError, match="config.model_train.mlp: expected an object, found the number 5"):
        load_record(run_dir)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "huge"])
def test_reading_is_bounded(tmp_path, kind, monkeypatch):
    """A results.json that is a FIFO (no writer), /dev/zero, a directory or too big is refused at once."""
    import archbench.records as records

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = run_dir / "results.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/zero")
    elif kind == "directory":
        target.mkdir()
    else:
        monkeypatch.setattr(records, "MAX_RECORD_BYTES", 1000)
        target.write_text(" " * 1001)
    with pytest.raises(RecordError) as err:
        load_record(run_dir)
    words = {"fifo": "a FIFO", "device": "a device", "directory": "a directory", "huge": "more than 1,000 bytes"}
    assert str(err.value).startswith(f"{target}: {words[kind]}"), err.value
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(target).st_mode)


def test_index_and_compare_into_an_unwritable_directory(recorded, tmp_path, capsys, no_plots):
    from tests.test_adversarial import unwritable

    _, good, _ = recorded
    root = tmp_path / "runs"
    shutil.copytree(good, root / "good")
    with unwritable(root):
        rc, err = _cli(capsys, "index", root)
        assert rc == 2 and f"cannot write {root / 'index.html'}" in err and "writable" in err, err
        rc, err = _cli(capsys, "compare", root / "good", "--out", root / "cmp")
        assert rc == 2 and f"cannot write the comparison into {root / 'cmp'}" in err, err
    long = tmp_path / ("x" * 300)
    rc, err = _cli(capsys, "compare", long, good, "--out", tmp_path / "c")
    assert rc == 3 and "skipped 1 run" in err and "File name too long" in err, err
    assert (tmp_path / "c" / "report.md").exists()


def test_resume_names_a_run_directory_part_that_is_a_file(recorded, tmp_path, capsys):
    """`checkpoints` as a file used to end a resume in FileExistsError once a unit started."""
    _, good, record = recorded
    run_dir = tmp_path / "runs" / "good"
    shutil.copytree(good, run_dir)
    rec = copy.deepcopy(record)
    rec["models"]["mlp"]["units"].pop()  # a unit left to train
    digest = _write(run_dir, json.dumps(rec).encode())
    (run_dir / "checkpoints").write_text("not a directory")
    rc, err = _cli(capsys, "run", "--resume", run_dir, "--quiet", "--no-timing")
    assert rc == 3 and f"{run_dir / 'checkpoints'}: expected the run's checkpoints directory, found a file" in err
    assert _digest(run_dir) == digest


def test_the_recorded_thread_and_job_counts_are_bounded_as_the_options_are():
    from archbench.config import MAX_JOBS, MAX_THREADS
    from archbench.records import MAX_RECORDED_COUNT

    assert MAX_RECORDED_COUNT == MAX_THREADS == MAX_JOBS





def test_plots_of_a_record_that_reads(recorded, tmp_path_factory, capsys):
    """The plots (off in the mutation loop) of records that pass the checks yet differ from a fresh run: a
    unit read as failed (its test loss null, as a strict rewrite of a NaN left it), unknown keys, one seed."""
    def change(r):
        r["models"]["mlp"]["units"][1]["test"]["loss"] = None
        r["models"]["logreg"]["units"].pop()
        r["models"]["logreg"]["zz_note"] = {"by": "hand"}
        r["dataset"]["zz_extra"] = [1, 2]

    run_dir = _handmade(tmp_path_factory) / "plots"
    digest = _write(run_dir, json.dumps(_variant(recorded[2], change)).encode())
    rc, err = _cli(capsys, "report", run_dir)
    assert rc == 0, err
    assert len(list((run_dir / "plots").glob("*.png"))) >= 4
    assert "the recorded evaluation is not finite" in (run_dir / "report.md").read_text()
    assert _digest(run_dir) == digest
