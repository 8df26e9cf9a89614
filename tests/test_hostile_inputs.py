"""Issue #27: hostile names through every renderer, and inputs that used to
crash, hang or be accepted where they should be refused.

Names (models, classes) reach matplotlib text, Markdown, HTML, CSV and LaTeX:
each must show them literally and never let them act as markup."""

import csv
import html
import html.parser
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archbench.report import write_reports
from archbench.report.analysis import analyze
from archbench.report.document import render_html, render_markdown
from archbench.report.exports import comparison_latex, costs_latex, tables, tex_escape, to_csv
from archbench.report.rerun import code_span
from archbench.report.sections import build_blocks
from tests.fixed_records import fixed_record

META = "$\\{}%#&~^_<>`|*[]!\"'/ \t\u00e9\u2013\u00b5\U0001f600"
# Names: runs of metacharacters (TeX, mathtext, HTML, Markdown, CSV), letters, and whole hostile words.
NAME = st.one_of(
    st.text(alphabet=st.sampled_from(META + "ab"), min_size=1, max_size=12),
    st.sampled_from(["$x$", "$\\frac{1}{2}$", "<script>alert(1)</script>", "a,b\nc", '"q"', "**b**", "`c`",
                     "x``y", "\\", "$", "50%", "&amp;", "<b>", "[l](http://x)", "#h", "a|b", "${}$^_"]),
    st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s),
).filter(lambda s: s.strip() and "@" not in s and "\r" not in s)


def renamed(models: list[str], classes: list[str]) -> dict:
    """fixed_record with its three models and four classes renamed."""
    rec = fixed_record()
    old = list(rec["models"])
    mapping = dict(zip(old, models, strict=True))
    rec["models"] = {mapping[k]: v for k, v in rec["models"].items()}
    cfg = rec["config"]
    cfg["models"] = list(models)
    cfg["train"] = {mapping[k]: v for k, v in cfg["train"].items()}
    cfg["sources"]["train"] = {mapping[k]: v for k, v in cfg["sources"]["train"].items()}
    rec["dataset"]["classes"] = list(classes)
    return rec


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "ul", "li",
                "table", "thead", "tbody", "tr", "th", "td", "code", "strong", "em", "figure", "img",
                "figcaption", "pre", "a", "br", "hr"}


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


def parsed(doc: str) -> Tags:
    p = Tags()
    p.feed(doc)
    return p


def unique(n):
    return st.lists(NAME, min_size=n, max_size=n, unique_by=lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models=unique(3), classes=unique(4))
def test_names_are_literal_in_markdown_html_csv_and_latex(models, classes):
    from markdown_it import MarkdownIt

    rec = renamed(models, classes)
    an = analyze(rec)
    blocks = build_blocks(rec, an, [])
    md = render_markdown(blocks)
    page = render_html(blocks, "t", ".")
    # HTML: no tag a name could have made; every name without the report's own markup is in the text.
    got = parsed(page)
    assert got.tags <= ALLOWED_TAGS, got.tags - ALLOWED_TAGS
    text = "".join(got.text)
    for name in models:
        if "`" not in name and "**" not in name:
            assert " ".join(name.split()) in " ".join(text.split()), name
    # Markdown (CommonMark, raw HTML allowed: none may come from a name).
    rendered = parsed(MarkdownIt("commonmark", {"html": True}).render(md))
    assert rendered.tags <= ALLOWED_TAGS, rendered.tags - ALLOWED_TAGS
    # CSV: the names read back exactly.
    for name, table in tables(rec, an).items():
        rows = list(csv.reader(io.StringIO(to_csv(table))))
        assert len(rows) == len(table[1]) + 1 and all(len(r) == len(table[0]) for r in rows), name
    per_seed = list(csv.DictReader(io.StringIO(to_csv(tables(rec, an)["per_seed"]))))
    assert {r[next(iter(r))] for r in per_seed} == set(models)
    # LaTeX: every name escaped (one line); a row splits into its columns at the unescaped &s only.
    for tex in (comparison_latex(an), costs_latex(rec)):
        for name in models:
            assert tex_escape(name) in tex and "\n" not in tex_escape(name)
        lines = tex.splitlines()
        cols = lines[lines.index("\\toprule") + 1].count(" & ") + 1
        body = lines[lines.index("\\midrule") + 1:lines.index("\\bottomrule")]
        assert len(body) == len(models), body
        for line in body:
            unescaped = [i for i, c in enumerate(line) if c == "&" and line[i - 1] != "\\"]
            assert len(unescaped) == cols - 1, line


