"""FOOF baseline: dense reference over several steps, the LocoProp-S link, checkpoints, validation.

References are built here independently of baselines/foof.py: gradients from nn autograd on the
model's own modules, input second moments as explicit sums of per-example outer products, and
dense linear solves; on float64 6-5-3-5-6 autoencoders (tanh hidden layers, linear code layer).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from baselines.foof import FOOF
from tests.tiny import SIZES, linears, one_thread, tiny  # noqa: F401 (one_thread: a fixture)
from tests.tiny import batch as tiny_batch

N = 10

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny float64 problems: one thread is fastest


def batch(seed: int = 1, n: int = N, d: int = SIZES[0]) -> torch.Tensor:
    return tiny_batch(seed, n, d)


def wbar(lin: nn.Linear) -> torch.Tensor:
    return torch.cat([lin.weight, lin.bias[:, None]], 1).detach().clone()


def layer_inputs_and_pre(model, x):
    """Each Linear's input and pre-activation (in the graph), from the model's own modules."""
    inputs, pres, h = [], [], x
    for m in model:
        if isinstance(m, nn.Linear):
            inputs.append(h.detach())
            h = m(h)
            pres.append(h)
        else:
            h = m(h)
    return inputs, pres


def reference_grads(model, x):
    """[dL/dW, dL/db] of the mean loss by plain autograd, and the layer inputs."""
    inputs, _ = layer_inputs_and_pre(model, x)
    params = [p for m in linears(model) for p in (m.weight, m.bias)]
    grads = torch.autograd.grad(model.loss(x), params)
    return [torch.cat([gw, gb[:, None]], 1) for gw, gb in zip(grads[0::2], grads[1::2])], inputs


def second_moment(x):
    """(1/N) sum_n xbar_n xbar_n^T, one outer product per example."""
    xb = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
    return sum(torch.outer(r, r) for r in xb) / x.shape[0]


# ----------------------------------------------------------------------------- dense reference
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.7, 1e-2)])
def test_steps_equal_dense_reference_with_ema_and_stale_inverse(momentum, weight_decay):
    lr, damping, decay, period = 0.3, 0.05, 0.8, 3
    model = tiny()
    ref = copy.deepcopy(model)
    opt = FOOF(model, lr=lr, damping=damping, factor_decay=decay, inverse_update_period=period,
               momentum=momentum, weight_decay=weight_decay)
    a_ref, damped, bufs = [None] * 4, [None] * 4, [None] * 4
    stale_differs = False
    for k in range(1, 7):
        x = batch(seed=10 + k)
        grads, inputs = reference_grads(ref, x)
        d = min(1 - 1 / k, decay)  # k = 1: 0, then 0.5, 0.667, 0.75, 0.8, 0.8
        loss = opt.step(x, x)
        torch.testing.assert_close(loss, ref.loss(x).detach(), rtol=1e-12, atol=0)
        for i, (lin, g, xi) in enumerate(zip(linears(ref), grads, inputs)):
            a_ref[i] = second_moment(xi) if k == 1 else d * a_ref[i] + (1 - d) * second_moment(xi)
            fresh = a_ref[i] + damping * torch.eye(a_ref[i].shape[0], dtype=torch.float64)
            if k == 1 or k % period == 0:
                damped[i] = fresh
            g = g + weight_decay * wbar(lin)
            u = torch.linalg.solve(damped[i], g.T).T  # A symmetric: g A^-1 = (A^-1 g^T)^T
            if k in (2, 4, 5):  # the stale inverse really differs from a fresh one
                stale_differs |= bool((u - torch.linalg.solve(fresh, g.T).T).abs().max() > 1e-6)
            bufs[i] = u if bufs[i] is None or momentum == 0 else momentum * bufs[i] + u
            new = wbar(lin) - lr * bufs[i]
            with torch.no_grad():
                lin.weight.copy_(new[:, :-1])
                lin.bias.copy_(new[:, -1])
        for lin_ref, lin, a in zip(linears(ref), linears(model), a_ref):
            torch.testing.assert_close(opt.state[lin.weight]["A"], a, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(wbar(lin), wbar(lin_ref), rtol=1e-10, atol=1e-12)
    assert stale_differs


def test_inverse_is_refreshed_only_on_schedule():
    """After step k the inverse is (A_r + damping I)^-1 for the last refresh r <= k (r = 1, 3, 6)."""
    model = tiny()
    damping = 0.5
    opt = FOOF(model, damping=damping, inverse_update_period=3)
    factors = []
    for k in range(1, 8):
        x = batch(seed=20 + k)
        opt.step(x, x)
        factors.append([opt.state[lin.weight]["A"].clone() for lin in linears(model)])
        last_refresh = max(r for r in (1, 3, 6) if r <= k)
        for lin, a in zip(linears(model), factors[last_refresh - 1]):
            eye = torch.eye(a.shape[0], dtype=a.dtype)
            torch.testing.assert_close(opt.state[lin.weight]["A_inv"], torch.linalg.inv(a + damping * eye),
                                       rtol=1e-9, atol=1e-12)
    assert not torch.allclose(factors[-1][1], factors[-2][1])  # A moved at step 7, the inverse did not


# ----------------------------------------------------------------------------- LocoProp-S link
@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_step_one_equals_locoprop_s_local_problem_with_proximal_term(loss_kind):
    """min_W 1/2 ||X W^T - (A - gamma G)||^2 + 1/(2 eta) ||W - W_t||^2 has the minimiser
    W_t - gamma G^T X (X^T X + I/eta)^-1 = W_t - (gamma/n) G^T X (X^T X/n + I/(n eta))^-1:
    FOOF's first step with lr = gamma / n and damping = 1 / (n eta), layer by layer."""
    gamma, eta = 2.0, 0.7
    model = tiny(loss_kind)
    x = batch()
    n = x.shape[0]
    inputs, pres = layer_inputs_and_pre(model, x)
    logits = pres[-1]
    g_pre = torch.autograd.grad(model.loss_from_logits(logits, x), pres)
    solutions = []
    for lin, xi, a, g in zip(linears(model), inputs, pres, g_pre):
        xb = torch.cat([xi, xi.new_ones(n, 1)], 1)
        w_t = wbar(lin)
        a_hat = a.detach() - gamma * g
        # the proximal least-squares problem as one stacked least-squares system
        lhs = torch.cat([xb, torch.eye(xb.shape[1], dtype=xb.dtype) / eta ** 0.5])
        rhs = torch.cat([a_hat, w_t.T / eta ** 0.5])
        solutions.append(torch.linalg.lstsq(lhs, rhs).solution.T)
    opt = FOOF(model, lr=gamma / n, damping=1.0 / (n * eta), loss=loss_kind)
    opt.step(x, x)
    for lin, want in zip(linears(model), solutions):
        torch.testing.assert_close(wbar(lin), want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- copies, training
def test_deepcopy_gives_an_independent_identical_optimizer():
    model = tiny()
    opt = FOOF(model, momentum=0.5)
    x = batch()
    opt.step(x, x)
    twin = copy.deepcopy(opt)
    assert twin.steps == 1 and twin.layers[0].linear is not opt.layers[0].linear
    torch.testing.assert_close(twin.step(x, x), opt.step(x, x), rtol=0, atol=0)
    for a, b in zip(twin.layers, opt.layers):
        torch.testing.assert_close(a.linear.weight, b.linear.weight, rtol=0, atol=0)


@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_twenty_steps_lower_the_autoencoder_loss(loss_kind):
    model = tiny(loss_kind)
    x = batch(n=16)
    opt = FOOF(model, loss=loss_kind, lr=0.1, damping=0.1, inverse_update_period=5)
    losses = [float(opt.step(x, x)) for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]


def test_callable_loss_and_bias_free_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4, bias=False), nn.Tanh(), nn.Linear(4, 6)).double()
    opt = FOOF(model, loss=lambda out, y: 0.5 * (out - y).pow(2).sum() / out.shape[0], damping=0.1)
    x = batch()
    losses = [float(opt.step(x, x)) for _ in range(10)]
    assert losses[-1] < losses[0]
    assert opt.state[model[0].weight]["A"].shape == (6, 6) and opt.state[model[2].weight]["A"].shape == (5, 5)


@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=-0.1), "lr"), (dict(damping=0.0), "damping"), (dict(factor_decay=1.0), "factor_decay"),
    (dict(inverse_update_period=0), "inverse_update_period"),
    (dict(inverse_update_period=1.5), "inverse_update_period"),
    (dict(momentum=1.0), "momentum"), (dict(weight_decay=-1e-3), "weight_decay"),
    (dict(loss="poisson"), "loss"), (dict(loss="gaussian"), "transfer"), (dict(loss=3), "loss"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FOOF(tiny(), **kwargs)
