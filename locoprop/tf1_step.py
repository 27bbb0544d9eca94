"""The step every TF1-semantics optimizer shares: evaluate the closure, gather each group's
parameters that have a gradient with their state (created on first use), and hand them to the
optimizer's own update. Each optimizer then holds only its state's shape and its arithmetic."""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class TF1Optimizer(Optimizer):
    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        """The state of `p` at its first step (TF1 creates its slots when the variable is first seen)."""
        raise NotImplementedError

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict]) -> None:
        """Update one group's `params` in place from their `grads` and `states`."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = []
            for p in params:
                if not self.state[p]:
                    self.state[p].update(self._init_state(p, group))
                states.append(self.state[p])
            self._update(group, params, [p.grad for p in params], states)
        return loss
