import torch
import torch.nn.functional as F
from torch import nn

from archbench.models import create_model
from archbench.train.formulation import _reorder, fast_cpu_view
from archbench.train.optim import LeanAdam


def _grads(model, x, y):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_relu_after_maxpool_is_the_same_function_and_gradient_exactly():
    # Inputs with ties and many non-positive values: the hard cases.
    torch.manual_seed(0)
    x = torch.randint(-3, 3, (8, 4, 10, 10)).float().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    plain = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    swapped = _reorder(plain)
    assert [type(m) for m in swapped] == [nn.MaxPool2d, nn.ReLU]
    g = torch.randn(8, 4, 5, 5)
    a, b = plain(x), swapped(x2)
    assert torch.equal(a, b)
    a.backward(g)
    b.backward(g)
    assert torch.equal(x.grad, x2.grad)


def test_fast_view_shares_parameters_and_matches_plain_model():
    torch.manual_seed(0)
    model = create_model("cnn")
    view, channels_last = fast_cpu_view(model)
    assert channels_last
    assert [id(p) for p in view.parameters()] == [id(p) for p in model.parameters()]
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "ReLU", "MaxPool2d"]  # user's model untouched
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    ref = create_model("cnn")
    ref.load_state_dict(model.state_dict())
    l1, g1 = _grads(ref, x, y)
    l2, g2 = _grads(view, x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mlp_view_is_unchanged_layout():
    view, channels_last = fast_cpu_view(create_model("mlp"))
    assert not channels_last


def test_lean_adam_is_bit_identical_to_torch_fused_adam():
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        a = create_model(name)
        b = create_model(name)
        b.load_state_dict(a.state_dict())
        oa = LeanAdam(a.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        ob = torch.optim.Adam(b.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7, fused=True)
        for _ in range(4):
            x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
            for m, o in ((a, oa), (b, ob)):
                o.zero_grad()
                F.cross_entropy(m(x), y).backward()
                o.step()
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        assert oa.state_bytes() == 2 * sum(p.numel() * 4 for p in a.parameters()) + 4 * len(oa.params)
