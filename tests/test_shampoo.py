"""Shampoo against dense numpy/scipy references on tiny float64 problems.

Gradients are set by hand (p.grad = ...) so every reference is a few lines of numpy; with
lr = 1 and no momentum the parameter change is minus the direction.
"""
from __future__ import annotations

import inspect
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from baselines.shampoo import Shampoo, _symmetric_inverse_root_eigh, _symmetric_inverse_root_newton

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a stray failure warning fails


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _root(stat: np.ndarray, eps: float, alpha: float) -> np.ndarray:
    return np.real(scipy.linalg.fractional_matrix_power(stat + eps * np.eye(len(stat)), -alpha))


def _grads(shape, n, seed=0):
    gen = np.random.default_rng(seed)
    return [gen.standard_normal(shape) for _ in range(n)]


def _run(param: torch.Tensor, grads, **kwargs) -> tuple[list[np.ndarray], Shampoo]:
    """Apply the gradients one by one (lr 1, no momentum, absolute epsilon unless given); return the steps."""
    kwargs = {"lr": 1.0, "momentum": 0.0, "relative_epsilon": False, **kwargs}
    opt = Shampoo([param], **kwargs)
    steps = []
    for g in grads:
        before = param.detach().clone()
        param.grad = torch.tensor(g)
        opt.step()
        steps.append((before - param.detach()).numpy())
    return steps, opt


def _block_slices(m, n, bs):
    return [(slice(r, min(r + bs, m)), slice(c, min(c + bs, n))) for r in range(0, m, bs) for c in range(0, n, bs)]


# ----------------------------------------------------------------------------- the direction
@pytest.mark.parametrize("beta2", [1.0, 0.7])
@pytest.mark.parametrize("exponent_multiplier", [1.0, 2.0])
def test_direction_matches_dense_reference(beta2, exponent_multiplier):
    eps, alpha = 1e-3, exponent_multiplier / 4
    grads = _grads((5, 3), 6)
    steps, _ = _run(torch.zeros(5, 3, requires_grad=True), grads, grafting="none", beta2=beta2, epsilon=eps,
                    start_preconditioning_step=1, precondition_frequency=1,
                    exponent_multiplier=exponent_multiplier)
    left, right = np.zeros((5, 5)), np.zeros((3, 3))
    for g, step in zip(grads, steps):
        if beta2 == 1.0:
            left, right = left + g @ g.T, right + g.T @ g
        else:
            left, right = beta2 * left + (1 - beta2) * g @ g.T, beta2 * right + (1 - beta2) * g.T @ g
        np.testing.assert_allclose(step, _root(left, eps, alpha) @ g @ _root(right, eps, alpha), rtol=1e-9, atol=1e-10)


def test_relative_epsilon_scales_the_ridge_by_the_largest_eigenvalue():
    eps = 1e-3
    grads = _grads((5, 3), 4, seed=9)
    steps, _ = _run(torch.zeros(5, 3, requires_grad=True), grads, grafting="none", epsilon=eps, relative_epsilon=True,
                    start_preconditioning_step=1, precondition_frequency=1)
    left, right = np.zeros((5, 5)), np.zeros((3, 3))
    for g, step in zip(grads, steps):
        left, right = left + g @ g.T, right + g.T @ g
        lr_root = _root(left, eps * np.linalg.eigvalsh(left)[-1], 0.25)
        r_root = _root(right, eps * np.linalg.eigvalsh(right)[-1], 0.25)
        np.testing.assert_allclose(step, lr_root @ g @ r_root, rtol=1e-9, atol=1e-10)


def _rank_deficient_direction(dtype, **kwargs) -> torch.Tensor:
    """The Shampoo direction after 5 rank-3 gradients of MNIST-like scale (lambda_max ~ 1e5)."""
    gen = torch.Generator().manual_seed(0)
    p = torch.zeros(200, 100, dtype=dtype, requires_grad=True)
    opt = Shampoo([p], lr=1.0, momentum=0.0, grafting="none", start_preconditioning_step=1,
                  precondition_frequency=1, **kwargs)
    for _ in range(5):
        u = 30 * torch.randn(200, 3, generator=gen, dtype=torch.float64)
        p.grad = (u @ torch.randn(3, 100, generator=gen, dtype=torch.float64)).to(dtype)
        before = p.detach().clone()
        opt.step()
    return (before - p.detach()).double()


