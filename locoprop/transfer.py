"""Element-wise transfer functions f (a -> y) that LocoProp and K-FAC know how to handle.

The names are the contract between models, the LocoProp matching losses and K-FAC:
'identity', 'tanh', 'sigmoid', 'relu', 'softmax' (softmax acts on the last dimension).
"""
from __future__ import annotations

import torch
from torch import Tensor

TRANSFER_NAMES = ("identity", "tanh", "sigmoid", "relu", "softmax")

# Accepted spellings in configs (the K-FAC/HF papers call the sigmoid "logistic").
ALIASES = {"linear": "identity", "none": "identity", "logistic": "sigmoid"}


def canonical_transfer(name: str) -> str:
    """Return the canonical transfer name, or raise a ValueError naming the choices."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TRANSFER_NAMES:
        raise ValueError(f"unknown transfer function {name!r}; choose one of {', '.join(TRANSFER_NAMES)}")
    return key


def apply_transfer(name: str, a: Tensor) -> Tensor:
    """f(a) for the named transfer function."""
    if name == "identity":
        return a
    if name == "tanh":
        return torch.tanh(a)
    if name == "sigmoid":
        return torch.sigmoid(a)
    if name == "relu":
        return torch.relu(a)
    if name == "softmax":
        return torch.softmax(a, dim=-1)
    raise ValueError(f"unknown transfer function {name!r}; choose one of {', '.join(TRANSFER_NAMES)}")
