"""LocoProp (Amid, Anil, Warmuth, AISTATS 2022) as a model-aware `torch.optim.Optimizer`.

One outer step on a mini-batch (docs/method.md):

1. one forward pass records every layer's input x_l, pre-activation a_l and output f_l(a_l);
2. one backward pass, through the pre-activations only, gives g_l = dL/da_l of the global
   loss L (no weight gradients are formed);
3. each layer gets a target: LocoProp-S `â = a - gamma g` (pre-activation space, squared
   local loss), LocoProp-M `ŷ = f(a) - gamma g` (post-activation space, matching loss);
4. each layer runs T iterations of its own inner optimizer on its local problem, with the
   layer input x fixed: `a' = x W^T + b`, `delta = a' - â` (S) or `f(a') - ŷ` (M), gradient
   `delta^T x` wrt W and `sum(delta)` wrt b (SUMS over the batch, as the official code), at
   the inner learning rate `lr * max(1 - k/T, min_inner_lr_factor)` for k = 0..T-1.

The inner optimizers' state persists across outer steps, as in the official notebook.
Optionally the local problem carries a proximal term `(1/(2 eta)) ||W - W_t||^2` (W_t the
weights at the start of the outer step), which adds `(W - W_t)/eta` to the inner gradient;
the official code does not use it (eta = None means eta = infinity).

Because W = W_t at inner step 0, the pre-activation there is the recorded a and
`delta = gamma g` for both variants: the first inner gradient is gamma times the back-prop
gradient, so no forward matmul is spent on it. LocoProp-S's local loss is quadratic in W, so its
later inner gradients come from the layer's Gram matrix x^T x instead of a pass over the batch
(`_step_gram`).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .chain import forward_record
from .losses import resolve_loss
from .model_aware import ModelAwareOptimizer
from .rmsprop_tf1 import RMSpropTF1

# The official notebook's inner optimizer: RMSProp in TF1 semantics with these settings.
OFFICIAL_INNER_OPTIMIZER = functools.partial(RMSpropTF1, momentum=0.999, decay=0.9, eps=1e-5)
InnerOptimizer = Callable[..., Optimizer]  # (params, lr=...) -> Optimizer


def inner_optimizer_defaults(factory: InnerOptimizer) -> dict:
    """The keyword settings an inner-optimizer factory fixes (a functools.partial's keywords, else none)."""
    return dict(getattr(factory, "keywords", None) or {})


class LocoProp(ModelAwareOptimizer):
    """LocoProp-S / LocoProp-M for an `nn.Sequential` of Linear layers and activations.

    Unlike ordinary optimizers it runs the model itself: `step(inputs, targets)` does the
    forward and backward pass and returns the mini-batch loss before the update (detached,
    without a host sync). Do not call `loss.backward()` beforehand.

    A step never synchronises with the device and keeps all its state (inner optimizer state,
    scratch buffers, the `.grad` buffers it writes the inner gradients into) on the parameters'
    device, so a GPU user can capture it in a CUDA graph after a warm-up step. The outer and
    inner learning rates are Python floats and are baked into a captured graph: re-capture
    when the lr changes.

    Args:
        model: an `nn.Sequential` that `linear_chain` understands (Linear layers, each
            optionally followed by Identity/Tanh/Sigmoid/ReLU/Softmax).
        lr: outer learning rate; the inner optimizers run at `lr * max(1 - k/T, factor)`.
            It lives in `param_groups[0]['lr']`, so LR schedulers work unchanged.
        gamma: activation learning rate (how far the targets move along -dL/da).
        inner_steps: T, inner iterations per outer step.
        variant: 'S' (squared loss on pre-activations) or 'M' (matching loss).
        loss: 'bernoulli' (needs a sigmoid output), 'gaussian' (needs a linear output) or a
            callable (last pre-activation, targets) -> scalar, e.g. a sum over features
            averaged over the batch.
        inner_optimizer: a factory `(params, lr=...) -> torch.optim.Optimizer`, e.g. an optimizer
            class or a `functools.partial` of one with its settings; default the official
            RMSProp in TF1 semantics (momentum 0.999, decay 0.9, eps 1e-5).
        eta: proximal coefficient (adds `(W - W_t)/eta` to the inner gradient); None = none.
        reduction: 'sum' (official) or 'mean': the data term of the inner gradient divided by
            the batch size (the proximal term is not).
        min_inner_lr_factor: floor of the inner learning-rate decay (0.25 officially).
        reset_inner_state: re-create the inner optimizers at every outer step.
        fused: True runs all layers' inner step k together with ONE inner optimizer over
            every layer's parameters (one multi-tensor update per inner step). For element-wise
            inner optimizers this is exactly the per-layer method: the state is per parameter
            and the inner lr is the same for every layer at step k. False is the plain
            reference loop: layer after layer, each with its own inner optimizer, every
            forward computed (also the one at k = 0). (Neither runs layers concurrently.)
    """

    def __init__(self, model: nn.Sequential, lr: float = 1e-5, gamma: float = 10.0, inner_steps: int = 10,
                 variant: str = "M", loss: str | Callable[[Tensor, Tensor], Tensor] = "bernoulli",
                 inner_optimizer: InnerOptimizer = OFFICIAL_INNER_OPTIMIZER, eta: float | None = None,
                 reduction: str = "sum", min_inner_lr_factor: float = 0.25, reset_inner_state: bool = False,
                 fused: bool = True):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not gamma >= 0.0:
            raise ValueError(f"invalid gamma: {gamma}")
        if int(inner_steps) != inner_steps or inner_steps < 1:
            raise ValueError(f"inner_steps must be a positive integer, got {inner_steps}")
        variant = str(variant).upper()
        if variant not in ("S", "M"):
            raise ValueError(f"variant must be 'S' or 'M', got {variant!r}")
        if eta is not None and not eta > 0.0:
            raise ValueError(f"eta must be positive or None, got {eta}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not 0.0 <= min_inner_lr_factor <= 1.0:
            raise ValueError(f"min_inner_lr_factor must be in [0, 1], got {min_inner_lr_factor}")

        defaults = dict(lr=lr, gamma=gamma, inner_steps=int(inner_steps), eta=eta,
                        min_inner_lr_factor=min_inner_lr_factor)
        super().__init__(model, defaults)  # one parameter group: every layer's weight and bias
        self.loss_fn = resolve_loss(loss, self.layers[-1].transfer.name)
        self.variant = variant
        self.reduction = reduction
        self.fused = fused
        self.reset_inner_state = reset_inner_state
        if not callable(inner_optimizer):
            raise ValueError(f"inner_optimizer must be an optimizer class or factory, got {inner_optimizer!r}")
        if "lr" in inner_optimizer_defaults(inner_optimizer):
            raise ValueError("inner_optimizer must not set lr: the inner lr is lr * max(1 - k/T, min_inner_lr_factor)")
        self.inner_optimizer = inner_optimizer

        # LocoProp-S, fused: the inner optimizer moves the displacement W - W_t (see _step_gram)
        self._gram_form = fused and variant == "S"
        self._displacements = [torch.zeros_like(p) for p in self.param_groups[0]["params"]] if self._gram_form else []
        self._inner: list[Optimizer] = self._make_inner()
        if self._gram_form and any(self._inner[0].defaults.get(k) for k in ("weight_decay", "maximize")):
            raise ValueError("LocoProp-S (fused) runs its inner optimizer on the displacement W - W_t; an inner "
                             "optimizer with weight_decay or maximize would act on that, not on W: use fused=False")
        self._buffers: dict = {}  # per batch size: the pre-activation scratch buffers
        self._gram: tuple | None = None  # the Gram form's G, s and k = 0 gradients
        self._anchors: list[Tensor] | None = None  # W_t for the proximal term

    # ---------------------------------------------------------------- inner optimizers
    def _make_inner(self) -> list[Optimizer]:
        lr = self.param_groups[0]["lr"]
        if self._gram_form:
            return [self.inner_optimizer(self._displacements, lr=lr)]
        if self.fused:
            return [self.inner_optimizer([p for ps in self.layer_params for p in ps], lr=lr)]
        return [self.inner_optimizer(ps, lr=lr) for ps in self.layer_params]

    def _inner_lr(self, k: int) -> float:
        group = self.param_groups[0]
        T = group["inner_steps"]
        return group["lr"] * max(1.0 - k / T, group["min_inner_lr_factor"])

    @staticmethod
    def _set_lr(opt: Optimizer, lr: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, inputs: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        """One outer LocoProp step on (inputs, targets); returns the loss before the update."""
        group = self.param_groups[0]
        if self.reset_inner_state:
            self._inner = self._make_inner()

        # 1-2. one forward pass, one backward pass through the pre-activations only
        with torch.enable_grad():
            record = forward_record(self.layers, inputs, grad_pre=True)
            loss = self.loss_fn(record.logits, targets)
            grads = list(torch.autograd.grad(loss, record.pre))

        if self._gram_form:
            self._step_gram(record, grads)
            return loss.detach()
        for ps in self.layer_params:  # the inner gradients are written into these buffers
            for p in ps:
                if p.grad is None:
                    p.grad = torch.empty_like(p)
        anchors = None
        if group["eta"] is not None:  # W_t, the centre of the proximal term
            anchors = self._anchors
            if anchors is None:
                anchors = self._anchors = [torch.empty_like(p) for p in group["params"]]
            torch._foreach_copy_(anchors, group["params"])
        if self.fused:
            self._step_fused(record, grads, anchors)
        else:
            self._step_per_layer(record, grads, anchors)
        return loss.detach()

    def _step_gram(self, record, grads: list[Tensor]) -> None:
        """LocoProp-S, all layers together, without a pass over the batch per inner step.

        The squared local loss is quadratic in W: with a' = x W^T + b and â = a - gamma g, the
        inner gradient is `delta^T x = D G + d s^T + gamma g^T x` (bias: `D s + n d + gamma g^T 1`)
        in the displacement D = W - W_t, d = b - b_t, with G = x^T x and s = x^T 1 formed once per
        outer step. An inner step then costs one (out x in) @ (in x in) product instead of a
        forward and a weight-gradient product over the batch (2-3x fewer FLOPs at batch 1000).
        The inner optimizer moves D itself, from 0 at every outer step (its state persists as
        usual), and W_t + D is written back once: the same trajectory as moving W for any inner
        optimizer whose step depends on the gradient and its state alone. The per-layer loop
        (`fused=False`) keeps the direct form as the reference.
        """
        group = self.param_groups[0]
        gamma, T, eta = group["gamma"], group["inner_steps"], group["eta"]
        n = record.inputs[0].shape[0]
        scale = 1.0 / n if self.reduction == "mean" else 1.0
        (inner,) = self._inner
        disp = self._displacements
        _, ones = self._scratch(record)
        gram, sums, grad0 = self._gram_scratch()
        torch._foreach_zero_(disp)

        # k = 0: D = 0, so the gradient is gamma times back-prop's; it is the constant term of every later step.
        grad0_pairs, disp_pairs = self._layer_pairs(grad0), self._layer_pairs(disp)
        for (g0_w, g0_b), x, g in zip(grad0_pairs, record.inputs, grads):
            g0_w.addmm_(g.T, x, beta=0.0, alpha=gamma * scale)
            if g0_b is not None:
                g0_b.addmv_(g.T, ones, beta=0.0, alpha=gamma * scale)
        d_grads = [d.grad for d in disp]
        torch._foreach_copy_(d_grads, grad0)
        self._set_lr(inner, self._inner_lr(0))
        inner.step()
        if T > 1:
            for x, G, s in zip(record.inputs, gram, sums):
                torch.mm(x.T, x, out=G)
                torch.mv(x.T, ones, out=s)
        for k in range(1, T):
            for (d_w, d_b), (g0_w, g0_b), G, s in zip(disp_pairs, grad0_pairs, gram, sums):
                torch.addmm(g0_w, d_w, G, alpha=scale, out=d_w.grad)
                if d_b is not None:
                    d_w.grad.addr_(d_b, s, alpha=scale)
                    torch.addmv(g0_b, d_w, s, alpha=scale, out=d_b.grad)
                    d_b.grad.add_(d_b, alpha=scale * n)
            if eta is not None:
                torch._foreach_add_(d_grads, disp, alpha=1.0 / eta)
            self._set_lr(inner, self._inner_lr(k))
            inner.step()
        torch._foreach_add_(group["params"], disp)

    def _layer_pairs(self, flat: list[Tensor]) -> list[tuple[Tensor, Tensor | None]]:
        """A list laid out like the parameters, as (weight-like, bias-like or None) per layer."""
        pairs, i = [], 0
        for ps in self.layer_params:
            pairs.append((flat[i], flat[i + 1] if len(ps) == 2 else None))
            i += len(ps)
        return pairs

    def _gram_scratch(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Buffers of the Gram form, allocated once: per layer G and s, per parameter the k = 0
        gradient; and the displacements' gradient buffers."""
        if self._gram is None:
            weights = [layer.linear.weight for layer in self.layers]
            self._gram = ([w.new_empty(w.shape[1], w.shape[1]) for w in weights], [w.new_empty(w.shape[1]) for w in weights],
                          [torch.empty_like(p) for p in self.param_groups[0]["params"]])
            for d in self._displacements:
                d.grad = torch.empty_like(d)
        return self._gram

    def _step_fused(self, record, grads: list[Tensor], anchors: list[Tensor] | None) -> None:
        """All layers advance inner step k together; one inner optimizer updates them all."""
        group = self.param_groups[0]
        gamma, T, eta = group["gamma"], group["inner_steps"], group["eta"]
        scale = 1.0 / record.inputs[0].shape[0] if self.reduction == "mean" else 1.0
        (inner,) = self._inner
        params = group["params"]
        buffers, ones = self._scratch(record)

        # k = 0: W = W_t, so a' = a and delta = gamma g for both variants.
        for layer, x, g in zip(self.layers, record.inputs, grads):
            w, b = layer.linear.weight, layer.linear.bias
            w.grad.addmm_(g.T, x, beta=0.0, alpha=gamma * scale)
            if b is not None:
                b.grad.addmv_(g.T, ones, beta=0.0, alpha=gamma * scale)
        self._set_lr(inner, self._inner_lr(0))
        inner.step()
        if T == 1:
            return

        # The targets overwrite the back-prop gradients: S: â = a - gamma g; M: ŷ = f(a) - gamma g.
        base = record.pre if self.variant == "S" else record.post
        targets = [torch.add(z, g, alpha=-gamma, out=g) for z, g in zip(base, grads)]
        # tanh(a) = 2 sigmoid(2a) - 1: torch's CPU tanh is ~10x slower than its sigmoid, and this
        # form costs no extra pass: the 2a folds into addmm and the "2 s - 1 - ŷ" into one add
        # against the stored -(1 + ŷ).
        via_sigmoid = [self.variant == "M" and layer.transfer.name == "tanh" for layer in self.layers]
        for t, tanh_as_sigmoid in zip(targets, via_sigmoid):
            if tanh_as_sigmoid:
                t.add_(1.0).neg_()
        for k in range(1, T):
            for layer, x, t, buf, tanh_as_sigmoid in zip(self.layers, record.inputs, targets, buffers, via_sigmoid):
                w, b = layer.linear.weight, layer.linear.bias
                pre_scale = 2.0 if tanh_as_sigmoid else 1.0  # the sigmoid form needs 2a
                if b is None:
                    buf.addmm_(x, w.T, beta=0.0, alpha=pre_scale)
                else:
                    torch.addmm(b, x, w.T, beta=pre_scale, alpha=pre_scale, out=buf)
                if tanh_as_sigmoid:
                    delta = torch.add(t, buf.sigmoid_(), alpha=2.0, out=buf)
                else:
                    if self.variant == "M":
                        layer.transfer.f_(buf)
                    delta = buf.sub_(t)
                w.grad.addmm_(delta.T, x, beta=0.0, alpha=scale)
                if b is not None:
                    b.grad.addmv_(delta.T, ones, beta=0.0, alpha=scale)
            if anchors is not None:
                grads_ = [p.grad for p in params]
                torch._foreach_add_(grads_, torch._foreach_sub(params, anchors), alpha=1.0 / eta)
            self._set_lr(inner, self._inner_lr(k))
            inner.step()

    def _step_per_layer(self, record, grads: list[Tensor], anchors: list[Tensor] | None) -> None:
        """The plain reference loop: each layer solves its local problem with its own optimizer."""
        group = self.param_groups[0]
        gamma, T, eta = group["gamma"], group["inner_steps"], group["eta"]
        scale = 1.0 / record.inputs[0].shape[0] if self.reduction == "mean" else 1.0
        anchor_iter = iter(anchors) if anchors is not None else None
        for layer, inner, ps, x, a, y, g in zip(self.layers, self._inner, self.layer_params,
                                               record.inputs, record.pre, record.post, grads):
            w, b = layer.linear.weight, layer.linear.bias
            target = a - gamma * g if self.variant == "S" else y - gamma * g
            layer_anchors = [next(anchor_iter) for _ in ps] if anchor_iter is not None else None
            for k in range(T):
                pre = x @ w.T if b is None else x @ w.T + b
                delta = (pre if self.variant == "S" else layer.transfer.f(pre)) - target
                w.grad.copy_(delta.T @ x * scale)
                if b is not None:
                    b.grad.copy_(delta.sum(0) * scale)
                if layer_anchors is not None:
                    for p, p0 in zip(ps, layer_anchors):
                        p.grad.add_(p - p0, alpha=1.0 / eta)
                self._set_lr(inner, self._inner_lr(k))
                inner.step()

    def _scratch(self, record) -> tuple[list[Tensor], Tensor]:
        """Preallocated buffers, reused while the batch size holds: one pre-activation buffer per
        layer, and a vector of ones that turns the bias gradient sum(delta, 0) into a gemv
        (a BLAS call, faster on CPU than the strided column reduction, and no allocation)."""
        a0 = record.pre[0]
        key = (a0.shape[0], a0.device, a0.dtype)
        if key not in self._buffers:
            self._buffers = {key: ([torch.empty_like(a) for a in record.pre], a0.new_ones(a0.shape[0]))}
        return self._buffers[key]

    # ---------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict:
        """The inner optimizers' state, always in the fused layout (one inner optimizer over every
        parameter), so checkpoints do not depend on `fused`: per-layer inner states are merged."""
        return {"inner": self._merged_inner_state()}

    def load_extra_state(self, extra: dict) -> None:
        self._inner = self._make_inner()
        inner = extra.get("inner")
        if inner is None:
            return
        if len(self._inner) == 1:
            self._inner[0].load_state_dict(inner)
            return
        offset = 0
        for opt, ps in zip(self._inner, self.layer_params):
            n = len(ps)
            layer_state = {int(i) - offset: s for i, s in inner["state"].items() if offset <= int(i) < offset + n}
            groups = [dict(inner["param_groups"][0], params=list(range(n)))]
            opt.load_state_dict({"state": layer_state, "param_groups": groups})
            offset += n

    def _merged_inner_state(self) -> dict:
        if len(self._inner) == 1:
            return self._inner[0].state_dict()
        state, offset = {}, 0
        for opt, ps in zip(self._inner, self.layer_params):
            sd = opt.state_dict()
            state.update({offset + int(i): s for i, s in sd["state"].items()})
            offset += len(ps)
        groups = [dict(self._inner[0].state_dict()["param_groups"][0], params=list(range(offset)))]
        return {"state": state, "param_groups": groups}
