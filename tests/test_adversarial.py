"""Issue #16: nothing lost under any input or fault.

Each reproduction of the adversarial pass is a test here: a clean outcome is a
named error (the input, the value, what is expected, the fix), the documented
exit code (0 ok, 2 usage/config, 3 data, 4 runtime, 130 interrupted), no
traceback, and nothing lost or left behind. Runs use a tiny synthetic dataset,
``--no-timing`` and (in-process) no plots, so the file runs in well under two
minutes on two cores; the property tests at the end fuzz experiment files and
argument vectors.
"""

import contextlib
import errno
import gzip
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from archbench.cli import main
from archbench.data import encode_idx, fetch_dataset
from archbench.data.loader import gunzip
from archbench.errors import DataError
from archbench.records import load_record
from archbench.run.rundir import safe_name
from tests.conftest import NAMES, strict_json, write_synthetic_fashion

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--no-verify", "--epochs", "1", "--quiet", "--no-timing", "--seeds", "0"]

MODELS = '''
import os
import signal
import sys
import time

from torch import nn


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 10)
        self.calls = 0

    def forward(self, x):
        return self.lin(x.flatten(1))


class SysExitForward(Lin):
    def forward(self, x):
        if self.training:
            raise SystemExit(7)
        return super().forward(x)


class InfEval(Lin):
    def forward(self, x):
        y = super().forward(x)
        return y if self.training else y * float("inf")


class HtmlError(Lin):
    def forward(self, x):
        if self.training:
            raise RuntimeError("<script>alert(1)</script> & <b>bold</b>")
        return super().forward(x)


class Ringer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here, inside __del__, where its KeyboardInterrupt is swallowed


def in_training_loop():
    """Called from archbench's train() (not from the cost measurements)."""
    f = sys._getframe()
    while f is not None:
        if f.f_code.co_name == "train" and f.f_code.co_filename.endswith("loop.py"):
            return True
        f = f.f_back
    return False


class SwallowedInterrupt(Lin):
    def forward(self, x):
        if self.training and not self.calls and in_training_loop():
            self.calls += 1
            r = Ringer()
            del r
        return super().forward(x)


class WrappedInterrupt(Lin):
    def forward(self, x):
        if self.training and not self.calls and in_training_loop():
            self.calls += 1
            if True:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)
                except KeyboardInterrupt:  # as torch.save's C++ writer does with it
                    raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed") from None
        return super().forward(x)


class Slow(Lin):
    def forward(self, x):
        if self.training:
            time.sleep(0.03)
        return super().forward(x)


def lin():
    return Lin()


def sysexit_forward():
    return SysExitForward()


def inf_eval():
    return InfEval()


def html_error():
    return HtmlError()


def swallowed_interrupt():
    return SwallowedInterrupt()


def wrapped_interrupt():
    return WrappedInterrupt()


def slow():
    return Slow()


def slow_b():
    return Slow()


def bn1d():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def huge():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10**12))


def factory_boom():
    raise RuntimeError("factory boom")


def factory_exit():
    raise SystemExit(5)
'''


@pytest.fixture(scope="session")
def advmodels(tmp_path_factory):
    """The directory of ``advmodels.py`` (hostile user models), on sys.path."""
    d = tmp_path_factory.mktemp("advmodels")
    (d / "advmodels.py").write_text(MODELS)
    (d / "import_value_error.py").write_text("raise ValueError('boom at import')\n")
    (d / "import_syntax_error.py").write_text("def f(:\n")
    (d / "import_sys_exit.py").write_text("import sys\nsys.exit(3)\n")
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    for m in ("advmodels", "import_value_error", "import_syntax_error", "import_sys_exit"):
        sys.modules.pop(m, None)


@pytest.fixture
def no_plots(monkeypatch):
    """Reports without their PNGs (seconds per run saved; the plots have their own tests)."""
    import archbench.report.plots as plots

    monkeypatch.setattr(plots, "make_plots", lambda *a, **k: [])


@pytest.fixture
def data(tmp_path, monkeypatch, advmodels):
    """A tiny synthetic dataset (96 train / 40 test images); cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    return write_synthetic_fashion(tmp_path / "data")


def cli(capsys, *args, traceback_ok: bool = False) -> tuple[int, str, str]:
    """``archbench ARGS`` in this process: (exit code, stdout, stderr). It
    must return an exit code (not raise) and print no traceback."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert isinstance(rc, int), rc
    if not traceback_ok:
        assert "Traceback" not in out + err, err
    return rc, out, err


def run_args(data: Path, out: Path, name: str, *more) -> list:
    return ["run", "--data-dir", data, *QUICK, "--out", out, "--name", name, *more]


def strict_record(run_dir: Path) -> dict:
    return strict_json((Path(run_dir) / "results.json").read_text(encoding="utf-8"))


def units(rec: dict, model: str) -> list[dict]:
    return rec["models"][model]["units"]


