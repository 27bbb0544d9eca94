"""Decompositions of many symmetric matrices at once, without a host synchronisation.

K-FAC and Shampoo refresh a preconditioner for every layer at once. Matrices of the same size
go through one batched call, and success comes back as a boolean tensor per matrix (not as a
Python exception or an `int(info)` per layer), so a refresh waits for the device once, when the
caller reads every flag together.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor


def _by_size(matrices: list[Tensor]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, m in enumerate(matrices):
        groups[(m.shape[-1], m.dtype, m.device)].append(index)
    return groups


def batched_cholesky_inverse(matrices: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """(inverses, ok): M^-1 of each symmetric positive definite matrix through its Cholesky factor;
    ok[i] is False where M_i was not numerically positive definite (its inverse is then garbage)."""
    inverses: list[Tensor | None] = [None] * len(matrices)
    ok = torch.zeros(len(matrices), dtype=torch.bool, device=matrices[0].device)
    for indices in _by_size(matrices).values():
        chol, info = torch.linalg.cholesky_ex(torch.stack([matrices[i] for i in indices]))
        batch = torch.cholesky_inverse(chol)
        ok[indices] = info == 0
        for k, i in enumerate(indices):
            inverses[i] = batch[k]
    return inverses, ok


def batched_eigh(matrices: list[Tensor]) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """([(eigenvalues clamped at 0, eigenvectors)], ok): eigh of each symmetric matrix; ok[i] is
    False where the decomposition failed or gave non-finite eigenvalues."""
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(matrices)
    ok = torch.zeros(len(matrices), dtype=torch.bool, device=matrices[0].device)
    for indices in _by_size(matrices).values():
        stacked = torch.stack([matrices[i] for i in indices])
        try:
            values, vectors = torch.linalg.eigh(stacked)
        except RuntimeError:  # one bad matrix fails the batch: decompose the rest one by one
            for i in indices:
                try:
                    e, q = torch.linalg.eigh(matrices[i])
                except RuntimeError:
                    e, q = torch.full_like(matrices[i][0], float("nan")), torch.eye(
                        matrices[i].shape[-1], dtype=matrices[i].dtype, device=matrices[i].device)
                out[i] = (e.clamp(min=0.0), q)
                ok[i] = torch.isfinite(e).all()
            continue
        ok[indices] = torch.isfinite(values).all(dim=-1)
        for k, i in enumerate(indices):
            out[i] = (values[k].clamp(min=0.0), vectors[k])
    return out, ok
