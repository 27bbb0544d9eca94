"""Output losses of the benchmark, stated once for the harness, LocoProp, K-FAC, FOOF and DTP.

Conventions (docs/method.md):
- 'bernoulli': sigmoid outputs, cross-entropy SUMMED over pixels and AVERAGED over examples
  (the LocoProp notebook's training loss), computed stably from the logits.
- 'gaussian': linear outputs, 0.5 * squared error summed over pixels, averaged over examples
  (the negative log-likelihood of a unit-variance Gaussian up to a constant, and the identity
  transfer's matching loss).
- `squared_error` is the HF/K-FAC papers' reported metric: sum over pixels of
  (output - target)^2, averaged over examples, without the 1/2.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

LOSS_KINDS = ("bernoulli", "gaussian")

# The output transfer function each loss kind expects (the loss is its matching loss).
OUTPUT_TRANSFER = {"bernoulli": "sigmoid", "gaussian": "identity"}


def bernoulli_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy from logits, summed over features, mean over examples."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]


def gaussian_nll(outputs: Tensor, targets: Tensor) -> Tensor:
    """0.5 * ||outputs - targets||^2, summed over features, mean over examples."""
    return 0.5 * (outputs - targets).pow(2).sum() / outputs.shape[0]


def squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """Sum over features of (outputs - targets)^2, mean over examples (no 1/2)."""
    return (outputs - targets).pow(2).sum() / outputs.shape[0]


def resolve_loss(loss: str | Callable[[Tensor, Tensor], Tensor],
                 output_transfer: str | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """Map a loss kind to its function of (logits, targets); callables pass through.

    With `output_transfer` (the model's last transfer function), a loss kind that needs another
    output (bernoulli a sigmoid, gaussian the identity) raises a ValueError saying so.
    """
    if callable(loss):
        return loss
    if loss not in OUTPUT_TRANSFER:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_KINDS)} or pass a callable")
    if output_transfer is not None and output_transfer != OUTPUT_TRANSFER[loss]:
        raise ValueError(f"loss {loss!r} needs a {OUTPUT_TRANSFER[loss]} output layer, but the model's last "
                         f"transfer function is {output_transfer}")
    return bernoulli_nll if loss == "bernoulli" else gaussian_nll
