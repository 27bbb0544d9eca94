"""Difference target propagation: targets with exact and wrong inverses, local updates, inverse
training, checkpoints, validation.

References are built here independently of baselines/dtp.py: layer outputs from the model's own
modules, exact inverses of invertible linear layers by dense solves, the top target's gradient in
closed form, and the local losses' gradients by autograd on copies of the weights; float64 throughout.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from baselines.dtp import DTP
from tests.tiny import SIZES, linears, one_thread, tiny  # noqa: F401 (one_thread: a fixture)
from tests.tiny import batch as tiny_batch

N = 10

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny float64 problems: one thread is fastest


def batch(seed: int = 1, n: int = N, d: int = SIZES[0]) -> torch.Tensor:
    return tiny_batch(seed, n, d)


def transfers(model):
    """The function applied after each Linear, read off the model's modules (identity if none)."""
    mods, out = list(model), []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            nxt = mods[i + 1] if i + 1 < len(mods) and not isinstance(mods[i + 1], nn.Linear) else None
            out.append(nxt if nxt is not None else (lambda a: a))
    return out


@torch.no_grad()
def layer_outputs(model, x):
    """[h_0, h_1, ..., h_L] through the model's own modules."""
    hs = [x]
    for lin, f in zip(linears(model), transfers(model)):
        hs.append(f(lin(hs[-1])))
    return hs


