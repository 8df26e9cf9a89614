"""The op counter against hand-derived formulas and PyTorch's own FlopCounterMode."""

import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archbench.measure import count_forward, count_train_step, epoch_flops, layer_table, time_calls
from archbench.measure.counting import ADAM_FLOPS_PER_ELEMENT, OpCounter
from archbench.models import create_model
from archbench.models.blocks import Residual


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


def _fake_clock(monkeypatch, durations):
    """time.perf_counter as the timer sees it: each call of the timed function lasts the next of ``durations``."""
    import itertools

    import archbench.measure.timing as timing

    now = [0.0]
    steps = itertools.cycle(durations)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return lambda: now.__setitem__(0, now[0] + next(steps))


def test_timing_stops_once_the_median_is_known_to_the_precision(monkeypatch):
    from archbench.measure.timing import median_ci_relative

    steady = _fake_clock(monkeypatch, [0.001])  # every call 1 ms: the median is known at once
    t = time_calls(steady, warmup=0, min_calls=20, min_seconds=10.0)
    assert len(t.samples) == 20 and t.stopped == "precision" and t.to_dict()["median_ci_relative"] < 1e-12
    noisy = _fake_clock(monkeypatch, [0.001, 0.003])  # half 1 ms, half 3 ms: the median is never pinned down
    t = time_calls(noisy, warmup=0, min_calls=20, min_seconds=1.0)
    assert t.stopped == "budget" and 0.999 <= sum(t.samples) <= 1.003
    assert median_ci_relative(t.samples) > 0.01
    t = time_calls(_fake_clock(monkeypatch, [0.001]), warmup=0, min_calls=20, min_seconds=0.5, precision=None)
    assert t.stopped == "budget" and len(t.samples) == 500  # no precision: the whole budget, as before
    # The interval's ranks by hand: for n = 20 the binomial(20, 1/2) tail P(B <= 5) = 0.0207 <= 0.025 < P(B <= 6).
    xs = list(range(1, 21))
    assert median_ci_relative([float(x) for x in xs]) == (15 - 6) / 2 / 10.5
    assert median_ci_relative([1.0] * 5) is None  # too few samples for a 95 % interval


def test_counter_leaves_results_unchanged():
    x = torch.rand(3, 4)
    with OpCounter():
        y = (x @ x.t()).relu()
    assert torch.equal(y, (x @ x.t()).relu())


# --- attention, recurrent layers, interpolation, einsum: hand-computed counts ---------------------

L_TOK, F_IN, E, HEADS, FFN, HID = 6, 5, 16, 4, 24, 12


class TokenModel(nn.Module):
    """Embed L tokens of F features (Linear), a sequence block, a head on the
    last token. The block's input needs a gradient, as in any real model."""

    def __init__(self, kind: str, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        self.embed = nn.Linear(F_IN, E)
        out = E
        if kind == "mha":
            self.block = nn.MultiheadAttention(E, HEADS, batch_first=True, dropout=dropout)
        elif kind == "encoder":
            self.block = nn.TransformerEncoderLayer(E, HEADS, FFN, dropout=dropout, batch_first=True)
        elif kind == "sdpa":
            self.block = nn.Linear(E, 3 * E)
            self.proj = nn.Linear(E, E)
        else:
            self.block = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](E, HID, batch_first=True)
            out = HID
        self.head = nn.Linear(out, 10)

    def forward(self, x):
        h = self.embed(x)
        if self.kind == "mha":
            h = self.block(h, h, h)[0]
        elif self.kind == "encoder":
            h = self.block(h)
        elif self.kind == "sdpa":
            b = h.shape[0]
            q, k, v = self.block(h).view(b, L_TOK, 3, HEADS, E // HEADS).permute(2, 0, 3, 1, 4)
            h = self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, L_TOK, E))
        else:
            h = self.block(h)[0]
        return self.head(h[:, -1])


def block_macs(kind: str) -> int:
    """Per-sample forward MACs of the sequence block, by hand."""
    attention = 2 * L_TOK * L_TOK * E                    # Q·Kᵀ and A·V over all heads: L²·(d + dv)·H
    projections = 4 * L_TOK * E * E                      # Q, K, V and output projections
    if kind in ("mha", "sdpa"):
        return projections + attention
    if kind == "encoder":
        return projections + attention + 2 * L_TOK * E * FFN
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    return L_TOK * gates * HID * (E + HID)               # input and hidden products, every time step


def model_macs(kind: str) -> tuple[int, int, int]:
    """(embed, block, head) forward MACs per sample."""
    return L_TOK * F_IN * E, block_macs(kind), (HID if kind in ("lstm", "gru", "rnn") else E) * 10


