"""Difference target propagation (Lee, Zhang, Fischer, Bengio, ECML-PKDD 2015) for MLPs.

The network is the chain h_l = f_l(W_l h_{l-1} + b_l), l = 1..L, h_0 = the input
(`locoprop.chain.linear_chain`). Instead of back-propagating errors, DTP propagates TARGETS:

- the top target moves the output down the loss gradient, t_L = h_L - top_lr * dl/dh_L, where
  dl/dh_L is each example's own loss gradient with respect to the OUTPUT (the post-activation of
  the last layer), i.e. N times the gradient of the mean loss, so a target does not depend on
  the batch size;
- learned approximate inverses g_l (l = 2..L), g_l(h) = f_{l-1}(V_l h + c_l) mapping the space of
  h_l to that of h_{l-1}, carry it down with the difference correction
      t_{l-1} = h_{l-1} + g_l(t_l) - g_l(h_l),
  which makes t_{l-1} = h_{l-1} whenever t_l = h_l, however wrong g_l is (plain target
  propagation, t_{l-1} = g_l(t_l), does not: its reconstruction error becomes a spurious target);
- each layer's forward weights take optimizer steps on the layer-local loss
  ||f_l(W_l h_{l-1} + b_l) - t_l||^2 (summed over units, mean over the batch, h_{l-1} and t_l
  fixed), so no gradient crosses a layer;
- each inverse takes optimizer steps on the noise-corrupted reconstruction loss
  ||g_l(f_l(W_l (h_{l-1} + e) + b_l)) - (h_{l-1} + e)||^2, e ~ N(0, noise_std^2) fresh at each
  inverse step, with the forward weights fixed: it learns to invert f_l around the data.

One `step(inputs, targets)`, as in the paper's algorithm: a forward pass, the top target, all
targets with the current inverses, `inverse_steps` inverse updates, then `forward_steps` forward
updates; every update uses the forward weights and activations of the step's forward pass. The
noise comes from torch's global RNG, drawn layer by layer from the bottom up (`torch.randn_like`
of h_{l-1}), so a run is reproducible from `torch.manual_seed`.

Not implemented: the difference reconstruction loss (DRL) of Meulemans et al. (NeurIPS 2020).
DRL trains each layer's feedback parameters through the whole difference-corrected feedback path
from the output down to that layer (a noisy perturbation pushed up through all higher layers and
back down through all their inverses), plus a separately weighted regulariser; that does not fit
the layer-local inverse training here, so it is left out rather than approximated.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from locoprop.chain import forward_record
from locoprop.losses import resolve_loss
from locoprop.model_aware import ModelAwareOptimizer


def _bernoulli_output_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of sigmoid outputs (not logits), summed over features, mean over examples.

    torch clamps its logs and the denominator of its gradient, (h - y) / (h (1 - h)), so the
    gradient stays finite where the output saturates."""
    return F.binary_cross_entropy(outputs, targets, reduction="sum") / outputs.shape[0]


