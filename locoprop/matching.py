"""Matching losses: the Bregman divergences that LocoProp-M minimises per layer.

For a transfer function f with convex integral F (F' = f), the matching loss between a
pre-activation `a` and a target `y` given in post-activation space is the Bregman divergence

    D_F(a, â) = F(a) - F(â) - f(â) (a - â),   f(â) = y,

which, with the convex conjugate F*(y) = y â - F(â), is the Fenchel-Young form

    D(a, y) = F(a) + F*(y) - y a.

Its gradient wrt `a` is `f(a) - y`: that is all LocoProp-M needs (`matching_grad`), so the
value (`matching_loss`) is only used for logging and tests. It is written in the Fenchel-Young
form because that never needs f^{-1} and stays finite where f saturates:

- identity: F(a) = a^2/2, D = 1/2 (a - y)^2.
- sigmoid:  F(a) = softplus(a), F*(y) = y log y + (1-y) log(1-y), so D is the binary
  KL(y || sigmoid(a)) = BCE-with-logits(a, y) - H(y); xlogy makes y = 0 and y = 1 exact.
- tanh:     F(a) = log cosh(a) = softplus(2a) - a - log 2, F*(y) = ((1+y) log(1+y) +
  (1-y) log(1-y)) / 2. With p = (1+y)/2 this is exactly the sigmoid case at 2a:
  D = KL(p || sigmoid(2a)), finite for y = +-1 and any finite a (no atanh, no clamping).
- relu:     F(a) = relu(a)^2 / 2, F*(y) = y^2/2 for y >= 0, so D = relu(a)^2/2 - y a + y^2/2.
  For y > 0 the preimage is â = y and this is D_F(a, y); for y = 0 every â <= 0 is a
  preimage and all give the same D = relu(a)^2/2. (For y < 0, outside the range of relu, the
  formula is kept but is no longer a divergence.)
- softmax:  F(a) = logsumexp(a) over the last dimension, F*(y) = sum y log y on the simplex,
  so D = KL(y || softmax(a)) row by row.

Values are summed over every element (and row). Rounding can leave an element's divergence a
hair below zero next to its minimum; those elements are clamped at zero (the true gradient
there is zero to the same precision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .transfer import apply_transfer, canonical_transfer


def _binary_kl_logits(logits: Tensor, p: Tensor) -> Tensor:
    """Element-wise KL(p || sigmoid(logits)) for p in [0, 1], stable for any finite logits."""
    neg_entropy = torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)
    return F.binary_cross_entropy_with_logits(logits, p, reduction="none") + neg_entropy


def matching_loss(transfer: str, a: Tensor, y_target: Tensor) -> Tensor:
    """Matching loss D(a, y_target) of the named transfer function, summed over everything.

    `a` is the pre-activation, `y_target` a target in post-activation space (inside the
    range of f). Differentiable in `a`, with gradient `f(a) - y_target`.
    """
    name = canonical_transfer(transfer)
    if name == "identity":
        return 0.5 * (a - y_target).pow(2).sum()
    if name == "relu":
        return (0.5 * torch.relu(a).pow(2) - y_target * a + 0.5 * y_target.pow(2)).clamp_min(0).sum()
    if name == "sigmoid":
        return _binary_kl_logits(a, y_target).clamp_min(0).sum()
    if name == "tanh":
        return _binary_kl_logits(2 * a, 0.5 * (1 + y_target)).clamp_min(0).sum()
    # softmax: KL(y || softmax(a)) = logsumexp(a) - y.a + sum y log y, per row
    d = torch.logsumexp(a, dim=-1) - (y_target * a).sum(-1) + torch.special.xlogy(y_target, y_target).sum(-1)
    return d.clamp_min(0).sum()


def matching_grad(transfer: str, a: Tensor, y_target: Tensor) -> Tensor:
    """Gradient of `matching_loss` wrt the pre-activation: f(a) - y_target."""
    return apply_transfer(canonical_transfer(transfer), a) - y_target