def leftovers(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*") if p.name.endswith((".tmp", ".part")))


# A CLI in a real process, with the report's plots left out (as the no_plots fixture does in-process).
CLI_NO_PLOTS = ("import sys, archbench.report.plots as p; p.make_plots = lambda *a, **k: []; "
                "from archbench.cli import main; sys.exit(main(sys.argv[1:]))")


def cli_process(args, cwd, models_dir, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), str(models_dir)]))
    return subprocess.Popen([sys.executable, "-c", CLI_NO_PLOTS, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# --------------------------------------------------------------------------- refused before anything is written

@pytest.mark.parametrize("text, words", [
    # fixed by the configuration rewrite (aa2bcf5): verified here
    ('models = ["mlp"]\n[train]\nepochs = true\n', "epochs = True is invalid: expected an integer >= 1"),
    ('models = ["mlp"]\ntrain_limit = true\n', "train_limit = True is invalid"),
    ('models = ["mlp"]\nverify = "false"\n', "verify = 'false' is invalid: expected true or false"),
    ('models = ["mlp"]\nname = "../../x"\n', "name = '../../x' is invalid: expected a directory name without '/'"),
    ('models = ["mlp"]\n[train]\nlr = "fast"\n', "lr = 'fast' is invalid: expected a finite number > 0"),
    ('models = ["mlp"]\n[train]\ndevice = 5\n', "device = 5 is invalid: expected auto, cpu, cuda or cuda:N"),
    ('models = ["mlp"]\nname = 5\n', "name = 5 is invalid"),
    ('models = ["mlp"]\nrepeats = "3"\n', "repeats = '3' is invalid: expected an integer from 1 to 10000"),
    ('models = ["mlp"]\nrepeats = 1000000000000\n', "repeats = 1000000000000 is invalid"),  # (found by fuzz)
    # fixed here
    ('models = ["mlp"]\nx = ' + "[" * 5000 + "]" * 5000 + "\n", "nests arrays or tables too deeply"),
    ('models = [{name = "s", spec = {input_shape = [3, 32, 32], layers = [{type = "flatten"}, '
     '{type = "dense", units = 10}]}}]\n',
     "model 's' declares input_shape = [3, 32, 32] but the images are (1, 28, 28): remove input_shape from the "
     "spec (the input is inferred from the dataset) or set it to [1, 28, 28]"),
    ('models = [{name = "big", spec = {layers = [{type = "flatten"}, {type = "dense", units = 1000000000000}, '
     '{type = "dense", units = 10}]}}]\n',
     "layer 1 (dense): 785,000,000,000,000 parameters = 3,140,000,000,000,000 bytes as float32, more than this "
     "machine's memory"),
])
def test_bad_experiment_files_are_refused_before_anything_is_written(data, tmp_path, capsys, text, words):
    (tmp_path / "exp.toml").write_text(text)
    rc, _, err = cli(capsys, "run", "exp.toml", "--data-dir", data, *QUICK, "--out", tmp_path / "runs")
    assert rc == 2 and words in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, words", [
    (["--seeds", "99999999999999999999"], "seeds must be integers from 0 to 2**63-1"),
    (["--gpus-per-unit", "-3"], "--gpus-per-unit must be a finite number >= 0, got '-3'"),
    # found by the property tests below
    (["--cpus-per-unit", "99999999999999999999"], "--cpus-per-unit must be an integer from 1 to 4096"),
    (["--repeats", "1000000000000"], "--repeats must be an integer from 1 to 10000"),
    (["--models", "exp_dir.toml"], "model spec 'exp_dir.toml' is a directory"),
    (["--models", "spec5.toml"], "model spec 'spec5.toml': model = 5 is invalid: expected a [model] table"),
    (["--models", "import_value_error:f"],
     "importing module 'import_value_error' raised ValueError: boom at import"),
    (["--models", "import_syntax_error:f"],
     "importing module 'import_syntax_error' raised SyntaxError: invalid syntax (import_syntax_error.py, line 1)"),
    (["--models", "import_sys_exit:f"], "importing module 'import_sys_exit' raised SystemExit(3) (sys.exit() called)"),
    (["--models", "advmodels:factory_boom"],
     "model 'advmodels:factory_boom': building it failed: its factory raised RuntimeError: factory boom"),
    (["--models", "advmodels:factory_exit"], "its factory raised SystemExit(5) (sys.exit() called)"),
    (["--models", "advmodels:huge"],
     "its largest layer: 1 (Linear, 785,000,000,000,000 parameters = 3,140,000,000,000,000 bytes as float32)"),
])
def test_bad_arguments_and_user_code_are_named_errors(data, tmp_path, capsys, args, words):
    (tmp_path / "exp_dir.toml").mkdir()
    (tmp_path / "spec5.toml").write_text("model = 5\n")
    rc, _, err = cli(capsys, "run", "--data-dir", data, *QUICK, "--out", tmp_path / "runs", *args)
    assert rc == 2 and words in err, err
    assert not (tmp_path / "runs").exists()


def test_an_experiment_path_that_is_a_directory_or_unreadable(data, tmp_path, capsys):
    (tmp_path / "d.toml").mkdir()
    rc, _, err = cli(capsys, "run", "d.toml")
    assert rc == 2 and "experiment file 'd.toml' is a directory" in err
    loop = tmp_path / "loop.toml"
    loop.symlink_to("loop.toml")  # unreadable even for root: ELOOP
    rc, _, err = cli(capsys, "run", loop)
    assert rc == 2 and "experiment file" in err and "is a symbolic link loop" in err
    if os.geteuid() != 0:
        f = tmp_path / "locked.toml"
        f.write_text('models = ["mlp"]\n')
        f.chmod(0)
        rc, _, err = cli(capsys, "run", f)
        assert rc == 2 and "cannot read experiment file" in err and "Permission denied" in err


def test_empty_splits_are_data_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for n_train, n_test, words in ((0, 40, "the training split of fashion-mnist is empty"),
                                   (96, 0, "the test split of fashion-mnist is empty")):
        d = write_synthetic_fashion(tmp_path / f"d{n_train}-{n_test}", n_train, n_test)
        rc, _, err = cli(capsys, "run", "--models", "mlp", "--data-dir", d, *QUICK, "--out", tmp_path / "runs")
        assert rc == 3 and words in err and str(d) in err
        assert not (tmp_path / "runs").exists()


def test_a_final_batch_of_one_is_refused_for_a_model_that_cannot_train_on_it(data, tmp_path, capsys, no_plots):
    out = tmp_path / "runs"
    rc, _, err = cli(capsys, *run_args(data, out, "bn", "--models", "advmodels:bn1d", "--train-limit", "65"))
    assert rc == 2
    assert ("model 'advmodels:bn1d' cannot train on a batch of one sample" in err
            and "65 = 1 x 64 + 1" in err and "Change --train-limit (e.g. to 64)" in err)
    assert not out.exists()
    # A model without BatchNorm trains on such a batch as before (nothing changes for models that can);
    # the BatchNorm model trains where no batch holds one image.
    rc, _, err = cli(capsys, *run_args(data, out, "ok", "--models", "logreg,advmodels:bn1d", "--train-limit", "66"))
    assert rc == 0, err
    rc, _, err = cli(capsys, *run_args(data, out, "lin65", "--models", "logreg", "--train-limit", "65"))
    assert rc == 0, err


# --------------------------------------------------------------------------- one run, hostile names and models

HOSTILE = '''
models = [
  { name = "net 1", spec = { layers = [{ type = "flatten" }, { type = "dense", units = 10 }] } },
  { name = "net_1", spec = { layers = [{ type = "flatten" }, { type = "dense", units = 7 },
                                       { type = "dense", units = 10 }] } },
  { name = "LONG", spec = { layers = [{ type = "flatten" }, { type = "dense", units = 10 }] } },
  { name = "<script>alert(1)</script>", spec = { layers = [{ type = "flatten" }, { type = "dense", units = 10 }] } },
  "advmodels:html_error",
  "advmodels:inf_eval",
  "advmodels:sysexit_forward",
]
'''