@pytest.mark.parametrize("kind", ["mha", "encoder", "sdpa", "lstm", "gru", "rnn"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_sequence_models_forward_macs_are_exact(kind, train_mode):
    model = TokenModel(kind)
    c = count_forward(model, (L_TOK, F_IN), batch_size=3, train_mode=train_mode)
    assert c.matmul_conv == 2 * 3 * sum(model_macs(kind))
    assert not c.uncounted and not c.partial


@pytest.mark.parametrize("kind,dropout", [("mha", 0.0), ("encoder", 0.1), ("encoder", 0.0), ("sdpa", 0.0),
                                          ("lstm", 0.0), ("gru", 0.0), ("rnn", 0.0)])
def test_sequence_models_training_step_macs_are_exact(kind, dropout):
    """Backward: the embedding's weight gradient only (its input is data);
    every other layer its weight and input gradients (2 x forward). A fused
    attention kernel's backward also recomputes Q·Kᵀ: L²·(3d + 2dv)·H MACs
    instead of the math path's four products, L²·(2d + 2dv)·H."""
    b = 4
    embed, block, head = model_macs(kind)
    step = count_train_step(TokenModel(kind, dropout), (L_TOK, F_IN), batch_size=b)
    backward = embed + 2 * block + 2 * head
    # MultiheadAttention with need_weights (its default) and dropout run the math path (bmm);
    # without dropout nn.TransformerEncoderLayer and F.scaled_dot_product_attention run the fused kernel.
    if (kind == "encoder" and dropout == 0.0) or kind == "sdpa":
        backward += L_TOK * L_TOK * E  # (3d + 2dv) - (2d + 2dv) = d per (query, key) pair and head
    if kind in ("gru", "rnn"):
        # On CPU these run as per-step matrix products under autograd: the zero initial
        # state needs no gradient, so the first step's hidden-state product is not transposed.
        backward -= {"gru": 3, "rnn": 1}[kind] * HID * HID
    assert step["forward"].matmul_conv == 2 * b * (embed + block + head)
    assert step["backward"].matmul_conv == 2 * b * backward
    assert not step["total"].uncounted


def test_fused_attention_kernel_counts_by_hand():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, lq, lk, d = 2, 3, 5, 7, 8
    q, k, v = (torch.rand(b, h, n, d, requires_grad=True) for n in (lq, lk, lk))
    pairs = b * h * lq * lk
    with OpCounter() as fwd:
        out = F.scaled_dot_product_attention(q, k, v)
    with OpCounter() as bwd:
        out.sum().backward()
    assert "_scaled_dot_product_flash_attention_for_cpu" in fwd.count.by_op
    assert fwd.count.matmul_conv == 2 * pairs * (d + d)
    assert bwd.count.matmul_conv == 2 * pairs * (3 * d + 2 * d)
    assert fwd.count.other["loss"] == 5 * pairs and fwd.count.other["elementwise"] == pairs
    with sdpa_kernel(SDPBackend.MATH), OpCounter() as math_fwd:
        F.scaled_dot_product_attention(q, k, v)
    assert math_fwd.count.matmul_conv == fwd.count.matmul_conv  # the same products, as bmm


def test_attention_fast_paths_are_counted_in_eval_mode():
    model = TokenModel("encoder").eval()
    with torch.no_grad(), OpCounter() as c:
        model(torch.rand(2, L_TOK, F_IN))
    assert "_transformer_encoder_layer_fwd" in c.count.by_op
    n = 2 * L_TOK
    assert c.count.other["normalization"] == 2 * 7 * n * E        # two layer norms
    assert c.count.other["activation"] == n * FFN                  # ReLU
    mha = TokenModel("mha").eval()
    with torch.no_grad(), OpCounter() as c:
        mha(torch.rand(2, L_TOK, F_IN))
    assert "_native_multi_head_attention" in c.count.by_op
    assert c.count.other["loss"] == 5 * 2 * HEADS * L_TOK * L_TOK  # softmax over every score


def test_nested_encoder_counts_each_sequence_length():
    """With a padding mask nn.TransformerEncoder runs nested tensors: attention
    costs Σ L_i² per head, the rest Σ L_i tokens."""
    import warnings

    layer = nn.TransformerEncoderLayer(E, HEADS, FFN, batch_first=True)
    enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()
    x = torch.rand(2, 5, E)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with warnings.catch_warnings(), torch.no_grad(), OpCounter() as c:
        warnings.simplefilter("ignore")
        enc(x, src_key_padding_mask=mask)
    tokens, squares = 5 + 3, 5 * 5 + 3 * 3
    assert c.count.matmul_conv == 2 * (4 * tokens * E * E + 2 * squares * E + 2 * tokens * E * FFN)


def test_layer_table_attributes_fused_attention():
    model = TokenModel("encoder")
    rows = layer_table(model, (L_TOK, F_IN))
    total = count_forward(model, (L_TOK, F_IN))
    assert sum(r["matmul_conv_flops"] for r in rows) == total.matmul_conv == 2 * sum(model_macs("encoder"))


def _args(op, *args, **kwargs):
    from archbench.measure.counting import _Args

    return _Args(op, args, kwargs)


def test_recurrent_kernels_of_other_backends_by_hand():
    """The formulas for ops this CPU does not run (cuDNN, whole-layer ops,
    CUDA's fused cells), on arguments laid out as their schemas say."""
    from archbench.measure.counting import FUSED_OPS, RNN_CELL_FLOPS

    aten = torch.ops.aten
    t, b, i, h = 7, 3, 5, 6
    x = torch.zeros(t, b, i)
    w = [torch.zeros(4 * h, i), torch.zeros(4 * h, h), torch.zeros(4 * h), torch.zeros(4 * h),   # layer 0
         torch.zeros(4 * h, h), torch.zeros(4 * h, h), torch.zeros(4 * h), torch.zeros(4 * h)]   # layer 1
    hx, cx = torch.zeros(2, b, h), torch.zeros(2, b, h)
    layer0, layer1 = t * b * 4 * h * (i + h), t * b * 4 * h * (h + h)
    whole = _args(aten.lstm.input, x, [hx, cx], w, True, 2, 0.0, True, False, False)
    mm, other = FUSED_OPS["lstm"](whole)
    assert mm == 2 * (layer0 + layer1)
    assert other["activation"] == 2 * t * b * h * RNN_CELL_FLOPS["lstm"]["activation"]
    cudnn = _args(aten._cudnn_rnn.default, x, w, 4, None, hx, cx, 2, h, 0, 2, False, 0.0, True, False, [], None)
    assert FUSED_OPS["_cudnn_rnn"](cudnn)[0] == 2 * (layer0 + layer1)

    def backward(mask):
        a = _args(aten._cudnn_rnn_backward.default, x, w, 4, torch.zeros(1), hx, cx, x, None, None, None, 2, h, 0,
                  2, False, 0.0, True, False, [], None, torch.zeros(1), mask)
        return FUSED_OPS["_cudnn_rnn_backward"](a)[0]

    # Data gradients: every layer's recurrence, layer 1's input product, layer 0's only if the input wants one.
    assert backward([True, True, True, True]) == 2 * 2 * (layer0 + layer1)
    assert backward([False, True, True, True]) == 2 * (2 * (layer0 + layer1) - t * b * 4 * h * i)
    assert backward([False, True, True, False]) == 2 * (layer0 + layer1 - t * b * 4 * h * i)
    gates = torch.zeros(b, 4 * h)
    mm, other = FUSED_OPS["_thnn_fused_lstm_cell"](_args(aten._thnn_fused_lstm_cell.default, gates, gates,
                                                         torch.zeros(b, h), torch.zeros(4 * h), torch.zeros(4 * h)))
    assert mm == 0 and other["bias"] == 2 * 4 * b * h and other["activation"] == 19 * b * h
    gru = _args(aten.gru.input, x, hx, [t_[: 3 * h] for t_ in w], True, 2, 0.0, True, False, False)
    assert FUSED_OPS["gru"](gru)[0] == 2 * t * b * 3 * h * ((i + h) + (h + h))


def test_cuda_attention_kernels_by_hand():
    """The flash/efficient kernels' own layout is (batch, length, heads, dim);
    with cumulative sequence lengths the batch is packed."""
    from archbench.measure.counting import FUSED_OPS

    aten = torch.ops.aten
    b, h, lq, lk, d = 2, 3, 4, 6, 8
    q, k = torch.zeros(b, lq, h, d), torch.zeros(b, lk, h, d)
    a = _args(aten._flash_attention_forward.default, q, k, k, None, None, lq, lk, 0.0, False, False)
    assert FUSED_OPS["_flash_attention_forward"](a)[0] == 2 * b * h * lq * lk * 2 * d
    packed_q, packed_k = torch.zeros(3 + 4, h, d), torch.zeros(5 + 2, h, d)
    a = _args(aten._flash_attention_forward.default, packed_q, packed_k, packed_k, torch.tensor([0, 3, 7]),
              torch.tensor([0, 5, 7]), 4, 5, 0.0, False, False)
    assert FUSED_OPS["_flash_attention_forward"](a)[0] == 2 * h * (3 * 5 + 4 * 2) * 2 * d
    qs = torch.zeros(b, h, lq, d)
    ks = torch.zeros(b, h, lk, d)
    a = _args(aten._scaled_dot_product_efficient_attention_backward.default, qs, qs, ks, ks, None, qs, qs,
              torch.zeros(1), torch.zeros(1), 0.0, [True] * 4)
    assert FUSED_OPS["_scaled_dot_product_efficient_attention_backward"](a)[0] == 2 * b * h * lq * lk * 5 * d


@pytest.mark.parametrize("mode,taps", [("linear", 2), ("bilinear", 4), ("bicubic", 16), ("trilinear", 8)])
def test_interpolation_counts_by_hand(mode, taps):
    dims = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}[mode]
    x = torch.rand(2, 3, *([4] * dims), requires_grad=True)
    with OpCounter() as fwd:
        y = F.interpolate(x, scale_factor=2, mode=mode)
    with OpCounter() as bwd:
        y.backward(torch.ones_like(y))
    assert fwd.count.other["interpolation"] == (2 * taps - 1) * y.numel()
    assert bwd.count.other["interpolation"] == 2 * taps * y.numel()
    assert not fwd.count.uncounted and not bwd.count.uncounted


def test_nearest_upsampling_copies_and_its_backward_sums():
    x = torch.rand(1, 2, 3, 3, requires_grad=True)
    with OpCounter() as fwd:
        y = F.interpolate(x, scale_factor=2, mode="nearest")
    with OpCounter() as bwd:
        y.backward(torch.ones_like(y))
    assert fwd.count.total == 0 and fwd.count.data_movement == {"upsample_nearest2d": 1}
    assert bwd.count.other["interpolation"] == y.numel()


@pytest.mark.parametrize("spec,shapes,macs", [
    ("ij,jk->ik", [(3, 4), (4, 5)], 3 * 4 * 5),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5),
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 8), (2, 3, 7, 8)], 2 * 3 * 5 * 7 * 8),
    ("i,i->", [(6,), (6,)], 6),
])
def test_einsum_counts_the_products_it_lowers_to(spec, shapes, macs):
    xs = [torch.rand(*s) for s in shapes]
    with OpCounter() as c:
        torch.einsum(spec, *xs)
    assert c.count.matmul_conv == 2 * macs
    assert not c.count.uncounted