def _output_loss(loss: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss kind as a function of the network OUTPUT h_L (where the top target lives)."""
    return _bernoulli_output_loss if loss == "bernoulli" else resolve_loss(loss)


def _check_rate(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_count(name: str, value: int) -> None:
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")


class DTP(ModelAwareOptimizer):
    """Difference target propagation for an `nn.Sequential` of Linear layers and activations.

    Model-aware: `step(inputs, targets)` runs the model itself and returns the mini-batch loss
    before the update (detached); do not call `loss.backward()` beforehand (the parameters'
    `.grad` are overwritten with the last local gradients). The inverses g_l live in `self.inverses` (created here, on the
    model's device and dtype, torch's default nn.Linear initialisation); `self.inverses[i - 1]`
    is the linear part of the inverse of chain layer i (0-based, i = 1..L-1), and
    `set_inverse(i, weight, bias)` sets it.

    Args:
        model: an `nn.Sequential` that `linear_chain` understands.
        lr: the forward optimizers' learning rate; it lives in `param_groups[0]['lr']` (the
            group holds the model's parameters), so LR schedulers work.
        inverse_lr: the inverse optimizers' learning rate (`param_groups[0]['inverse_lr']`).
        top_lr: eta_top, how far the top target moves along -dl/dh_L.
        noise_std: standard deviation of the corruption e in the inverses' reconstruction loss.
        forward_steps, inverse_steps: optimizer steps on the local / reconstruction losses per
            outer step (0 freezes the forward weights / the inverses).
        forward_optimizer, inverse_optimizer: callables `opt(params, lr=...)` (an optimizer class
            or a functools.partial of one), one instance per layer. Default torch.optim.Adam:
            the local losses of different layers have very different scales, which shrink as the
            layers meet their targets, and Adam's per-parameter normalisation lets one learning
            rate serve all of them.
        loss: 'bernoulli' or 'gaussian' (the model must end in the matching transfer); the top
            target uses the loss as a function of the output h_L (for 'bernoulli' the
            cross-entropy of the sigmoid output), the returned loss is `locoprop.losses`' value
            from the logits. Or a callable (outputs h_L, targets) -> scalar mean loss, used for
            both.
    """

    def __init__(self, model: nn.Sequential, lr: float = 1e-3, inverse_lr: float = 1e-3,
                 top_lr: float = 0.1, noise_std: float = 0.1, forward_steps: int = 1,
                 inverse_steps: int = 1, forward_optimizer: Callable[..., Optimizer] = torch.optim.Adam,
                 inverse_optimizer: Callable[..., Optimizer] = torch.optim.Adam,
                 loss: str | Callable[[Tensor, Tensor], Tensor] = "bernoulli"):
        for name, value in (("lr", lr), ("inverse_lr", inverse_lr), ("top_lr", top_lr),
                            ("noise_std", noise_std)):
            _check_rate(name, value)
        _check_count("forward_steps", forward_steps)
        _check_count("inverse_steps", inverse_steps)
        for name, value in (("forward_optimizer", forward_optimizer), ("inverse_optimizer", inverse_optimizer)):
            if not callable(value):
                raise ValueError(f"{name} must be a callable opt(params, lr=...), got {value!r}")
        if not (isinstance(loss, str) or callable(loss)):
            raise ValueError(f"loss must be 'bernoulli', 'gaussian' or a callable, got {loss!r}")
        defaults = dict(lr=lr, inverse_lr=inverse_lr, top_lr=top_lr, noise_std=noise_std,
                        forward_steps=int(forward_steps), inverse_steps=int(inverse_steps))
        super().__init__(model, defaults)
        layers = self.layers
        if isinstance(loss, str):
            self.loss_fn = resolve_loss(loss, layers[-1].transfer.name)
            self.output_loss_fn = _output_loss(loss)
        else:
            self.loss_fn = self.output_loss_fn = loss
        self.loss_on_logits = isinstance(loss, str)

        weight = layers[0].linear.weight
        self.inverses = nn.ModuleList(
            nn.Linear(layer.linear.out_features, layer.linear.in_features, device=weight.device, dtype=weight.dtype)
            for layer in layers[1:])
        self.forward_optimizer, self.inverse_optimizer = forward_optimizer, inverse_optimizer
        self._forward_opts = [forward_optimizer(ps, lr=lr) for ps in self.layer_params]
        self._inverse_opts = [inverse_optimizer(list(g.parameters()), lr=inverse_lr) for g in self.inverses]
        self._step = 0

    # ------------------------------------------------------------------ public helpers
    @property
    def steps(self) -> int:
        """Outer steps taken so far."""
        return self._step

    def inverse(self, i: int) -> nn.Linear:
        """The linear part (V_i, c_i) of g_i, the inverse of chain layer i (0-based, 1..L-1)."""
        if not 1 <= i < len(self.layers):
            raise ValueError(f"layer index i must be in 1..{len(self.layers) - 1}, got {i}")
        return self.inverses[i - 1]

    @torch.no_grad()
    def set_inverse(self, i: int, weight: Tensor, bias: Tensor) -> None:
        """Set g_i(h) = f_{i-1}(weight h + bias), the inverse of chain layer i (0-based)."""
        lin = self.inverse(i)
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)

    def apply_inverse(self, i: int, h: Tensor) -> Tensor:
        """g_i(h) = f_{i-1}(V_i h + c_i): from the output space of layer i to its input space."""
        return self.layers[i - 1].transfer.f(self.inverse(i)(h))

    def top_target(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """t_L = h_L - top_lr * dl_n/dh_L per example (N times the mean loss's gradient)."""
        h = outputs.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.output_loss_fn(h, targets), h)
        return (h - self.param_groups[0]["top_lr"] * h.shape[0] * grad).detach()

    @torch.no_grad()
    def propagate(self, outputs: list[Tensor], top: Tensor) -> list[Tensor]:
        """Targets [t_1, ..., t_L] from the layer outputs [h_1, ..., h_L] and the top target t_L,
        by the difference correction t_{i-1} = h_{i-1} + g_i(t_i) - g_i(h_i)."""
        out = [top]
        for i in range(len(self.layers) - 1, 0, -1):
            t, h = out[0], outputs[i]
            # the difference first: exactly zero when t_i = h_i, so then t_{i-1} = h_{i-1} exactly
            out.insert(0, outputs[i - 1] + (self.apply_inverse(i, t) - self.apply_inverse(i, h)))
        return out

    def targets(self, inputs: Tensor, targets: Tensor) -> list[Tensor]:
        """The targets [t_1, ..., t_L] a step on (inputs, targets) would train the layers towards."""
        record = forward_record(self.layers, inputs)
        return self.propagate(record.post, self.top_target(record.post[-1], targets))

    # ------------------------------------------------------------------ the step
    def _sync_lrs(self) -> None:
        group = self.param_groups[0]
        for opts, lr in ((self._forward_opts, group["lr"]), (self._inverse_opts, group["inverse_lr"])):
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = lr

    @staticmethod
    def _step_all(opts: list[Optimizer], params: list[list[Tensor]], loss: Tensor) -> None:
        """One backward pass of the summed (independent) layer losses, one step per layer."""
        flat = [p for ps in params for p in ps]
        for p, g in zip(flat, torch.autograd.grad(loss, flat)):
            p.grad = g
        for opt in opts:
            opt.step()

    def step(self, inputs: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        """One DTP step on (inputs, targets); returns the mini-batch loss before the update."""
        group = self.param_groups[0]
        self._step += 1
        self._sync_lrs()
        record = forward_record(self.layers, inputs)
        h_in = [x.detach() for x in record.inputs]  # h_{l-1}, the inputs of every layer
        with torch.no_grad():
            loss = self.loss_fn(record.logits if self.loss_on_logits else record.post[-1], targets)
        layer_targets = self.propagate(record.post, self.top_target(record.post[-1], targets))

        with torch.enable_grad():
            inverse_params = [list(g.parameters()) for g in self.inverses]
            for _ in range(group["inverse_steps"] if self.inverses else 0):
                total = 0.0
                for i in range(1, len(self.layers)):
                    lin = self.layers[i].linear
                    x = h_in[i] + group["noise_std"] * torch.randn_like(h_in[i])
                    with torch.no_grad():  # the forward weights are fixed for this loss
                        y = self.layers[i].transfer.f(lin(x))
                    total = total + (self.apply_inverse(i, y) - x).pow(2).sum() / x.shape[0]
                self._step_all(self._inverse_opts, inverse_params, total)

            for _ in range(group["forward_steps"]):
                total = 0.0
                for layer, x, t in zip(self.layers, h_in, layer_targets):
                    total = total + (layer.transfer.f(layer.linear(x)) - t).pow(2).sum() / x.shape[0]
                self._step_all(self._forward_opts, self.layer_params, total)
        return loss.detach()

    # ------------------------------------------------------------------ checkpointing
    def extra_state(self) -> dict[str, Any]:
        """The step count, the inverses' parameters and every inner optimizer's state."""
        return {"step": self._step, "inverses": {k: v.clone() for k, v in self.inverses.state_dict().items()},
                "forward_optimizers": [opt.state_dict() for opt in self._forward_opts],
                "inverse_optimizers": [opt.state_dict() for opt in self._inverse_opts]}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self._step = int(extra["step"])
        self.inverses.load_state_dict(extra["inverses"])
        for opts, states in ((self._forward_opts, extra["forward_optimizers"]),
                             (self._inverse_opts, extra["inverse_optimizers"])):
            if len(opts) != len(states):
                raise ValueError(f"the state dict has {len(states)} inner optimizers, this model needs {len(opts)}")
            for opt, st in zip(opts, states):
                opt.load_state_dict(st)