def test_hostile_names_and_models_in_one_run(data, tmp_path, capsys, no_plots):
    """Names that sanitise alike keep their own files; a 300-character name
    works; a model with infinite eval logits, one raising SystemExit in
    training and one raising an error with HTML in it are failed units with
    their errors; results.json is strict JSON; report.md carries no raw HTML."""
    long = "n" * 300
    (tmp_path / "hostile.toml").write_text(HOSTILE.replace("LONG", long))
    rc, _, err = cli(capsys, "run", "hostile.toml", "--data-dir", data, *QUICK, "--out", tmp_path / "runs",
                     "--name", "h")
    assert rc == 4, err
    run_dir = tmp_path / "runs" / "h"
    rec = strict_record(run_dir)
    import torch
    from safetensors.torch import load_file

    shapes = {}
    for name in ("net 1", "net_1", long, "<script>alert(1)</script>"):
        (u,) = units(rec, name)
        assert u["status"] == "ok", u
        path = run_dir / "models" / u["files"]["safetensors"]
        assert len(path.name) < 255 and path.is_file()
        shapes[name] = tuple(load_file(str(path))["1.weight"].shape)
        assert torch.load(run_dir / "models" / u["files"]["state_dict"], weights_only=True)
    assert shapes["net 1"] == (10, 784) and shapes["net_1"] == (7, 784)  # each its own file, not overwritten
    assert len({u["files"]["safetensors"] for m in rec["models"].values() for u in m["units"] if "files" in u}) == 4
    (u,) = units(rec, "advmodels:inf_eval")
    assert u["status"] == "failed" and "evaluation loss became nan after epoch 1" in u["error"]
    (u,) = units(rec, "advmodels:sysexit_forward")
    assert u["status"] == "failed" and "SystemExit(7)" in u["error"]
    (u,) = units(rec, "advmodels:html_error")
    assert u["status"] == "failed" and "<script>" in u["error"]
    assert not leftovers(run_dir) and not (run_dir / "checkpoints").exists()
    report = (run_dir / "report.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    outside_code = [line for line in _outside_fences(report) if "<" in _without_code_spans(line)]
    assert not outside_code, outside_code[:3]
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(report)
    assert "<script" not in rendered and "<b>" not in rendered
    html_report = (run_dir / "report.html").read_text()
    assert "<script" not in html_report.lower().replace("<script type", "")


def _outside_fences(text: str) -> list[str]:
    lines, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[:len(stripped) - len(stripped.lstrip("`"))]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def _without_code_spans(line: str) -> str:
    import re

    return re.sub(r"(`+)(.+?)\1", "", line)


def test_plot_file_names_stay_short(finished_run):
    """A 300-character model name used to fail the report (File name too long) in its confusion plot."""
    from archbench.report import analyze
    from archbench.report.plots import plot_jobs

    rec = load_record(finished_run)
    rec["models"] = {"n" * 300: rec["models"]["logreg"], "é" * 200: rec["models"]["logreg"]}
    names = [fname for fname, _, _ in plot_jobs(rec, analyze(rec))]
    assert all(len(n.encode()) < 255 for n in names) and len(set(names)) == len(names)


def test_safe_name_is_distinct_and_short():
    assert safe_name("mlp") == "mlp" and safe_name("dct_cnn") == "dct_cnn"
    names = ["net 1", "net_1", "net:1", "net/1", ".net_1", "n" * 300, "n" * 301, "x" * 100, "x" * 101]
    stems = [safe_name(n) for n in names]
    assert len(set(stems)) == len(stems)
    assert all(len(s) <= 100 and "/" not in s and not s.startswith(".") for s in stems)


# --------------------------------------------------------------------------- the run directory has one owner

LOCKER = ("import fcntl, os, sys, time\n"
          "d = sys.argv[1]\nos.makedirs(d, exist_ok=True)\n"
          "fd = os.open(os.path.join(d, '.lock'), os.O_RDWR | os.O_CREAT)\n"
          "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, str(os.getpid()).encode())\n"
          "print('locked', flush=True)\ntime.sleep(120)\n")


@contextlib.contextmanager
def locked_by_another_process(run_dir: Path):
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        yield p.pid
    finally:
        p.kill()  # as kill -9 would: the kernel drops the lock
        p.wait()


def test_a_locked_run_directory_is_refused_naming_its_owner(data, tmp_path, capsys, no_plots):
    out, run_dir = tmp_path / "runs", tmp_path / "runs" / "r"
    with locked_by_another_process(run_dir) as pid:
        rc, _, err = cli(capsys, *run_args(data, out, "r", "--models", "logreg"))
        assert rc == 2 and f"run directory {run_dir} is in use by another archbench process (pid {pid}" in err
        assert not (run_dir / "results.json").exists()
    # Its owner was killed: the lock died with it, and the run goes ahead.
    rc, _, err = cli(capsys, *run_args(data, out, "r", "--models", "logreg"))
    assert rc == 0, err
    assert not (run_dir / ".lock").exists()
    with locked_by_another_process(run_dir) as pid:
        rc, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
        assert rc == 2 and f"pid {pid}" in err


def test_two_runs_started_together_on_one_directory(data, tmp_path, advmodels):
    """Both start at once with the same --out/--name: exactly one runs; the
    other is refused (naming the owner, or the results it finds); the record
    holds the winner's units, complete, and only its files."""
    out = tmp_path / "runs"
    common = ["run", "--data-dir", data, *QUICK, "--epochs", "3", "--out", out, "--name", "same"]
    procs = [cli_process([*common, "--models", m], tmp_path, advmodels) for m in ("advmodels:slow", "advmodels:slow_b")]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    assert ("is in use by another archbench process (pid" in loser[2]
            or "already holds results.json" in loser[2]), loser[2]
    rec = strict_record(out / "same")
    (winner,) = rec["models"]
    assert [u["status"] for u in units(rec, winner)] == ["ok"]
    files = sorted(p.name for p in (out / "same" / "models").iterdir())
    assert all(f.startswith(f"{safe_name(winner)}-seed0.") for f in files), files  # none of the loser's
    assert {f"{safe_name(winner)}-seed0.{ext}" for ext in ("pt", "safetensors")} <= set(files)


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM

@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_swallowed_in_a_destructor_still_stops_the_run(data, tmp_path, capsys, no_plots):
    """The KeyboardInterrupt raised inside a __del__ (tqdm's, here a model's)
    is printed and ignored by Python: the run used to finish with exit 0."""
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "s", "--models", "advmodels:swallowed_interrupt",
                                       "--epochs", "3"), traceback_ok=True)
    assert rc == 130, err
    assert "interrupted" in err and f"archbench run --resume {tmp_path / 'runs' / 's'}" in err
    rec = strict_record(tmp_path / "runs" / "s")
    assert units(rec, "advmodels:swallowed_interrupt") == []  # not recorded as finished, nor as failed
    assert list((tmp_path / "runs" / "s" / "checkpoints").glob("*.pt"))  # epoch 1 kept for --resume


