"""The optimizer contract and registry: every optimizer is one config file.

`configs/optimizer/<name>.yaml` says everything the harness needs:

- `_target_` (required): a torch.optim-style class (built as `cls(model.parameters(), **hp)`), a
  model-aware class (`locoprop.model_aware.ModelAwareOptimizer`, built as `cls(model, **hp)` and
  stepped as `opt.step(inputs, targets)`), or a factory function `(model, **hp) -> Optimizer` that
  may build parameter groups (e.g. Muon for the hidden matrices, AdamW for the rest);
- its hyper-parameters (every other key not listed below is passed to `_target_`);
- harness keys, all optional: `name` (the run label; default the file name), `label` (legends and
  tables; default the name), `family` (how reports group and draw it; default 'other'), `paper`
  (one of the LocoProp paper's nine; default false), `style` (matplotlib keywords: color,
  linestyle, marker, ...; default derived from the family and the label), `extra` (the optional
  dependency group that provides `_target_`, named in the error when it is missing).

Also optional: `benchmarks/tuning/search_spaces/<name>.yaml` (the tuner's search space, outside Hydra's
config groups; default: the learning rate over [lr/30, 30 lr], log-uniform) and
`configs/optimizer/inner_optimizer/<name>.yaml` (its use as LocoProp's inner optimizer). The
registry reads a config as the runner composes it, keys inherited through `defaults:` included.
An optimizer with `eval()` and `train()` methods (Schedule-Free) is put in training mode when
built, and `evaluation_weights` switches it to its evaluation weights for evaluations and
checkpoints.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from torch import Tensor, nn

from benchmarks.config import CONFIG_DIR, compose_group, unknown_name

HARNESS_KEYS = ("name", "label", "family", "paper", "style", "extra")  # read by the harness, not passed on
FAMILY_ORDER = ("first_order", "second_order", "local_loss", "target_propagation", "modern", "other")  # the paper's lists
LEGEND_ORDER = ("local_loss", "second_order", "first_order", "target_propagation", "modern", "other")  # figures, tables
FAMILY_LABELS = {"first_order": "first-order", "second_order": "second-order", "local_loss": "local losses (LocoProp)",
                 "target_propagation": "target propagation", "modern": "modern (not in the paper)", "other": "other"}
# Defaults of `style` by family: a dash pattern and a marker; the colour comes from the label.
FAMILY_STYLES = {"first_order": dict(linestyle="--", marker="v"), "second_order": dict(linestyle="-.", marker="s"),
                 "local_loss": dict(linestyle="-", marker="o", linewidth=2.0, zorder=4),
                 "target_propagation": dict(linestyle="-", marker="D"), "modern": dict(linestyle=":", marker="^"),
                 "other": dict(linestyle=(0, (3, 1, 1, 1)), marker="P")}  # "x" marks a diverged run
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


class OptimizerConfigError(ValueError):
    """An optimizer config that cannot be built; the message says what kind of failure it is."""


# ----------------------------------------------------------------------------- the registry

def optimizer_names(group: str = "optimizer") -> list[str]:
    """Every optimizer with a config (group 'optimizer/inner_optimizer': LocoProp's inner choices)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def config_path(name: str) -> Path:
    return CONFIG_DIR / "optimizer" / f"{name}.yaml"


def optimizer_config(name: str) -> dict[str, Any]:
    """An optimizer's config as the runner composes it (`optimizer=<name>`: keys inherited through its
    `defaults:` included), as a plain dict."""
    path = config_path(name)
    if not path.is_file():
        raise ValueError(unknown_name("optimizer", name, optimizer_names()))
    return compose_group("optimizer", name)


def family_of(name: str) -> str:
    """An optimizer's family; 'other' for a name no config defines (runs of a private optimizer)."""
    try:
        return optimizer_info(name)["family"]
    except ValueError:
        return "other"


# A row of an optimizer run with a setting that was not searched: `<optimizer>@<variant>`
VARIANTS = {"published": "published defaults"}


def optimizer_info(name: str) -> dict[str, Any]:
    """The harness keys of one optimizer's config, defaults filled in. `<optimizer>@published` is the
    optimizer at its authors' published defaults (a row beside its searched one): its label says
    so and its lines are dotted."""
    base, _, variant = name.partition("@")
    if variant:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} of {base!r}; choose one of {', '.join(VARIANTS)}")
        info = optimizer_info(base)
        return {**info, "name": name, "label": f"{info['label']}, {VARIANTS[variant]}",
                "style": {**info["style"], "linestyle": ":", "marker": "x" if info["style"].get("marker") != "x" else "+"}}
    path = config_path(name)
    info = optimizer_config(name)
    info = {key: info.get(key) for key in HARNESS_KEYS}
    info["name"] = info["name"] or name
    info["label"] = info["label"] or info["name"]
    info["family"] = info["family"] or "other"
    if info["family"] not in FAMILY_ORDER:
        raise ValueError(f"{path}: unknown family {info['family']!r}; choose one of {', '.join(FAMILY_ORDER)}")
    info["paper"] = bool(info["paper"])
    info["style"] = {**default_style(info["label"], info["family"]), **(info["style"] or {})}
    return info


