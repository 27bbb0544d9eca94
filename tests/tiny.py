"""Tiny float64 autoencoders and batches shared by the optimizer tests (dense references stay cheap),
and the overrides of a training run that takes seconds, shared by the end-to-end tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.models import build_autoencoder

SIZES = [6, 5, 3, 5, 6]  # tanh hidden layers, a linear code layer


def tiny_run(n_train: int = 200, batch_size: int = 100) -> list[str]:
    """Overrides of a run that trains in seconds: a slice of the data, a narrow autoencoder, no warm-up steps."""
    return [f"dataset.n_train={n_train}", "dataset.n_test=50", f"batch_size={batch_size}",
            "model.sizes=[784,16,4,16,784]", "throwaway_steps=0"]


TINY_RUN = tiny_run()


def tiny(loss_kind: str = "bernoulli", seed: int = 0, sizes: list[int] = SIZES) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_autoencoder(sizes=sizes, loss_kind=loss_kind).double()


def batch(seed: int = 1, n: int = 12, dim: int = SIZES[0]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, dim, generator=g, dtype=torch.float64)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


@pytest.fixture
def one_thread():
    """One intra-op thread: fastest for tiny problems, and deterministic across machines' core counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