def test_a_ctrl_c_turned_into_a_runtime_error_is_not_a_failed_unit(data, tmp_path, capsys, no_plots):
    """torch.save's writer turns a KeyboardInterrupt into a RuntimeError: the
    unit used to be recorded as failed and the run went on (exit 4)."""
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "w", "--models",
                                       "advmodels:wrapped_interrupt,logreg", "--epochs", "2"))
    assert rc == 130, err
    rec = strict_record(tmp_path / "runs" / "w")
    assert units(rec, "advmodels:wrapped_interrupt") == [] and units(rec, "logreg") == []
    assert "measurement_error" not in rec["models"]["advmodels:wrapped_interrupt"]


def _wait_for(predicate, proc, what, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {proc.communicate()}")
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes(data, tmp_path, capsys, advmodels, no_plots):
    out = tmp_path / "runs"
    p = cli_process(run_args(data, out, "t", "--models", "advmodels:slow", "--epochs", "30"), tmp_path, advmodels)
    ckpts = out / "t" / "checkpoints"
    _wait_for(lambda: ckpts.is_dir() and any(f.suffix == ".pt" for f in ckpts.iterdir()), p, "checkpoint")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert f"archbench run --resume {out / 't'}" in err and "Traceback" not in err
    assert units(strict_record(out / "t"), "advmodels:slow") == []
    assert not leftovers(out / "t")
    rc, _, err = cli(capsys, "run", "--resume", out / "t", "--quiet")
    assert rc == 0, err
    (u,) = units(strict_record(out / "t"), "advmodels:slow")
    assert u["status"] == "ok" and u["training"]["resumed_from_checkpoint"] and len(u["history"]) == 30


# --------------------------------------------------------------------------- leftovers, checkpoints, data identity

def test_resume_removes_temporary_files_and_names_a_corrupt_checkpoint(data, tmp_path, capsys, no_plots):
    out, run_dir = tmp_path / "runs", tmp_path / "runs" / "c"
    rc, _, err = cli(capsys, *run_args(data, out, "c", "--models", "logreg,mlp", "--seeds", "0"))
    assert rc == 0, err
    rec = load_record(run_dir)
    # As a kill -9 leaves them: temporary files of interrupted writes, and the mlp unit mid-way with a
    # damaged checkpoint.
    rec["models"]["mlp"]["units"] = []
    (run_dir / "results.json").write_text(json.dumps(rec))
    assert not (run_dir / "checkpoints").exists()  # removed once every unit finished
    (run_dir / "checkpoints").mkdir()
    stale = [run_dir / "checkpoints" / ".mlp-seed0.pt.k2j3h4.tmp", run_dir / ".results.json.abc123.tmp",
             run_dir / "models" / "mlp-seed0.safetensors.tmp"]
    for f in stale:
        f.write_bytes(b"\0" * 1000)
    ckpt = run_dir / "checkpoints" / "mlp-seed0.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    rc, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert rc == 4
    assert not any(f.exists() for f in stale)
    (u,) = units(strict_record(run_dir), "mlp")
    assert u["status"] == "failed"
    assert f"the checkpoint {ckpt} of mlp seed 0 cannot be read" in u["error"]
    assert f"Delete it to restart this unit from epoch 1 (rm '{ckpt}')" in u["error"]
    ckpt.unlink()  # the fix the error names
    rc, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert rc == 0, err
    assert [u["status"] for u in units(strict_record(run_dir), "mlp")] == ["ok"]


def test_resume_compares_the_data_by_checksum_not_by_path(data, tmp_path, capsys, no_plots, monkeypatch):
    out, run_dir = tmp_path / "runs", tmp_path / "runs" / "d"
    rel = os.path.relpath(data, tmp_path)  # a relative --data-dir is stored resolved
    rc, _, err = cli(capsys, "run", "--data-dir", rel, *QUICK, "--models", "logreg", "--seeds", "0,1", "--out", out,
                     "--name", "d")
    assert rc == 0, err
    rec = load_record(run_dir)
    assert rec["config"]["data_dir"] == str(data) and len(rec["dataset"]["payload_sha256"]) == 4
    rec["models"]["logreg"]["units"] = rec["models"]["logreg"]["units"][:1]
    (run_dir / "results.json").write_text(json.dumps(rec))
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(data, moved)
    shutil.rmtree(data)
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.chdir(elsewhere)  # another working directory, the data somewhere else: found by identity
    rc, _, err = cli(capsys, "run", "--resume", run_dir, "--data-dir", "data", "--quiet")
    assert rc == 0, err
    rec = strict_record(run_dir)
    assert [u["status"] for u in units(rec, "logreg")] == ["ok", "ok"] and rec["config"]["data_dir"] == str(moved)
    # Other data under the same path is refused, naming the file that changed.
    rec["models"]["logreg"]["units"] = rec["models"]["logreg"]["units"][:1]
    (run_dir / "results.json").write_text(json.dumps(rec))
    write_synthetic_fashion(moved, seed=1)
    rc, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert rc == 3 and "the data differs from the data it started with" in err and "train_images: SHA-256" in err


# --------------------------------------------------------------------------- where the results go

@contextlib.contextmanager
def unwritable(path: Path):
    """``path`` (a directory) made unwritable: immutable (chattr +i) as root,
    read-only otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                            capture_output=True).returncode:
            pytest.skip("root, and chattr +i does not work here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def test_out_that_is_a_file_or_unwritable(data, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, _, err = cli(capsys, *run_args(data, f, "r", "--models", "logreg"))
    assert rc == 2 and f"cannot write run directory {f / 'r'}: Not a directory" in err and "choose another --out" in err
    ro = tmp_path / "ro"
    ro.mkdir()
    with unwritable(ro):
        rc, _, err = cli(capsys, *run_args(data, ro, "r", "--models", "logreg"))
    assert rc == 2 and f"cannot write run directory {ro / 'r'}" in err and "choose another --out" in err
    assert not list(ro.iterdir())


def test_a_new_run_that_fails_before_any_unit_finished_leaves_nothing(data, tmp_path, capsys, no_plots,
                                                                      monkeypatch):
    """It used to leave a results.json without units, which blocked the same --name."""
    import archbench.run.study as study

    def unwritable_report(record, run_dir, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(run_dir) / "report.md"))

    real = study.write_reports
    monkeypatch.setattr(study, "write_reports", unwritable_report)
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "x", "--models", "advmodels:html_error"))
    assert rc == 2 and "cannot write the report in" in err and "Permission denied" in err
    assert not (tmp_path / "runs" / "x").exists()
    monkeypatch.setattr(study, "write_reports", real)
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "x", "--models", "logreg"))  # the same --name
    assert rc == 0, err


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only): a disk that fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_disk_is_a_named_runtime_error(data, tmpfs, capsys, no_plots):
    rc, _, err = cli(capsys, *run_args(data, tmpfs, "full", "--models", "mlp"))
    assert rc == 4
    assert "No space left on device" in err and f"archbench run --resume {tmpfs / 'full'}" in err
    strict_record(tmpfs / "full")  # what was written before the disk filled is intact
    assert not leftovers(tmpfs / "full")


def test_a_file_size_limit_is_a_named_runtime_error(data, tmp_path, advmodels):
    """The same failure without root: writes beyond RLIMIT_FSIZE fail (EFBIG) as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    p = cli_process(run_args(data, tmp_path / "runs", "big", "--models", "mlp"), tmp_path, advmodels,
                    preexec_fn=limit)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 4, err
    assert "File too large" in err and "Traceback" not in err
    strict_record(tmp_path / "runs" / "big")
    assert not leftovers(tmp_path / "runs" / "big")


@pytest.fixture
def finished_run(data, tmp_path, capsys, no_plots) -> Path:
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "f", "--models", "logreg"))
    assert rc == 0, err
    return tmp_path / "runs" / "f"


