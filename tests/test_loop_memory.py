"""The training step's measured peak is the peak of the training loop as it
runs, checked by a method that reads no profiler event: a malloc-level
tracker (tests/native/malloc_peak.c, preloaded into a subprocess) that counts
every live heap block whoever allocated it, around steady steps of the real
loop (archbench.train.loop.train)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHIM = Path(__file__).parent / "native" / "malloc_peak.c"

# Runs in the subprocess: the real loop on an mlp-like, parameter-heavy model; the tracker's peak is reset when
# the loop gathers its third batch (two steps done) and read when it gathers its eighth: five steady steps,
# with the gathers between them.
SCRIPT = """
import ctypes, json
import torch
from torch import nn
from archbench.config import TrainConfig
from archbench.measure import measure_step_memory
from archbench.train import loop

lib = ctypes.CDLL(None)
lib.malloc_live.restype = lib.malloc_peak.restype = ctypes.c_longlong
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512, bias=False), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                      nn.Linear(256, 10))
cfg = TrainConfig(epochs=1, batch_size=64, device="cpu")
marks = []
gather = loop.gather

def tracked(*args, **kwargs):
    if len(marks) == 2:
        lib.malloc_peak_reset()
    marks.append((lib.malloc_live(), lib.malloc_peak()))
    return gather(*args, **kwargs)

loop.gather = tracked
x = torch.randint(0, 255, (64 * 8, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (64 * 8,))
loop.train(model, x, y, None, None, cfg, seed=0)
mem = measure_step_memory(model, cfg=cfg)
print(json.dumps({"live": [m[0] for m in marks], "loop_excursion": marks[7][1] - marks[2][0],
                  "peak": mem.peak_bytes, "before": mem.before_step_bytes}))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not sys.platform.startswith("linux"):
        pytest.skip("the malloc-level tracker needs a C compiler and glibc")
    out = tmp_path_factory.mktemp("shim") / "libmalloc_peak.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM)], check=True)
    return out


def test_the_steady_step_peak_is_the_loops_within_1_percent(shim):
    env = {**os.environ, "LD_PRELOAD": str(shim), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    # Between steps the loop holds the same bytes every time (to a few small Python objects): no batch
    # (200,704 B) and no gradients (1.6 MB) kept from the last step.
    assert max(r["live"][1:]) - min(r["live"][1:]) < 4096
    # The bytes the loop allocates above that, at its peak, are the measured step's above what exists before it
    # (the parameters, Adam's state, the loss and prediction slots); the tracker also counts malloc's rounding
    # and the Python and autograd objects each step makes, which the allocator's events leave out.
    measured = r["peak"] - r["before"]
    assert measured <= r["loop_excursion"] <= measured * 1.01
    assert abs(r["loop_excursion"] - measured) <= 0.01 * r["peak"]