@pytest.mark.parametrize("name", ["a`b", "``", "`x", "x`", "plain"])
def test_a_code_span_survives_backticks_in_a_name(name):
    from markdown_it import MarkdownIt

    span = code_span(f"archbench run --models {name}")
    out = MarkdownIt("commonmark").render(span)
    assert f"<code>archbench run --models {html.escape(name, quote=False)}</code>" in out, (span, out)
    assert f"<code>archbench run --models {html.escape(name, quote=False)}</code>" in render_html(
        [__import__("archbench.report.document", fromlist=["Para"]).Para(span)], "t", ".")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(models=unique(3), classes=unique(4))
def test_names_are_literal_in_the_plots(models, classes, tmp_path_factory):
    """matplotlib draws names as given: a "$" or "\\frac" is text, not mathtext (it used to crash the report)."""
    run_dir = tmp_path_factory.mktemp("plots")
    rec = renamed(models, classes)
    written = write_reports(rec, run_dir, plots=True, formats=("md",))
    assert written["markdown"].is_file()
    svgs = sorted((run_dir / "plots").glob("confusion_*.svg"))
    assert len(svgs) == 3
    for i, name in enumerate(models):
        svg = next(p for p in svgs if p.name.startswith(f"confusion_{i}_")).read_text(encoding="utf-8")
        shown = " ".join("".join(parsed(svg).text).split())
        assert " ".join(f"{name}: confusion matrix".split()) in shown or not name.isprintable(), name
    per_class = (run_dir / "plots" / "per_class_accuracy.svg").read_text(encoding="utf-8")
    shown = " ".join("".join(parsed(per_class).text).split())
    for c in classes:
        if c.isprintable():
            assert " ".join(c.split()) in shown, c
    assert Path(run_dir / "report.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- inputs: named errors, no hang

QUICK = ["--seeds", "0", "--epochs", "1", "--quiet", "--no-timing", "--models", "mlp"]


def cli(capsys, *args):
    """``archbench ARGS`` in this process: (exit code, stdout, stderr), with no traceback."""
    from archbench.cli import main

    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert isinstance(rc, int) and "Traceback" not in out + err, err
    return rc, out, err


@pytest.fixture
def no_plots(monkeypatch):
    import archbench.report.plots as plots

    monkeypatch.setattr(plots, "make_plots", lambda *a, **k: [])


def npz(path, x_train=None, y_train=None, **extra):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8) if x_train is None else x_train
    y = (np.arange(60) % 3).astype(np.uint8) if y_train is None else y_train
    np.savez(path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20], **extra)
    return path


@pytest.mark.parametrize("label", [2**63, 2**64 - 1, 2**64 - 3])
def test_labels_of_2_to_the_63_or_more_are_refused(tmp_path, capsys, label):
    import numpy as np

    y = np.array([0, 1, label] * 20, dtype=np.uint64)
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", npz(tmp_path / "big.npz", y_train=y),
                     "--out", tmp_path / "runs")
    assert rc == 3 and f"y_train holds the label {label}" in err and "class indices 0..K-1" in err, err
    assert not (tmp_path / "runs").exists()


def test_images_of_zero_height_are_refused(tmp_path, capsys):
    import numpy as np

    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", npz(tmp_path / "z.npz", x_train=np.zeros((60, 0, 28),
                                                                                                  np.uint8)),
                     "--out", tmp_path / "runs")
    assert rc == 3 and "x_train has shape (60, 0, 28): images of 0x28 pixels" in err, err


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_fifos_and_devices_as_every_file_option_are_named_errors_without_hanging(tmp_path, capsys, kind,
                                                                                  monkeypatch):
    """A FIFO (no writer: opening or reading it would block for ever) and /dev/zero (reading never ends) as the
    experiment file, a model spec and the dataset (.npz, .tar.gz): each refused by name, at once."""
    import signal

    monkeypatch.chdir(tmp_path)

    def node(name):
        if kind == "devzero":
            p = tmp_path / name
            p.symlink_to("/dev/zero")
            return p
        os.mkfifo(tmp_path / name)
        return tmp_path / name

    what = "a FIFO (named pipe)" if kind == "fifo" else "a character device"
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("hung"))
    signal.alarm(60)
    try:
        for args, words in [
            ([node("exp.toml")], "experiment file '"),
            (["--models", node("spec.toml")], "model spec '"),
            (["--dataset", node("d.npz")], "dataset '"),  # made absolute (a link: its target) when checked
            (["--dataset", node("d.tar.gz")], "dataset '"),
        ]:
            rc, _, err = cli(capsys, "run", *args, "--epochs", "1", "--out", tmp_path / "runs")
            assert rc == 2 and words in err and f"' is {what}, not a regular file" in err, (args, err)
    finally:
        signal.alarm(0)
    assert not (tmp_path / "runs").exists()