def test_report_given_results_json_or_an_unwritable_directory(finished_run, capsys):
    (finished_run / "report.md").unlink()
    rc, out, _ = cli(capsys, "report", finished_run / "results.json")
    assert rc == 0 and (finished_run / "report.md").is_file() and str(finished_run / "report.md") in out
    with unwritable(finished_run):
        rc, _, err = cli(capsys, "report", finished_run)
    assert rc == 2 and f"cannot write the report into {finished_run}" in err and "writable directory" in err


def test_report_of_a_non_utf8_or_legacy_nan_record(finished_run, tmp_path, capsys):
    bad = tmp_path / "handmade" / "latin1"
    bad.mkdir(parents=True)
    (bad / "results.json").write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    rc, _, err = cli(capsys, "report", bad)
    assert rc == 3 and "not UTF-8 text" in err
    # A record written before non-finite evaluations were refused: an "ok" unit with NaN (an empty test
    # split, infinite logits). A bare NaN token is refused, naming where it is and the fix (null); with null,
    # as a strict rewrite left it, the report reads the unit as failed and is written.
    legacy = tmp_path / "handmade" / "legacy"
    legacy.mkdir()
    rec = json.loads((finished_run / "results.json").read_text())
    u = rec["models"]["logreg"]["units"][0]
    u["test"]["loss"] = u["test"]["accuracy"] = float("nan")
    (legacy / "results.json").write_text(json.dumps(rec))
    assert "NaN" in (legacy / "results.json").read_text()
    rc, _, err = cli(capsys, "report", legacy)
    assert rc == 3 and "models.logreg.units[0].test.loss: expected a finite number or null, found the non-JSON " \
        "token NaN" in err and "Replace it with null" in err, err
    u["test"]["loss"] = u["test"]["accuracy"] = None
    (legacy / "results.json").write_text(json.dumps(rec))
    rc, _, err = cli(capsys, "report", legacy)
    assert rc == 0, err
    assert "the recorded evaluation is not finite" in (legacy / "report.md").read_text()


# --------------------------------------------------------------------------- MLflow

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("uri, words", [
    ("bogus://x", "--mlflow 'bogus://x' is not a usable tracking URI"),
    ("CLOSED", "the tracking server does not answer within 5 s"),
    ("HTTP404", "the server answers but is not an MLflow tracking server"),
])
def test_an_unusable_mlflow_store_is_refused_up_front(data, tmp_path, capsys, http_server, uri, words):
    pytest.importorskip("mlflow")
    uri = {"CLOSED": f"http://127.0.0.1:{_closed_port()}", "HTTP404": http_server.url}.get(uri, uri)
    t0 = time.monotonic()
    rc, _, err = cli(capsys, *run_args(data, tmp_path / "runs", "m", "--models", "logreg", "--mlflow", uri))
    assert rc == 2 and words in err and "leave --mlflow out" in err
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- downloads and decompression

def test_gunzip_is_bounded_by_the_expected_size():
    payload = b"\0" * 100_000
    gz = gzip.compress(payload)
    assert gunzip(gz, 100_000, "f") == payload
    assert gunzip(gz + gzip.compress(b"x"), 100_001, "f") == payload + b"x"  # members, as gzip.decompress
    with pytest.raises(DataError, match="decompresses to more than 99,999 bytes"):
        gunzip(gz, 99_999, "f")
    with pytest.raises(DataError, match="not a valid gzip file"):
        gunzip(gz[:-10], 100_000, "f")
    with pytest.raises(DataError, match="trailing bytes"):
        gunzip(gz + b"garbage", 100_000, "f")


