"""Element-wise transfer functions f (a -> y), one record each: everything the optimizers need.

A `Transfer` bundles, for one f: its name, its activation module, f itself, f computed in place
on a scratch buffer, its derivative along a direction (a JVP computed from y = f(a) alone, for
K-FAC's quadratic model), and its matching loss (for LocoProp-M). 'softmax' acts on the last
dimension. The K-FAC/HF papers call the sigmoid 'logistic'; 'linear' and 'none' mean identity.

Matching losses. For f with convex integral F (F' = f), the matching loss between a
pre-activation `a` and a target `y` in post-activation space is the Bregman divergence

    D_F(a, â) = F(a) - F(â) - f(â) (a - â),   f(â) = y,

which, with the convex conjugate F*(y) = y â - F(â), is the Fenchel-Young form

    D(a, y) = F(a) + F*(y) - y a.

Its gradient with respect to `a` is `f(a) - y`: that is all LocoProp-M needs, so the value is
only used for logging and tests. The Fenchel-Young form never needs f^{-1} and stays finite
where f saturates:

- identity: F(a) = a^2/2, D = 1/2 (a - y)^2.
- sigmoid:  F(a) = softplus(a), F*(y) = y log y + (1-y) log(1-y), so D is the binary
  KL(y || sigmoid(a)) = BCE-with-logits(a, y) - H(y); xlogy makes y = 0 and y = 1 exact.
- tanh:     F(a) = log cosh(a), F*(y) = ((1+y) log(1+y) + (1-y) log(1-y)) / 2. With
  p = (1+y)/2 this is exactly the sigmoid case at 2a: D = KL(p || sigmoid(2a)), finite for
  y = +-1 and any finite a (no atanh, no clamping).
- relu:     F(a) = relu(a)^2 / 2, F*(y) = y^2/2 for y >= 0, so D = relu(a)^2/2 - y a + y^2/2.
  For y > 0 the preimage is â = y; for y = 0 every â <= 0 is a preimage and all give
  D = relu(a)^2/2. (For y < 0, outside the range of relu, the formula is no divergence.)
- softmax:  F(a) = logsumexp(a) over the last dimension, F*(y) = sum y log y on the simplex,
  so D = KL(y || softmax(a)) row by row.

Values are summed over every element. Rounding can leave an element's divergence a hair below
zero next to its minimum; those elements are clamped at zero (the true gradient there is zero to
the same precision).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Transfer:
    """One transfer function and what LocoProp and K-FAC need of it."""

    name: str
    module: type[nn.Module]
    f: Callable[[Tensor], Tensor]
    f_: Callable[[Tensor], Tensor]  # f in place on a scratch buffer, returning it
    jvp: Callable[[Tensor, Tensor], Tensor]  # (y = f(a), t) -> f'(a) t
    matching_loss: Callable[[Tensor, Tensor], Tensor]  # (a, y_target) -> summed D(a, y_target)


def _binary_kl_logits(logits: Tensor, p: Tensor) -> Tensor:
    """Element-wise KL(p || sigmoid(logits)) for p in [0, 1], stable for any finite logits."""
    neg_entropy = torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)
    return F.binary_cross_entropy_with_logits(logits, p, reduction="none") + neg_entropy


def _softmax_matching(a: Tensor, y: Tensor) -> Tensor:
    """KL(y || softmax(a)) = logsumexp(a) - y.a + sum y log y, per row."""
    d = torch.logsumexp(a, dim=-1) - (y * a).sum(-1) + torch.special.xlogy(y, y).sum(-1)
    return d.clamp_min(0).sum()


TRANSFERS: dict[str, Transfer] = {t.name: t for t in (
    Transfer("identity", nn.Identity, f=lambda a: a, f_=lambda a: a, jvp=lambda y, t: t,
             matching_loss=lambda a, y: 0.5 * (a - y).pow(2).sum()),
    Transfer("tanh", nn.Tanh, f=torch.tanh, f_=torch.Tensor.tanh_, jvp=lambda y, t: t * (1 - y * y),
             matching_loss=lambda a, y: _binary_kl_logits(2 * a, 0.5 * (1 + y)).clamp_min(0).sum()),
    Transfer("sigmoid", nn.Sigmoid, f=torch.sigmoid, f_=torch.Tensor.sigmoid_, jvp=lambda y, t: t * (y * (1 - y)),
             matching_loss=lambda a, y: _binary_kl_logits(a, y).clamp_min(0).sum()),
    Transfer("relu", nn.ReLU, f=torch.relu, f_=torch.Tensor.relu_, jvp=lambda y, t: t * (y > 0).to(t.dtype),
             matching_loss=lambda a, y: (0.5 * torch.relu(a).pow(2) - y * a + 0.5 * y.pow(2)).clamp_min(0).sum()),
    Transfer("softmax", nn.Softmax, f=lambda a: torch.softmax(a, dim=-1),
             f_=lambda a: torch.softmax(a, dim=-1, out=a), jvp=lambda y, t: y * (t - (y * t).sum(-1, keepdim=True)),
             matching_loss=_softmax_matching),
)}
ALIASES = {"linear": "identity", "none": "identity", "logistic": "sigmoid"}


def get_transfer(name: str) -> Transfer:
    """The record of a transfer function by name (aliases accepted), or a ValueError naming the choices."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TRANSFERS:
        raise ValueError(f"unknown transfer function {name!r}; choose one of {', '.join(TRANSFERS)}")
    return TRANSFERS[key]


def transfer_of_module(module: nn.Module) -> Transfer:
    """The record of an activation module (exact type match), or a ValueError naming the choices."""
    for record in TRANSFERS.values():
        if type(module) is record.module:
            if record.name == "softmax" and module.dim not in (-1, 1, None):
                raise ValueError(f"softmax over dim={module.dim} is not supported; use dim=-1")
            return record
    raise ValueError(f"cannot use layer {module!r}: expected nn.Linear followed by one of "
                     f"{', '.join(r.module.__name__ for r in TRANSFERS.values())}")


def matching_loss(transfer: str, a: Tensor, y_target: Tensor) -> Tensor:
    """Matching loss D(a, y_target) of the named transfer function, summed over everything.

    `a` is the pre-activation, `y_target` a target in post-activation space (inside the range
    of f). Differentiable in `a`, with gradient `f(a) - y_target`.
    """
    return get_transfer(transfer).matching_loss(a, y_target)


def matching_grad(transfer: str, a: Tensor, y_target: Tensor) -> Tensor:
    """Gradient of `matching_loss` with respect to the pre-activation: f(a) - y_target."""
    return get_transfer(transfer).f(a) - y_target
