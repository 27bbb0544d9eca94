"""FOOF (Benzing, ICML 2022) for MLPs given as an `nn.Sequential`.

"Gradient descent on neurons and its link to approximate second-order optimization": asking the
pre-activations of a linear layer to move along their negative gradient, and choosing the smallest
weight change that does so, preconditions the weight gradient with the inverse of the (damped)
second moment of the layer's inputs alone. That is K-FAC with the output factor G replaced by the
identity ("First-Order Optimization Of neurons"), and the paper shows it is what makes K-FAC work.

One `step(inputs, targets)` on a mini-batch of N examples, for every linear layer l at once:

1. one recorded forward pass (`locoprop.chain.forward_record`) and one backward pass through the
   pre-activations give g_l = dL/da_l of the MEAN loss L, hence grad_Wbar_l = g_l^T xbar_l, where
   Wbar = [W, b] and xbar = [x, 1] folds the bias in through a homogeneous coordinate;
2. A_l = exponential moving average of xbar^T xbar / N with decay min(1 - 1/k, factor_decay) at
   step k = 1, 2, ..., so step 1 uses this batch's estimate exactly;
3. every `inverse_update_period` steps (and at step 1) (A_l + damping I)^-1 is refreshed by a
   float64 Cholesky factorisation; between refreshes the last inverse is used (a stale one);
4. u_l = (grad_Wbar_l + weight_decay Wbar_l) (A_l + damping I)^-1, heavy-ball momentum
   m_l = momentum m_l + u_l (m_l = u_l at the first step), Wbar_l -= lr m_l.

Link to LocoProp-S (Amid et al. 2022): at step 1 (A = X^T X / N), the FOOF step with lr = gamma / N
and damping = 1 / (N eta) is the exact minimiser of LocoProp-S's local problem with a proximal term,
1/2 ||X Wbar^T - (a - gamma g)||^2 + 1/(2 eta) ||Wbar - Wbar_t||^2 (tests/test_foof.py checks it).

The state (A, the inverses, momentum buffers, step count) round-trips through `state_dict()`.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from locoprop.chain import forward_record
from locoprop.losses import resolve_loss
from locoprop.model_aware import ModelAwareOptimizer


class FOOF(ModelAwareOptimizer):
    """FOOF for an `nn.Sequential` of `nn.Linear` layers and element-wise activations.

    Model-aware: `step(inputs, targets)` runs its own forward and backward pass and returns the
    mini-batch loss before the update (detached, without the weight-decay term). Do not call
    `loss.backward()` beforehand.

    Args:
        model: the network; `locoprop.chain.linear_chain` must parse it.
        lr: step size; read from `param_groups[0]` each step, so LR schedulers work. The default
            (0.01, with damping 1 and momentum 0.9 in configs/optimizer/foof.yaml) trains the
            benchmark autoencoders, whose losses are sums over pixels; tune both for a new model.
        damping: lambda added to A before inversion (relative to the scale of the layer inputs'
            second moment); read at each inverse refresh.
        factor_decay: EMA decay of A (0.95, as kfac.py); the decay at step k is min(1 - 1/k, .).
        inverse_update_period: steps between inverse refreshes (and step 1).
        momentum: heavy-ball coefficient in [0, 1) (torch SGD form: the buffer sums the
            preconditioned steps, lr scales it).
        weight_decay: L2 coefficient on weights and biases, added to the gradient before the
            preconditioner (the gradient of L + weight_decay/2 ||theta||^2).
        loss: 'bernoulli' or 'gaussian' (`locoprop.losses`; the model must end in the matching
            transfer) or a callable (last pre-activation, targets) -> scalar mean loss.
    """

    def __init__(self, model: nn.Sequential, lr: float = 0.01, damping: float = 1.0,
                 factor_decay: float = 0.95, inverse_update_period: int = 10, momentum: float = 0.0,
                 weight_decay: float = 0.0, loss: str | Callable[[Tensor, Tensor], Tensor] = "bernoulli"):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not damping > 0.0:
            raise ValueError(f"damping must be > 0 (it keeps A + damping I invertible), got {damping}")
        if not 0.0 <= factor_decay < 1.0:
            raise ValueError(f"factor_decay must be in [0, 1), got {factor_decay}")
        if int(inverse_update_period) != inverse_update_period or inverse_update_period < 1:
            raise ValueError(f"inverse_update_period must be a positive integer, got {inverse_update_period}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not (isinstance(loss, str) or callable(loss)):
            raise ValueError(f"loss must be 'bernoulli', 'gaussian' or a callable, got {loss!r}")
        defaults = dict(lr=lr, damping=damping, factor_decay=factor_decay,
                        inverse_update_period=int(inverse_update_period), momentum=momentum,
                        weight_decay=weight_decay)
        super().__init__(model, defaults)
        self._loss_fn = resolve_loss(loss, self.layers[-1].transfer.name)
        self._step = 0

    # ------------------------------------------------------------------ public helpers
    @property
    def steps(self) -> int:
        """Steps taken so far (k of the last step)."""
        return self._step

    def precondition(self, grads: list[Tensor]) -> list[Tensor]:
        """Each layer's [grad_W, grad_b] times the current (possibly stale) (A + damping I)^-1."""
        return [g @ self.state[layer.linear.weight]["A_inv"] for layer, g in zip(self.layers, grads)]

    # ------------------------------------------------------------------ internals
    def _update_factors(self, xbars: list[Tensor]) -> None:
        """A <- decay A + (1 - decay) xbar^T xbar / N, decay = min(1 - 1/k, factor_decay)."""
        decay = min(1.0 - 1.0 / self._step, self.param_groups[0]["factor_decay"])
        for layer, xb in zip(self.layers, xbars):
            st = self.state[layer.linear.weight]
            if "A" not in st:  # step 1: decay is 0, so A is this batch's estimate
                st["A"] = xb.new_zeros(xb.shape[1], xb.shape[1])
            a = torch.addmm(st["A"], xb.T, xb, beta=decay, alpha=(1.0 - decay) / xb.shape[0])
            st["A"] = (a + a.T) * 0.5  # exactly symmetric

    def _refresh_inverses(self) -> None:
        """(A + damping I)^-1 by a float64 Cholesky factorisation.

        A factor that is not finite, or not numerically positive definite after damping, keeps
        its previous inverse (I / damping at the first refresh) with a warning, so one bad batch
        never turns into NaN weights.
        """
        damping = self.param_groups[0]["damping"]
        for i, layer in enumerate(self.layers):
            st = self.state[layer.linear.weight]
            a = st["A"].double()
            eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
            chol, info = torch.linalg.cholesky_ex(a + damping * eye)
            if bool(torch.isfinite(a).all()) and int(info) == 0:
                st["A_inv"] = torch.cholesky_inverse(chol).to(st["A"].dtype)
                continue
            warnings.warn(f"FOOF: the input factor of layer {i} could not be inverted; keeping the "
                          "previous inverse", RuntimeWarning, stacklevel=3)
            if "A_inv" not in st:
                st["A_inv"] = (eye / damping).to(st["A"].dtype)

    # ------------------------------------------------------------------ the step
    def step(self, inputs: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        """One FOOF step on (inputs, targets); returns the mini-batch loss before the update."""
        group = self.param_groups[0]
        self._step += 1
        record = forward_record(self.layers, inputs, grad_pre=True)
        loss = self._loss_fn(record.logits, targets)
        grads_pre = torch.autograd.grad(loss, record.pre)
        xbars = [layer.xbar(x.detach()) for layer, x in zip(self.layers, record.inputs)]
        self._update_factors(xbars)
        if self._step == 1 or self._step % group["inverse_update_period"] == 0:
            self._refresh_inverses()

        wd, mu, lr = group["weight_decay"], group["momentum"], group["lr"]
        grads = [g.T @ xb for g, xb in zip(grads_pre, xbars)]
        if wd:
            grads = [g + wd * layer.wbar() for g, layer in zip(grads, self.layers)]
        with torch.no_grad():
            for layer, u in zip(self.layers, self.precondition(grads)):
                st = self.state[layer.linear.weight]
                if mu:
                    buf = st.get("momentum_buffer")
                    u = st["momentum_buffer"] = u if buf is None else buf.mul_(mu).add_(u)
                layer.add_(u, alpha=-lr)
        return loss.detach()

    # ------------------------------------------------------------------ checkpointing
    def extra_state(self) -> dict[str, Any]:
        """The step count (A, its inverse and the momentum buffers are per-parameter state)."""
        return {"step": self._step}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self._step = int(extra["step"])
