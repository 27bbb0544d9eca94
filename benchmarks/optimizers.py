"""The optimizer registry and the training step: every optimizer is one config file.

`configs/optimizer/<name>.yaml` names its class (`_target_`, e.g. `torch.optim.SGD`), its run
label (`name`), its legend label, its family and whether the LocoProp paper compares it; every list
of optimizers in the harness is read from there. Adding an optimizer means adding its class
(anywhere importable) and one YAML file.

Two families share one seam: gradient optimizers (SGD ... Adam, Shampoo) take
`loss.backward(); opt.step()`, model-aware ones (LocoProp, K-FAC, FOOF, DTP; their class says
`model_aware = True`) take the model instead of its parameters and `opt.step(inputs, targets)`.
`make_step` hides the difference: `loss = step(x)` for an autoencoder (the targets are the inputs).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from torch import Tensor, nn

from benchmarks.config import CONFIG_DIR

HARNESS_KEYS = ("name", "label", "family", "paper")  # read by the harness, not passed to the class
FAMILY_ORDER = ("first_order", "second_order", "local_loss", "target_propagation")


def _read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def optimizer_names(group: str = "optimizer") -> list[str]:
    """Every optimizer with a config (group 'optimizer/inner_optimizer': LocoProp's inner choices)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def optimizer_info(name: str) -> dict[str, Any]:
    """The harness keys of one optimizer's config: name, label, family, paper."""
    path = CONFIG_DIR / "optimizer" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(optimizer_names())}")
    info = _read(path)
    return {key: info.get(key) for key in HARNESS_KEYS}


def paper_optimizers() -> list[str]:
    """The nine optimizers the LocoProp paper compares, first-order methods first."""
    infos = [optimizer_info(n) for n in optimizer_names()]
    paper = [i for i in infos if i["paper"]]
    return [i["name"] for i in sorted(paper, key=lambda i: (FAMILY_ORDER.index(i["family"]), i["name"]))]


def label(name: str) -> str:
    """The legend label of an optimizer (its name if it has no config)."""
    try:
        return optimizer_info(name)["label"] or name
    except ValueError:
        return name


def _strip(cfg: Any) -> Any:
    if isinstance(cfg, Mapping):
        return {k: _strip(v) for k, v in cfg.items() if k not in HARNESS_KEYS}
    return cfg


def optimizer_class(cfg: Mapping[str, Any]) -> type:
    if "_target_" not in cfg:
        raise ValueError(f"optimizer config {dict(cfg)!r} names no class (_target_)")
    return get_class(cfg["_target_"])


def make_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Instantiate the optimizer a config describes (`_target_` + hyper-parameters) for `model`.

    Model-aware classes get the model (and, unless set, the model's loss kind); the others get
    `model.parameters()`. Unknown or invalid hyper-parameters raise a ValueError naming the optimizer.
    """
    name = cfg.get("name", cfg.get("_target_"))
    cls = optimizer_class(cfg)
    kwargs = _strip(cfg)
    model_aware = getattr(cls, "model_aware", False)
    if model_aware and "loss" in inspect.signature(cls).parameters and "loss" not in kwargs:
        kwargs["loss"] = getattr(model, "loss_kind", "bernoulli")
    try:
        return instantiate(kwargs, model if model_aware else model.parameters(), _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"bad hyper-parameters for optimizer {name!r}: {err.__cause__ or err}") from err


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
