"""Autoencoder architectures, initialisation and both loss conventions against hand computations."""
import math

import pytest
import torch
from torch import nn

from benchmarks.models import Autoencoder, build_autoencoder, scale_sizes
from benchmarks.workloads import WORKLOADS
from locoprop.chain import forward_record, linear_chain
from locoprop.losses import bernoulli_nll, gaussian_nll, resolve_loss, squared_error


@pytest.mark.parametrize("name", ["mnist", "faces", "curves"])
def test_layer_sizes_and_transfers(name):
    model = build_autoencoder(name)
    sizes = list(WORKLOADS[name].sizes)
    linears = model.linears()
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(sizes[:-1], sizes[1:]))
    transfers = [layer.transfer.name for layer in linear_chain(model)]
    code = sizes.index(min(sizes)) - 1  # the bottleneck layer is linear
    expected = ["tanh"] * len(linears)
    expected[code] = "identity"
    expected[-1] = "identity" if name == "faces" else "sigmoid"
    assert transfers == expected
    assert model.loss_kind == ("gaussian" if name == "faces" else "bernoulli")


def test_multipliers_follow_the_official_code():
    # notebook: encoder [1000] + [500]*depth + [250, 30], decoder mirrored, all times width
    assert scale_sizes(list(WORKLOADS["mnist"].sizes), 2, 3) == [784, 2000, 1000, 1000, 1000, 500, 60, 500, 1000, 1000, 1000, 2000, 784]
    assert scale_sizes(list(WORKLOADS["mnist"].sizes)) == list(WORKLOADS["mnist"].sizes)
    with pytest.raises(ValueError, match="multipliers"):
        scale_sizes(list(WORKLOADS["mnist"].sizes), 0, 1)


def test_glorot_uniform_limits_for_weights_and_biases():
    torch.manual_seed(0)
    model = Autoencoder([50, 400, 10, 400, 50])
    for lin in model.linears():
        fan_out, fan_in = lin.weight.shape
        w_limit = math.sqrt(6 / (fan_in + fan_out))
        b_limit = math.sqrt(6 / (2 * fan_out))
        assert lin.weight.abs().max() <= w_limit and lin.weight.abs().max() > 0.9 * w_limit
        assert lin.bias.abs().max() <= b_limit and lin.bias.abs().max() > 0.8 * b_limit


def test_losses_against_hand_computation():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [0.25, 1.0]], dtype=torch.float64)
    p = torch.sigmoid(logits)
    ce = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum() / 2
    assert torch.allclose(bernoulli_nll(logits, x), ce)
    assert torch.allclose(squared_error(p, x), ((p - x) ** 2).sum() / 2)
    assert torch.allclose(gaussian_nll(logits, x), 0.5 * ((logits - x) ** 2).sum() / 2)
    # by hand: row 0: -log(sigmoid(.5)) - log(1 - sigmoid(-1)); row 1: ...
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    by_hand = (-math.log(s(0.5)) - math.log(1 - s(-1.0)) - 0.25 * math.log(s(2.0)) - 0.75 * math.log(1 - s(2.0)) - math.log(s(0.0))) / 2
    assert bernoulli_nll(logits, x).item() == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="unknown loss"):
        resolve_loss("poisson")


def test_model_loss_and_metrics_conventions():
    torch.manual_seed(1)
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6]).double()
    x = torch.rand(7, 6, dtype=torch.float64)
    out = model(x)
    assert torch.allclose(model.loss(x), bernoulli_nll(model.logits(x), x))
    m = model.metrics(x, batch_size=3)  # batched sums equal the whole-set values
    assert m["ce"] == pytest.approx(bernoulli_nll(model.logits(x), x).item(), rel=1e-10)
    assert m["se"] == pytest.approx(((out - x) ** 2).sum().item() / 7, rel=1e-10)
    faces = build_autoencoder(sizes=[6, 4, 2, 4, 6], loss_kind="gaussian").double()
    mf = faces.metrics(x)
    assert math.isnan(mf["ce"]) and mf["se"] == pytest.approx(2 * faces.loss(x).item(), rel=1e-10)


def test_forward_record_matches_forward_and_gives_preactivation_grads():
    torch.manual_seed(2)
    model = build_autoencoder(sizes=[5, 4, 3, 4, 5]).double()
    x = torch.rand(3, 5, dtype=torch.float64)
    rec = forward_record(linear_chain(model), x, grad_pre=True)
    assert torch.allclose(rec.post[-1], model(x)) and torch.allclose(rec.logits, model.logits(x))
    grads = torch.autograd.grad(model.loss_from_logits(rec.logits, x), rec.pre)
    # reference: dL/da_l by autograd through retained pre-activations of a plain forward
    h, pres = x, []
    for layer in linear_chain(model):
        a = layer.linear(h)
        a.retain_grad()
        pres.append(a)
        h = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda t: t}[layer.transfer.name](a)
    model.loss_from_logits(pres[-1], x).backward()
    for g, a in zip(grads, pres):
        assert torch.allclose(g, a.grad)
    assert all(p.grad is None or p.grad.abs().sum() >= 0 for p in model.parameters())


def test_linear_chain_rejects_unsupported_layers():
    with pytest.raises(ValueError, match="Dropout"):
        linear_chain(nn.Sequential(nn.Linear(3, 3), nn.Dropout()))
    with pytest.raises(ValueError, match="must be an nn.Linear"):
        linear_chain(nn.Sequential(nn.Tanh(), nn.Linear(3, 3)))
    with pytest.raises(TypeError):
        linear_chain(nn.Linear(3, 3))
    assert [l.transfer.name for l in linear_chain(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.ReLU()))] == ["identity", "relu"]


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown transfer"):
        Autoencoder([4, 2, 4], activation="swish")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_autoencoder("cifar")