def square_linear_chain(seed: int = 0, width: int = 4, depth: int = 3) -> nn.Sequential:
    """Identity-transfer layers with well-conditioned square weights: each layer is invertible."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).double()
    with torch.no_grad():
        for lin in model:
            lin.weight.copy_(2 * torch.eye(width, dtype=torch.float64)
                             + 0.4 * torch.randn(width, width, generator=g, dtype=torch.float64))
            lin.bias.copy_(torch.randn(width, generator=g, dtype=torch.float64))
    return model


# ----------------------------------------------------------------------------- targets
def test_exact_inverses_give_the_exact_inverse_images_of_the_top_target():
    model = square_linear_chain()
    top_lr = 0.5
    opt = DTP(model, top_lr=top_lr, loss="gaussian")
    for i, lin in enumerate(linears(model)[1:], start=1):  # g_i = f_i^-1, f_i(h) = W h + b
        w_inv = torch.linalg.inv(lin.weight.detach())
        opt.set_inverse(i, w_inv, -w_inv @ lin.bias.detach())
    x, y = batch(d=4), batch(seed=2, d=4)
    hs = layer_outputs(model, x)
    # per-example gradient of 0.5 ||h - y||^2 at the output is h - y
    want = [hs[-1] - top_lr * (hs[-1] - y)]
    for lin in reversed(linears(model)[1:]):  # t_{l-1} = f_l^-1(t_l) = W_l^-1 (t_l - b_l)
        want.insert(0, torch.linalg.solve(lin.weight.detach(), (want[0] - lin.bias.detach()).T).T)
    got = opt.targets(x, y)
    assert len(got) == len(want) == 3
    for t, w in zip(got, want):
        torch.testing.assert_close(t, w, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got[0], hs[1])  # the targets really moved


def test_targets_follow_the_difference_correction_with_the_lower_layers_transfer():
    model = tiny("bernoulli")
    top_lr = 0.05
    opt = DTP(model, top_lr=top_lr)
    x = batch()
    hs = layer_outputs(model, x)
    h = hs[-1]
    # per-example gradient of the cross-entropy w.r.t. the sigmoid OUTPUT: (h - y) / (h (1 - h))
    want = [h - top_lr * (h - x) / (h * (1 - h))]
    fs = transfers(model)
    for i in range(len(linears(model)) - 1, 0, -1):
        v, c = opt.inverse(i).weight.detach(), opt.inverse(i).bias.detach()
        g = lambda z, f=fs[i - 1]: f(z @ v.T + c)  # noqa: E731  g_i = f_{i-1}(V z + c)
        want.insert(0, hs[i] + g(want[0]) - g(hs[i + 1]))
    for t, w in zip(opt.targets(x, x), want):
        torch.testing.assert_close(t, w, rtol=1e-10, atol=1e-12)


def test_difference_correction_cancels_a_wrong_inverse_at_the_forward_pass():
    """top_lr = 0 makes t_L = h_L, and then t_l = h_l exactly for a deliberately wrong g."""
    model = tiny("bernoulli")
    opt = DTP(model, top_lr=0.0)
    gen = torch.Generator().manual_seed(5)
    for i, lin in enumerate(linears(model)[1:], start=1):
        opt.set_inverse(i, 3 * torch.randn(lin.in_features, lin.out_features, generator=gen, dtype=torch.float64),
                        torch.randn(lin.in_features, generator=gen, dtype=torch.float64))
    x = batch()
    hs = layer_outputs(model, x)
    targets = opt.targets(x, x)
    for t, h in zip(targets, hs[1:]):
        assert torch.equal(t, h)
    # plain target propagation, t_{l-1} = g_l(t_l), would have kept the inverse's error
    v, c = opt.inverse(3).weight.detach(), opt.inverse(3).bias.detach()
    assert not torch.allclose(torch.tanh(hs[4] @ v.T + c), hs[3])


# ----------------------------------------------------------------------------- the updates
def test_one_step_with_sgd_equals_the_local_gradient_updates():
    lr, inverse_lr, noise_std, top_lr = 0.3, 0.2, 0.1, 0.05
    model = tiny("bernoulli")
    opt = DTP(model, lr=lr, inverse_lr=inverse_lr, top_lr=top_lr, noise_std=noise_std,
              forward_optimizer=torch.optim.SGD, inverse_optimizer=torch.optim.SGD)
    x = batch()
    targets = [t.clone() for t in opt.targets(x, x)]
    hs = layer_outputs(model, x)
    lins, fs = linears(model), transfers(model)
    # forward weights: SGD on ||f_l(W_l h_{l-1} + b_l) - t_l||^2, summed over units, mean over examples
    want_forward = []
    for lin, f, h, t in zip(lins, fs, hs, targets):
        w, b = lin.weight.detach().clone().requires_grad_(), lin.bias.detach().clone().requires_grad_()
        local = (f(h @ w.T + b) - t).pow(2).sum() / h.shape[0]
        gw, gb = torch.autograd.grad(local, (w, b))
        want_forward.append((w.detach() - lr * gw, b.detach() - lr * gb))
    # inverses: SGD on the reconstruction of h_{i-1} + e, noise drawn bottom up from the global RNG
    torch.manual_seed(123)
    noise = [noise_std * torch.randn_like(hs[i]) for i in range(1, len(lins))]
    want_inverse = []
    for i in range(1, len(lins)):
        xe = hs[i] + noise[i - 1]
        with torch.no_grad():
            y = fs[i](lins[i](xe))
        v = opt.inverse(i).weight.detach().clone().requires_grad_()
        c = opt.inverse(i).bias.detach().clone().requires_grad_()
        rec = (fs[i - 1](y @ v.T + c) - xe).pow(2).sum() / xe.shape[0]
        gv, gc = torch.autograd.grad(rec, (v, c))
        want_inverse.append((v.detach() - inverse_lr * gv, c.detach() - inverse_lr * gc))

    want_loss = model.loss(x).detach()
    torch.manual_seed(123)
    loss = opt.step(x, x)
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=0)
    for lin, (w, b) in zip(lins, want_forward):
        torch.testing.assert_close(lin.weight.detach(), w, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lin.bias.detach(), b, rtol=1e-10, atol=1e-12)
    for i, (v, c) in enumerate(want_inverse, start=1):
        torch.testing.assert_close(opt.inverse(i).weight.detach(), v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.inverse(i).bias.detach(), c, rtol=1e-10, atol=1e-12)


def reconstruction_errors(model, opt, x, noise_std, seed=77):
    """Mean noisy reconstruction error of every inverse, with noise from a fixed generator."""
    gen = torch.Generator().manual_seed(seed)
    hs, lins, fs = layer_outputs(model, x), linears(model), transfers(model)
    out = []
    with torch.no_grad():
        for i in range(1, len(lins)):
            xe = hs[i] + noise_std * torch.randn(hs[i].shape, generator=gen, dtype=hs[i].dtype)
            inv = opt.inverse(i)
            rec = fs[i - 1](fs[i](lins[i](xe)) @ inv.weight.T + inv.bias)
            out.append(float((rec - xe).pow(2).sum(1).mean()))
    return out


def test_inverse_training_lowers_the_reconstruction_error_of_fixed_layers():
    model = tiny("bernoulli")
    frozen = copy.deepcopy(model.state_dict())
    opt = DTP(model, lr=0.0, inverse_lr=0.02, noise_std=0.1)
    x = batch(n=32)
    torch.manual_seed(0)
    before = reconstruction_errors(model, opt, x, 0.1)
    for _ in range(40):
        opt.step(x, x)
    after = reconstruction_errors(model, opt, x, 0.1)
    for b, a in zip(before, after):
        assert a < 0.5 * b
    for k, v in model.state_dict().items():
        assert torch.equal(v, frozen[k])  # lr = 0: the forward weights never moved


# ----------------------------------------------------------------------------- copies, training
def test_deepcopy_gives_an_independent_identical_optimizer():
    model = tiny()
    opt = DTP(model, lr=1e-2)
    x = batch()
    opt.step(x, x)
    twin = copy.deepcopy(opt)
    assert twin.inverses[0] is not opt.inverses[0] and twin.layers[0].linear is not opt.layers[0].linear
    torch.manual_seed(1)
    loss_twin = twin.step(x, x)
    torch.manual_seed(1)
    torch.testing.assert_close(loss_twin, opt.step(x, x), rtol=0, atol=0)
    for a, b in zip(twin.inverses.parameters(), opt.inverses.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lr_lives_in_param_groups_for_schedulers():
    model = tiny()
    opt = DTP(model, lr=1e-2, forward_optimizer=torch.optim.SGD)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.0)  # sets param_groups[0]['lr'] = 0
    before = copy.deepcopy(model.state_dict())
    x = batch()
    opt.step(x, x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_twenty_steps_lower_the_autoencoder_loss(loss_kind):
    model = tiny(loss_kind)
    x = batch(n=16)
    opt = DTP(model, lr=3e-2, inverse_lr=1e-2, top_lr=0.3, loss=loss_kind)
    torch.manual_seed(0)
    losses = [float(opt.step(x, x)) for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    # the cross-entropy of non-binary targets cannot go below their entropy: compare the excess
    floor = 0.0
    if loss_kind == "bernoulli":
        floor = float(nn.functional.binary_cross_entropy(x, x, reduction="sum")) / x.shape[0]
    assert losses[-1] - floor < 0.7 * (losses[0] - floor)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(lr=-1.0), "^lr "), (dict(inverse_lr=-1.0), "inverse_lr"), (dict(top_lr=-0.1), "top_lr"),
    (dict(noise_std=-0.1), "noise_std"), (dict(forward_steps=1.5), "forward_steps"),
    (dict(inverse_steps=-1), "inverse_steps"), (dict(forward_optimizer=3), "forward_optimizer"),
    (dict(inverse_optimizer=None), "inverse_optimizer"), (dict(loss="poisson"), "loss"),
    (dict(loss="gaussian"), "transfer"), (dict(loss=2.0), "loss"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DTP(tiny(), **kwargs)


def test_bad_inverse_index_raises():
    opt = DTP(tiny())
    with pytest.raises(ValueError, match="layer index"):
        opt.set_inverse(0, torch.zeros(6, 5, dtype=torch.float64), torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="layer index"):
        opt.inverse(4)