def test_paths_too_long_and_symlink_loops_are_named_errors(tmp_path, capsys, no_plots):
    from PIL import Image

    long_name = tmp_path / ("a" * 300 + ".npz")
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", long_name, "--out", tmp_path / "runs")
    assert rc == 2 and "is a path too long for this system" in err, err
    deep = str(tmp_path) + "/a" * 2500 + ".npz"
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", deep, "--out", tmp_path / "runs")
    assert rc == 2 and "is a path too long for this system (5," in err, err
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", npz(tmp_path / "ok.npz"), "--train-limit", "30",
                     "--out", tmp_path / ("b" * 300))
    assert rc == 2 and "is a path too long for this system" in err, err
    rc, _, err = cli(capsys, "report", tmp_path / ("c" * 300))
    assert rc == 2 and "too long" in err.lower(), err
    # An image folder with a symbolic link loop where an image should be.
    import numpy as np

    for s in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "imf" / s / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imf" / s / c / f"{i}.png")
    (tmp_path / "imf" / "train" / "a" / "loop.png").symlink_to("loop.png")
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", tmp_path / "imf", "--out", tmp_path / "runs")
    assert rc == 3 and "loop.png' is a symbolic link loop" in err, err
    (tmp_path / "loop.toml").symlink_to("loop.toml")
    rc, _, err = cli(capsys, "run", tmp_path / "loop.toml")
    assert rc == 2 and "experiment file" in err and "is a symbolic link loop" in err, err


@pytest.mark.parametrize("var, value", [("ARCHBENCH_THREADS", "9999999999"), ("ARCHBENCH_THREADS", str(2**31)),
                                        ("ARCHBENCH_THREADS", "5000"), ("ARCHBENCH_JOBS", "9999999999"),
                                        ("ARCHBENCH_JOBS", "0"), ("ARCHBENCH_MEMORY_LIMIT", "9" * 40),
                                        ("ARCHBENCH_MEMORY_LIMIT", str(2**61)), ("ARCHBENCH_MEMORY_LIMIT", "-1")])
