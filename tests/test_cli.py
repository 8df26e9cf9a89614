import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def archbench(*args, cwd=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "archbench", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, fashion_dir):
    out = tmp_path_factory.mktemp("runs")
    p = archbench("run", "--train-limit", "640", "--test-limit", "300", "--epochs", "2", "--seeds", "0,1",
                  "--out", str(out), "--name", "t", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    return out / "t", p


def test_run_writes_record_report_and_weights(small_run):
    run_dir, p = small_run
    assert "USDT" not in p.stderr  # the profiler's backend logs nothing into the user's terminal
    rec = json.loads((run_dir / "results.json").read_text())
    assert rec["schema"] == "archbench.run/2"
    assert rec["config"]["models"] == ["mlp", "cnn"] and rec["config"]["seeds"] == [0, 1]
    assert rec["dataset"]["train_samples"] == 640 and rec["dataset"]["verified_sha256"]
    for k in ("torch", "python", "cpu", "torch_threads"):
        assert k in rec["environment"]
    for name, params in (("mlp", 235_146), ("cnn", 56_714)):
        entry = rec["models"][name]
        assert entry["measurements"]["params"]["trainable"] == params
        assert [u["seed"] for u in entry["units"]] == [0, 1]
        for u in entry["units"]:
            assert u["status"] == "ok" and len(u["history"]) == 2
            assert len(u["test"]["predictions"]) == 300
            # The trained model in every format, ONNX included (the test extra installs onnx).
            assert set(u["files"]) == {"safetensors", "state_dict", "onnx"} and "onnx_note" not in u
            for fmt, f in u["files"].items():
                assert (run_dir / "models" / f).stat().st_size == u["saved_size_bytes"][fmt]
    table = p.stdout
    assert "mlp: " in table and "235,146" in table and "56,714" in table  # narrow (subprocess): one block per model
    assert "Bottom line:" in table and table.rstrip().endswith(str(run_dir / "report.html"))
    report = (run_dir / "report.md").read_text()
    assert "| mlp |" in report and "| cnn |" in report and "n=2)" in report
    assert (run_dir / "report.html").stat().st_size > 10_000 and (run_dir / "plots" / "learning_curves.png").exists()


def test_report_rebuilds_from_results_json_alone(small_run, tmp_path):
    run_dir, _ = small_run
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_bytes((run_dir / "results.json").read_bytes())
    p = archbench("report", str(copy))
    assert p.returncode == 0, p.stderr
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text()


def test_models_lists_the_registry():
    p = archbench("models")
    assert p.returncode == 0
    assert "mlp" in p.stdout and "235,146" in p.stdout and "1,413,504" in p.stdout


@pytest.mark.parametrize("args, code, words", [
    (["run", "--epochs", "0"], 2, "--epochs must be an integer >= 1, got 0"),
    (["run", "--epochs", "-3"], 2, "got -3"),
    (["run", "--batch-size", "0"], 2, "--batch-size must be an integer >= 1"),
    (["run", "--lr", "abc"], 2, "--lr must be a finite number > 0, got abc"),
    (["run", "--seeds", "1,x"], 2, "comma-separated integers"),
    (["run", "--device", "tpu"], 2, "auto, cpu, cuda or cuda:N"),
    (["run", "--models", "mlp,resnet9000"], 2, "unknown model 'resnet9000'"),
    (["run", "--models", "nosuchpkg.mod:make"], 2, "cannot import module 'nosuchpkg.mod'"),
    (["report", "/nonexistent/run"], 2, "does not exist"),
])
def test_bad_input_exits_with_code_and_message(args, code, words, tmp_path):
    p = archbench(*args, "--out", str(tmp_path)) if args[0] == "run" else archbench(*args)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert words in p.stderr
    assert "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir()), "a rejected run must not create a run directory"


def test_missing_data_dir_exits_3(tmp_path):
    p = archbench("run", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert p.returncode == 3 and "--data-dir" in p.stderr and "not a directory" in p.stderr


def test_cuda_requested_without_gpu_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = archbench("run", "--device", "cuda", "--out", str(tmp_path))
    assert p.returncode == 2 and "no CUDA GPU" in p.stderr


def test_user_model_from_working_directory(tmp_path, fashion_dir):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def linear():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    p = archbench("run", "--models", "mymodels:linear", "--train-limit", "256", "--test-limit", "100",
                  "--epochs", "1", "--out", "runs", "--name", "u", "--quiet", cwd=tmp_path,
                  env={"PYTHONPATH": str(ROOT / "src")})
    assert p.returncode == 0, p.stderr
    rec = json.loads((tmp_path / "runs" / "u" / "results.json").read_text())
    assert rec["models"]["mymodels:linear"]["measurements"]["params"]["trainable"] == 7850
    from archbench.run.rundir import safe_name

    stem = safe_name("mymodels:linear")
    assert stem.startswith("mymodels_linear-") and stem != safe_name("mymodels_linear")  # ':' is not a file name
    assert (tmp_path / "runs" / "u" / "models" / f"{stem}-seed0.safetensors").exists()


def test_profile_prints_layers_and_json_record():
    p = archbench("profile", "cnn", "--no-timing")
    assert p.returncode == 0, p.stderr
    for words in ("MaxPool2d", "706,752", "1,413,504", "258,932,736", "uncounted ops: none", "steady state"):
        assert words in p.stdout
    p = archbench("profile", "mlp", "--json", "--batch-size", "32", "--no-timing")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["measurements"]["flops"]["train_step_batch_size"] == 32
    assert sum(r["params"] for r in rec["layers"]) == 235_146
    assert rec["measurements"]["saved_size_bytes"]["safetensors"] > 235_146 * 4


def test_profile_unknown_model_is_a_usage_error():
    p = archbench("profile", "nope")
    assert p.returncode == 2 and "unknown model 'nope'" in p.stderr
