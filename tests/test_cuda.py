"""Checks that need a CUDA GPU (skipped elsewhere; run on a GPU machine)."""

import pytest
import torch

from archbench.measure import measure_step_memory
from archbench.models import create_model
from archbench.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_graphed_step_trains_like_the_eager_step(fashion, name):
    results = {}
    for graphs in (True, False):
        torch.manual_seed(0)
        model = create_model(name)
        # 2,000 = 31 x 64 + 16: exercises the second graph, for the partial batch.
        results[graphs] = train(model, fashion.train_images[:2000], fashion.train_labels[:2000],
                                fashion.test_images[:1000], fashion.test_labels[:1000],
                                TrainConfig(device="cuda", epochs=2, cuda_graphs=graphs), seed=0)
    g, e = results[True], results[False]
    assert g.cuda_graphs and not e.cuda_graphs
    assert g.steps == e.steps == 2 * 32
    for hg, he in zip(g.history, e.history):
        assert hg.train_loss == pytest.approx(he.train_loss, rel=1e-3)
        assert hg.train_acc == pytest.approx(he.train_acc, abs=0.01)
    assert g.test.accuracy == pytest.approx(e.test.accuracy, abs=0.01)


def test_graph_capture_warmup_does_not_leak_into_training(fashion):
    """Warm-up steps before capture are undone: the first epoch's loss on a
    one-batch dataset equals the eager run's to float precision."""
    losses = []
    for graphs in (True, False):
        torch.manual_seed(1)
        r = train(create_model("mlp"), fashion.train_images[:64], fashion.train_labels[:64], None, None,
                  TrainConfig(device="cuda", epochs=1, cuda_graphs=graphs), seed=1)
        losses.append(r.history[0].train_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_cuda_step_memory_has_allocator_peak():
    r = measure_step_memory(create_model("cnn"), batch_size=64, device="cuda")
    assert r.cuda_allocator_peak_bytes is not None
    assert r.cuda_allocator_peak_bytes >= 0.95 * r.peak_bytes
    assert r.breakdown["parameters"] == 56_714 * 4


def test_zoo_recipe_features_under_graphs(fashion):
    """Schedule (tensor lr), augmentation, label smoothing, bf16 and BatchNorm
    inside the captured step train like the eager step."""
    from archbench.models import recipe_of

    results = {}
    for graphs in (True, False):
        torch.manual_seed(0)
        # Batch 64 so that 3,000 images make enough steps for BatchNorm's statistics.
        cfg = TrainConfig(**{**recipe_of("resnet_small"), "epochs": 2, "batch_size": 64, "device": "cuda",
                             "cuda_graphs": graphs})
        results[graphs] = train(create_model("resnet_small"), fashion.train_images[:3000],
                                fashion.train_labels[:3000], fashion.test_images[:1000], fashion.test_labels[:1000],
                                cfg, seed=0)
    g, e = results[True], results[False]
    assert g.history[-1].train_loss == pytest.approx(e.history[-1].train_loss, rel=0.05)
    assert g.test.accuracy == pytest.approx(e.test.accuracy, abs=0.04)
    assert g.test.accuracy > 0.6
