"""Matching losses: non-negative, zero at the target, gradient f(a) - y, stable where f saturates."""
import math

import pytest
import torch

from locoprop import matching_grad, matching_loss
from locoprop.transfer import get_transfer

TRANSFERS = ["identity", "tanh", "sigmoid", "relu", "softmax"]


def _random_pair(name, shape=(7, 5), scale=3.0, seed=0):
    """A pre-activation `a` and a target `y` inside the range of f (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    y = get_transfer(name).f(scale * torch.randn(shape, generator=g, dtype=torch.float64))
    return a, y


@pytest.mark.parametrize("name", TRANSFERS)
def test_nonnegative_and_gradient(name):
    a, y = _random_pair(name)
    a.requires_grad_(True)
    loss = matching_loss(name, a, y)
    assert loss.item() > 0.0
    (grad,) = torch.autograd.grad(loss, a)
    torch.testing.assert_close(grad, get_transfer(name).f(a.detach()) - y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(matching_grad(name, a.detach(), y), get_transfer(name).f(a.detach()) - y)


@pytest.mark.parametrize("name", TRANSFERS)
def test_zero_at_target(name):
    a, _ = _random_pair(name, seed=1)
    y = get_transfer(name).f(a)  # a is a preimage of y
    assert abs(matching_loss(name, a, y).item()) < 1e-12
    # and strictly positive once a moves (relu: move it into the positive part)
    moved = a.abs() + 0.5 if name == "relu" else a + 0.5 * torch.randn_like(a)
    if name == "softmax":
        moved = a + torch.linspace(0, 1, a.shape[-1], dtype=a.dtype)  # not a constant shift
    assert matching_loss(name, moved, y).item() > 0.0


def _softplus(a):
    return torch.nn.functional.softplus(a)


@pytest.mark.parametrize("name", ["identity", "tanh", "sigmoid", "relu"])
def test_equals_bregman_definition(name):
    """D = F(a) - F(â) - f(â)(a - â) with F' = f and f(â) = y, in float64 where it is safe."""
    F = {
        "identity": lambda z: 0.5 * z ** 2,
        "tanh": lambda z: torch.log(torch.cosh(z)),
        "sigmoid": _softplus,
        "relu": lambda z: 0.5 * torch.relu(z) ** 2,
    }[name]
    g = torch.Generator().manual_seed(2)
    a = 2.0 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    a_hat = 2.0 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = get_transfer(name).f(a_hat)
    expected = (F(a) - F(a_hat) - y * (a - a_hat)).sum()
    torch.testing.assert_close(matching_loss(name, a, y), expected, rtol=1e-10, atol=1e-12)


def test_softmax_is_kl():
    a, y = _random_pair("softmax", seed=3)
    kl = (y * (y.log() - torch.log_softmax(a, -1))).sum()
    torch.testing.assert_close(matching_loss("softmax", a, y), kl)


def test_relu_zero_target_has_many_preimages():
    a = torch.tensor([[-3.0, -0.5, 0.0, 2.0]], dtype=torch.float64)
    y = torch.zeros_like(a)
    torch.testing.assert_close(matching_loss("relu", a, y), torch.tensor(2.0, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_at_saturation(dtype):
    """Targets at the ends of the range and saturated pre-activations stay finite and correct."""
    a = torch.tensor([-1e4, -60.0, -20.0, 0.0, 20.0, 60.0, 1e4], dtype=dtype, requires_grad=True)
    for name in ("tanh", "sigmoid"):
        lo, hi = (-1.0, 1.0) if name == "tanh" else (0.0, 1.0)
        for y_value in (lo, hi, lo + 1e-7, hi - 1e-7, 0.5 * (lo + hi)):
            y = torch.full_like(a, y_value).detach()
            loss = matching_loss(name, a, y)
            (grad,) = torch.autograd.grad(loss, a)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), (name, y_value)
            assert loss.item() >= 0.0
            torch.testing.assert_close(grad, get_transfer(name).f(a.detach()) - y, rtol=1e-5, atol=1e-6)
    # a saturated sigmoid with the matching target at the end of the range costs ~ nothing
    big = torch.tensor([60.0], dtype=dtype)
    assert matching_loss("sigmoid", big, torch.ones_like(big)).item() < 1e-20
    assert matching_loss("tanh", big, torch.ones_like(big)).item() < 1e-20
    # and the opposite end costs about |a| (sigmoid) or 2|a| (tanh)
    assert math.isclose(matching_loss("sigmoid", big, torch.zeros_like(big)).item(), 60.0, rel_tol=1e-6)
    assert math.isclose(matching_loss("tanh", big, -torch.ones_like(big)).item(), 120.0, rel_tol=1e-6)


def test_softmax_stable_for_large_logits():
    a = torch.tensor([[1e4, 0.0, -1e4], [300.0, 300.0, -300.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    loss = matching_loss("softmax", a, y)
    (grad,) = torch.autograd.grad(loss, a)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert abs(loss.item()) < 1e-5


def test_aliases_and_unknown():
    a, y = _random_pair("sigmoid")
    torch.testing.assert_close(matching_loss("logistic", a, y), matching_loss("sigmoid", a, y))
    with pytest.raises(ValueError, match="unknown transfer"):
        matching_loss("gelu", a, y)
