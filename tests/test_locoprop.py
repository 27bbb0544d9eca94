"""LocoProp optimizer: the back-prop identity, the proximal closed form, the official semantics
against a slow re-implementation, fused = per-layer, checkpoints and user models."""
import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from locoprop import RMSpropTF1
from benchmarks.models import build_autoencoder
from locoprop import LocoProp, forward_record, linear_chain
from locoprop.losses import bernoulli_nll


def _autoencoder(sizes=(12, 8, 4, 8, 12), dtype=torch.float64, seed=0, loss_kind="bernoulli"):
    torch.manual_seed(seed)
    return build_autoencoder(sizes=list(sizes), loss_kind=loss_kind).to(dtype)


def _data(n=16, d=12, dtype=torch.float64, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _assert_params_close(a, b, **tol):
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, **tol)


# ---------------------------------------------------------------- key property (docs/method.md)
@pytest.mark.parametrize("variant", ["S", "M"])
@pytest.mark.parametrize("fused", [True, False])
def test_first_inner_sgd_step_is_backprop_step(variant, fused):
    """At W = W_t the local gradient is gamma * dL/dW, so one inner SGD step at lr eta equals
    one back-prop SGD step at lr eta * gamma, on every layer."""
    eta, gamma = 0.05, 3.0
    model = _autoencoder()
    reference = copy.deepcopy(model)
    x = _data()

    opt = LocoProp(model, lr=eta, gamma=gamma, inner_steps=1, variant=variant,
                   inner_optimizer=torch.optim.SGD, fused=fused)
    opt.step(x, x)

    reference.loss(x).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= eta * gamma * p.grad
    _assert_params_close(_params(model), _params(reference), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- proximal closed form
def test_proximal_s_converges_to_closed_form():
    """LocoProp-S with the proximal term solves, per layer, the regularised least squares

        min_{W̄}  ½ ||X̄ W̄^T - Â||² + (1/(2η)) ||W̄ - W̄_t||²,   W̄ = [W, b],  X̄ = [X, 1],

    with X the layer's recorded input and Â = A - γ G its target. Setting the gradient
    X̄^T (X̄ W̄^T - Â) + (W̄^T - W̄_t^T)/η to zero gives

        W̄^T = (X̄^T X̄ + I/η)^{-1} (X̄^T Â + W̄_t^T / η).

    Plain SGD inner steps at a constant rate (min factor 1.0) below 2/λ_max of the (strongly
    convex) Hessian X̄^T X̄ + I/η converge to it.
    """
    eta_prox, gamma = 0.5, 2.0
    model = _autoencoder(sizes=(6, 5, 3, 5, 6), seed=3)
    x = _data(n=8, d=6, seed=4)
    layers = linear_chain(model)

    # the targets and the closed form, from a forward/backward pass at W_t
    record = forward_record(layers, x, grad_pre=True)
    grads = torch.autograd.grad(bernoulli_nll(record.logits, x), record.pre)
    expected, lam_max = [], 0.0
    for layer, xl, a, g in zip(layers, record.inputs, record.pre, grads):
        xbar = torch.cat([xl.detach(), torch.ones(xl.shape[0], 1, dtype=xl.dtype)], 1)
        target = (a - gamma * g).detach()
        wbar_t = torch.cat([layer.linear.weight.detach(), layer.linear.bias.detach()[:, None]], 1)
        hessian = xbar.T @ xbar + torch.eye(xbar.shape[1], dtype=xl.dtype) / eta_prox
        expected.append(torch.linalg.solve(hessian, xbar.T @ target + wbar_t.T / eta_prox).T)
        lam_max = max(lam_max, torch.linalg.eigvalsh(hessian).max().item())

    opt = LocoProp(model, lr=1.0 / lam_max, gamma=gamma, variant="S", inner_steps=2000, eta=eta_prox,
                   inner_optimizer=torch.optim.SGD, min_inner_lr_factor=1.0)
    opt.step(x, x)
    for layer, wbar in zip(layers, expected):
        got = torch.cat([layer.linear.weight.detach(), layer.linear.bias.detach()[:, None]], 1)
        torch.testing.assert_close(got, wbar, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- official semantics
def _reference_locoprop(weights, X, lrs, variant, gamma=10.0, T=10, transfers=None):
    """A slow, explicit float64 LocoProp (docs/method.md) in numpy.

    weights: list of (W, b) numpy arrays; transfers: per layer 'tanh' | 'identity' | 'sigmoid'.
    Loss: Bernoulli cross-entropy from the last pre-activation, summed over pixels, averaged
    over the batch. Inner optimizer: TF1 RMSProp (ms starts at 1, eps inside the root, lr
    inside the momentum), one state per parameter, kept across outer steps.
    """
    f = {"tanh": np.tanh, "identity": lambda z: z, "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z))}
    df = {"tanh": lambda y: 1.0 - y * y, "identity": lambda y: np.ones_like(y), "sigmoid": lambda y: y * (1.0 - y)}
    weights = [[W.copy(), b.copy()] for W, b in weights]
    ms = [[np.ones_like(p) for p in layer] for layer in weights]
    mom = [[np.zeros_like(p) for p in layer] for layer in weights]
    B = X.shape[0]
    history = []
    for lr in lrs:
        # forward, keeping every layer's input, pre-activation and output
        xs, As, Ys = [], [], []
        h = X
        for (W, b), name in zip(weights, transfers):
            a = h @ W.T + b
            xs.append(h)
            As.append(a)
            Ys.append(f[name](a))
            h = Ys[-1]
        # backward: dL/da of the last layer is (sigmoid(a) - X)/B, then the chain rule
        G = [None] * len(weights)
        G[-1] = (Ys[-1] - X) / B
        for l in range(len(weights) - 2, -1, -1):
            dy = G[l + 1] @ weights[l + 1][0]
            G[l] = dy * df[transfers[l]](Ys[l])
        # every layer solves its own local problem with T RMSProp steps
        for l, name in enumerate(transfers):
            target = As[l] - gamma * G[l] if variant == "S" else Ys[l] - gamma * G[l]
            W, b = weights[l]
            for k in range(T):
                a = xs[l] @ W.T + b
                delta = a - target if variant == "S" else f[name](a) - target
                grads = [delta.T @ xs[l], delta.sum(axis=0)]
                inner_lr = lr * max(1.0 - k / T, 0.25)
                for i, (p, g) in enumerate(zip((W, b), grads)):
                    ms[l][i] = 0.9 * ms[l][i] + 0.1 * g * g
                    mom[l][i] = 0.999 * mom[l][i] + inner_lr * g / np.sqrt(ms[l][i] + 1e-5)
                    p -= mom[l][i]
        history.append([p.copy() for layer in weights for p in layer])
    return history


@pytest.mark.parametrize("variant", ["M", "S"])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_slow_reference_with_tf1_rmsprop(variant, fused):
    model = _autoencoder(sizes=(7, 5, 3, 5, 7), seed=5)
    x = _data(n=6, d=7, seed=6)
    layers = linear_chain(model)
    transfers = [layer.transfer.name for layer in layers]
    assert transfers == ["tanh", "identity", "tanh", "sigmoid"]
    weights = [(l.linear.weight.detach().numpy().copy(), l.linear.bias.detach().numpy().copy()) for l in layers]
    lrs = [3e-3, 1e-2, 0.0, 5e-3]  # changing outer lr, including a momentum-only step at lr 0
    expected = _reference_locoprop(weights, x.numpy(), lrs, variant, transfers=transfers)

    opt = LocoProp(model, lr=lrs[0], variant=variant, fused=fused)  # official defaults otherwise
    for lr, want in zip(lrs, expected):
        opt.param_groups[0]["lr"] = lr
        opt.step(x, x)
        for p, q in zip(model.parameters(), want):
            np.testing.assert_allclose(p.detach().numpy(), q, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- fast path = plain loop
@pytest.mark.parametrize("variant", ["S", "M"])
@pytest.mark.parametrize("options", [{}, {"eta": 0.3, "reduction": "mean"}, {"inner_steps": 1}])
def test_fused_equals_per_layer_loop(variant, options):
    model = _autoencoder(sizes=(40, 24, 16, 8, 16, 24, 40), dtype=torch.float32, seed=7)
    twin = copy.deepcopy(model)
    x = (torch.rand(32, 40, generator=torch.Generator().manual_seed(8)) < 0.4).float()
    fast = LocoProp(model, lr=1e-3, variant=variant, fused=True, **options)
    slow = LocoProp(twin, lr=1e-3, variant=variant, fused=False, **options)
    for _ in range(4):
        loss_fast, loss_slow = fast.step(x, x), slow.step(x, x)
        torch.testing.assert_close(loss_fast, loss_slow, rtol=1e-5, atol=1e-5)
    _assert_params_close(_params(model), _params(twin), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"eta": 0.3, "reduction": "mean"}, {"inner_optimizer": torch.optim.SGD},
                                     {"inner_steps": 3, "min_inner_lr_factor": 0.5}])
def test_gram_form_of_locoprop_s_equals_the_direct_form_in_float64(options):
    """LocoProp-S's fused step takes its inner gradients from x^T x (the Gram form); the per-layer
    loop recomputes x W^T + b and delta^T x over the batch (the direct form). Equal to rounding over
    several outer steps, with a bias-free layer among the others."""
    model = _autoencoder(sizes=(9, 7, 4, 7, 9), seed=11)
    model[2] = nn.Linear(7, 4, bias=False).double()  # the code layer without a bias
    twin = copy.deepcopy(model)
    x = _data(n=10, d=9, seed=12)
    gram = LocoProp(model, lr=3e-3, gamma=5.0, variant="S", fused=True, **options)
    direct = LocoProp(twin, lr=3e-3, gamma=5.0, variant="S", fused=False, **options)
    before = _params(model)
    for _ in range(6):
        torch.testing.assert_close(gram.step(x, x), direct.step(x, x), rtol=1e-12, atol=1e-12)
    moved = max(float((p - q).abs().max()) for p, q in zip(_params(model), before))
    assert moved > 1e-3  # the comparison is of real updates
    _assert_params_close(_params(model), _params(twin), rtol=1e-10, atol=1e-13)


def test_gram_form_rounds_like_the_direct_form_over_a_short_float32_run():
    """float32, a short run on a wider autoencoder: both forms stay within float rounding of a float64
    reference, relative to the distance the weights travelled."""
    def run(dtype, fused):
        model = _autoencoder(sizes=(64, 48, 16, 48, 64), dtype=dtype, seed=13)
        opt = LocoProp(model, lr=2e-4, gamma=10.0, variant="S", fused=fused)
        start = _params(model)
        for i in range(15):
            x = (torch.rand(50, 64, generator=torch.Generator().manual_seed(100 + i)) < 0.3).to(dtype)
            opt.step(x, x)
        return [p.double() for p in _params(model)], [p.double() for p in start]

    reference, start = run(torch.float64, fused=False)
    travelled = max(float((p - q).abs().max()) for p, q in zip(reference, start))
    errors = {}
    for fused in (True, False):
        final, _ = run(torch.float32, fused)
        errors[fused] = max(float((p - q).abs().max()) for p, q in zip(final, reference)) / travelled
    assert errors[True] < 1e-3 and errors[False] < 1e-3, errors
    assert errors[True] < 10 * errors[False] + 1e-5, errors


def test_step_returns_loss_before_update_and_training_progresses():
    model = _autoencoder(dtype=torch.float32)
    x = _data(dtype=torch.float32)
    opt = LocoProp(model, lr=1e-3)
    with torch.no_grad():
        before = model.loss(x)
    first = opt.step(x, x)
    assert not first.requires_grad
    torch.testing.assert_close(first, before)
    losses = [opt.step(x, x).item() for _ in range(20)]
    assert losses[-1] < first.item()


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("load_fused", [True, False])
def test_state_dict_round_trip_continues_identically(load_fused):
    model = _autoencoder(seed=9)
    x = _data(seed=10)
    opt = LocoProp(model, lr=1e-2)
    for _ in range(2):
        opt.step(x, x)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    for _ in range(3):
        opt.step(x, x)

    buffer.seek(0)
    saved = torch.load(buffer)
    restored = _autoencoder(seed=123)  # different initial weights, overwritten below
    restored.load_state_dict(saved["model"])
    opt2 = LocoProp(restored, lr=0.5, fused=load_fused)  # lr comes back from the checkpoint
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["lr"] == 1e-2
    for _ in range(3):
        opt2.step(x, x)
    _assert_params_close(_params(restored), _params(model), rtol=1e-12, atol=1e-14)


def test_fresh_inner_state_differs_and_reset_option():
    """The inner state persists; reset_inner_state=True is a fresh inner optimizer each step."""
    model = _autoencoder(seed=11)
    x = _data(seed=12)
    opt = LocoProp(model, lr=1e-2)
    opt.step(x, x)
    start = copy.deepcopy(model)

    opt.step(x, x)  # with the persisted state (momentum buffer)
    fresh = copy.deepcopy(start)
    LocoProp(fresh, lr=1e-2).step(x, x)
    reset = copy.deepcopy(start)
    reset_opt = LocoProp(reset, lr=1e-2, reset_inner_state=True)
    reset_opt.step(x, x)  # same as `fresh` after one step
    _assert_params_close(_params(reset), _params(fresh), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(_params(model)[0], _params(fresh)[0])


# ---------------------------------------------------------------- schedulers, user models, errors
def test_lambda_lr_scheduler_drives_the_outer_lr():
    model = _autoencoder(seed=13)
    x = _data(seed=14)
    opt = LocoProp(model, lr=1e-2, inner_optimizer=torch.optim.SGD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: [1.0, 0.5, 0.0][min(epoch, 2)])
    opt.step(x, x)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)
    sched.step()
    before = _params(model)
    opt.step(x, x)  # lr 0 with plain SGD: nothing moves
    _assert_params_close(_params(model), before, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["S", "M"])
def test_plain_user_sequential_bernoulli_and_callable_loss(variant):
    torch.manual_seed(15)
    x = (torch.rand(64, 10) < 0.3).float()

    model = nn.Sequential(nn.Linear(10, 6), nn.Tanh(), nn.Linear(6, 10), nn.Sigmoid())
    opt = LocoProp(model, lr=1e-2, variant=variant, loss="bernoulli")
    first = opt.step(x, x).item()
    for _ in range(30):
        last = opt.step(x, x).item()
    assert last < first

    def squared_error_of_probabilities(logits, targets):
        return (torch.sigmoid(logits) - targets).pow(2).sum() / logits.shape[0]

    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 10), nn.Sigmoid())
    opt = LocoProp(model, lr=1e-2, variant=variant, loss=squared_error_of_probabilities)
    first = opt.step(x, x).item()
    for _ in range(30):
        last = opt.step(x, x).item()
    assert last < first