def test_default_ridge_keeps_float32_direction_close_to_float64_on_rank_deficient_statistics():
    """The default (relative) ridge sits above float32 round-off; a tiny absolute one does not."""
    def error(**kwargs):
        want = _rank_deficient_direction(torch.float64, **kwargs)
        return float((_rank_deficient_direction(torch.float32, **kwargs) - want).norm() / want.norm())

    assert Shampoo([torch.zeros(2, 2)]).defaults["relative_epsilon"] is True
    assert error() < 1e-3
    assert error(relative_epsilon=False) > 0.1  # why the absolute 1e-6 is not the default


def test_refresh_schedule_and_stale_roots():
    """Grafting direction alone before the start step; roots refreshed at start, start+freq, ..."""
    eps, start, freq = 1e-2, 3, 2
    grads = _grads((4, 3), 9, seed=1)
    steps, _ = _run(torch.zeros(4, 3, requires_grad=True), grads, grafting="none", epsilon=eps,
                    start_preconditioning_step=start, precondition_frequency=freq)
    left, right = np.zeros((4, 4)), np.zeros((3, 3))
    for t, (g, step) in enumerate(zip(grads, steps), start=1):
        left, right = left + g @ g.T, right + g.T @ g
        if t >= start and (t - start) % freq == 0:
            lr_root, r_root = _root(left, eps, 0.25), _root(right, eps, 0.25)
        expected = g if t < start else lr_root @ g @ r_root
        np.testing.assert_allclose(step, expected, rtol=1e-9, atol=1e-10)


def test_blocking_matches_per_block_reference():
    eps, bs = 1e-3, 3
    grads = _grads((7, 5), 4, seed=2)
    steps, opt = _run(torch.zeros(7, 5, requires_grad=True), grads, grafting="none", epsilon=eps, block_size=bs,
                      start_preconditioning_step=1, precondition_frequency=1)
    blocks = _block_slices(7, 5, bs)
    assert len(next(iter(opt.state.values()))["L"]) == len(blocks) == 6
    stats = [(0.0, 0.0)] * len(blocks)
    for g, step in zip(grads, steps):
        expected = np.zeros_like(g)
        for i, (rows, cols) in enumerate(blocks):
            gb = g[rows, cols]
            left, right = stats[i][0] + gb @ gb.T, stats[i][1] + gb.T @ gb
            stats[i] = (left, right)
            expected[rows, cols] = _root(left, eps, 0.25) @ gb @ _root(right, eps, 0.25)
        np.testing.assert_allclose(step, expected, rtol=1e-9, atol=1e-10)


