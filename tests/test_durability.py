"""Nothing lost, nothing confusing: interrupted runs resume, failures are recorded, bad input is named."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--train-limit", "6400", "--test-limit", "500", "--epochs", "5", "--seeds", "0", "--quiet",
         "--no-timing", "--device", "cpu"]


def archbench(*args, cwd=None, env=None, timeout=300):
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "archbench", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def unit(run_dir: Path, model: str, seed: int = 0) -> dict:
    rec = json.loads((run_dir / "results.json").read_text())
    units = [u for u in rec["models"].get(model, {}).get("units", []) if u["seed"] == seed]
    return units[0] if units else {}


def same_results(a: dict, b: dict):
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
    assert [{k: h[k] for k in keys} for h in a["history"]] == [{k: h[k] for k in keys} for h in b["history"]]
    assert a["test"] == b["test"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fashion_dir):
    out = tmp_path_factory.mktemp("runs")
    p = archbench("run", "--models", "cnn", *SMALL, "--out", str(out), "--name", "whole")
    assert p.returncode == 0, p.stderr
    return out / "whole"


def _start_and_kill(out: Path, name: str, sig: int):
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "archbench", "run", "--models", "cnn", *SMALL, "--out", str(out),
                             "--name", name], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / name / "checkpoints" / "cnn-seed0.pt"
    deadline = time.time() + 240
    while not ckpt.exists():
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.communicate()}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def test_sigkill_mid_unit_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    code, _, _ = _start_and_kill(tmp_path, "killed", signal.SIGKILL)
    assert code == -signal.SIGKILL
    run_dir = tmp_path / "killed"
    json.loads((run_dir / "results.json").read_text())  # still valid JSON
    assert unit(run_dir, "cnn").get("status") != "ok", "the kill should land mid-unit"
    p = archbench("run", "--resume", str(run_dir), "--quiet")
    assert p.returncode == 0, p.stderr
    resumed = unit(run_dir, "cnn")
    assert resumed["status"] == "ok" and resumed["training"]["resumed_from_checkpoint"]
    same_results(resumed, unit(uninterrupted, "cnn"))
    assert not (run_dir / "checkpoints" / "cnn-seed0.pt").exists()


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    code, _, stderr = _start_and_kill(tmp_path, "int", signal.SIGINT)
    assert code == 130
    assert f"archbench run --resume {tmp_path / 'int'}" in stderr and "Traceback" not in stderr


def test_resume_skips_finished_units_and_refuses_a_changed_config(uninterrupted, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(uninterrupted, run_dir)
    before = (run_dir / "results.json").read_text()
    p = archbench("run", "--resume", str(run_dir), "--quiet")
    assert p.returncode == 0, p.stderr
    assert unit(run_dir, "cnn") == json.loads(before)["models"]["cnn"]["units"][0]
    p = archbench("run", "--resume", str(run_dir), "--epochs", "7", "--lr", "0.01")
    assert p.returncode == 2
    assert "epochs (model cnn): stored 5, given 7" in p.stderr
    assert "lr (model cnn): stored 0.001, given 0.01" in p.stderr
    # The same value as stored is no change: the run resumes.
    p = archbench("run", "--resume", str(run_dir), "--epochs", "5", "--quiet")
    assert p.returncode == 0, p.stderr


def test_a_failing_model_does_not_sink_the_run(tmp_path, fashion_dir):
    (tmp_path / "bad_models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Nan(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(784, 10)\n"
        "    def forward(self, x):\n        return self.lin(x.flatten(1)) * float('nan')\n"
        "class Boom(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        if self.training and x.shape[0] == 64:\n            raise RuntimeError('boom in training')\n"
        "        return self.lin(x.flatten(1))\n"
        "def nan():\n    return Nan()\n"
        "def boom():\n    return Boom()\n")
    p = archbench("run", "--models", "bad_models:nan,mlp,bad_models:boom", "--train-limit", "256",
                  "--test-limit", "100", "--epochs", "1", "--quiet", "--no-timing", "--out", "runs", "--name", "f",
                  cwd=tmp_path)
    assert p.returncode == 4, p.stderr
    run_dir = tmp_path / "runs" / "f"
    assert unit(run_dir, "mlp")["status"] == "ok"
    assert "loss became nan" in unit(run_dir, "bad_models:nan")["error"]
    assert "boom in training" in unit(run_dir, "bad_models:boom")["error"]
    report = (run_dir / "report.md").read_text()
    assert "## Failed units" in report and "boom in training" in report


def test_check_determinism(tmp_path, fashion_dir):
    p = archbench("run", "--models", "cnn", "--train-limit", "640", "--test-limit", "200", "--epochs", "2",
                  "--quiet", "--no-timing", "--check-determinism", "--out", str(tmp_path), "--name", "d")
    assert p.returncode == 0, p.stderr
    assert "determinism check (cnn, seed 0): identical results" in p.stdout
    rec = json.loads((tmp_path / "d" / "results.json").read_text())
    assert rec["determinism_check"]["identical"] is True


def _copy_data(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("damage, words", [
    ("flip", "SHA-256 of the decompressed payload"),
    ("truncate", "not a valid gzip file"),
    ("magic", "magic number"),
    ("labels", "label 200 out of range"),
    ("missing", "lacks t10k-labels-idx1-ubyte"),
])
def test_bad_data_exits_3_with_a_named_problem(tmp_path, fashion_dir, damage, words):
    d = _copy_data(fashion_dir, tmp_path / "data")
    labels = next(d.glob("t10k-labels-idx1-ubyte*"))
    payload = gzip.decompress(labels.read_bytes()) if labels.suffix == ".gz" else labels.read_bytes()
    extra = []
    if damage == "flip":
        payload = payload[:-1] + bytes([(payload[-1] + 1) % 10])
    elif damage == "magic":
        payload = b"\x00\x01" + payload[2:]
        extra = ["--no-verify"]  # with verification on, the checksum fails first
    elif damage == "labels":
        payload = payload[:-1] + bytes([200])
        extra = ["--no-verify"]
    if damage == "truncate":
        labels.write_bytes(gzip.compress(payload)[:50])
        labels.rename(labels.with_name("t10k-labels-idx1-ubyte.gz"))
    elif damage == "missing":
        labels.unlink()
    else:
        labels.unlink()
        (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(payload))
    p = archbench("run", "--data-dir", str(d), "--out", str(tmp_path / "runs"), *extra)
    assert p.returncode == 3, p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists()


def test_data_dir_that_is_a_file_and_debug_traceback(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = archbench("run", "--data-dir", str(f))
    assert p.returncode == 3 and "not a directory" in p.stderr and "Traceback" not in p.stderr
    p = archbench("--debug", "run", "--data-dir", str(f))
    assert p.returncode != 0 and "Traceback" in p.stderr


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                                                   reason="no CUDA GPU on this machine")),
])
def test_train_resumed_from_an_epoch_checkpoint_continues_the_same_run(fashion, device):
    """Epoch 1, checkpoint, then a fresh model resumed from it for epochs 2-3,
    against 3 epochs straight: the same weights (exactly on CPU; on CUDA to
    float noise). A scheduled AdamW recipe with augmentation and bf16, so that
    the optimizer state, the lr objects and both generators must all carry
    over; on CUDA the step is a graph, which must be captured after the
    checkpoint is loaded (it keeps the optimizer-state tensors it saw)."""
    import copy

    import torch

    from archbench.models import create_model
    from archbench.train import TrainConfig, train

    # On CUDA the MLP in fp32: its kernels are run-to-run deterministic, so a
    # difference is the resume's, not cuDNN's atomics amplified over 30 steps.
    name = "cnn" if device == "cpu" else "mlp"
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, optimizer="adamw", weight_decay=0.01,
                      schedule="onecycle", augment_crop=2, augment_flip=True,
                      precision="bf16" if device == "cpu" else "fp32", device=device)
    x, y = fashion.train_images[:1000], fashion.train_labels[:1000]
    xt, yt = fashion.test_images[:500], fashion.test_labels[:500]
    torch.manual_seed(0)
    straight = create_model(name)
    r_straight = train(straight, x, y, xt, yt, cfg, seed=0)
    saved = []
    torch.manual_seed(0)
    first = create_model(name)
    train(first, x, y, xt, yt, cfg, seed=0,
          checkpoint=lambda s: saved.append(copy.deepcopy(s)) if s["epoch"] == 1 else None)
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG
    resumed = create_model(name)
    r_resumed = train(resumed, x, y, xt, yt, cfg, seed=0, resume_from=saved[0])
    assert [h.epoch for h in r_resumed.history] == [1, 2, 3]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if device == "cpu":
            assert torch.equal(a, b), k
        else:
            assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), k
    assert r_resumed.test.loss == pytest.approx(r_straight.test.loss, rel=1e-6 if device == "cpu" else 1e-3)