def test_numeric_environment_variables_are_range_checked(tmp_path, capsys, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    rc, _, err = cli(capsys, "run", *QUICK, "--dataset", npz(tmp_path / "ok.npz"), "--out", tmp_path / "runs")
    assert rc == 2 and f"${var}" in err and "invalid" in err or "not a number of bytes" in err, err
    assert not (tmp_path / "runs").exists()


def test_an_ascii_only_output_does_not_crash_the_command(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "archbench", "models"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"\\xb1" in done.stdout or b"\\u" in done.stdout  # the non-ASCII characters, escaped
    done.stdout.decode("ascii")


USER = '''
import os
import torch


class Custom(BaseException):
    pass


if os.environ.get("BEX_AT_IMPORT"):
    raise Custom("at import")


def build_generator_exit():
    raise GeneratorExit("at build")


def build_custom():
    raise Custom("at build")


class Mid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(784, 3)
        self.steps = 0

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.steps += 1
            if self.steps > 2:
                raise Custom("mid-training")
        return self.lin(x.flatten(1))


def mid():
    return Mid()
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    import sys

    (tmp_path / "bex_models.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bex_models", raising=False)
    yield
    sys.modules.pop("bex_models", None)


@pytest.mark.parametrize("ref, words", [("bex_models:build_generator_exit", "raised GeneratorExit: at build"),
                                        ("bex_models:build_custom", "raised Custom: at build")])
def test_a_base_exception_at_build_is_a_named_error(tmp_path, capsys, user_models, ref, words):
    rc, _, err = cli(capsys, "run", *QUICK[:-1], ref, "--dataset", npz(tmp_path / "ok.npz"),
                     "--out", tmp_path / "runs")
    assert rc == 2 and words in err, err
    assert not (tmp_path / "runs").exists()


def test_a_base_exception_at_import_is_a_named_error(tmp_path, capsys, user_models, monkeypatch):
    monkeypatch.setenv("BEX_AT_IMPORT", "1")
    rc, _, err = cli(capsys, "run", *QUICK[:-1], "bex_models:mid", "--dataset", npz(tmp_path / "ok.npz"),
                     "--out", tmp_path / "runs")
    assert rc == 2 and "importing module 'bex_models' raised Custom: at import" in err, err


def test_a_base_exception_mid_training_fails_that_unit_only(tmp_path, capsys, user_models, no_plots):
    import json

    rc, _, err = cli(capsys, "run", *QUICK[:-1], "mlp,bex_models:mid", "--dataset", npz(tmp_path / "ok.npz"),
                     "--batch-size", "8", "--out", tmp_path / "runs", "--name", "r")
    assert rc == 4, err
    rec = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    (bad,) = rec["models"]["bex_models:mid"]["units"]
    assert bad["status"] == "failed" and bad["error"] == "Custom: mid-training" and bad["error_type"] == "Custom"
    assert rec["models"]["mlp"]["units"][0]["status"] == "ok"


# --------------------------------------------------------------------------- a pool worker killed mid-unit

KILLED = """
import sys
from pathlib import Path
import torch
from archbench.config import Source
from archbench.resolve import resolve
from archbench.data import load_dataset
from archbench.run.study import run_units_locally

d, run_dir = sys.argv[1], Path(sys.argv[2])
cfg = resolve({"models": ["mlp"], "seeds": [0, 1], "epochs": 400, "batch_size": 64, "data_dir": d,
               "verify": False}, source=Source.API)
data = load_dataset("fashion-mnist", d, verify=False)
run_units_locally([("mlp", 0), ("mlp", 1)], cfg, data, run_dir,
                  lambda ref, seed, unit: print("RESULT", seed, unit["status"], unit.get("error", ""), flush=True),
                  lambda s: print(s, flush=True), None, torch.device("cpu"), threads=1, jobs=2)
print("DONE", flush=True)
"""


def test_a_pool_worker_killed_mid_unit_fails_its_unit_and_the_run_finishes(tmp_path):
    """SIGKILL to one of two workers (as the kernel's out-of-memory killer sends it) while both train: that unit
    is recorded failed, naming the worker and the signal; the other, stopped with the broken pool, continues from
    its epoch checkpoint in a new worker and finishes; the run ends instead of hanging."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import write_synthetic_fashion

    d = write_synthetic_fashion(tmp_path / "data", n_train=512, n_test=40)
    run_dir = tmp_path / "run"
    (tmp_path / "killed.py").write_text(KILLED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(d), str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        ckpts = [run_dir / "checkpoints" / f"mlp-seed{s}.pt" for s in (0, 1)]
        deadline = time.monotonic() + 90
        while not all(c.exists() for c in ckpts) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        # (400 epochs of 8 steps: long enough on a quiet machine that both units are still training here; the
        # 40 it had took about a second, and a unit could finish before the other's checkpoint appeared)
        assert all(c.exists() for c in ckpts), "both units should be training" + (
            "" if proc.poll() is None else ": the run ended first:\n" + (proc.communicate()[0] or "")[-3000:])
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(pid) for pid in children
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2, children
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    results = [line.split(" ", 3) for line in out.splitlines() if line.startswith("RESULT")]
    assert "DONE" in out and len(results) == 2, out[-3000:]
    status = sorted(r[2] for r in results)
    assert status == ["failed", "ok"], out[-3000:]
    (failed,) = [r for r in results if r[2] == "failed"]
    assert f"(pid {workers[0]}) died, killed by SIGKILL" in failed[3], failed
    assert "continues from its last epoch checkpoint in a new worker" in out


# --------------------------------------------------------------------------- pre-flight model checks

PREFLIGHT = '''
import torch
from torch import nn


class IntLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 3)

    def forward(self, x):
        return self.lin(x.flatten(1)).round().long()


class GradOffInTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 3)

    def forward(self, x):
        if self.training:
            torch.set_grad_enabled(False)
        return self.lin(x.flatten(1))


def int_logits():
    return IntLogits()


def grad_off_in_training():
    return GradOffInTraining()


def float64_default():
    torch.set_default_dtype(torch.float64)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))


def grad_off():
    torch.set_grad_enabled(False)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
'''


@pytest.mark.parametrize("ref, words", [
    ("int_logits", "returns torch.int64 values (shape (2, 3)); expected float logits"),
    ("grad_off_in_training", "changes PyTorch's global state when trained: grad mode True -> False"),
    ("float64_default", "changes PyTorch's global state when built: default dtype torch.float32 -> torch.float64"),
    ("grad_off", "changes PyTorch's global state when built: grad mode True -> False"),
])
def test_preflight_refuses_a_model_by_name_before_anything_is_written(tmp_path, capsys, monkeypatch, ref, words):
    import sys

    import torch

    (tmp_path / "pf_models.py").write_text(PREFLIGHT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pf_models", raising=False)
    rc, _, err = cli(capsys, "run", *QUICK[:-1], f"mlp,pf_models:{ref}", "--dataset", npz(tmp_path / "ok.npz"),
                     "--out", tmp_path / "runs")
    assert rc == 2 and f"model 'pf_models:{ref}'" in err and words in err, err
    assert not (tmp_path / "runs").exists()
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()  # put back as it was