def test_higher_rank_parameter_is_its_first_dim_by_the_rest():
    grads = _grads((4, 2, 3), 3, seed=3)
    kwargs = dict(start_preconditioning_step=1, precondition_frequency=1, block_size=4)
    steps4, _ = _run(torch.zeros(4, 2, 3, requires_grad=True), grads, **kwargs)
    steps2, _ = _run(torch.zeros(4, 6, requires_grad=True), [g.reshape(4, 6) for g in grads], **kwargs)
    for a, b in zip(steps4, steps2):
        np.testing.assert_allclose(a.reshape(4, 6), b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- grafting
def _graft_reference(kind, grads, beta2=0.9, eps=1e-8):
    sq, out = 0.0, []
    for t, g in enumerate(grads, start=1):
        if kind == "sgd":
            out.append(g)
            continue
        sq = sq + g * g if kind == "adagrad" else beta2 * sq + (1 - beta2) * g * g
        denom = np.sqrt(sq / (1 - beta2 ** t)) if kind == "adam" else np.sqrt(sq)
        out.append(g / (denom + eps))
    return out


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rmsprop", "adam"])
def test_grafting_norm_per_block_and_bias_direction(kind):
    bs = 3
    grads = _grads((5, 4), 4, seed=4)
    bias_grads = _grads((4,), 4, seed=5)
    weight, bias = torch.zeros(5, 4, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = Shampoo([weight, bias], lr=1.0, momentum=0.0, grafting=kind, grafting_beta2=0.8, grafting_eps=1e-6,
                  block_size=bs, start_preconditioning_step=2, precondition_frequency=1)
    graft = _graft_reference(kind, grads, 0.8, 1e-6)
    bias_graft = _graft_reference(kind, bias_grads, 0.8, 1e-6)
    for t, (g, bg) in enumerate(zip(grads, bias_grads), start=1):
        w0, b0 = weight.detach().clone(), bias.detach().clone()
        weight.grad, bias.grad = torch.tensor(g), torch.tensor(bg)
        opt.step()
        step, bias_step = (w0 - weight.detach()).numpy(), (b0 - bias.detach()).numpy()
        np.testing.assert_allclose(bias_step, bias_graft[t - 1], rtol=1e-10)  # 1-D: grafting alone
        if t == 1:  # before preconditioning: the grafting direction itself
            np.testing.assert_allclose(step, graft[0], rtol=1e-10)
            continue
        for rows, cols in _block_slices(5, 4, bs):
            expected = np.linalg.norm(graft[t - 1][rows, cols])
            assert np.linalg.norm(step[rows, cols]) == pytest.approx(expected, rel=1e-10)
        assert not np.allclose(step, graft[t - 1])  # but the direction is Shampoo's


def test_sgd_grafting_does_not_alias_the_gradient():
    weight = torch.zeros(3, 2, requires_grad=True)
    bias = torch.zeros(2, requires_grad=True)
    opt = Shampoo([weight, bias], lr=0.5, momentum=0.0, grafting="sgd", start_preconditioning_step=1)
    grads = [torch.randn(3, 2), torch.randn(2)]
    saved = [g.clone() for g in grads]
    weight.grad, bias.grad = grads
    state = opt._init_state(bias, opt.param_groups[0])
    direction = Shampoo._grafting_direction(bias.grad, state, opt.param_groups[0])
    assert direction.data_ptr() != bias.grad.data_ptr()
    direction.mul_(100.0)
    assert torch.equal(bias.grad, saved[1])
    for _ in range(3):
        opt.step()
    assert torch.equal(weight.grad, saved[0]) and torch.equal(bias.grad, saved[1])
    torch.testing.assert_close(bias.detach(), -1.5 * saved[1])


def test_zero_gradient_gives_zero_step():
    weight = torch.ones(3, 2, requires_grad=True)
    opt = Shampoo([weight], start_preconditioning_step=1, precondition_frequency=1)
    weight.grad = torch.zeros(3, 2)
    opt.step()
    opt.step()
    assert torch.equal(weight.detach(), torch.ones(3, 2))


# ----------------------------------------------------------------------------- momentum
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_equals_torch_sgd_and_buffer_is_plain_recursion(nesterov):
    grads = [torch.randn(3, 2) for _ in range(5)]
    p1, p2 = torch.zeros(3, 2, requires_grad=True), torch.zeros(3, 2, requires_grad=True)
    ours = Shampoo([p1], lr=0.1, momentum=0.9, nesterov=nesterov, grafting="sgd", start_preconditioning_step=100)
    ref = torch.optim.SGD([p2], lr=0.1, momentum=0.9, nesterov=nesterov)
    buf = torch.zeros(3, 2)
    for g in grads:
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        buf = 0.9 * buf + g
        torch.testing.assert_close(ours.state[p1]["momentum_buffer"], buf, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p1.detach(), p2.detach(), rtol=1e-12, atol=1e-12)


def test_moving_average_momentum_and_weight_decay():
    grads = [torch.randn(4) for _ in range(4)]
    p = torch.ones(4, requires_grad=True)
    opt = Shampoo([p], lr=0.1, momentum=0.5, nesterov=True, moving_average_momentum=True, weight_decay=0.01,
                  grafting="sgd")
    x, buf = torch.ones(4), torch.zeros(4)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        d = g + 0.01 * x
        buf = 0.5 * buf + 0.5 * d
        x = x - 0.1 * (0.5 * d + 0.5 * buf)
        torch.testing.assert_close(p.detach(), x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- roots
def _spd_batch(n, count, cond, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(count, n, n, generator=gen))
    w = torch.logspace(0, math.log10(cond), n).expand(count, n)
    return (q * w.unsqueeze(-2)) @ q.mT


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("p", [2, 4])
def test_newton_roots_agree_with_eigh(p, relative):
    stats = _spd_batch(12, 3, 1e6)
    eps = 1e-6
    newton, ok_n = _symmetric_inverse_root_newton(stats, eps, p, max_iters=100, tol=1e-10, relative=relative)
    eigh, ok_e = _symmetric_inverse_root_eigh(stats, eps, 1.0 / p, relative)
    assert ok_n.all() and ok_e.all()
    torch.testing.assert_close(newton, eigh, rtol=1e-8, atol=1e-10)
    ridge = eps * 1e6 if relative else eps  # lambda_max = cond = 1e6
    reference = _root(stats[0].numpy(), ridge, 1.0 / p)
    np.testing.assert_allclose(eigh[0].numpy(), reference, rtol=1e-8, atol=1e-10)


def test_newton_optimizer_matches_eigh_optimizer():
    grads = _grads((6, 4), 5, seed=6)
    kwargs = dict(start_preconditioning_step=2, precondition_frequency=2, block_size=4, momentum=0.9)
    a, _ = _run(torch.zeros(6, 4, requires_grad=True), grads, **kwargs)
    b, _ = _run(torch.zeros(6, 4, requires_grad=True), grads, inverse_root_method="newton", newton_tol=1e-9, **kwargs)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


def test_roots_are_batched_by_size(monkeypatch):
    calls = []
    real_eigh = torch.linalg.eigh

    def counting_eigh(a, *args, **kwargs):
        calls.append(tuple(a.shape))
        return real_eigh(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counting_eigh)
    params = [torch.zeros(5, 3, requires_grad=True), torch.zeros(3, 5, requires_grad=True)]
    opt = Shampoo(params, start_preconditioning_step=1)
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    assert sorted(calls) == [(2, 3, 3), (2, 5, 5)]


# ----------------------------------------------------------------------------- state_dict
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("grafting", ["adam", "rmsprop"])
def test_state_dict_continuation_is_exact(grafting):
    kwargs = dict(lr=0.01, momentum=0.9, nesterov=True, beta2=0.95, grafting=grafting, block_size=4,
                  start_preconditioning_step=3, precondition_frequency=3)
    full = _mlp()
    full_opt = Shampoo(full.parameters(), **kwargs)
    _train(full, full_opt, 5, seed=1)
    _train(full, full_opt, 7, seed=2)

    part = _mlp()
    part_opt = Shampoo(part.parameters(), **kwargs)
    _train(part, part_opt, 5, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": part.state_dict(), "opt": part_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _mlp()
    resumed.load_state_dict(saved["model"])
    resumed_opt = Shampoo(resumed.parameters(), **kwargs)
    resumed_opt.load_state_dict(saved["opt"])
    assert resumed_opt.param_groups[0]["step"] == 5
    _train(resumed, resumed_opt, 7, seed=2)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- failures
def test_nan_statistic_warns_keeps_root_and_parameters_stay_finite():
    grads = _grads((4, 3), 6, seed=7)
    p = torch.zeros(4, 3, requires_grad=True)
    opt = Shampoo([p], lr=0.1, start_preconditioning_step=2, precondition_frequency=2)
    for g in grads[:3]:
        p.grad = torch.tensor(g)
        opt.step()
    state = opt.state[p]
    left_root, right_root = state["L_root"][0].clone(), state["R_root"][0].clone()
    state["L"][0][1, 2] = float("nan")
    p.grad = torch.tensor(grads[3])
    with pytest.warns(RuntimeWarning, match="non-finite statistic"):
        opt.step()  # step 4: a refresh
    assert torch.equal(state["L_root"][0], left_root)
    assert not torch.equal(state["R_root"][0], right_root)  # the healthy side still refreshed
    assert torch.isfinite(p).all()


def test_failed_eigh_warns_and_keeps_roots(monkeypatch):
    p = torch.zeros(4, 3, requires_grad=True)
    opt = Shampoo([p], lr=0.1, start_preconditioning_step=1, precondition_frequency=1)
    p.grad = torch.randn(4, 3)
    opt.step()
    roots = [r.clone() for r in opt.state[p]["L_root"] + opt.state[p]["R_root"]]
    real_eigh = torch.linalg.eigh

    def failing_eigh(a, *args, **kwargs):
        if a.shape[-1] == 4:
            raise torch.linalg.LinAlgError("injected failure")
        return real_eigh(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", failing_eigh)
    p.grad = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="eigh failed"):
        opt.step()
    assert torch.equal(opt.state[p]["L_root"][0], roots[0])
    assert not torch.equal(opt.state[p]["R_root"][0], roots[1])
    assert torch.isfinite(p).all()


# ----------------------------------------------------------------------------- arguments and config
@pytest.mark.parametrize("kwargs", [
    dict(lr=-1.0), dict(momentum=1.0), dict(momentum=-0.1), dict(nesterov=True, momentum=0.0),
    dict(weight_decay=-1e-4), dict(beta2=0.0), dict(beta2=1.5), dict(epsilon=0.0), dict(relative_epsilon=1),
    dict(precondition_frequency=0), dict(precondition_frequency=2.5), dict(start_preconditioning_step=0),
    dict(block_size=0), dict(block_size=True), dict(grafting="lamb"), dict(grafting_beta2=1.0),
    dict(grafting_eps=0.0), dict(inverse_root_method="svd"), dict(exponent_multiplier=0.0),
    dict(inverse_root_method="newton", exponent_multiplier=1.5), dict(newton_max_iters=0), dict(newton_tol=0.0),
])
def test_bad_arguments_raise(kwargs):
    name = next(iter(kwargs)) if "nesterov" not in kwargs else "nesterov"
    with pytest.raises(ValueError, match=name):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], **kwargs)


def test_config_names_every_constructor_argument():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.to_container(
        omegaconf.OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/optimizer/shampoo.yaml"))
    assert cfg.pop("name") == "shampoo" and cfg.pop("_target_") == "baselines.shampoo.Shampoo"
    for key in ("label", "family", "paper", "style"):  # read by the harness, not passed to the class
        cfg.pop(key)
    signature = inspect.signature(Shampoo.__init__)
    assert set(cfg) == set(signature.parameters) - {"self", "params"}
    opt = Shampoo([torch.zeros(2, 2, requires_grad=True)], **cfg)
    assert opt.defaults["precondition_frequency"] == 10 and opt.defaults["block_size"] == 1024
    assert opt.defaults["grafting"] == "rmsprop"


# ----------------------------------------------------------------------------- cross-check
def test_matches_pytorch_optimizer_shampoo():
    """Test-only optional dependency: pytorch_optimizer's plain Shampoo (eps*I-initialised
    statistics, roots every step, no grafting, no momentum) on a 2-D weight."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    grads = _grads((5, 4), 4, seed=8)
    ours, _ = _run(torch.zeros(5, 4, requires_grad=True), grads, grafting="none", epsilon=1e-4,
                   start_preconditioning_step=1, precondition_frequency=1)
    p = torch.zeros(5, 4, requires_grad=True)
    theirs = pytorch_optimizer.Shampoo([p], lr=1.0, momentum=0.0, matrix_eps=1e-4, preconditioning_compute_steps=1)
    for g, step in zip(grads, ours):
        before = p.detach().clone()
        p.grad = torch.tensor(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step()
        np.testing.assert_allclose((before - p.detach()).numpy(), step, rtol=1e-6, atol=1e-8)
