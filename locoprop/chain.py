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

from .transfer import TRANSFERS, Transfer, transfer_of_module


@dataclass(frozen=True)
class ChainLayer:
    """One linear layer and the transfer function applied to its output.

    Second-order methods (K-FAC, FOOF) treat the weight and the bias as one matrix
    Wbar = [W, b] acting on xbar = [x, 1]; the helpers below build those and apply a step to them.
    """

    linear: nn.Linear
    transfer: Transfer

    def xbar(self, x: Tensor) -> Tensor:
        """[x, 1] (the homogeneous coordinate that folds the bias in), or x for a bias-free layer."""
        return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1) if self.linear.bias is not None else x

    def wbar(self) -> Tensor:
        """[W, b] (detached), or W for a bias-free layer."""
        w = self.linear.weight.detach()
        return torch.cat([w, self.linear.bias.detach()[:, None]], dim=1) if self.linear.bias is not None else w

    @torch.no_grad()
    def add_(self, delta: Tensor, alpha: float = 1.0) -> None:
        """W, b += alpha * delta, with delta laid out as Wbar."""
        if self.linear.bias is not None:
            self.linear.weight.add_(delta[:, :-1], alpha=alpha)
            self.linear.bias.add_(delta[:, -1], alpha=alpha)
        else:
            self.linear.weight.add_(delta, alpha=alpha)


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
        transfer = TRANSFERS["identity"]
        if i + 1 < len(modules) and not isinstance(modules[i + 1], nn.Linear):
            transfer = transfer_of_module(modules[i + 1])
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
    transfers: list[Transfer]

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
            y = layer.transfer.f(a)
            inputs.append(h)
            pre.append(a)
            post.append(y)
            transfers.append(layer.transfer)
            h = y
    return ForwardRecord(inputs, pre, post, transfers)
