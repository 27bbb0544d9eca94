"""The base of optimizers that run the model themselves (LocoProp, K-FAC, FOOF, DTP).

A model-aware optimizer takes an `nn.Sequential` instead of its parameters and does a whole
training step in `step(inputs, targets) -> loss`: it needs the per-layer record of a forward pass
(`forward_record`), extra backward passes, or several inner updates per step. What such
optimizers share lives here once:

- the model and its layer chain (`self.model`, `self.layers`, `self.layer_params`);
- pickling that keeps every attribute: torch's `Optimizer.__getstate__` keeps only `defaults`,
  `state` and `param_groups`, which would drop the layer chain, inner optimizers and buffers on
  `copy.deepcopy` (the harness deep-copies optimizers for throw-away warm-up steps);
- `state_dict()` = torch's (per-parameter state, param_groups) plus `extra_state()` under the key
  'extra', restored by `load_extra_state()`: a subclass adds what lives outside `self.state`
  (step counters, inner optimizers, damping) by overriding those two methods.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from .chain import ChainLayer, linear_chain


class ModelAwareOptimizer(Optimizer):
    """An optimizer built from a model; one `step(inputs, targets)` is one training step."""

    model_aware = True  # the harness passes the model, not its parameters, and calls step(x, x)

    def __init__(self, model: nn.Sequential, defaults: dict[str, Any], params: list | None = None):
        """`params`: parameter groups or tensors for torch's Optimizer; default every layer's weight
        and bias (weight first), in one group."""
        self.model = model
        self.layers: list[ChainLayer] = linear_chain(model)
        self.layer_params = [[p for p in (l.linear.weight, l.linear.bias) if p is not None] for l in self.layers]
        super().__init__([p for ps in self.layer_params for p in ps] if params is None else params, defaults)

    def __getstate__(self) -> dict:
        return self.__dict__

    def step(self, inputs: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        """One training step on (inputs, targets); returns the mini-batch loss before the update."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """State kept outside `self.state` (e.g. a step counter); part of `state_dict()`."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what `extra_state()` returned (a deep copy: the caller's dict is not aliased)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = copy.deepcopy(state_dict.pop("extra", {}))
        super().load_state_dict(state_dict)
        self.load_extra_state(extra)