def default_style(label: str, family: str) -> dict[str, Any]:
    """A stable look for an optimizer without its own `style`: the family's dashes and marker, a
    palette colour chosen by the label (the same in every figure and every run of the harness)."""
    index = int(hashlib.sha256(label.encode()).hexdigest(), 16) % len(PALETTE)
    return {"color": PALETTE[index], "linewidth": 1.0, "zorder": 3, **FAMILY_STYLES.get(family, FAMILY_STYLES["other"])}


def paper_optimizers() -> list[str]:
    """The nine optimizers the LocoProp paper compares, first-order methods first."""
    return family_sorted(n for n in optimizer_names() if optimizer_info(n)["paper"])


def _sorted_by(order: tuple[str, ...], names) -> list[str]:
    """Names by their family's place in `order`, then by name; names without a config last."""
    def key(name: str) -> tuple[int, str]:
        try:
            return order.index(optimizer_info(name)["family"]), name
        except ValueError:
            return len(order), name
    return sorted(set(names), key=key)


def family_sorted(names) -> list[str]:
    """The paper's order (FAMILY_ORDER: first-order methods first), then by name."""
    return _sorted_by(FAMILY_ORDER, names)


def legend_sorted(names) -> list[str]:
    """Legend and table order (LEGEND_ORDER): LocoProp first, then second-order, first-order, the
    relatives, the rest; by name within a family."""
    return _sorted_by(LEGEND_ORDER, names)


def label(name: str) -> str:
    """The legend label of an optimizer (its name if it has no config)."""
    try:
        return optimizer_info(name)["label"]
    except ValueError:
        return name


# ----------------------------------------------------------------------------- building one

def hyper_parameters(cfg: Any) -> Any:
    """What the config passes to its `_target_`: the harness keys removed, also from nested configs
    (LocoProp's inner optimizer)."""
    if isinstance(cfg, Mapping):
        return {k: hyper_parameters(v) for k, v in cfg.items() if k not in HARNESS_KEYS}
    return cfg


def _where(cfg: Mapping[str, Any]) -> str:
    name = cfg.get("name")
    path = config_path(name) if name else None
    return f"optimizer {name!r} ({path.relative_to(CONFIG_DIR.parent)})" if path and path.is_file() else \
        f"optimizer {name or cfg.get('_target_')!r}"


def _target(cfg: Mapping[str, Any]) -> Any:
    """The class or factory a config names, imported; a clear error when it cannot be."""
    if "_target_" not in cfg:
        raise OptimizerConfigError(f"{_where(cfg)}: the config names no class or factory (_target_)")
    try:
        return get_object(cfg["_target_"])
    except Exception as err:  # noqa: BLE001 - Hydra wraps import errors in several ways
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        hint = ""
        if isinstance(cause, ModuleNotFoundError) and cfg.get("extra"):
            hint = (f"; it needs the optional dependencies '{cfg['extra']}': "
                    f"pip install 'locoprop-bench[{cfg['extra']}]' (or pip install -e '.[{cfg['extra']}]')")
        raise OptimizerConfigError(f"{_where(cfg)}: cannot import {cfg['_target_']!r}: "
                                   f"{type(cause).__name__}: {cause}{hint}") from err