BOMB = """
import gzip, resource, sys, zlib
from pathlib import Path
from archbench.data.loader import load_dataset
d = Path(sys.argv[1])
c = zlib.compressobj(1, zlib.DEFLATED, 31)
with open(d / "train-images-idx3-ubyte.gz", "wb") as f:  # 640 MiB of zeros behind a valid IDX header
    f.write(c.compress(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2))
    block = bytes(1 << 24)
    for _ in range(40):
        f.write(c.compress(block))
    f.write(c.flush())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for verify in (True, False):
    try:
        load_dataset("fashion-mnist", d, verify=verify)
    except Exception as exc:
        print(type(exc).__name__, exc)
print("grew", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    d = write_synthetic_fashion(tmp_path / "data")
    p = subprocess.run([sys.executable, "-c", BOMB, str(d)], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("DataError") and "decompresses to more than 47,040,016 bytes" in lines[0]
    assert lines[1].startswith("DataError") and "the size its IDX header declares" in lines[1]
    grew_kib = int(lines[2].split()[1])
    assert grew_kib < 400_000, f"peak memory grew by {grew_kib} KiB decompressing the bomb"


@pytest.mark.parametrize("mirror", ["not a url", "http://[::1", "http://host:99999/", "ftp//x", "http://",
                                    "gopher://host/", "http://host/a b/", ""])
def test_a_malformed_mirror_is_a_usage_error(tmp_path, capsys, mirror):
    rc, _, err = cli(capsys, "data", "fetch", "--dest", tmp_path / "d", "--mirror", mirror)
    assert rc == 2 and f"--mirror {mirror!r}" in err and "expected a base URL" in err


def test_download_cap_stale_parts_and_umask(tiny, tmp_path, http_server):
    arrays, spec = tiny
    for role, arr in arrays.items():
        http_server.routes[f"/m/{NAMES[role]}.gz"] = gzip.compress(encode_idx(arr))
    dest = tmp_path / "dest"
    dest.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [dest / f".{NAMES['train_images']}.{dead}.abcd1234.part", dest / f".{NAMES['test_labels']}.x1y2z3.part"]
    for f in stale:
        f.write_bytes(b"half a download")
    live = dest / f".{NAMES['train_labels']}.{os.getpid()}.live.part"  # a download in progress: kept
    live.write_bytes(b"")
    old = os.umask(0o002)
    try:
        fetch_dataset(spec, dest, mirrors=[http_server.url + "/m"])
    finally:
        os.umask(old)
    assert not any(f.exists() for f in stale) and live.exists()
    for role in arrays:
        assert (dest / f"{NAMES[role]}.gz").stat().st_mode & 0o777 == 0o664
    # A mirror that serves more than a .gz of the known payload size can hold is cut off.
    key = f"/m/{NAMES['test_images']}.gz"
    http_server.routes[key] = os.urandom(spec.file("test_images").nbytes + (1 << 17))
    (dest / f"{NAMES['test_images']}.gz").unlink()
    with pytest.raises(DataError, match="announced, more than 81,388 bytes, the most the expected file can take"):
        fetch_dataset(spec, dest, mirrors=[http_server.url + "/m"])
    http_server.no_length.add(key)  # the same without a Content-Length: cut off once past the cap
    with pytest.raises(DataError, match=r"tiny-test-images.gz: more than 81,388 bytes, the most"):
        fetch_dataset(spec, dest, mirrors=[http_server.url + "/m"])
    assert not list(dest.glob(f".{NAMES['test_images']}*.part"))


def test_model_files_honour_the_umask(tmp_path):
    from torch import nn

    from archbench.measure.size import save_model_files

    old = os.umask(0o027)
    try:
        files = save_model_files(nn.Linear(3, 2), tmp_path, "m")
    finally:
        os.umask(old)
    for d in files.values():
        assert (tmp_path / d["path"]).stat().st_mode & 0o777 == 0o640


def test_sigterm_during_a_download_leaves_no_part_file(tmp_path, http_server):
    payload = encode_idx(np.zeros((2000, 28, 28), dtype=np.uint8))
    http_server.routes["/slow/train-images-idx3-ubyte.gz"] = os.urandom(len(payload) // 4)
    http_server.slow["/slow/train-images-idx3-ubyte.gz"] = 0.05
    dest = tmp_path / "dest"
    p = subprocess.Popen([sys.executable, "-m", "archbench", "data", "fetch", "--dest", str(dest), "--mirror",
                          http_server.url + "/slow/"], env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: dest.is_dir() and any(f.stat().st_size > 0 for f in dest.glob("*.part")), p, "a .part file")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert not list(dest.iterdir())


# --------------------------------------------------------------------------- strict JSON

def test_results_json_is_strict_json(tmp_path):
    from archbench.records import dumps_strict, save_record

    rec = {"schema": "archbench.run/2", "a": float("nan"), "b": [1.0, float("inf"), -float("inf")], "c": [1, 2]}
    save_record(rec, tmp_path)
    assert strict_json((tmp_path / "results.json").read_text()) == {"schema": "archbench.run/2", "a": None,
                                                                    "b": [1.0, None, None], "c": [1, 2]}
    assert dumps_strict(rec) == json.dumps({**rec, "a": None, "b": [1.0, None, None]})


def test_write_error_names_the_errno_class():
    from archbench.errors import UsageError
    from archbench.records import OutputError, write_error

    assert isinstance(write_error(OSError(errno.EACCES, "Permission denied"), "x", ""), UsageError)
    assert isinstance(write_error(OSError(errno.ENOSPC, "No space left on device"), "x", ""), OutputError)
    assert OutputError("").exit_code == 4


def test_load_record_refuses_absurd_nesting(tmp_path):
    from archbench.records import RecordError

    (tmp_path / "handmade").mkdir()
    (tmp_path / "handmade" / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecordError, match="nests its values too deeply"):
        load_record(tmp_path / "handmade")


# --------------------------------------------------------------------------- property tests: no input gives a traceback

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("ARCHBENCH_FUZZ_EXAMPLES", "1"))  # a multiplier: 1 = 300 + 250 examples


def fuzz(n: int):
    return settings(max_examples=n * EXAMPLES, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory, advmodels):
    """Everything the fuzzed commands may name: tiny synthetic data (also as
    $ARCHBENCH_DATA, so a run without --data-dir never trains on the real
    60,000 images), a finished run, a non-UTF-8 results.json, a file."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_synthetic_fashion(root / "store" / "fashion-mnist")
    (root / "afile").write_text("x")
    bad = root / "handmade" / "latin1"
    bad.mkdir(parents=True)
    (bad / "results.json").write_bytes(b'{"name": "caf\xe9"}')
    (root / "spec.toml").write_text('[model]\nname = "tiny_spec"\nlayers = [{ type = "flatten" }, '
                                    '{ type = "dense", units = 10 }]\n')
    import archbench.report.plots as plots

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "make_plots", lambda *a, **k: [])
        assert main(["run", "--data-dir", str(data), *QUICK, "--models", "logreg", "--out", str(root / "runs"),
                     "--name", "done"]) == 0
    return {"root": root, "data": data, "run": root / "runs" / "done", "file": root / "afile", "latin1": bad,
            "spec": root / "spec.toml", "closed": f"http://127.0.0.1:{_closed_port()}/"}


def _no_measurements(*args, **kwargs):
    raise RuntimeError("cost measurements are left out of the property tests (seconds each)")


