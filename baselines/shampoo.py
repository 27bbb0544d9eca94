"""Shampoo (Gupta, Koren, Singer 2018) with the practical parts of Anil et al. 2020.

For a weight G of shape m x n (a tensor of more dimensions is seen as shape[0] x rest) Shampoo
keeps two statistics, L = sum G G^T (m x m) and R = sum G^T G (n x n), or exponential moving
averages of them when beta2 < 1, and steps along

    L_eps^{-a} G R_eps^{-a},   a = exponent_multiplier / 4,   X_eps = X + epsilon * I.

Choices made here (Anil et al. 2020, "Scalable second order optimization for deep learning"):

- Statistics start at zero; a ridge is added only when a root is computed. By default
  (`relative_epsilon=True`, as in Anil et al.'s code) the ridge is epsilon * lambda_max(X); with
  `relative_epsilon=False` it is the absolute epsilon. The relative ridge is the safe choice for
  float32 statistics: their round-off is about 1e-7 * lambda_max, so an absolute epsilon below
  that (1e-6 against lambda_max ~ 1e4 on the MNIST autoencoder) leaves the smallest eigenvalues,
  which dominate X^{-1/4}, to round-off noise (a float32 direction ~30% off the float64 one on
  rank-deficient statistics; the relative ridge keeps it within 1e-4).
- A dimension above `block_size` is cut into blocks; every block of the block grid is its own
  Shampoo problem with its own L, R and roots.
- Roots are recomputed every `precondition_frequency` steps, starting at step
  `start_preconditioning_step` (steps count from 1). Until then the step is the grafting
  direction alone; the roots start as identity matrices.
- Roots are computed in float64: a symmetric eigendecomposition (default) or the coupled Newton
  iteration. Same-size statistics of all parameters are stacked and decomposed in one batched
  call. Everything else (statistics, roots, V diag(lambda^-a) V^T, the preconditioning
  matmuls) stays in the parameter's dtype.
- Grafting is per block: each block's Shampoo direction is rescaled to the norm of the
  first-order ('sgd', 'adagrad', 'rmsprop', 'adam') direction on that block; with a single
  block (every MNIST weight at block_size 1024) that is per-layer grafting. 1-D parameters use
  the grafting direction alone. 'none' uses the raw Shampoo direction (and plain gradient steps
  before preconditioning starts).
- Grafting directions: rmsprop g / (sqrt(v) + eps) with v an EMA (grafting_beta2, default 0.9,
  the project's RMSProp decay) of g^2 started at zero, no bias correction; adam the same with
  the bias correction of v (the first moment is the momentum below, as in Distributed Shampoo);
  adagrad with v the sum of g^2. grafting_eps (1e-8) sits outside the square root.
- Weight decay is L2: weight_decay * p is added to the gradient before anything else, so it
  enters the statistics and the grafting too.
- Momentum is heavy-ball, buf = momentum * buf + d (torch.optim.SGD without dampening), or an
  EMA, buf = momentum * buf + (1 - momentum) * d, with `moving_average_momentum=True`. Nesterov
  steps along d + momentum * buf (EMA form: lerp(d, buf, momentum)) without touching buf.
- Non-refresh steps never synchronise with the device: the refresh decision comes from a
  Python int per param group (group['step']), and all state is tensors on the parameter's
  device, so such steps can be captured in a CUDA graph (with a tensor lr if it changes).
- A statistic that is not finite, or whose decomposition fails, keeps its previous root and
  raises a RuntimeWarning; the statistic itself is left as it is.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer

GRAFTING_TYPES = ("sgd", "adagrad", "rmsprop", "adam", "none")
ROOT_METHODS = ("eigh", "newton")


def _split_blocks(matrix: Tensor, block_size: int) -> list[Tensor]:
    """Views of the blocks of a 2-D tensor, row-major over the block grid."""
    return [block for rows in matrix.split(block_size, 0) for block in rows.split(block_size, 1)]


def _merge_blocks(blocks: list[Tensor], n_col_blocks: int) -> Tensor:
    """Inverse of `_split_blocks` (a copy)."""
    if len(blocks) == 1:
        return blocks[0]
    rows = [torch.cat(blocks[i:i + n_col_blocks], 1) for i in range(0, len(blocks), n_col_blocks)]
    return torch.cat(rows, 0)


def _ridge(max_eigenvalue: Tensor, epsilon: float, relative: bool) -> Tensor:
    """epsilon, or epsilon * lambda_max (floored at 1e-16 as in Anil et al.'s code), per matrix."""
    if relative:
        return epsilon * max_eigenvalue.clamp_min(1e-16)
    return torch.full_like(max_eigenvalue, epsilon)


def _symmetric_inverse_root_eigh(stats: Tensor, epsilon: float, alpha: float, relative: bool = False,
                                 out_dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(S + ridge I)^{-alpha} for a (b, n, n) float64 batch, and which ones succeeded.

    ridge = epsilon, or epsilon * lambda_max(S) if `relative`. Eigenvalues of S are clamped at
    zero before the ridge is added (round-off makes tiny negative ones), so every eigenvalue
    used is >= ridge. A failing batch is retried matrix by matrix.
    The decomposition is float64; V diag(lambda^-alpha) V^T is formed in `out_dtype`, the
    dtype the root is stored in (float32 halves the cost and loses nothing the storage keeps).
    """
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(stats)
        ok = torch.ones(stats.shape[0], dtype=torch.bool, device=stats.device)
    except RuntimeError:
        eigenvalues = torch.ones(stats.shape[:-1], dtype=stats.dtype, device=stats.device)
        eigenvectors = torch.eye(stats.shape[-1], dtype=stats.dtype, device=stats.device).repeat(stats.shape[0], 1, 1)
        ok = torch.zeros(stats.shape[0], dtype=torch.bool, device=stats.device)
        for i in range(stats.shape[0]):
            try:
                eigenvalues[i], eigenvectors[i] = torch.linalg.eigh(stats[i])
                ok[i] = True
            except RuntimeError:
                pass
    eigenvalues = eigenvalues.clamp_min(0)
    ridge = _ridge(eigenvalues[..., -1:], epsilon, relative)
    scale = (eigenvalues + ridge).pow(-alpha).to(out_dtype)
    eigenvectors = eigenvectors.to(out_dtype)
    return (eigenvectors * scale.unsqueeze(-2)) @ eigenvectors.mT, ok


def _max_eigenvalue(stats: Tensor, iters: int = 100) -> Tensor:
    """lambda_max of each symmetric PSD matrix of a (b, n, n) batch by power iteration."""
    v = torch.ones(stats.shape[:-1], dtype=stats.dtype, device=stats.device).unsqueeze(-1)
    for _ in range(iters):
        v = stats @ v
        v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True).clamp_min(1e-300)
    return (v.mT @ stats @ v).squeeze(-1)


def _symmetric_inverse_root_newton(stats: Tensor, epsilon: float, p: int, max_iters: int,
                                   tol: float, relative: bool = False) -> tuple[Tensor, Tensor]:
    """(S + ridge I)^{-1/p} for a (b, n, n) float64 batch by the coupled Newton iteration.

    Anil et al. 2020 (after Guo & Higham 2006): X_0 = z^{1/p} I, M_0 = z A with
    z = (1 + p) / (2 ||A||_F); T = ((p + 1) I - M) / p, X <- X T, M <- T^p M, which keeps
    M = X^p A and drives M to I monotonically. Success means max |M - I| <= tol. The relative
    ridge uses lambda_max from power iteration.
    """
    n = stats.shape[-1]
    eye = torch.eye(n, dtype=stats.dtype, device=stats.device)
    lam_max = _max_eigenvalue(stats) if relative else torch.zeros(stats.shape[0], 1, dtype=stats.dtype,
                                                                    device=stats.device)
    a = stats + _ridge(lam_max, epsilon, relative).unsqueeze(-1) * eye
    z = (1 + p) / (2 * torch.linalg.matrix_norm(a, "fro"))
    x = eye * z.pow(1.0 / p)[:, None, None]
    m = a * z[:, None, None]
    error = (m - eye).abs().amax((-2, -1))
    for _ in range(max_iters):
        if bool((error <= tol).all()):
            break
        t = ((p + 1) * eye - m) / p
        x = x @ t
        m = torch.linalg.matrix_power(t, p) @ m
        error = (m - eye).abs().amax((-2, -1))
    return x, error <= tol


@dataclass
class _RootJob:
    """One statistic whose inverse root is due, and where to put it."""

    stat: Tensor
    root: Tensor
    label: str
    settings: tuple  # (method, epsilon, relative_epsilon, alpha, newton_max_iters, newton_tol)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class Shampoo(Optimizer):
    """Shampoo with blocking, layer-wise grafting and momentum; see the module docstring."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, beta2: float = 1.0, epsilon: float = 1e-6, relative_epsilon: bool = True,
                 precondition_frequency: int = 10, start_preconditioning_step: int = 10,
                 block_size: int = 1024, grafting: str = "rmsprop", grafting_beta2: float = 0.9,
                 grafting_eps: float = 1e-8, inverse_root_method: str = "eigh",
                 exponent_multiplier: float = 1.0, moving_average_momentum: bool = False,
                 newton_max_iters: int = 100, newton_tol: float = 1e-6):
        if not isinstance(lr, Tensor) and not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be a bool, got {nesterov!r}")
        if nesterov and momentum <= 0.0:
            raise ValueError(f"nesterov needs momentum > 0, got momentum={momentum!r}")
        if not isinstance(moving_average_momentum, bool):
            raise ValueError(f"moving_average_momentum must be a bool, got {moving_average_momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not 0.0 < beta2 <= 1.0:
            raise ValueError(f"beta2 must be in (0, 1], got {beta2!r}")
        if not epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        if not isinstance(relative_epsilon, bool):
            raise ValueError(f"relative_epsilon must be a bool, got {relative_epsilon!r}")
        _check_int("precondition_frequency", precondition_frequency, 1)
        _check_int("start_preconditioning_step", start_preconditioning_step, 1)
        _check_int("block_size", block_size, 1)
        if grafting not in GRAFTING_TYPES:
            raise ValueError(f"grafting must be one of {', '.join(GRAFTING_TYPES)}, got {grafting!r}")
        if not 0.0 <= grafting_beta2 < 1.0:
            raise ValueError(f"grafting_beta2 must be in [0, 1), got {grafting_beta2!r}")
        if not grafting_eps > 0.0:
            raise ValueError(f"grafting_eps must be > 0, got {grafting_eps!r}")
        if inverse_root_method not in ROOT_METHODS:
            raise ValueError(f"inverse_root_method must be one of {', '.join(ROOT_METHODS)}, "
                             f"got {inverse_root_method!r}")
        if not exponent_multiplier > 0.0:
            raise ValueError(f"exponent_multiplier must be > 0, got {exponent_multiplier!r}")
        if inverse_root_method == "newton":
            p = 4.0 / exponent_multiplier
            if abs(p - round(p)) > 1e-9:
                raise ValueError(f"inverse_root_method='newton' needs 4 / exponent_multiplier to be an integer, "
                                 f"got exponent_multiplier={exponent_multiplier!r}")
        _check_int("newton_max_iters", newton_max_iters, 1)
        if not newton_tol > 0.0:
            raise ValueError(f"newton_tol must be > 0, got {newton_tol!r}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, beta2=beta2,
                        epsilon=epsilon, relative_epsilon=relative_epsilon,
                        precondition_frequency=precondition_frequency,
                        start_preconditioning_step=start_preconditioning_step, block_size=block_size,
                        grafting=grafting, grafting_beta2=grafting_beta2, grafting_eps=grafting_eps,
                        inverse_root_method=inverse_root_method, exponent_multiplier=exponent_multiplier,
                        moving_average_momentum=moving_average_momentum, newton_max_iters=newton_max_iters,
                        newton_tol=newton_tol)
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------- state
    def _init_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if state:
            return state
        if p.dim() >= 2:
            matrix = p.detach().reshape(p.shape[0], -1)
            bs = group["block_size"]
            blocks = _split_blocks(matrix, bs)
            state["L"] = [p.new_zeros(b.shape[0], b.shape[0]) for b in blocks]
            state["R"] = [p.new_zeros(b.shape[1], b.shape[1]) for b in blocks]
            state["L_root"] = [torch.eye(b.shape[0], dtype=p.dtype, device=p.device) for b in blocks]
            state["R_root"] = [torch.eye(b.shape[1], dtype=p.dtype, device=p.device) for b in blocks]
        if group["grafting"] in ("adagrad", "rmsprop", "adam"):
            state["graft_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["grafting"] == "adam":
            state["graft_beta2_power"] = torch.ones((), dtype=p.dtype, device=p.device)
        if group["momentum"] > 0.0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    # ----------------------------------------------------------------------------- step parts
    @staticmethod
    def _grafting_direction(grad: Tensor, state: dict, group: dict) -> Tensor:
        """The first-order direction whose norm the Shampoo step takes; always a new tensor."""
        kind = group["grafting"]
        if kind in ("sgd", "none"):
            return grad.clone()
        sq = state["graft_sq"]
        if kind == "adagrad":
            sq.addcmul_(grad, grad)
            denom = sq.sqrt()
        else:
            b2 = group["grafting_beta2"]
            sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            if kind == "adam":
                power = state["graft_beta2_power"]
                power.mul_(b2)
                denom = (sq / (1.0 - power)).sqrt_()
            else:
                denom = sq.sqrt()
        return grad / denom.add_(group["grafting_eps"])

    @staticmethod
    def _update_statistics(grad: Tensor, state: dict, group: dict) -> None:
        beta2 = group["beta2"]
        decay, weight = (1.0, 1.0) if beta2 == 1.0 else (beta2, 1.0 - beta2)
        for g, left, right in zip(_split_blocks(grad.reshape(grad.shape[0], -1), group["block_size"]),
                                  state["L"], state["R"]):
            left.addmm_(g, g.T, beta=decay, alpha=weight)
            right.addmm_(g.T, g, beta=decay, alpha=weight)

    @staticmethod
    def _shampoo_direction(grad: Tensor, graft: Tensor | None, state: dict, group: dict) -> Tensor:
        """L_root G R_root per block, each block rescaled to the grafting norm on that block."""
        bs = group["block_size"]
        matrix = grad.reshape(grad.shape[0], -1)
        blocks = _split_blocks(matrix, bs)
        graft_blocks = _split_blocks(graft.reshape(matrix.shape), bs) if graft is not None else [None] * len(blocks)
        out = []
        for g, gr, left, right in zip(blocks, graft_blocks, state["L_root"], state["R_root"]):
            d = left @ g @ right
            if gr is not None:
                tiny = torch.finfo(d.dtype).tiny
                d.mul_(torch.linalg.vector_norm(gr) / torch.linalg.vector_norm(d).clamp_min(tiny))
            out.append(d)
        return _merge_blocks(out, math.ceil(matrix.shape[1] / bs)).view(grad.shape)

    # ----------------------------------------------------------------------------- roots
    @staticmethod
    def _compute_roots(jobs: list[_RootJob]) -> None:
        """Recompute the due roots, batching same-size statistics into one float64 call, and read
        back whether each one worked once, after all of them (one host synchronisation)."""
        batches: dict[tuple, list[_RootJob]] = defaultdict(list)
        for job in jobs:
            batches[(job.stat.device, job.root.dtype, job.stat.shape[0], job.settings)].append(job)
        results = []
        for (_, dtype, n, (method, epsilon, relative, alpha, max_iters, tol)), batch in batches.items():
            stats = torch.stack([job.stat for job in batch]).to(torch.float64)
            stats = 0.5 * (stats + stats.mT)
            finite = stats.sum(dim=(-2, -1)).isfinite()  # float64: a finite sum means finite entries
            # a harmless identity is decomposed in place of a non-finite statistic
            stats = torch.where(finite[:, None, None], stats, torch.eye(n, dtype=torch.float64, device=stats.device))
            if method == "eigh":
                roots, ok = _symmetric_inverse_root_eigh(stats, epsilon, alpha, relative, dtype)
            else:
                roots, ok = _symmetric_inverse_root_newton(stats, epsilon, round(1.0 / alpha), max_iters, tol, relative)
            results.append((batch, method, stats, roots, ok & finite & roots.sum(dim=(-2, -1)).isfinite(), finite))
        if not results:
            return
        flags = torch.cat([torch.stack([ok, finite]) for *_, ok, finite in results], dim=1).tolist()  # the sync
        offset = 0
        for batch, method, stats, roots, _, _ in results:
            for k, (job, sym, root) in enumerate(zip(batch, stats, roots)):
                job_ok, finite_ok = flags[0][offset + k], flags[1][offset + k]
                if job_ok:
                    job.root.copy_(root)
                    job.stat.copy_(sym)  # keep the statistic exactly symmetric
                else:
                    reason = "non-finite statistic" if not finite_ok else f"{method} failed"
                    warnings.warn(f"Shampoo: cannot compute the inverse root of {job.label} ({reason}); "
                                  f"keeping the previous root", RuntimeWarning, stacklevel=3)
            offset += len(batch)

    # ----------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Pass 1: statistics, and the list of roots due this step (decided on the host).
        work = []
        jobs: list[_RootJob] = []
        index = 0
        for group in self.param_groups:
            group["step"] = step = group.get("step", 0) + 1
            start, freq = group["start_preconditioning_step"], group["precondition_frequency"]
            use_shampoo = step >= start
            refresh = use_shampoo and (step - start) % freq == 0
            settings = (group["inverse_root_method"], group["epsilon"], group["relative_epsilon"],
                        group["exponent_multiplier"] / 4.0, group["newton_max_iters"], group["newton_tol"])
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Shampoo does not support sparse gradients")
                state = self._init_state(p, group)
                grad = p.grad
                if group["weight_decay"] != 0.0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if "L" in state:
                    self._update_statistics(grad, state, group)
                    if refresh:
                        for side in ("L", "R"):
                            for b, (stat, root) in enumerate(zip(state[side], state[side + "_root"])):
                                label = f"parameter {index - 1} {tuple(p.shape)} block {b} {side}"
                                jobs.append(_RootJob(stat, root, label, settings))
                work.append((p, grad, state, group, use_shampoo and "L" in state))
        if jobs:
            self._compute_roots(jobs)

        # Pass 2: grafted direction, momentum, update.
        for p, grad, state, group, use_shampoo in work:
            if use_shampoo and group["grafting"] == "none":
                direction = self._shampoo_direction(grad, None, state, group)
            else:
                direction = self._grafting_direction(grad, state, group)
                if use_shampoo:
                    direction = self._shampoo_direction(grad, direction, state, group)
            beta1 = group["momentum"]
            if beta1 > 0.0:
                buf = state["momentum_buffer"]
                if group["moving_average_momentum"]:
                    buf.lerp_(direction, 1.0 - beta1)
                    update = torch.lerp(direction, buf, beta1) if group["nesterov"] else buf
                else:
                    buf.mul_(beta1).add_(direction)
                    update = direction.add(buf, alpha=beta1) if group["nesterov"] else buf
            else:
                update = direction
            lr = group["lr"]
            if isinstance(lr, Tensor):
                p.addcmul_(update, lr, value=-1.0)
            else:
                p.add_(update, alpha=-lr)
        return loss
