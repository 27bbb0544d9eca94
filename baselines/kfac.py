"""K-FAC (Martens & Grosse, ICML 2015) for MLPs given as an `nn.Sequential`.

One `step(inputs, targets)` is one K-FAC iteration on a mini-batch of N examples:

1. one recorded forward pass (`locoprop.chain.forward_record`) and one backward pass give the
   pre-activation gradients g_l = dL/da_l of the mean loss L, hence the weight gradients
   grad_Wbar_l = g_l^T [x_l, 1] (weight and bias of a layer side by side);
2. a second backward pass, from targets sampled from the model's predictive distribution
   (Bernoulli(sigmoid(logits)) or N(output, I)), gives the gradients for the Fisher factor G;
3. the factors A_l = E[xbar xbar^T] and G_l = E[g g^T] are exponential moving averages with
   decay min(1 - 1/k, factor_decay) at step k = 1, 2, ...;
4. every `inverse_update_period` steps (and at step 1) the damped factors are inverted via a
   float64 eigendecomposition (section 6.3's factored Tikhonov damping with the pi-correction);
5. the proposal Delta_l = -(G_l + gamma/pi I)^-1 grad_Wbar_l (A_l + pi gamma I)^-1,
   gamma = sqrt(lambda + eta);
6. the step delta = alpha Delta + mu delta_0 (delta_0 = previous step) with alpha, mu minimising
   the exact quadratic model on the mini-batch (section 7), computed from one forward-mode
   (tangent) pass that reuses the recorded activations;
7. every `damping_adaptation_period` steps, lambda follows the Levenberg-Marquardt rule from the
   reduction ratio rho = (h(theta + delta) - h(theta)) / M(delta) (section 6.5), which costs one
   extra forward pass at the new parameters. The predicted change M(delta) is the quadratic model
   of the objective h: curvature F + eta I, WITHOUT the damping lambda, as TF's K-FAC and kfac-jax
   compute it (`rho_includes_damping=True` puts lambda in, as the paper's step-choice model has it).

Scalings (all stated for the mean loss L = (1/N) sum_n l_n of `locoprop.losses`):
- back-propagated g of the mean loss carries 1/N, so per-example gradients are N g_n and
  G = (1/N) sum_n (N g_n)(N g_n)^T = N g^T g estimates E_n[dl_n/da dl_n/da^T]; A = xbar^T xbar / N;
- the objective is h(theta) = L(theta) + (eta/2) ||theta||^2, the paper's L2-regularised objective
  (eta = 1e-5 in its autoencoder runs), with eta = `weight_decay` on all parameters, biases
  included; so the gradient is grad L + eta theta and the curvature of h is F + eta I, which is why
  the damping enters as lambda + eta;
- the exact Fisher / Gauss-Newton products of the quadratic model are v^T J^T H J w with the
  output-loss Hessian H = diag(p (1 - p)) / N (bernoulli) or I / N (gaussian).

Simplifications, stated: the factored-damping strength is gamma = sqrt(lambda + eta) (the paper's
section 6.3 choice; its separate greedy gamma adaptation of section 6.6, period T2, is not
implemented), and the preconditioner uses the lambda of the last inverse refresh (as TF's K-FAC
does), while the quadratic model and rho always use the current lambda.

The state (factors, inverses, previous step, lambda, step count) round-trips through
`state_dict()` / `load_state_dict()`; lambda lives on the device, so a step does not sync with the
host except on inverse refreshes (the finiteness checks of the factors before they are inverted).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from locoprop.chain import ForwardRecord, forward_record
from locoprop.losses import LOSS_KINDS, resolve_loss
from locoprop.model_aware import ModelAwareOptimizer

from .linalg import batched_cholesky_inverse, batched_eigh

FISHER_KINDS = ("sampled", "empirical")


def levenberg_marquardt(damping: Tensor, rho: Tensor, omega: float, min_damping: float,
                        max_damping: float) -> Tensor:
    """Section 6.5's rule: rho > 3/4 -> lambda * omega, rho < 1/4 -> lambda / omega, clamped.

    A non-finite rho (a NaN loss, or a model that predicted no decrease) counts as a bad step,
    so the damping grows. Pure tensor ops: no host sync.
    """
    rho = torch.as_tensor(rho, dtype=damping.dtype, device=damping.device)
    new = torch.where(rho > 0.75, damping * omega, damping)
    new = torch.where((rho < 0.25) | ~torch.isfinite(rho), damping / omega, new)
    return new.clamp(min_damping, max_damping)


def quadratic_model_coefficients(c: Tensor, b: Tensor, first: bool) -> tuple[Tensor, Tensor]:
    """alpha, mu minimising M(alpha Delta + mu delta0) = 1/2 [a, m] C [a, m]^T + b . [a, m].

    `c` is the 2x2 matrix [[Delta^T C Delta, Delta^T C delta0], [., delta0^T C delta0]] with
    C = F + (lambda + eta) I, and `b` = [grad_h . Delta, grad_h . delta0]. With no previous step
    (`first`), or when the 2x2 system is numerically singular (Delta parallel to delta0), only
    alpha is chosen (mu = 0). Closed-form 2x2 solve on the device: no host sync.
    """
    alpha_only = -b[0] / c[0, 0]
    if first:
        return alpha_only, torch.zeros_like(alpha_only)
    det = c[0, 0] * c[1, 1] - c[0, 1] * c[1, 0]
    ok = det > 100 * torch.finfo(c.dtype).eps * c[0, 0].abs() * c[1, 1].abs()
    safe_det = torch.where(ok, det, torch.ones_like(det))
    alpha = (-b[0] * c[1, 1] + b[1] * c[0, 1]) / safe_det
    mu = (-b[1] * c[0, 0] + b[0] * c[1, 0]) / safe_det
    return torch.where(ok, alpha, alpha_only), torch.where(ok, mu, torch.zeros_like(mu))


class KFAC(ModelAwareOptimizer):
    """K-FAC for an `nn.Sequential` of `nn.Linear` layers and element-wise activations.

    Model-aware: `step(inputs, targets)` runs its own forward and backward passes and returns
    the mini-batch data loss L(theta) before the update (detached, no L2 term).

    Args:
        model: the network; `locoprop.chain.linear_chain` must parse it.
        lr, momentum: the fixed step size and momentum, used only with
            `adapt_lr_momentum=False` (delta = lr * Delta + momentum * delta_0, Delta the negated
            preconditioned gradient). Read from `param_groups[0]` each step, so schedulers work.
        damping: initial lambda (150 in the paper's and TF's autoencoder runs).
        weight_decay: eta, the L2 coefficient of the objective (1e-5 in the paper).
        factor_decay: EMA decay of A and G (0.95 as in TF's autoencoder example); at step k the
            decay is min(1 - 1/k, factor_decay), so early factors are plain averages.
        inverse_update_period: T3, steps between inverse refreshes (10 as in TF's example; the
            paper used 20).
        damping_adaptation_period: T1, steps between Levenberg-Marquardt updates (5, the paper's).
        adapt_damping: run the Levenberg-Marquardt rule.
        adapt_lr_momentum: choose alpha, mu from the exact quadratic model (else fixed lr/momentum).
        adapt_momentum: with `adapt_lr_momentum`, also use the previous step as a second direction
            (alpha and mu both from the model); False chooses alpha alone and uses no momentum.
            At a fixed small batch the adaptive mu can turn negative (the references grow the batch).
        rho_includes_damping: put lambda into the predicted change of the reduction ratio (False,
            the default, is TF K-FAC's and kfac-jax's convention).
        fisher: 'sampled' (true Fisher, targets drawn from the model) or 'empirical' (real targets).
        loss: 'bernoulli' or 'gaussian' (`locoprop.losses`); the model must end in the matching
            transfer (sigmoid / identity). The harness passes the model's loss kind.
        damping_decay: omega; None gives the paper's (19/20)^T1.
        min_damping, max_damping: bounds kept on lambda.
        exact_damping: precondition with (A (x) G + (lambda + eta) I)^-1 in the factors' eigenbasis
            instead of factored damping (exact for the Kronecker product; costs two more matmuls
            per layer and step). Used by the tests; off in the paper.
    """

    def __init__(self, model: nn.Sequential, lr: float = 1.0, momentum: float = 0.0,
                 damping: float = 150.0, weight_decay: float = 1e-5, factor_decay: float = 0.95,
                 inverse_update_period: int = 10, damping_adaptation_period: int = 5,
                 adapt_damping: bool = True, adapt_lr_momentum: bool = True, adapt_momentum: bool = True,
                 rho_includes_damping: bool = False, fisher: str = "sampled", loss: str = "bernoulli", damping_decay: float | None = None,
                 min_damping: float = 1e-8, max_damping: float = 1e8, exact_damping: bool = False):
        if fisher not in FISHER_KINDS:
            raise ValueError(f"unknown fisher {fisher!r}; choose one of {', '.join(FISHER_KINDS)}")
        if not isinstance(loss, str) or loss not in LOSS_KINDS:
            raise ValueError(f"K-FAC needs a loss kind ({', '.join(LOSS_KINDS)}) to sample targets and "
                             f"form the output Hessian, got {loss!r}")
        if not 0.0 <= factor_decay < 1.0:
            raise ValueError(f"factor_decay must be in [0, 1), got {factor_decay}")
        if inverse_update_period < 1 or damping_adaptation_period < 1:
            raise ValueError("inverse_update_period and damping_adaptation_period must be >= 1")
        if not 0.0 < min_damping <= damping <= max_damping:
            raise ValueError(f"need 0 < min_damping <= damping <= max_damping, got "
                             f"{min_damping}, {damping}, {max_damping}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if damping_decay is None:
            damping_decay = (19.0 / 20.0) ** damping_adaptation_period
        if not 0.0 < damping_decay < 1.0:
            raise ValueError(f"damping_decay (omega) must be in (0, 1), got {damping_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        factor_decay=factor_decay, inverse_update_period=inverse_update_period,
                        damping_adaptation_period=damping_adaptation_period, adapt_damping=adapt_damping,
                        adapt_lr_momentum=adapt_lr_momentum, adapt_momentum=adapt_momentum,
                        rho_includes_damping=rho_includes_damping, fisher=fisher,
                        damping_decay=damping_decay, min_damping=min_damping, max_damping=max_damping,
                        exact_damping=exact_damping)
        super().__init__(model, defaults)
        self.loss_kind = loss
        self._loss_fn = resolve_loss(loss, self.layers[-1].transfer.name)
        weight = self.layers[0].linear.weight
        self._step = 0
        self._damping = torch.tensor(float(damping), dtype=weight.dtype, device=weight.device)
        # lambda + eta used by the current inverses (the preconditioner's damping)
        self._inverse_damping = self._damping + weight_decay
        self.last: dict[str, Tensor | None] = {}  # diagnostics of the last step (tensors)

    # ------------------------------------------------------------------ public helpers
    @property
    def damping(self) -> float:
        """The current lambda (a host sync)."""
        return float(self._damping)

    @property
    def steps(self) -> int:
        return self._step

    def _group(self) -> dict[str, Any]:
        return self.param_groups[0]

    def sample_targets(self, logits: Tensor) -> Tensor:
        """Targets drawn from the model's predictive distribution given the output logits."""
        logits = logits.detach()
        if self.loss_kind == "bernoulli":
            return torch.bernoulli(torch.sigmoid(logits))
        return logits + torch.randn_like(logits)

    def _backward(self, rec: ForwardRecord, targets: Tensor, fisher: str
                  ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Loss, pre-activation gradients of the real loss, and those for the G factor."""
        loss = self._loss_fn(rec.logits, targets)
        sampled = fisher == "sampled"
        grads = list(torch.autograd.grad(loss, rec.pre, retain_graph=sampled))
        if not sampled:
            return loss.detach(), grads, grads
        fake = self._loss_fn(rec.logits, self.sample_targets(rec.logits))
        fisher_grads = list(torch.autograd.grad(fake, rec.pre))
        return loss.detach(), grads, fisher_grads

    def batch_factors(self, inputs: Tensor, targets: Tensor, fisher: str | None = None
                      ) -> tuple[list[Tensor], list[Tensor]]:
        """This mini-batch's estimates of A_l and G_l (no averaging over steps, no state change)."""
        rec = forward_record(self.layers, inputs, grad_pre=True)
        _, _, fisher_grads = self._backward(rec, targets, fisher or self._group()["fisher"])
        n = inputs.shape[0]
        a_list, g_list = [], []
        for layer, x, g in zip(self.layers, rec.inputs, fisher_grads):
            xb = layer.xbar(x.detach())
            a_list.append(xb.T @ xb / n)
            g_list.append(g.T @ g * n)
        return a_list, g_list

    def precondition(self, grads: list[Tensor]) -> list[Tensor]:
        """The damped inverse Kronecker-factored Fisher times each layer's [grad_W, grad_b]."""
        out = []
        for layer, grad in zip(self.layers, grads):
            st = self.state[layer.linear.weight]
            if self._group()["exact_damping"]:
                qa, qg = st["QA"], st["QG"]
                out.append(qg @ ((qg.T @ grad @ qa) * st["scale"]) @ qa.T)
            else:
                out.append(st["G_inv"] @ grad @ st["A_inv"])
        return out

    # ------------------------------------------------------------------ factors and inverses
    def _update_factors(self, xbars: list[Tensor], fisher_grads: list[Tensor]) -> None:
        """EMA of A = xbar^T xbar / N and G = N g^T g (g of the mean loss), then symmetrise."""
        decay = min(1.0 - 1.0 / self._step, self._group()["factor_decay"])
        n = xbars[0].shape[0]
        for layer, xb, g in zip(self.layers, xbars, fisher_grads):
            st = self.state[layer.linear.weight]
            for key, m, scale in (("A", xb, 1.0 / n), ("G", g, float(n))):
                if key not in st:  # step 1: decay is 0, the factor is this batch's estimate
                    st[key] = m.new_zeros(m.shape[1], m.shape[1])
                f = torch.addmm(st[key], m.T, m, beta=decay, alpha=(1.0 - decay) * scale)
                st[key] = torch.add(f, f.T).mul_(0.5)

    def _refresh_inverses(self) -> None:
        """Damped inverses of every factor, in float64, with one host synchronisation per refresh.

        Factored damping (the default) needs only the traces for pi and the inverses of
        A + pi*gamma*I and G + gamma/pi*I, which are positive definite: a Cholesky inverse does
        it at a fifth of the cost of an eigendecomposition. Exact damping needs eigenbases
        (eigh, eigenvalues clamped at 0); a Cholesky failure also falls back to eigh. Factors of
        the same size are decomposed as one batch, and whether every factor was finite and every
        decomposition succeeded is read back once, after all of them.
        A factor that is not finite, or whose decomposition fails, keeps its previous inverse
        (identity / damping at the first refresh) with a warning, so a bad batch never turns
        into NaN steps.
        """
        group = self._group()
        lam_eta = (self._damping + group["weight_decay"]).double()
        gamma = lam_eta.sqrt()
        states = [self.state[layer.linear.weight] for layer in self.layers]
        factors = [st[key].double() for st in states for key in ("A", "G")]
        if group["exact_damping"]:
            decompositions, ok = batched_eigh(factors)
        else:
            shifts = []
            for a, g in zip(factors[0::2], factors[1::2]):
                pi = (a.diagonal().mean().clamp(min=1e-30) / g.diagonal().mean().clamp(min=1e-30)).sqrt()
                shifts += [pi * gamma, gamma / pi]
            damped = [f + shift * torch.eye(f.shape[0], dtype=f.dtype, device=f.device)
                      for f, shift in zip(factors, shifts)]
            inverses, ok = batched_cholesky_inverse(damped)
        finite = torch.stack([torch.isfinite(f).all() for f in factors])
        good, is_finite = (ok & finite).tolist(), finite.tolist()  # the refresh's one host sync
        for i, st in enumerate(states):
            a, g = 2 * i, 2 * i + 1
            if not (is_finite[a] and is_finite[g]):
                self._keep_previous(i, st, gamma, "non-finite entries")
            elif group["exact_damping"]:
                if good[a] and good[g]:
                    (ea, qa), (eg, qg) = decompositions[a], decompositions[g]
                    dtype = st["A"].dtype  # eigenvalue arithmetic in float64; the stored bases in the factors' dtype
                    st["QA"], st["QG"] = qa.to(dtype), qg.to(dtype)
                    st["scale"] = (1.0 / (eg[:, None] * ea[None, :] + lam_eta)).to(dtype)
                else:
                    self._keep_previous(i, st, gamma, "eigendecomposition failed")
            else:
                try:  # a factor that is not numerically positive definite: clamp its spectrum instead
                    pair = [inverses[k] if good[k] else self._clamped_inverse(factors[k], shifts[k]) for k in (a, g)]
                except (ValueError, RuntimeError) as err:  # torch.linalg.LinAlgError is a RuntimeError
                    self._keep_previous(i, st, gamma, str(err))
                    continue
                st["A_inv"], st["G_inv"] = (inverse.to(st["A"].dtype) for inverse in pair)
        self._inverse_damping = lam_eta.to(self._damping.dtype)

    def _keep_previous(self, layer: int, st: dict[str, Tensor], gamma: Tensor, why: str) -> None:
        warnings.warn(f"K-FAC: the factors of layer {layer} could not be inverted ({why}); keeping the previous "
                      "inverse", RuntimeWarning, stacklevel=4)
        self._fallback_inverse(st, float(gamma))

    @staticmethod
    def _clamped_inverse(factor: Tensor, shift: Tensor) -> Tensor:
        """(F + shift I)^-1 through eigh with the eigenvalues clamped at 0 (the rare fallback)."""
        e, q = torch.linalg.eigh(factor)
        if not bool(torch.isfinite(e).all()):
            raise ValueError("non-finite eigenvalues")
        e = e.clamp(min=0.0)
        return (q * (1.0 / (e + shift))) @ q.T

    def _fallback_inverse(self, st: dict[str, Tensor], gamma: float) -> None:
        """Keep what the previous refresh left; at the first refresh use (damping)^-1 I."""
        if "A_inv" in st or "QA" in st:
            return
        da, dg = st["A"].shape[0], st["G"].shape[0]
        eye_a = torch.eye(da, dtype=st["A"].dtype, device=st["A"].device)
        eye_g = torch.eye(dg, dtype=st["G"].dtype, device=st["G"].device)
        if self._group()["exact_damping"]:
            st["QA"], st["QG"] = eye_a, eye_g
            st["scale"] = torch.full((dg, da), 1.0 / gamma**2, dtype=st["A"].dtype, device=st["A"].device)
        else:
            st["A_inv"], st["G_inv"] = eye_a / gamma, eye_g / gamma

    # ------------------------------------------------------------------ quadratic model
    def _output_tangents(self, rec: ForwardRecord, xbars: list[Tensor], directions: list[Tensor]) -> Tensor:
        """J v at the logits for k stacked parameter directions (k, out, in+1) per layer.

        Forward-mode propagation reusing the recorded activations: the pre-activation tangent is
        t_l = dx_l W_l^T + xbar_l V_l^T and dx_{l+1} = f_l'(a_l) * t_l.
        """
        dx = None
        t = None
        for l, (layer, xb, v) in enumerate(zip(self.layers, xbars, directions)):
            k, out = v.shape[0], v.shape[1]
            # one (N, in+1) x (in+1, k*out) matmul for all directions, viewed as (k, N, out)
            t = (xb @ v.reshape(k * out, -1).T).view(-1, k, out).transpose(0, 1)
            if dx is not None:
                t = t + torch.matmul(dx, layer.linear.weight.detach().T)
            if l + 1 < len(self.layers):
                dx = layer.transfer.jvp(rec.post[l].detach(), t)
        return t

    def _curvature_gram(self, rec: ForwardRecord, xbars: list[Tensor], directions: list[Tensor]) -> Tensor:
        """[v_i^T F v_j] for the stacked directions: exact Fisher/Gauss-Newton on the mini-batch."""
        jv = self._output_tangents(rec, xbars, directions)  # (k, N, out)
        n = jv.shape[1]
        if self.loss_kind == "bernoulli":
            p = torch.sigmoid(rec.logits.detach())
            h = p * (1 - p) / n
        else:
            h = jv.new_full((), 1.0 / n)
        flat = jv.flatten(1)
        return (jv * h).flatten(1) @ flat.T

    # ------------------------------------------------------------------ the step
    def step(self, inputs: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        """One K-FAC iteration on (inputs, targets); returns the data loss before the update."""
        group = self._group()
        self._step += 1
        k = self._step
        eta = group["weight_decay"]
        rec = forward_record(self.layers, inputs, grad_pre=True)
        loss, grads_pre, fisher_grads = self._backward(rec, targets, group["fisher"])
        xbars = [layer.xbar(x.detach()) for layer, x in zip(self.layers, rec.inputs)]
        self._update_factors(xbars, fisher_grads)
        if k == 1 or k % group["inverse_update_period"] == 0:
            self._refresh_inverses()

        wbars = [layer.wbar() for layer in self.layers]
        grads = [torch.addmm(w, g.T, xb, beta=eta) if eta else g.T @ xb
                 for w, g, xb in zip(wbars, grads_pre, xbars)]
        proposals = [-u for u in self.precondition(grads)]
        prev = [self.state[layer.linear.weight].get("delta") for layer in self.layers]
        adaptive = group["adapt_lr_momentum"]
        # no momentum direction: at the first step, or when the model chooses alpha alone
        first = prev[0] is None or (adaptive and not group["adapt_momentum"])

        adapt_now = group["adapt_damping"] and k % group["damping_adaptation_period"] == 0
        lam = self._damping
        if adaptive or adapt_now:
            directions = [d[None] if first else torch.stack([d, p]) for d, p in zip(proposals, prev)]
            fisher_gram = self._curvature_gram(rec, xbars, directions)
            direction_gram = sum(v.flatten(1) @ v.flatten(1).T for v in directions)
            b = sum(v.flatten(1) @ g.flatten() for v, g in zip(directions, grads))
            c = fisher_gram + (lam + eta) * direction_gram  # the damped model the step is chosen on
            if first:  # pad to the 2x2 form with a zero momentum direction
                c, b = self._pad(c), torch.nn.functional.pad(b, (0, 1))
                fisher_gram, direction_gram = self._pad(fisher_gram), self._pad(direction_gram)
        if adaptive:
            alpha, mu = quadratic_model_coefficients(c, b, first)
        else:
            alpha = loss.new_tensor(group["lr"])
            mu = loss.new_tensor(0.0 if first else group["momentum"])
        steps = [alpha * d if first else alpha * d + mu * p for d, p in zip(proposals, prev)]

        rho = predicted = None
        if adapt_now:
            coef = torch.stack([alpha, mu]).to(c.dtype)
            # the objective's own curvature is F + eta I; lambda only when asked
            curvature = fisher_gram + (lam + eta if group["rho_includes_damping"] else eta) * direction_gram
            predicted = 0.5 * coef @ curvature @ coef + coef @ b
            decay_change = sum((w * s).sum() + 0.5 * (s * s).sum() for w, s in zip(wbars, steps)) * eta
        self._apply(steps)
        if adapt_now:
            new_logits = forward_record(self.layers, inputs).logits
            actual = self._loss_fn(new_logits, targets).detach() - loss + decay_change
            rho = actual / predicted
            self._damping = levenberg_marquardt(self._damping, rho, group["damping_decay"],
                                                group["min_damping"], group["max_damping"])
        self.last = {"loss": loss, "alpha": alpha, "mu": mu, "rho": rho, "predicted": predicted}
        return loss

    def _apply(self, steps: list[Tensor]) -> None:
        for layer, s in zip(self.layers, steps):
            self.state[layer.linear.weight]["delta"] = s
            layer.add_(s)

    @staticmethod
    def _pad(m: Tensor) -> Tensor:
        return torch.nn.functional.pad(m, (0, 1, 0, 1))

    # ------------------------------------------------------------------ checkpointing
    def extra_state(self) -> dict[str, Any]:
        return {"step": self._step, "damping": self._damping.clone(), "inverse_damping": self._inverse_damping.clone()}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        ref = self._damping
        self._step = int(extra["step"])
        self._damping = extra["damping"].to(dtype=ref.dtype, device=ref.device)
        self._inverse_damping = extra["inverse_damping"].to(dtype=ref.dtype, device=ref.device)
