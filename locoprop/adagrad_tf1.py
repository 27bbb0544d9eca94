"""AdaGrad with TensorFlow 1 semantics (`tf.train.AdagradOptimizer`).

Unlike `torch.optim.Adagrad` (accumulator starts at 0, epsilon added outside the root), TF1
starts the accumulator at `initial_accumulator_value` and has no epsilon:
    accum <- accum + g^2
    w     <- w - lr * g / sqrt(accum)
The LocoProp notebook passes its `epsilon` flag (1e-5) as the initial accumulator.
"""
from __future__ import annotations

import torch

from .tf1_step import TF1Optimizer


class AdagradTF1(TF1Optimizer):
    def __init__(self, params, lr: float = 1e-2, initial_accumulator_value: float = 0.1, foreach: bool = True):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not initial_accumulator_value > 0.0:
            raise ValueError(f"initial_accumulator_value must be > 0 (TF1 has no epsilon): {initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, initial_accumulator_value=initial_accumulator_value, foreach=foreach))

    def _init_state(self, p, group):
        return {"accum": torch.full_like(p, group["initial_accumulator_value"])}

    def _update(self, group, params, grads, states):
        accums = [s["accum"] for s in states]
        if group["foreach"]:
            torch._foreach_addcmul_(accums, grads, grads)
            denom = torch._foreach_sqrt(accums)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        else:
            for p, g, a in zip(params, grads, accums):
                a.addcmul_(g, g)
                p.addcdiv_(g, a.sqrt(), value=-group["lr"])