def takes_model(target: Any) -> bool:
    """A model-aware class or a factory function gets the model; a plain class its parameters."""
    return getattr(target, "model_aware", False) or not inspect.isclass(target)


def make_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer a config describes for `model`, in training mode.

    Model-aware classes and factories get the model (and, when they take a `loss` that the config
    does not set, the model's loss kind); plain classes get `model.parameters()`. A failure says
    what kind it is: the target cannot be imported, a hyper-parameter is unknown, a value is
    invalid, or the optimizer does not accept this model's parameters (a structural mismatch, e.g.
    an optimizer of matrices given biases: a factory that builds parameter groups is the fix)."""
    target = _target(cfg)
    kwargs = hyper_parameters(cfg)
    if takes_model(target) and "loss" in _parameters(target) and "loss" not in kwargs:
        kwargs["loss"] = getattr(model, "loss_kind", "bernoulli")
    first = model if takes_model(target) else model.parameters()
    try:
        optimizer = instantiate(kwargs, first, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise OptimizerConfigError(f"{_where(cfg)}: {_failure_kind(target, model, kwargs, cause)}: "
                                   f"{type(cause).__name__}: {cause}") from err
    if has_weight_modes(optimizer):
        optimizer.train()
    return optimizer


def _parameters(target: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


def _failure_kind(target: Any, model: nn.Module, kwargs: dict[str, Any], cause: BaseException) -> str:
    if isinstance(cause, ImportError):
        return "a package it needs is missing"
    if isinstance(cause, TypeError) and "argument" in str(cause):
        return "a hyper-parameter is not accepted (unknown, missing or of the wrong type)"
    bare = {k: v for k, v in kwargs.items() if k in ("_target_", "loss")}
    try:  # the same target with its own defaults: if that fails too, the model is the problem
        instantiate(bare, model if takes_model(target) else model.parameters(), _convert_="all")
    except Exception:  # noqa: BLE001
        return "it does not accept this model's parameters (a structural mismatch)"
    return "a hyper-parameter value is invalid"


# ----------------------------------------------------------------------------- using one

def has_weight_modes(optimizer: Any) -> bool:
    """Whether the optimizer keeps separate training and evaluation weights (Schedule-Free)."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


@contextlib.contextmanager
def evaluation_weights(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """The model holds the optimizer's evaluation weights inside the block, its training weights
    after it (a no-op for optimizers with one set of weights)."""
    if not has_weight_modes(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


PRECISIONS = ("float32", "bf16")


def check_precision(optimizer: torch.optim.Optimizer, precision: str) -> None:
    """bf16 autocast is offered where the optimizer only sees gradients: a model-aware optimizer runs
    its own passes and keeps float32 statistics (factors, targets, inner states)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and getattr(optimizer, "model_aware", False):
        raise ValueError(f"precision=bf16 is offered for gradient optimizers; {type(optimizer).__name__} runs its own "
                         "forward and backward passes in float32 (its factors, targets and inner states need it)")


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer,
              precision: str = "float32") -> Callable[[Tensor], Tensor]:
    """A function `step(x) -> loss` (detached, on the device) doing one training step on batch x.
    With precision 'bf16' the forward and backward passes run under bf16 autocast; the weights,
    their gradients and the optimizer's state stay float32."""
    check_precision(optimizer, precision)
    if getattr(optimizer, "model_aware", False):
        def step(x: Tensor) -> Tensor:
            return optimizer.step(x, x)
    elif precision == "bf16":
        def step(x: Tensor) -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                loss = model.loss(x)
            loss.backward()
            optimizer.step()
            return loss.detach().float()
    else:
        def step(x: Tensor) -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(x)
            loss.backward()
            optimizer.step()
            return loss.detach()
    return step