@pytest.fixture
def fuzz_env(fuzz_world, monkeypatch, capsys):
    """The property tests run the real CLI except two costly parts with tests of their own: plots, and
    the cost measurements (whose failure is recorded as measurement_error, a path of its own)."""
    import archbench.report.plots as plots
    import archbench.run.study as study

    monkeypatch.setattr(plots, "make_plots", lambda *a, **k: [])
    monkeypatch.setattr(study, "measure_model", _no_measurements)
    monkeypatch.setenv("ARCHBENCH_DATA", str(fuzz_world["data"].parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(fuzz_world["root"] / "cache"))
    monkeypatch.chdir(fuzz_world["root"])
    return fuzz_world


def check_outcome(capsys, argv: list[str], out_dir: Path) -> int:
    """The property: an exit code in {0, 2, 3, 4}, no traceback, every
    results.json strict JSON, no temporary file or lock left behind."""
    try:
        rc = main(argv)
    finally:
        out, err = capsys.readouterr()
    assert rc in (0, 2, 3, 4), (argv, rc, err[-2000:])
    assert "Traceback" not in out + err, (argv, err[-4000:])
    if rc == 2 and "error" in err:
        assert err.count("archbench") >= 1
    for path in out_dir.rglob("results.json"):
        strict_json(path.read_text(encoding="utf-8"))
    left = [p for p in out_dir.rglob("*") if p.name.endswith((".tmp", ".part")) or p.name == ".lock"]
    assert not left, (argv, left)
    return rc


NUMBERS = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e-3", "nan", "inf", "-inf", "1e309", "abc", "", "3.0",
                           "99999999999999999999", " 1", "0x10"])
MODEL_REFS = st.sampled_from(["mlp", "logreg", "mlp,logreg", "nosuch", "x:y", ":", "advmodels:lin",
                              "advmodels:factory_boom", "advmodels:factory_exit", "advmodels:huge", "advmodels:bn1d",
                              "advmodels:sysexit_forward", "advmodels:inf_eval", "import_syntax_error:f",
                              "import_sys_exit:f", "spec.toml", "missing.toml", "mlp,mlp", ",", "advmodels:nope",
                              "advmodels", "os:getcwd", "builtins:print"])
RUN_OPTIONS = {
    "--models": MODEL_REFS | st.text(max_size=8),
    "--seeds": st.sampled_from(["0", "0,1", "-1", "1,1", "a", "", "99999999999999999999", "0,,1"]),
    "--repeats": st.sampled_from(["0", "1", "2", "-1", "x"]),
    "--dataset": st.sampled_from(["fashion-mnist", "mnist", "kmnist", "nope", ""]),
    "--name": st.sampled_from(["a", "b", "../x", "", ".", "..", "x/y", "n" * 300, "<b>", "done"]),
    "--data-dir": st.sampled_from(["DATA", "/nonexistent", "FILE", "relative/x", ""]),
    "--train-limit": NUMBERS, "--test-limit": NUMBERS, "--batch-size": NUMBERS, "--eval-batch-size": NUMBERS,
    "--lr": NUMBERS, "--beta1": NUMBERS, "--beta2": NUMBERS, "--eps": NUMBERS, "--weight-decay": NUMBERS,
    "--warmup": NUMBERS, "--label-smoothing": NUMBERS, "--augment-crop": NUMBERS, "--tta-shift": NUMBERS,
    "--epochs": NUMBERS,
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:0", "cuda:x", "tpu"]),
    "--optimizer": st.sampled_from(["adam", "adamw", "sgd"]),
    "--schedule": st.sampled_from(["constant", "onecycle", "cosine", "step"]),
    "--precision": st.sampled_from(["fp32", "bf16", "fp16"]),
    "--formulation": st.sampled_from(["fast", "plain", "x"]),
    "--resume": st.sampled_from(["RUN", "/nonexistent", "FILE", "LATIN1"]),
    "--mlflow": st.sampled_from(["bogus://x", "CLOSED", "::", "http://[::1"]),
    "--executor": st.sampled_from(["local", "bogus"]),
    "--cpus-per-unit": NUMBERS, "--gpus-per-unit": NUMBERS, "--max-retries": NUMBERS,
}
RUN_FLAGS = ["--no-verify", "--quiet", "--no-timing", "--check-determinism", "--augment-flip", "--no-augment-flip",
             "--tta-flip", "--cuda-graphs", "--no-cuda-graphs", "--help-me", "-x"]


def _resolve(world: dict, value: str) -> str:
    return {"DATA": str(world["data"]), "FILE": str(world["file"]), "RUN": str(world["run"]),
            "LATIN1": str(world["latin1"]), "CLOSED": world["closed"]}.get(value, value)


@st.composite
def argv_vectors(draw, world: dict, out: Path) -> list[str]:
    kind = draw(st.sampled_from(["run"] * 7 + ["report", "data fetch", "data info", "compare", "other"]))
    if kind == "run":
        # First, so the fuzzed options override them: a cheap model on few images unless told otherwise.
        argv = ["run", "--models", "logreg", "--train-limit", "16", "--test-limit", "8"]
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from([str(world["spec"]), str(world["file"]), "missing.toml",
                                              str(world["root"])])))
        for opt in draw(st.lists(st.sampled_from(sorted(RUN_OPTIONS)), max_size=6)):
            argv += [opt, _resolve(world, draw(RUN_OPTIONS[opt]))]
        argv += draw(st.lists(st.sampled_from(RUN_FLAGS), max_size=3))
        # Last, so they win: one short epoch, no timing, results in this example's folder.
        return argv + ["--epochs", "1", "--no-timing", "--quiet", "--out", str(out)]
    if kind == "report":
        return ["report", _resolve(world, draw(st.sampled_from(["RUN", "FILE", "LATIN1", "/nonexistent", "DATA"])))]
    if kind == "data fetch":
        mirror = draw(st.sampled_from(["CLOSED", "not a url", "http://[::1", "http://h:99999/", "ftp//x", ""]))
        return ["data", "fetch", "--dest", str(out / "dl"), "--timeout", "1", "--mirror", _resolve(world, mirror),
                *draw(st.sampled_from([[], ["--dataset", "mnist"], ["--dataset", "nope"]]))]
    if kind == "data info":
        return ["data", "info", "--data-dir", _resolve(world, draw(st.sampled_from(["DATA", "FILE", "/nope"]))),
                *draw(st.sampled_from([[], ["--dataset", "kmnist"], ["--dataset", "nope"]]))]
    if kind == "compare":
        dirs = draw(st.lists(st.sampled_from(["RUN", "FILE", "LATIN1", "/nonexistent"]), min_size=1, max_size=2))
        return ["compare", *[_resolve(world, d) for d in dirs], "--out", str(out / "cmp")]
    return draw(st.sampled_from([[], ["nope"], ["data"], ["run", "--epochs"], ["--version"], ["report"],
                                 ["profile", "nosuch"], ["compare"]]))


