"""K-FAC baseline: factors, damping, quadratic model, Levenberg-Marquardt, checkpoints, safety.

Every reference quantity is built here independently of baselines/kfac.py (per-example autograd,
explicit Kronecker products, an explicit Gauss-Newton matrix from the network's Jacobian), on
float64 6-5-3-5-6 autoencoders (tanh hidden layers, linear code layer).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from baselines.kfac import KFAC, levenberg_marquardt
from tests.tiny import SIZES, linears, tiny
from tests.tiny import batch as tiny_batch
from locoprop.transfer import get_transfer

N = 12


def batch(seed: int = 1, n: int = N, d: int = SIZES[0]) -> torch.Tensor:
    return tiny_batch(seed, n, d)


def forward_pre(model, x):
    """Inputs of every Linear and its pre-activation (kept in the graph), and the logits."""
    inputs, pres = [], []
    h = x
    mods = list(model)
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            inputs.append(h.detach())
            h = m(h)
            pres.append(h)
        elif i < len(mods) - 1 or model.loss_kind != "bernoulli":
            h = m(h)
    return inputs, pres, pres[-1]


def bruteforce_factors(model, x, y):
    """A = mean_n xbar xbar^T, G = mean_n g g^T from per-example losses and autograd."""
    layers = linears(model)
    a = [0.0] * len(layers)
    g = [0.0] * len(layers)
    for n in range(x.shape[0]):
        inputs, pres, logits = forward_pre(model, x[n:n + 1])
        loss = model.loss_from_logits(logits, y[n:n + 1])  # the per-example loss l_n
        grads = torch.autograd.grad(loss, pres)
        for i, (xi, gi) in enumerate(zip(inputs, grads)):
            xb = torch.cat([xi[0], xi.new_ones(1)])
            a[i] = a[i] + torch.outer(xb, xb) / x.shape[0]
            g[i] = g[i] + torch.outer(gi[0], gi[0]) / x.shape[0]
    return a, g


def exact_fisher_g(model, x):
    """E_y[g g^T] in closed form: (1/N) sum_n J_n^T H_n J_n, H_n = diag(p(1-p)) or I."""
    inputs, pres, logits = forward_pre(model, x)
    if model.loss_kind == "bernoulli":
        p = torch.sigmoid(logits)
        h = p * (1 - p)
    else:
        h = torch.ones_like(logits)
    out = [0.0] * len(pres)
    for j in range(logits.shape[1]):  # one output unit at a time: rows J_n^T e_j sqrt(h_nj)
        seed = torch.zeros_like(logits)
        seed[:, j] = h[:, j].sqrt()
        rows = torch.autograd.grad(logits, pres, grad_outputs=seed, retain_graph=True)
        for i, r in enumerate(rows):
            out[i] = out[i] + r.T @ r / x.shape[0]
    return out


def vec(m):
    """Column-stacking vec, the convention in which the Fisher block is A (x) G."""
    return m.T.reshape(-1)


def unvec(v, shape):
    return v.reshape(shape[1], shape[0]).T


def factors(opt):
    return [opt.state[m.weight] for m in linears_of(opt)]


def linears_of(opt):
    return [layer.linear for layer in opt.layers]


# ----------------------------------------------------------------------------- factors
@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_factors_equal_per_example_bruteforce_and_ema(loss_kind):
    model = tiny(loss_kind)
    x = batch()
    opt = KFAC(model, loss=loss_kind, fisher="empirical", damping=1.0, factor_decay=0.95)
    a1, g1 = bruteforce_factors(model, x, x)
    opt.step(x, x)
    for st, a, g in zip(factors(opt), a1, g1):
        torch.testing.assert_close(st["A"], a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(st["G"], g, rtol=1e-10, atol=1e-12)
    # step 2 averages with decay min(1 - 1/2, 0.95) = 0.5, using statistics at the new parameters
    x2 = batch(seed=2)
    a2, g2 = bruteforce_factors(model, x2, x2)
    opt.step(x2, x2)
    for st, a, g, a_prev, g_prev in zip(factors(opt), a2, g2, a1, g1):
        torch.testing.assert_close(st["A"], 0.5 * a_prev + 0.5 * a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(st["G"], 0.5 * g_prev + 0.5 * g, rtol=1e-10, atol=1e-12)
        assert torch.equal(st["A"], st["A"].T) and torch.equal(st["G"], st["G"].T)


def test_sampled_factor_uses_targets_drawn_from_the_model():
    model = tiny()
    x = batch()
    opt = KFAC(model, loss="bernoulli")
    torch.manual_seed(7)
    a_opt, g_opt = opt.batch_factors(x, x)
    torch.manual_seed(7)
    with torch.no_grad():
        y = torch.bernoulli(torch.sigmoid(model.logits(x)))
    a_bf, g_bf = bruteforce_factors(model, x, y)
    for a, g, ab, gb in zip(a_opt, g_opt, a_bf, g_bf):
        torch.testing.assert_close(a, ab)
        torch.testing.assert_close(g, gb)


@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_sampled_fisher_factor_converges_to_exact_expectation(loss_kind):
    model = tiny(loss_kind)
    x = batch(n=16)
    opt = KFAC(model, loss=loss_kind)
    exact = exact_fisher_g(model, x)
    torch.manual_seed(0)
    draws = 2000
    mean = [torch.zeros_like(e) for e in exact]
    for _ in range(draws):
        _, gs = opt.batch_factors(x, x)
        for m, g in zip(mean, gs):
            m += g / draws
    for m, e in zip(mean, exact):
        assert (m - e).norm() / e.norm() < 0.03


# ----------------------------------------------------------------------------- preconditioner
def _dense_check(exact_damping):
    model = tiny()
    x = batch()
    opt = KFAC(model, loss="bernoulli", damping=0.3, weight_decay=1e-3, exact_damping=exact_damping)
    opt.step(x, x)  # step 1 sets the factors and refreshes the inverses with lambda = 0.3
    lam_eta = 0.3 + 1e-3
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(m.out_features, m.in_features + 1, generator=gen, dtype=torch.float64)
             for m in linears_of(opt)]
    for st, grad, got in zip(factors(opt), grads, opt.precondition(grads)):
        a, g = st["A"], st["G"]
        if exact_damping:
            dense = torch.kron(a, g) + lam_eta * torch.eye(a.shape[0] * g.shape[0], dtype=a.dtype)
        else:
            pi = ((a.trace() / a.shape[0]) / (g.trace() / g.shape[0])).sqrt()
            gamma = lam_eta ** 0.5
            dense = torch.kron(a + pi * gamma * torch.eye(a.shape[0], dtype=a.dtype),
                               g + gamma / pi * torch.eye(g.shape[0], dtype=a.dtype))
        want = unvec(torch.linalg.solve(dense, vec(grad)), grad.shape)
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_exact_damping_equals_dense_kronecker_solve():
    _dense_check(exact_damping=True)


def test_factored_damping_equals_pi_corrected_kronecker_solve():
    _dense_check(exact_damping=False)


# ----------------------------------------------------------------------------- quadratic model
def _flat_logits_fn(model, x):
    """logits as a function of all [W, b] matrices flattened row-major, layer after layer."""
    shapes = [(m.out_features, m.in_features + 1) for m in linears(model)]
    acts = [torch.tanh, lambda a: a, torch.tanh, None]

    def fn(theta):
        h, start = x, 0
        for (o, i), act in zip(shapes, acts):
            wb = theta[start:start + o * i].reshape(o, i)
            start += o * i
            h = h @ wb[:, :-1].T + wb[:, -1]
            if act is not None:
                h = act(h)
        return h
    return fn, shapes


def _flat(mats):
    return torch.cat([m.reshape(-1) for m in mats])


def _theta(model):
    return _flat([torch.cat([m.weight, m.bias[:, None]], 1).detach() for m in linears(model)])


def _split(v, shapes):
    out, start = [], 0
    for o, i in shapes:
        out.append(v[start:start + o * i].reshape(o, i))
        start += o * i
    return out


@pytest.mark.parametrize("loss_kind,steps_before", [("bernoulli", 0), ("bernoulli", 2), ("gaussian", 2)])
def test_quadratic_model_alpha_mu_equal_explicit_gauss_newton_solve(loss_kind, steps_before):
    model = tiny(loss_kind)
    eta, lam = 1e-3, 0.5
    opt = KFAC(model, loss=loss_kind, damping=lam, weight_decay=eta, adapt_damping=False)
    for s in range(steps_before):
        xs = batch(seed=10 + s)
        opt.step(xs, xs)
    x = batch()
    fn, shapes = _flat_logits_fn(model, x)
    theta = _theta(model)
    delta0 = None if steps_before == 0 else _flat([st["delta"] for st in factors(opt)])

    opt.step(x, x)
    # reference quantities at the pre-step parameters theta
    th = theta.clone().requires_grad_(True)
    logits = fn(th)
    h = model.loss_from_logits(logits, x) + 0.5 * eta * th.pow(2).sum()
    grad_h = torch.autograd.grad(h, th)[0]
    jac = torch.autograd.functional.jacobian(fn, theta).reshape(-1, theta.numel())
    if loss_kind == "bernoulli":
        p = torch.sigmoid(logits.detach()).reshape(-1)
        out_hessian = p * (1 - p) / x.shape[0]
    else:
        out_hessian = torch.full((jac.shape[0],), 1.0 / x.shape[0], dtype=jac.dtype)
    gn = jac.T @ (out_hessian[:, None] * jac)
    curv = gn + (lam + eta) * torch.eye(theta.numel(), dtype=theta.dtype)
    proposal = -_flat(opt.precondition(_split(grad_h, shapes)))  # inverses unchanged by this step
    if delta0 is None:
        alpha = -(grad_h @ proposal) / (proposal @ curv @ proposal)
        mu = torch.zeros(())
        step = alpha * proposal
    else:
        dirs = torch.stack([proposal, delta0], 1)
        coef = torch.linalg.solve(dirs.T @ curv @ dirs, -dirs.T @ grad_h)
        alpha, mu = coef
        step = dirs @ coef
    torch.testing.assert_close(opt.last["alpha"], alpha, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(opt.last["mu"], mu.to(alpha.dtype), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(_theta(model) - theta, step, rtol=1e-7, atol=1e-10)


def _explicit_model(model, x, eta):
    """grad h and the Gauss-Newton matrix J^T H J at the current parameters, from an explicit Jacobian."""
    fn, shapes = _flat_logits_fn(model, x)
    theta = _theta(model)
    th = theta.clone().requires_grad_(True)
    logits = fn(th)
    h = model.loss_from_logits(logits, x) + 0.5 * eta * th.pow(2).sum()
    grad_h = torch.autograd.grad(h, th)[0]
    jac = torch.autograd.functional.jacobian(fn, theta).reshape(-1, theta.numel())
    if model.loss_kind == "bernoulli":
        p = torch.sigmoid(logits.detach()).reshape(-1)
        out_hessian = p * (1 - p) / x.shape[0]
    else:
        out_hessian = torch.full((jac.shape[0],), 1.0 / x.shape[0], dtype=jac.dtype)
    return theta, grad_h, jac.T @ (out_hessian[:, None] * jac), shapes


@pytest.mark.parametrize("rho_includes_damping", [False, True])
@pytest.mark.parametrize("loss_kind", ["bernoulli", "gaussian"])
def test_predicted_change_equals_explicit_quadratic_model(loss_kind, rho_includes_damping):
    """rho's denominator: 1/2 d^T (J^T H J + eta I) d + grad_h . d for the step d taken, plus
    1/2 lambda |d|^2 only with rho_includes_damping (TF K-FAC / kfac-jax leave lambda out)."""
    model = tiny(loss_kind)
    eta, lam = 1e-3, 0.5
    opt = KFAC(model, loss=loss_kind, damping=lam, weight_decay=eta, damping_adaptation_period=1,
               rho_includes_damping=rho_includes_damping)
    for s in range(2):  # so the step has a momentum part
        xs = batch(seed=40 + s)
        opt.step(xs, xs)
    x = batch()
    lam_now = opt.damping
    theta, grad_h, gn, _ = _explicit_model(model, x, eta)
    opt.step(x, x)
    d = _theta(model) - theta
    curvature = gn + (eta + (lam_now if rho_includes_damping else 0.0)) * torch.eye(theta.numel(), dtype=theta.dtype)
    want = 0.5 * d @ curvature @ d + grad_h @ d
    torch.testing.assert_close(opt.last["predicted"], want, rtol=1e-7, atol=1e-12)
    assert float(opt.last["mu"]) != 0.0


def test_adaptive_lr_without_momentum_chooses_alpha_alone():
    model = tiny()
    eta, lam = 1e-3, 0.5
    opt = KFAC(model, loss="bernoulli", damping=lam, weight_decay=eta, adapt_damping=False, adapt_momentum=False)
    for s in range(2):
        xs = batch(seed=50 + s)
        opt.step(xs, xs)
    x = batch()
    theta, grad_h, gn, shapes = _explicit_model(model, x, eta)
    proposal = -_flat(opt.precondition(_split(grad_h, shapes)))
    opt.step(x, x)
    curv = gn + (lam + eta) * torch.eye(theta.numel(), dtype=theta.dtype)
    alpha = -(grad_h @ proposal) / (proposal @ curv @ proposal)
    assert float(opt.last["mu"]) == 0.0
    torch.testing.assert_close(_theta(model) - theta, alpha * proposal, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["identity", "tanh", "sigmoid", "relu", "softmax"])
def test_transfer_jvp_matches_autograd(name):
    a = torch.randn(4, 5, dtype=torch.float64)
    t = torch.randn(3, 4, 5, dtype=torch.float64)  # several stacked directions
    f = get_transfer(name).f
    want = torch.stack([torch.autograd.functional.jvp(f, a, ti)[1] for ti in t])
    torch.testing.assert_close(get_transfer(name).jvp(f(a), t), want)


def test_fixed_lr_momentum_mode():
    model = tiny()
    opt = KFAC(model, loss="bernoulli", lr=0.3, momentum=0.7, adapt_lr_momentum=False, adapt_damping=False,
               weight_decay=0.0, damping=1.0)
    x1, x2 = batch(seed=4), batch(seed=5)
    opt.step(x1, x1)
    delta0 = [st["delta"].clone() for st in factors(opt)]
    x = x2
    inputs, pres, logits = forward_pre(model, x)
    grads = torch.autograd.grad(model.loss_from_logits(logits, x), pres)
    grad_wb = [g.T @ torch.cat([xi, xi.new_ones(xi.shape[0], 1)], 1) for g, xi in zip(grads, inputs)]
    before = _theta(model)
    opt.step(x, x)
    want = _flat([-0.3 * u + 0.7 * d for u, d in zip(opt.precondition(grad_wb), delta0)])
    torch.testing.assert_close(_theta(model) - before, want, rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------- damping
def test_levenberg_marquardt_rule():
    lam = torch.tensor(10.0, dtype=torch.float64)
    omega = (19 / 20) ** 5
    assert torch.isclose(levenberg_marquardt(lam, 0.9, omega, 1e-8, 1e8), lam * omega)
    assert torch.isclose(levenberg_marquardt(lam, 0.76, omega, 1e-8, 1e8), lam * omega)
    assert torch.isclose(levenberg_marquardt(lam, 0.5, omega, 1e-8, 1e8), lam)
    assert torch.isclose(levenberg_marquardt(lam, 0.75, omega, 1e-8, 1e8), lam)
    assert torch.isclose(levenberg_marquardt(lam, 0.25, omega, 1e-8, 1e8), lam)
    assert torch.isclose(levenberg_marquardt(lam, 0.1, omega, 1e-8, 1e8), lam / omega)
    assert torch.isclose(levenberg_marquardt(lam, -3.0, omega, 1e-8, 1e8), lam / omega)
    assert torch.isclose(levenberg_marquardt(lam, float("nan"), omega, 1e-8, 1e8), lam / omega)
    assert float(levenberg_marquardt(lam, 0.9, omega, 9.0, 1e8)) == 9.0
    assert float(levenberg_marquardt(lam, 0.1, omega, 1e-8, 11.0)) == 11.0
    assert KFAC(tiny(), damping_adaptation_period=5).param_groups[0]["damping_decay"] == pytest.approx(omega)


def test_damping_adapts_every_t1_steps_from_the_reduction_ratio():
    model = tiny()
    eta = 1e-3
    opt = KFAC(model, loss="bernoulli", damping=2.0, weight_decay=eta, damping_adaptation_period=3)
    omega = (19 / 20) ** 3

    def h(x):
        with torch.no_grad():
            return model.loss(x) + 0.5 * eta * sum(p.pow(2).sum() for p in model.parameters())

    for k in range(1, 10):
        x = batch(seed=20 + k)
        lam_before, h_before = opt.damping, h(x)
        opt.step(x, x)
        if k % 3:
            assert opt.last["rho"] is None and opt.damping == lam_before
            continue
        rho = (h(x) - h_before) / opt.last["predicted"]
        torch.testing.assert_close(opt.last["rho"], rho, rtol=1e-8, atol=1e-10)
        assert float(opt.last["predicted"]) < 0
        want = lam_before * omega if rho > 0.75 else lam_before / omega if rho < 0.25 else lam_before
        assert opt.damping == pytest.approx(want)


# ----------------------------------------------------------------------------- safety
def test_nan_factor_warns_and_keeps_previous_inverse():
    model = tiny()
    opt = KFAC(model, loss="bernoulli", damping=1.0, inverse_update_period=2)
    x = batch()
    opt.step(x, x)
    st = factors(opt)[1]
    a_inv, g_inv = st["A_inv"].clone(), st["G_inv"].clone()
    st["A"] = torch.full_like(st["A"], float("nan"))
    with pytest.warns(RuntimeWarning, match="keeping the previous inverse"):
        opt.step(x, x)  # step 2 refreshes the inverses
    assert torch.equal(st["A_inv"], a_inv) and torch.equal(st["G_inv"], g_inv)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_constructor_validation_and_config():
    with pytest.raises(ValueError, match="fisher"):
        KFAC(tiny(), fisher="exact")
    with pytest.raises(ValueError, match="transfer"):
        KFAC(tiny("bernoulli"), loss="gaussian")
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/optimizer/kfac.yaml").read_text())
    assert cfg.pop("name") == "kfac" and "loss" not in cfg
    assert cfg.pop("_target_") == "baselines.kfac.KFAC"
    for key in ("label", "family", "paper", "style"):  # read by the harness, not passed to the class
        cfg.pop(key)
    assert cfg["damping"] == 150.0 and cfg["inverse_update_period"] == 10 and cfg["factor_decay"] == 0.95
    model = tiny()
    opt = KFAC(model, loss=model.loss_kind, **cfg)
    x = batch()
    assert torch.isfinite(opt.step(x, x))


# ----------------------------------------------------------------------------- optional cross-check
def _curvlinops_factors(curvlinops, net, loss_func, x, fisher_type):
    op = curvlinops.KFACLinearOperator(net, loss_func, list(net.parameters()), [(x, x)], fisher_type=fisher_type,
                                       separate_weight_and_bias=False, check_deterministic=False)
    op.compute_kronecker_factors()
    names = list(op._input_covariances)  # layer names in forward order
    return [op._input_covariances[k] for k in names], [op._gradient_covariances[k] for k in names]


def test_factors_match_curvlinops():
    """Empirical factors (bernoulli) and the exact type-2 G (gaussian) against curvlinops' KFAC.

    curvlinops uses sum reductions: its G is N times our per-example mean; its MSELoss is twice
    our 0.5 * squared error, so its gaussian G carries another factor 2.
    """
    curvlinops = pytest.importorskip("curvlinops")
    x = batch()
    model = tiny("bernoulli")
    a_mine, g_mine = KFAC(model, loss="bernoulli").batch_factors(x, x, fisher="empirical")
    logits_net = nn.Sequential(*list(model)[:-1])  # curvlinops wants logits; shares the modules
    a_ref, g_ref = _curvlinops_factors(curvlinops, logits_net, nn.BCEWithLogitsLoss(reduction="sum"), x,
                                       "empirical")
    assert len(a_ref) == len(a_mine) == 4
    for a, g, ar, gr in zip(a_mine, g_mine, a_ref, g_ref):
        torch.testing.assert_close(a, ar)
        torch.testing.assert_close(g * x.shape[0], gr)

    model = tiny("gaussian")
    g_exact = exact_fisher_g(model, x)  # the closed form the sampled-Fisher test relies on
    _, g_ref = _curvlinops_factors(curvlinops, model, nn.MSELoss(reduction="sum"), x, "type-2")
    for g, gr in zip(g_exact, g_ref):
        torch.testing.assert_close(2 * x.shape[0] * g, gr)


def test_relu_and_bias_free_layers_train():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 6), nn.Sigmoid()).double()
    opt = KFAC(model, loss="bernoulli", damping=1.0, inverse_update_period=3, damping_adaptation_period=2)
    x = batch()
    losses = [float(opt.step(x, x)) for _ in range(8)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]
    assert opt.state[model[0].weight]["A"].shape == (6, 6) and opt.state[model[2].weight]["A"].shape == (6, 6)
