import math

import pytest
import torch
from torch import nn

from archbench.errors import TrainingError, UsageError
from archbench.models import create_model
from archbench.train import TrainConfig, resolve_device, train


def _run(name, data, seed=0, **kw):
    torch.manual_seed(seed)
    model = create_model(name)
    cfg = TrainConfig(device="cpu", **kw)
    r = train(model, data.train_images[:1000], data.train_labels[:1000], data.test_images[:500],
              data.test_labels[:500], cfg, seed=seed)
    return model, r


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_same_seed_gives_identical_results_on_cpu(fashion, name):
    m1, r1 = _run(name, fashion, seed=1, epochs=2)
    m2, r2 = _run(name, fashion, seed=1, epochs=2)
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert r1.test.loss == r2.test.loss and r1.test.accuracy == r2.test.accuracy
    assert torch.equal(r1.test.predictions, r2.test.predictions)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    _, r3 = _run(name, fashion, seed=2, epochs=2)
    assert r3.test.loss != r1.test.loss


def test_learns_and_keeps_the_last_partial_batch(fashion):
    _, r = _run("mlp", fashion, epochs=3, batch_size=64)
    assert r.steps == 3 * math.ceil(1000 / 64)  # 16 steps per epoch; the last holds 40 images
    assert r.samples_seen == 3000
    assert len(r.history) == 3 and r.history[-1].train_loss < r.history[0].train_loss
    assert r.test.accuracy > 0.6  # chance is 0.1
    assert r.test.predictions.shape == (500,) and r.test.predictions.dtype == torch.int64
    acc = (r.test.predictions == fashion.test_labels[:500]).float().mean().item()
    assert acc == pytest.approx(r.test.accuracy)


def test_plain_and_fast_formulations_agree_closely(fashion):
    _, fast = _run("cnn", fashion, epochs=1, formulation="fast")
    _, plain = _run("cnn", fashion, epochs=1, formulation="plain")
    assert fast.formulation == "fast" and plain.formulation == "plain"
    # Same maths, different kernels: float rounding only.
    assert fast.history[0].train_loss == pytest.approx(plain.history[0].train_loss, rel=1e-3)


def test_progress_bar_receives_every_sample(fashion):
    seen = []

    class Bar:
        def __init__(self, total, desc, unit):
            self.total, self.n = total, 0
            seen.append(self)

        def update(self, k):
            self.n += k

        def set_postfix_str(self, s):
            self.post = s

        def close(self):
            pass

    torch.manual_seed(0)
    train(create_model("mlp"), fashion.train_images[:300], fashion.train_labels[:300], None, None,
          TrainConfig(device="cpu", epochs=2), seed=0, progress=Bar)
    assert [b.n for b in seen] == [300, 300] and "img/s" in seen[-1].post


def test_nan_loss_is_a_training_error(fashion):
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(x.flatten(1)) * float("inf")

    with pytest.raises(TrainingError, match="loss became nan"):
        train(Exploding(), fashion.train_images[:128], fashion.train_labels[:128], None, None,
              TrainConfig(device="cpu", epochs=1), seed=0)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("device", "tpu"),
                                          ("formulation", "magic")])
def test_invalid_config_is_a_usage_error(field, value):
    with pytest.raises(UsageError, match=str(value)):
        TrainConfig(**{field: value}).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(UsageError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