def test_gaussian_loss_with_linear_output():
    model = _autoencoder(dtype=torch.float32, loss_kind="gaussian", seed=16)
    x = _data(dtype=torch.float32, seed=17)
    opt = LocoProp(model, lr=1e-4, loss="gaussian")
    first = opt.step(x, x).item()
    for _ in range(10):
        last = opt.step(x, x).item()
    assert last < first


@pytest.mark.parametrize("bad", [nn.Conv1d(1, 1, 3), nn.Dropout(0.1), nn.GELU()])
def test_unsupported_module_raises(bad):
    model = nn.Sequential(nn.Linear(4, 4), bad, nn.Linear(4, 4), nn.Sigmoid())
    with pytest.raises(ValueError, match="cannot use layer|must be an nn.Linear"):
        LocoProp(model)


def test_loss_transfer_mismatch_raises():
    with pytest.raises(ValueError, match="needs a sigmoid output"):
        LocoProp(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)), loss="bernoulli")
    with pytest.raises(ValueError, match="needs a identity output"):
        LocoProp(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sigmoid()), loss="gaussian")
    with pytest.raises(ValueError, match="unknown loss"):
        LocoProp(nn.Sequential(nn.Linear(4, 4)), loss="poisson")
    with pytest.raises(ValueError, match="variant"):
        LocoProp(nn.Sequential(nn.Linear(4, 4)), loss="gaussian", variant="X")


def test_defaults_are_the_official_ones():
    opt = LocoProp(_autoencoder())
    group = opt.param_groups[0]
    assert (group["lr"], group["gamma"], group["inner_steps"], group["eta"], group["min_inner_lr_factor"]) == \
        (1e-5, 10.0, 10, None, 0.25)
    assert opt.variant == "M" and opt.reduction == "sum" and opt.fused
    (inner,) = opt._inner
    assert isinstance(inner, RMSpropTF1)
    assert {k: inner.defaults[k] for k in ("momentum", "decay", "eps", "initial_ms")} == \
        dict(momentum=0.999, decay=0.9, eps=1e-5, initial_ms=1.0)
