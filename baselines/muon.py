"""Muon (Jordan et al. 2024, `torch.optim.Muon`) with the usual split of parameters.

Muon orthogonalises each weight matrix's momentum by a Newton-Schulz iteration; it is defined
for the hidden layers' matrices. The input and output layers and every bias go to AdamW, as in
the original recipe and its later uses. With `adjust_lr_fn='match_rms_adamw'` (torch's option,
after Moonlight) Muon's update is scaled to AdamW's RMS, so one learning rate serves both parts.
"""
from __future__ import annotations

import torch
from torch import nn

from .combined import CombinedOptimizer


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden 2-D weights, the rest): the first and last Linear layers' weights and every bias
    and other parameter fall in the rest."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 3:
        raise ValueError(f"Muon needs hidden layers between the first and last Linear; the model has {len(linears)}")
    hidden_ids = {id(m.weight) for m in linears[1:-1]}
    hidden = [p for p in model.parameters() if id(p) in hidden_ids]
    rest = [p for p in model.parameters() if id(p) not in hidden_ids]
    return hidden, rest


def muon(model: nn.Module, lr: float = 1e-3, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
         weight_decay: float = 0.0, adjust_lr_fn: str | None = "match_rms_adamw",
         adamw_betas: tuple[float, float] = (0.9, 0.999), adamw_eps: float = 1e-8) -> CombinedOptimizer:
    """Muon on the hidden weight matrices, AdamW (same lr and weight decay) on the rest."""
    if not hasattr(torch.optim, "Muon"):
        raise ImportError(f"torch.optim.Muon is not in torch {torch.__version__}: Muon needs torch >= 2.9")
    hidden, rest = split_parameters(model)
    return CombinedOptimizer([
        torch.optim.Muon(hidden, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                         weight_decay=weight_decay, adjust_lr_fn=adjust_lr_fn),
        torch.optim.AdamW(rest, lr=lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=weight_decay)])
