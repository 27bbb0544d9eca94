"""TF1-semantics optimizers against float64 hand computations of TensorFlow's update formulas."""
import copy
import math

import numpy as np
import pytest
import torch

from locoprop import AdagradTF1
from locoprop import AdamTF1
from locoprop import RMSpropTF1

LRS = [0.1, 0.05, 0.0, 0.02]  # a changing lr, including a step at lr 0


def _run(opt_factory, w0, grads, lrs, foreach):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = opt_factory([w], foreach)
    out = []
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, 3)), [rng.normal(size=(2, 3)) for _ in LRS]


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_tf1_matches_tf_formulas(problem, foreach, momentum):
    w0, grads = problem
    decay, eps = 0.9, 1e-5
    got = _run(lambda p, f: RMSpropTF1(p, lr=1.0, decay=decay, momentum=momentum, eps=eps, foreach=f), w0, grads, LRS, foreach)
    w, ms, mom = w0.copy(), np.ones_like(w0), np.zeros_like(w0)  # TF1: ms starts at one
    for g, lr, actual in zip(grads, LRS, got):
        ms = decay * ms + (1 - decay) * g * g
        if momentum:
            mom = momentum * mom + lr * g / np.sqrt(ms + eps)  # eps inside the root, lr inside the buffer
            w = w - mom
        else:
            w = w - lr * g / np.sqrt(ms + eps)
        np.testing.assert_allclose(actual, w, rtol=1e-13, atol=1e-15)
    if momentum:  # the lr-0 step (third) still moved the weights through the buffer
        assert not np.allclose(got[2], got[1])


@pytest.mark.parametrize("foreach", [True, False])
def test_adagrad_tf1_matches_tf_formulas(problem, foreach):
    w0, grads = problem
    got = _run(lambda p, f: AdagradTF1(p, lr=1.0, initial_accumulator_value=1e-5, foreach=f), w0, grads, LRS, foreach)
    w, acc = w0.copy(), np.full_like(w0, 1e-5)
    for g, lr, actual in zip(grads, LRS, got):
        acc = acc + g * g
        w = w - lr * g / np.sqrt(acc)
        np.testing.assert_allclose(actual, w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("foreach", [True, False])
def test_adam_tf1_matches_tf_formulas(problem, foreach):
    w0, grads = problem
    b1, b2, eps = 0.999, 0.9, 1e-5
    got = _run(lambda p, f: AdamTF1(p, lr=1.0, betas=(b1, b2), eps=eps, foreach=f), w0, grads, LRS, foreach)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, (g, lr, actual) in enumerate(zip(grads, LRS, got), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * m / (np.sqrt(v) + eps)  # epsilon on the uncorrected root
        np.testing.assert_allclose(actual, w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_momentum_equals_tf1_momentum_optimizer(problem, nesterov):
    """The configs use torch.optim.SGD for 'momentum'/'nesterov': same recursion as tf.train.MomentumOptimizer."""
    w0, grads = problem
    mu = 0.9
    got = _run(lambda p, f: torch.optim.SGD(p, lr=1.0, momentum=mu, nesterov=nesterov, foreach=f), w0, grads, LRS, True)
    w, acc = w0.copy(), np.zeros_like(w0)
    for g, lr, actual in zip(grads, LRS, got):
        acc = mu * acc + g  # TF: accum = accum * momentum + grad
        w = w - (lr * g + lr * mu * acc if nesterov else lr * acc)
        np.testing.assert_allclose(actual, w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cls, kwargs", [(RMSpropTF1, dict(lr=0.01, momentum=0.9)), (AdagradTF1, dict(lr=0.01)),
                                         (AdamTF1, dict(lr=0.01))])
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    opt = cls(model.parameters(), **kwargs)

    def train(m, o, n):
        for _ in range(n):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()

    train(model, opt, 3)
    clone = copy.deepcopy(model)
    opt2 = cls(clone.parameters(), **kwargs)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(model, opt, 3)
    train(clone, opt2, 3)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls, kwargs, match", [(RMSpropTF1, dict(lr=-1.0), "learning rate"),
                                                (RMSpropTF1, dict(momentum=1.0), "momentum"),
                                                (AdagradTF1, dict(initial_accumulator_value=0.0), "initial_accumulator"),
                                                (AdamTF1, dict(betas=(1.0, 0.9)), "betas")])
def test_bad_values_are_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("momentum", [0.0, 0.999])
def test_rmsprop_tf1_cpu_chunks_equal_the_multi_tensor_kernels(momentum):
    """The CPU path updates cache-sized chunks; every element goes through the same arithmetic."""
    from locoprop.rmsprop_tf1 import CPU_CHUNK

    gen = torch.Generator().manual_seed(0)
    shapes = [(CPU_CHUNK * 2 + 17,), (300, 7), (5,)]  # one tensor spans three chunks
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
    results = []
    for foreach in (True, False):
        params = [w.clone().requires_grad_() for w in start]
        opt = RMSpropTF1(params, lr=1e-3, decay=0.9, momentum=momentum, eps=1e-5, foreach=foreach)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
