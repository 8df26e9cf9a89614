import pytest
import torch

from archbench.models import create_model, recipe_of
from archbench.train import TrainConfig, train
from archbench.train.evaluate import evaluate, shift, tta_views
from archbench.train.step import augment


def test_lr_schedules():
    c = TrainConfig(lr=1.0, schedule="onecycle", warmup=0.25)
    lrs = [c.lr_at(i, 101) for i in range(101)]
    assert lrs[0] == pytest.approx(0.04) and max(lrs) == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.0)
    assert lrs.index(max(lrs)) == 25
    cos = TrainConfig(lr=1.0, schedule="cosine", warmup=0.0)
    assert cos.lr_at(0, 11) == pytest.approx(1.0) and cos.lr_at(5, 11) == pytest.approx(0.5)
    assert TrainConfig(lr=0.3).lr_at(7, 10) == 0.3


def test_augment_crops_and_flips_per_image():
    x = torch.zeros(64, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    y = augment(x, 2, False, g)
    assert y.shape == x.shape and y.sum() <= 64
    pos = [tuple((img[0] == 1).nonzero()[0].tolist()) for img in y if img.sum() == 1]
    assert len(set(pos)) > 5, "each image draws its own shift"
    assert all(abs(r - 2) <= 2 and abs(c - 3) <= 2 for r, c in pos)
    f = augment(x, 0, True, torch.Generator().manual_seed(1))
    flipped = (f[:, 0, 2, 2] == 1).sum().item()
    assert 10 < flipped < 54 and ((f[:, 0, 2, 3] == 1) | (f[:, 0, 2, 2] == 1)).all()
    assert torch.equal(augment(x, 2, True, torch.Generator().manual_seed(5)),
                       augment(x, 2, True, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("pad,flip,shape", [(2, True, (50, 1, 28, 28)), (3, False, (9, 3, 7, 5)),
                                            (0, True, (20, 2, 4, 6)), (1, True, (33, 3, 5, 5))])
def test_augment_equals_a_per_image_reference(pad, flip, shape):
    """The one-gather crop+flip against pad/slice/flip done image by image,
    from the same draws (dy, dx, then the flip mask)."""
    x = torch.rand(*shape)
    b, c, h, w = shape
    draws = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=draws) if pad else torch.zeros(b, 1, dtype=torch.long)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=draws) if pad else torch.zeros(b, 1, dtype=torch.long)
    mask = torch.rand(b, generator=draws) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    expected = torch.stack([
        (lambda img: img.flip(2) if mask[i] else img)(
            torch.nn.functional.pad(x[i], (pad,) * 4)[:, dy[i, 0]:dy[i, 0] + h, dx[i, 0]:dx[i, 0] + w])
        for i in range(b)])
    assert torch.equal(augment(x, pad, flip, torch.Generator().manual_seed(3)), expected)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = augment(cl, pad, flip, torch.Generator().manual_seed(3))
    assert torch.equal(out, expected) and (c == 1 or out.is_contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("name", ["cnn_bn", "resnet_small", "logreg", "dct_cnn"])
def test_zoo_models_train_with_their_recipes(fashion, name):
    torch.manual_seed(0)
    # Small batches so that 2,048 images make enough steps for BatchNorm's statistics.
    cfg = TrainConfig(**{**recipe_of(name), "epochs": 2, "batch_size": 64, "device": "cpu"})
    r = train(create_model(name), fashion.train_images[:2048], fashion.train_labels[:2048],
              fashion.test_images[:500], fashion.test_labels[:500], cfg, seed=0)
    assert r.test.accuracy > 0.5
    torch.manual_seed(0)
    r2 = train(create_model(name), fashion.train_images[:2048], fashion.train_labels[:2048],
               fashion.test_images[:500], fashion.test_labels[:500], cfg, seed=0)
    assert r2.test.loss == r.test.loss, "recipes stay deterministic on CPU"


def test_shift_moves_content_and_fills_zeros():
    x = torch.arange(1, 13, dtype=torch.float32).view(1, 1, 3, 4)
    for dy, dx in [(1, 0), (-1, 0), (0, 2), (0, -1), (2, -3), (0, 0)]:
        expected = torch.zeros_like(x)
        for r in range(3):
            for c in range(4):
                if 0 <= r - dy < 3 and 0 <= c - dx < 4:
                    expected[0, 0, r, c] = x[0, 0, r - dy, c - dx]
        assert torch.equal(shift(x, dy, dx), expected), (dy, dx)


def test_tta_shift_averages_the_logits_of_every_view():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    x, y = torch.rand(30, 1, 8, 8), torch.randint(0, 10, (30,))
    assert len(tta_views(True, 1)) == 10 and len(tta_views(False, 2)) == 5 and tta_views(False, 0) == [(0, 0, False)]
    with torch.no_grad():
        views = [x, x.flip(3)]
        for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
            v = shift(x, dy, dx)
            views += [v, v.flip(3)]
        logits = torch.stack([model(v) for v in views]).mean(0)
    r = evaluate(model, x, y, batch_size=7, tta_flip=True, tta_shift=1)
    assert torch.equal(r.predictions, logits.argmax(1))
    assert r.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)
    plain = evaluate(model, x, y, batch_size=7)
    assert plain.loss != r.loss


def test_tta_flip_changes_only_evaluation(fashion):
    results = []
    for tta in (False, True):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=1, device="cpu", tta_flip=tta)
        results.append(train(create_model("mlp"), fashion.train_images[:512], fashion.train_labels[:512],
                             fashion.test_images[:300], fashion.test_labels[:300], cfg, seed=0))
    assert results[0].history[0].train_loss == results[1].history[0].train_loss
    assert results[0].test.loss != results[1].test.loss


def test_learning_curve_uses_one_view_and_the_final_test_all_views(fashion):
    """Test-time augmentation costs views x the evaluation: the per-epoch curve
    is evaluated on one view, the final test on every view."""
    from archbench.train import to_input

    x, y = fashion.test_images[:300], fashion.test_labels[:300]
    for flip, pixels, views in ((False, 0, 1), (True, 1, 10)):
        torch.manual_seed(0)
        model = create_model("mlp")
        cfg = TrainConfig(epochs=2, device="cpu", tta_flip=flip, tta_shift=pixels)
        r = train(model, fashion.train_images[:512], fashion.train_labels[:512], x, y, cfg, seed=0)
        xt = to_input(x, torch.device("cpu"))
        one = evaluate(model, xt, y)
        all_views = evaluate(model, xt, y, tta_flip=flip, tta_shift=pixels)
        assert r.test_views == views
        assert r.history[-1].test_loss == one.loss  # the curve: one view
        assert r.test.loss == all_views.loss and r.test.predictions.tolist() == all_views.predictions.tolist()
        assert (r.final_eval_seconds > 0) == (views > 1)  # no second evaluation without test-time views
