"""RMSProp with TensorFlow 1 semantics (`tf.train.RMSPropOptimizer`), as the LocoProp code uses.

It differs from `torch.optim.RMSprop` in three ways that change the trajectory:
- the mean square starts at ONE (`initial_ms`), not zero;
- epsilon sits inside the square root: `g / sqrt(ms + eps)`;
- the learning rate is applied inside the momentum buffer, so a change of learning rate only
  affects new contributions (a step at lr 0 still moves the weights by the buffer):
      ms  <- decay * ms + (1 - decay) * g^2
      mom <- momentum * mom + lr * g / sqrt(ms + eps)
      w   <- w - mom
With momentum 0 the buffer is skipped and `w <- w - lr * g / sqrt(ms + eps)`.
"""
from __future__ import annotations

import torch

from .tf1_step import TF1Optimizer


# Elements per chunk of the CPU path: a chunk's four arrays and its scratch stay in the L2 cache
# through the update's seven passes, instead of streaming each pass through memory.
CPU_CHUNK = 65536


class RMSpropTF1(TF1Optimizer):
    """`foreach=None` (default) picks the multi-tensor kernels on GPU and, on CPU, a loop over
    each parameter in cache-sized chunks (the same arithmetic, measured faster there);
    `foreach=True/False` forces one of them."""

    def __init__(self, params, lr: float = 1e-3, decay: float = 0.9, momentum: float = 0.0,
                 eps: float = 1e-10, initial_ms: float = 1.0, foreach: bool | None = None):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"invalid decay (must be in [0, 1]): {decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum (must be in [0, 1)): {momentum}")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps: {eps}")
        if not initial_ms >= 0.0:
            raise ValueError(f"invalid initial_ms: {initial_ms}")
        defaults = dict(lr=lr, decay=decay, momentum=momentum, eps=eps, initial_ms=initial_ms, foreach=foreach)
        super().__init__(params, defaults)
        self._scratch: torch.Tensor | None = None  # the CPU path's denominator buffer (not state)

    def _init_state(self, p, group):
        return {"ms": torch.full_like(p, group["initial_ms"], memory_format=torch.preserve_format),
                "mom": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def _update(self, group, params, grads, states):
        ms = [s["ms"] for s in states]
        mom = [s["mom"] for s in states]
        lr, decay, momentum, eps = group["lr"], group["decay"], group["momentum"], group["eps"]
        foreach = group["foreach"] if group["foreach"] is not None else params[0].device.type != "cpu"
        if foreach:
            # ms <- ms + (1 - decay) * (g^2 - ms), as TF's kernel writes it
            torch._foreach_mul_(ms, decay)
            torch._foreach_addcmul_(ms, grads, grads, value=1.0 - decay)
            denom = torch._foreach_add(ms, eps)
            torch._foreach_sqrt_(denom)
            if momentum > 0.0:
                torch._foreach_mul_(mom, momentum)
                torch._foreach_addcdiv_(mom, grads, denom, value=lr)
                torch._foreach_sub_(params, mom)
            else:
                torch._foreach_addcdiv_(params, grads, denom, value=-lr)
            return
        for p, g, m, b in zip(params, grads, ms, mom):
            p, g, m, b = p.view(-1), g.view(-1), m.view(-1), b.view(-1)
            for start in range(0, p.numel(), CPU_CHUNK):
                end = min(start + CPU_CHUNK, p.numel())
                pc, gc, mc, bc = p[start:end], g[start:end], m[start:end], b[start:end]
                denom = torch.add(mc.mul_(decay).addcmul_(gc, gc, value=1.0 - decay), eps,
                                  out=self._denominator(end - start, p)).sqrt_()
                if momentum > 0.0:
                    pc.sub_(bc.mul_(momentum).addcdiv_(gc, denom, value=lr))
                else:
                    pc.addcdiv_(gc, denom, value=-lr)

    def _denominator(self, n: int, like: torch.Tensor) -> torch.Tensor:
        scratch = getattr(self, "_scratch", None)  # absent after unpickling: torch pickles state only
        if scratch is None or scratch.numel() < n or scratch.dtype != like.dtype or scratch.device != like.device:
            scratch = self._scratch = like.new_empty(max(n, min(CPU_CHUNK, like.numel())))
        return scratch[:n]
