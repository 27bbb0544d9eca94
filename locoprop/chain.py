"""A network seen as a chain of layers a_l = W_l x_l + b_l, y_l = f_l(a_l), x_{l+1} = y_l.

LocoProp and K-FAC both need every layer's input, pre-activation and transfer function.
`linear_chain` reads that structure off any `nn.Sequential` of `nn.Linear` layers and
element-wise activation modules, and `forward_record` runs the one forward pass that keeps
what they need, so no optimizer re-implements the model's forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transfer import apply_transfer

_TRANSFER_MODULES = {
    nn.Identity: "identity",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ReLU: "relu",
    nn.Softmax: "softmax",
}


@dataclass(frozen=True)
class ChainLayer:
    """One linear layer and the transfer function applied to its output."""

    linear: nn.Linear
    transfer: str


def _transfer_name(module: nn.Module) -> str:
    for cls, name in _TRANSFER_MODULES.items():
        if type(module) is cls:
            if cls is nn.Softmax and module.dim not in (-1, 1, None):
                raise ValueError(f"softmax over dim={module.dim} is not supported; use dim=-1")
            return name
    raise ValueError(
        f"cannot use layer {module!r}: expected nn.Linear followed by one of "
        f"{', '.join(c.__name__ for c in _TRANSFER_MODULES)}"
    )


def linear_chain(model: nn.Module) -> list[ChainLayer]:
    """Parse an `nn.Sequential` into Linear+transfer layers.

    A Linear not followed by an activation module gets the identity transfer. Anything other
    than Linear layers and the supported element-wise activations raises a ValueError that
    names the offending module.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential of nn.Linear and activation modules, got {type(model).__name__}")
    modules = list(model)
    layers: list[ChainLayer] = []
    i = 0
    while i < len(modules):
        module = modules[i]
        if not isinstance(module, nn.Linear):
            raise ValueError(f"module {i} ({module!r}) must be an nn.Linear: activations must follow a Linear layer")
        transfer = "identity"
        if i + 1 < len(modules) and not isinstance(modules[i + 1], nn.Linear):
            transfer = _transfer_name(modules[i + 1])
            i += 1
        layers.append(ChainLayer(module, transfer))
        i += 1
    if not layers:
        raise ValueError("the model has no nn.Linear layer")
    return layers


@dataclass
class ForwardRecord:
    """Per-layer tensors of one forward pass: inputs x_l, pre-activations a_l, outputs y_l."""

    inputs: list[Tensor]
    pre: list[Tensor]
    post: list[Tensor]
    transfers: list[str]

    @property
    def logits(self) -> Tensor:
        """The last layer's pre-activation (what losses such as BCE-with-logits take)."""
        return self.pre[-1]


def forward_record(layers: list[ChainLayer], x: Tensor, grad_pre: bool = False) -> ForwardRecord:
    """Run the chain once and keep every layer's input, pre- and post-activation.

    Weights are used detached, so no weight gradients are ever built. With `grad_pre=True`
    the pre-activations are part of an autograd graph, so one call to
    `torch.autograd.grad(loss, record.pre)` returns dL/da_l for every layer at the cost of
    one backward pass without weight-gradient matmuls.
    """
    inputs, pre, post, transfers = [], [], [], []
    h = x
    with torch.set_grad_enabled(grad_pre):
        for layer in layers:
            lin = layer.linear
            bias = None if lin.bias is None else lin.bias.detach()
            a = F.linear(h, lin.weight.detach(), bias)
            if grad_pre and not a.requires_grad:
                a.requires_grad_(True)
            y = apply_transfer(layer.transfer, a)
            inputs.append(h)
            pre.append(a)
            post.append(y)
            transfers.append(layer.transfer)
            h = y
    return ForwardRecord(inputs, pre, post, transfers)