@fuzz(300)
@given(data=st.data())
def test_fuzz_argument_vectors(fuzz_env, capsys, data):
    out = Path(__import__("tempfile").mkdtemp(dir=fuzz_env["root"]))
    argv = data.draw(argv_vectors(fuzz_env, out))
    check_outcome(capsys, argv, out)


# Experiment files: arbitrary TOML over the real keys, with values of every type.

def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


SCALAR = (st.booleans() | st.integers(-3, 3) | st.sampled_from([2**63 - 1, -2**63, 10**12])
          | st.floats(allow_nan=True, allow_infinity=True, width=32)
          | st.sampled_from(["", "mlp", "logreg", "fast", "cpu", "adamw", "../x", "true", "1", "fashion-mnist"])
          | st.text(max_size=6))
ANY = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                   | st.dictionaries(st.sampled_from(["a", "type", "units", "name", "layers", "epochs"]), inner,
                                     max_size=3), max_leaves=6)
LAYER = st.fixed_dictionaries(
    {"type": st.sampled_from(["dense", "conv2d", "flatten", "maxpool", "avgpool", "batchnorm", "dropout", "relu",
                              "residual", "globalavgpool", "softmax", "bogus"])},
    optional={"units": st.sampled_from([1, 10, 0, -1, 10**12, True, "10"]),
              "filters": st.sampled_from([1, 4, 0, 10**12]), "kernel": st.sampled_from([1, 3, 29, 0]),
              "size": st.sampled_from([2, 0, 100]), "rate": st.sampled_from([0.5, 1.0, -1, "x"]),
              "padding": st.sampled_from(["same", "valid", 1, -1, "x"]), "activation": st.sampled_from(
                  ["relu", "softmax", "nope"]), "stride": st.sampled_from([1, 2, 0]), "layers": ANY})
SPEC = st.fixed_dictionaries({"layers": st.lists(LAYER, max_size=4)},
                             optional={"input_shape": st.sampled_from([[1, 28, 28], [3, 32, 32], [784], [], "x"]),
                                       "num_classes": st.sampled_from([10, 2, 0]), "bogus": ANY})
MODEL_ENTRY = (st.sampled_from(["mlp", "logreg", "nosuch", "advmodels:lin", "advmodels:factory_boom", "x.toml", ""])
               | st.fixed_dictionaries({"name": st.sampled_from(["s1", "s 1", "s_1", "mlp", "", "n" * 300])},
                                       optional={"spec": SPEC | ANY, "train": ANY, "spec_file": ANY}))
TRAIN_TABLE = st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "optimizer", "schedule", "precision",
                                               "augment_flip", "tta_shift", "device", "warmup", "nope"]),
                              SCALAR, max_size=4)
EXPERIMENT = st.fixed_dictionaries({}, optional={
    "models": st.lists(MODEL_ENTRY, max_size=3) | ANY,
    "seeds": st.lists(st.integers(-1, 3), max_size=3) | ANY,
    "repeats": st.sampled_from([1, 2, 0, -1, True, "3"]),
    "name": st.sampled_from(["x", "../../x", "", 5, "n" * 300]) | ANY,
    "out": ANY, "dataset": st.sampled_from(["fashion-mnist", "mnist", "nope"]) | ANY,
    "data_dir": ANY, "verify": st.booleans() | ANY,
    "train_limit": st.sampled_from([1, 8, 0, True, -5]) | ANY, "test_limit": st.sampled_from([1, 8, 0, None]) | ANY,
    "train": TRAIN_TABLE | ANY, "bogus": ANY,
})


VALID_SPEC = {"layers": [{"type": "flatten"}, {"type": "dense", "units": 4, "activation": "relu"},
                        {"type": "dense", "units": 10}]}


@st.composite
def near_valid_experiments(draw) -> dict:
    """A valid small study with one or two keys replaced: most of these get
    past the configuration, into the data, the models and training."""
    exp = {"models": draw(st.sampled_from([["logreg"], [{"name": "s1", "spec": VALID_SPEC}],
                                           ["logreg", {"name": "s 1", "spec": VALID_SPEC}]])),
           "seeds": [0], "train_limit": 16, "test_limit": 8, "data_dir": "DATA", "verify": False}
    for key in draw(st.lists(st.sampled_from(["models", "seeds", "train_limit", "test_limit", "verify", "name",
                                              "train", "dataset", "repeats"]), min_size=1, max_size=2, unique=True)):
        if key == "repeats":
            exp.pop("seeds")
        exp[key] = draw(st.sampled_from(PLAUSIBLE[key]) | ANY | TRAIN_TABLE)
    return exp


PLAUSIBLE = {  # valid values that take a run down other paths
    "models": [["logreg", "s1"], [{"name": "s2", "spec": VALID_SPEC, "train": {"epochs": 1, "batch_size": 4}}],
               [{"name": "bn", "spec": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 4},
                                                   {"type": "batchnorm"}, {"type": "dense", "units": 10}]}}]],
    "seeds": [[0, 1], [7]], "train_limit": [1, 2, 5, 17, 65], "test_limit": [1, 3], "verify": [True],
    "name": ["ok-name", "x" * 200], "dataset": ["mnist", "kmnist"], "repeats": [2],
    "train": [{"batch_size": 1}, {"optimizer": "adamw", "schedule": "cosine"}, {"augment_crop": 2,
              "augment_flip": True}, {"tta_shift": 1, "tta_flip": True}, {"precision": "bf16"},
              {"label_smoothing": 0.1, "eval_batch_size": 3}, {"batch_size": 4}],
}


EXTRA = st.sampled_from([[], ["--no-verify"], ["--data-dir", "DATA", "--no-verify"], ["--models", "logreg"],
                         ["--seeds", "0"]])


@fuzz(250)
@given(exp=st.one_of(*[EXPERIMENT] * 5, near_valid_experiments()), extra=EXTRA)
def test_fuzz_experiment_files(fuzz_env, capsys, exp, extra):
    out = Path(__import__("tempfile").mkdtemp(dir=fuzz_env["root"]))
    exp = {k: (str(fuzz_env["data"]) if v == "DATA" else v) for k, v in exp.items()}
    text = "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in exp.items() if v is not None)
    path = out / "exp.toml"
    path.write_text(text, encoding="utf-8")
    argv = ["run", str(path), *[_resolve(fuzz_env, a) for a in extra],
            "--epochs", "1", "--no-timing", "--quiet", "--out", str(out)]
    check_outcome(capsys, argv, out)
