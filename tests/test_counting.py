"""The op counter against hand-derived formulas and PyTorch's own FlopCounterMode."""

import time

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archbench.measure import count_forward, count_train_step, epoch_flops, layer_table, time_calls
from archbench.measure.counting import ADAM_FLOPS_PER_ELEMENT, OpCounter
from archbench.models import create_model


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def conv_stacks(draw):
    """A random model of Conv2d (any stride/padding/dilation/groups), BatchNorm,
    activations, pooling, dropout, residual blocks, Flatten and Linear, with
    its per-sample forward MACs per parameterised layer computed by hand."""
    c, h, w = draw(st.sampled_from([1, 2, 4])), draw(st.integers(8, 16)), draw(st.integers(8, 16))
    shape0 = (c, h, w)
    layers, macs = [], []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "residual", "pool", "act"]))
        if kind == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
            out = groups * draw(st.integers(1, 4))
            k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
            p, d = draw(st.integers(0, 2)), draw(st.integers(1, 2))
            ho, wo = conv_out(h, k, s, p, d), conv_out(w, k, s, p, d)
            if ho < 2 or wo < 2:
                continue
            layers += [nn.Conv2d(c, out, k, s, p, d, groups, bias=draw(st.booleans())), nn.BatchNorm2d(out)]
            macs.append(out * ho * wo * (c // groups) * k * k)
            c, h, w = out, ho, wo
        elif kind == "residual":
            layers.append(Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Dropout(0.1))))
            macs.append(c * h * w * c * 9)
        elif kind == "pool" and h >= 4 and w >= 4:
            layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
            h, w = h // 2, w // 2
        else:
            layers.append(draw(st.sampled_from([nn.ReLU(), nn.GELU(), nn.SiLU()])))
    layers += [nn.Flatten(), nn.Linear(c * h * w, 7)]
    macs.append(c * h * w * 7)
    return nn.Sequential(*layers), shape0, macs


@settings(max_examples=40, deadline=None)
@given(conv_stacks(), st.integers(1, 3))
def test_matmul_conv_macs_are_exact_for_random_models(case, batch):
    model, shape, macs = case
    ours = count_forward(model, shape, batch_size=batch)
    assert ours.matmul_conv == 2 * batch * sum(macs)
    assert not ours.uncounted, ours.uncounted
    # PyTorch's own dispatch-level counter agrees.
    with FlopCounterMode(display=False) as ref, torch.no_grad():
        model.eval()(torch.zeros(batch, *shape))
    assert ours.matmul_conv == ref.get_total_flops()


@settings(max_examples=25, deadline=None)
@given(conv_stacks())
def test_training_step_matmul_conv_is_exact(case):
    model, shape, macs = case
    b = 4
    step = count_train_step(model, shape, batch_size=b, num_classes=7)
    # forward + weight gradient of every layer + input gradient of all but the first.
    assert step["total"].matmul_conv == 2 * b * (2 * sum(macs) + sum(macs[1:]))
    if any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()):
        # torch 2.13's FlopCounterMode counts a grouped convolution's weight
        # gradient `groups` times over; the hand formula above is the reference.
        return
    x, y = torch.rand(b, *shape), torch.randint(0, 7, (b,))
    m = model.train()
    with FlopCounterMode(display=False) as ref:
        F.cross_entropy(m(x), y).backward()
    assert step["total"].matmul_conv == ref.get_total_flops()


def test_other_arithmetic_conventions_by_hand():
    # Linear(5 -> 3), ReLU, MaxPool1d-free stack at batch 2 with the loss.
    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU())
    fwd = count_forward(model, (5,), batch_size=2)
    assert fwd.other["bias"] == 2 * 3 and fwd.other["activation"] == 2 * 3
    pool = count_forward(nn.MaxPool2d(2), (3, 8, 8))
    assert pool.other["pooling"] == 3 * 4 * 4 * 3  # 3 comparisons per 2x2 window
    step = count_train_step(model, (5,), batch_size=2, num_classes=3)
    assert step["forward"].other["loss"] == 5 * 2 * 3 + 2 + 1  # log-softmax 5/elt, nll: N + 1
    params = 5 * 3 + 3
    assert step["optimizer"].other["optimizer"] == ADAM_FLOPS_PER_ELEMENT * params + 2  # + 2 step counters
    assert step["backward"].other["bias"] == 0
    assert step["backward"].other["reduction"] == 2 * 3  # the bias gradient sums over the batch


def test_unknown_ops_are_listed_never_silently_zero():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)[:, :10]

    c = count_forward(Odd(), (784,))
    assert c.uncounted == {"cumsum": 1}
    assert c.total == 0


def test_layer_table_attributes_every_flop():
    model = create_model("cnn")
    rows = layer_table(model)
    total = count_forward(model)
    assert sum(r["matmul_conv_flops"] for r in rows) == total.matmul_conv
    assert sum(r["other_flops"] for r in rows) == total.other_total
    assert [r["type"] for r in rows][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert rows[0]["output_shape"] == (1, 16, 26, 26) and rows[0]["macs"] == 26 * 26 * 16 * 9
    assert sum(r["params"] for r in rows) == 56_714


def test_epoch_flops_include_the_partial_batch():
    model = create_model("mlp")
    ep = epoch_flops(model, (1, 28, 28), 64, 1000)  # 15 full steps + one of 40
    full = count_train_step(model, batch_size=64)["total"]
    last = count_train_step(model, batch_size=40)["total"]
    assert ep["steps"] == 16
    assert ep["matmul_conv"] == 15 * full.matmul_conv + last.matmul_conv
    assert last.matmul_conv * 64 == full.matmul_conv * 40  # matmul work scales with the batch ...
    assert last.other["optimizer"] == full.other["optimizer"]  # ... the update does not


def test_latency_calibration_sleep_10ms():
    t = time_calls(lambda: time.sleep(0.010), warmup=2, min_calls=30, min_seconds=0.3)
    assert len(t.samples) >= 30
    assert 0.009 <= t.median <= 0.011
    assert t.percentile(90) >= t.median >= min(t.samples)


def test_counter_leaves_results_unchanged():
    x = torch.rand(3, 4)
    with OpCounter():
        y = (x @ x.t()).relu()
    assert torch.equal(y, (x @ x.t()).relu())
