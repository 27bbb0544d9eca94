"""Several optimizers over disjoint parameters, stepped as one `torch.optim.Optimizer`.

Some methods are defined for matrices only (Muon) and are used with another optimizer for the
remaining parameters. The harness (and any LR scheduler) sees one optimizer: its `param_groups`
are the parts' own group dicts, so setting a group's lr reaches the part that owns it, and its
`state_dict()` is the parts' state dicts in order.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer


class CombinedOptimizer(Optimizer):
    def __init__(self, optimizers: Iterable[Optimizer]):
        self.optimizers = list(optimizers)
        params = [p for opt in self.optimizers for group in opt.param_groups for p in group["params"]]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("the combined optimizers share parameters; each parameter must have one owner")
        super().__init__(params, {})
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]

    def __getstate__(self) -> dict:
        """Every attribute (torch's Optimizer pickles only defaults, state and param_groups), so
        copy.deepcopy keeps the parts."""
        return self.__dict__

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        parts = state_dict["parts"]
        if len(parts) != len(self.optimizers):
            raise ValueError(f"the state dict has {len(parts)} parts, this optimizer {len(self.optimizers)}")
        for opt, part in zip(self.optimizers, parts):
            opt.load_state_dict(part)
