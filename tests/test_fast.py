"""Fast paths give the eager step's numbers; GPU steps never synchronise with the host."""
import copy

import pytest
import torch

from benchmarks.optimizers import make_optimizer, make_step
from benchmarks.fast import CudaGraphStep, compiled_step
from benchmarks.models import build_autoencoder

RMSPROP_TF1 = {"_target_": "locoprop.RMSpropTF1", "lr": 1e-3, "momentum": 0.9, "decay": 0.9, "eps": 1e-5}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(device="cpu", cfg=RMSPROP_TF1):
    torch.manual_seed(0)
    model = build_autoencoder(sizes=[20, 8, 4, 8, 20]).to(device)
    twin = copy.deepcopy(model)
    return (model, make_optimizer(model, cfg)), (twin, make_optimizer(twin, cfg))


def test_compiled_step_equals_eager_step():
    (m1, o1), (m2, o2) = _pair()
    eager, compiled = make_step(m1, o1), compiled_step(make_step(m2, o2))
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("cfg", [RMSPROP_TF1, {"_target_": "locoprop.LocoProp", "lr": 1e-4}])
def test_cuda_graph_step_equals_eager_step_across_lr_changes(cfg):
    (m1, o1), (m2, o2) = _pair("cuda", cfg)
    eager, graphed = make_step(m1, o1), CudaGraphStep(make_step(m2, o2), o2)
    gen = torch.Generator(device="cuda").manual_seed(1)
    for i in range(6):
        if i == 3:  # an epoch boundary: new lr, re-capture
            for o in (o1, o2):
                o.param_groups[0]["lr"] *= 0.5
        x = torch.rand(16, 20, device="cuda", generator=gen)
        torch.testing.assert_close(graphed(x), eager(x), rtol=1e-5, atol=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop_tf1", "adagrad_tf1", "adam_tf1", "locoprop_s", "locoprop_m",
                                  "shampoo", "kfac"])
def test_steps_do_not_synchronise_with_the_host(name):
    from benchmarks.config import compose_config
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = build_autoencoder(sizes=[20, 8, 4, 8, 20]).cuda()
    opt = make_optimizer(model, OmegaConf.to_container(compose_config([f"optimizer={name}"]).optimizer))
    step = make_step(model, opt)
    x = torch.rand(16, 20, device="cuda")
    for _ in range(12):  # past the first preconditioner refresh of Shampoo/K-FAC
        step(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(x)  # a non-refresh step
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_graph_safety_is_decided_per_optimizer():
    from benchmarks.fast import graph_safe
    from benchmarks.config import compose_config
    from omegaconf import OmegaConf

    model = build_autoencoder(sizes=[6, 4, 2, 4, 6])
    expected = {"sgd": True, "nesterov": True, "adam": True, "rmsprop": True, "rmsprop_tf1": True, "adagrad_tf1": True,
                "adam_tf1": False, "shampoo": False, "kfac": False, "locoprop_m": True, "locoprop_s": True}
    for name, safe in expected.items():
        opt = make_optimizer(model, OmegaConf.to_container(compose_config([f"optimizer={name}"]).optimizer))
        assert graph_safe(opt) is safe, name
