"""Adam with TensorFlow 1 semantics (`tf.train.AdamOptimizer`).

TF1 folds both bias corrections into the step size and adds epsilon to the UNcorrected root
("epsilon hat" of Kingma & Ba, section 2):
    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    w <- w - lr_t * m / (sqrt(v) + eps)
`torch.optim.Adam` instead adds eps to sqrt(v / (1 - beta2^t)), i.e. its effective epsilon is
eps * sqrt(1 - beta2^t) here; the two differ most early in training and for large eps (the
LocoProp notebook uses eps = 1e-5 with beta2 = 0.9).
The step counter is a Python int per group, so the update has no host-device sync.
"""
from __future__ import annotations

import math

import torch

from .tf1_step import TF1Optimizer


class AdamTF1(TF1Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 foreach: bool = True):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas (each must be in [0, 1)): {betas}")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps: {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, foreach=foreach, step=0))

    def _init_state(self, p, group):
        return {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def _update(self, group, params, grads, states):
        ms, vs = [s["m"] for s in states], [s["v"] for s in states]
        group["step"] += 1
        t = group["step"]
        beta1, beta2 = group["betas"]
        lr_t = group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        if group["foreach"]:
            torch._foreach_lerp_(ms, grads, 1.0 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, ms, denom, value=-lr_t)
        else:
            for p, g, m, v in zip(params, grads, ms, vs):
                m.lerp_(g, 1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