def test_small_conventions_fixed():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    with OpCounter() as c:  # eval mode with gradients on: native_batch_norm(training=False)
        bn(x)
    assert c.count.other["normalization"] == 4 * x.numel()
    with OpCounter() as c:
        torch.rand(5).clamp_max_(0.5)
        torch.rand(5).clamp_min(0.5)
    assert c.count.other["activation"] == 10


def test_partial_flops_are_marked_in_the_table_and_the_report():
    from archbench.report import comparison_rows, render_report_markdown
    from tests.fixed_records import fixed_record

    record = fixed_record()
    name = next(iter(record["models"]))
    fl = record["models"][name]["measurements"]["flops"]
    fl["forward_uncounted_ops"] = {"cumsum": 1}
    fl["uncounted_ops"] = {"cumsum": 2}
    fl["partial"] = {"forward": True, "train_step": True}
    rows = {r[0]: r for r in comparison_rows(record)}
    assert rows[name][4].endswith("(partial)") and rows[name][5].endswith("(partial)")
    assert all("partial" not in cell for other, r in rows.items() if other != name for cell in r)
    text = render_report_markdown(record)
    assert "partial: these ops ran and are not counted (no formula): `cumsum` ×1" in text
    assert "`cumsum` ×2" in text


def test_profile_marks_partial_flops():
    from archbench.measure import measure_model
    from archbench.report.profile import render_profile

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(torch.cumsum(x.flatten(1), 1))

    meas = measure_model(Odd(), batch_size=8, timing=False)
    assert meas["flops"]["partial"] == {"forward": True, "train_step": True}
    assert meas["flops"]["forward_uncounted_ops"] == {"cumsum": 1}
    text = render_profile({"model": "odd", "input_shape": [1, 28, 28], "batch_size": 8, "device": "cpu",
                           "layers": layer_table(Odd()), "measurements": meas})
    assert "PARTIAL: the inference FLOPs miss ops with no formula: cumsum ×1" in text
    assert "7,840 (partial)" in text
