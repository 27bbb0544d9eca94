"""Build any optimizer of the benchmark from a config dict, and the training step that drives it.

Two families share one seam (DESIGN.md): gradient optimizers (SGD ... Adam, Shampoo) take
`loss.backward(); opt.step()`, model-aware ones (LocoProp, K-FAC; `model_aware = True`) take
`opt.step(inputs, targets)` and run their own forward/backward passes. `make_step` hides the
difference: `loss = step(x)` for an autoencoder (the targets are the inputs).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

# name -> ("module:Class", preset keyword arguments that define the variant)
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("torch.optim:SGD", {}),
    "momentum": ("torch.optim:SGD", {}),
    "nesterov": ("torch.optim:SGD", {"nesterov": True}),
    "adagrad": ("torch.optim:Adagrad", {}),
    "rmsprop": ("torch.optim:RMSprop", {}),
    "adam": ("torch.optim:Adam", {}),
    "rmsprop_tf1": ("baselines.rmsprop_tf1:RMSpropTF1", {}),
    "adagrad_tf1": ("baselines.adagrad_tf1:AdagradTF1", {}),
    "adam_tf1": ("baselines.adam_tf1:AdamTF1", {}),
    "shampoo": ("baselines.shampoo:Shampoo", {}),
    "kfac": ("baselines.kfac:KFAC", {}),
    "locoprop_s": ("locoprop.optimizer:LocoProp", {"variant": "S"}),
    "locoprop_m": ("locoprop.optimizer:LocoProp", {"variant": "M"}),
}
OPTIMIZER_NAMES = tuple(_REGISTRY)
MODEL_AWARE = ("kfac", "locoprop_s", "locoprop_m")
# Optimizers usable as LocoProp's inner (per-layer, element-wise) optimizer.
INNER_OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                         "rmsprop_tf1", "adagrad_tf1", "adam_tf1")


def optimizer_class(name: str) -> tuple[type, dict[str, Any]]:
    """The class registered under `name` and the preset arguments of that variant."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
    target, preset = _REGISTRY[name]
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name), dict(preset)


def make_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Instantiate the optimizer described by `cfg` ({'name': ..., **hyper-parameters}) for `model`."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    cls, kwargs = optimizer_class(name)
    kwargs.update(cfg)
    if name in MODEL_AWARE:
        kwargs.setdefault("loss", getattr(model, "loss_kind", "bernoulli"))
        if "inner" in kwargs:
            inner = dict(kwargs.pop("inner"))
            inner_name = inner.pop("name")
            if inner_name not in INNER_OPTIMIZER_NAMES:
                raise ValueError(f"unknown inner optimizer {inner_name!r}; choose one of {', '.join(INNER_OPTIMIZER_NAMES)}")
            inner_cls, inner_preset = optimizer_class(inner_name)
            inner_preset.update(inner)
            kwargs["inner_optimizer"], kwargs["inner_kwargs"] = inner_cls, inner_preset
    target = model if name in MODEL_AWARE else model.parameters()
    try:
        return cls(target, **kwargs)
    except TypeError as err:  # an unknown hyper-parameter name in the config
        raise ValueError(f"bad hyper-parameters for optimizer {name!r}: {err}") from err


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Tensor], Tensor]:
    """A function `step(x) -> loss` (detached, on the device) doing one training step on batch x."""
    if getattr(optimizer, "model_aware", False):
        def step(x: Tensor) -> Tensor:
            return optimizer.step(x, x)
    else:
        def step(x: Tensor) -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(x)
            loss.backward()
            optimizer.step()
            return loss.detach()
    return step
