"""The deep autoencoders of Hinton & Salakhutdinov (2006) as used by HF, K-FAC and LocoProp.

An `Autoencoder` is an `nn.Sequential` of `nn.Linear` layers and activation modules, so any
optimizer that understands such a chain (LocoProp, K-FAC) works on it unchanged; it adds the
benchmark's loss conventions (see `locoprop.losses`); the layer sizes come from `benchmarks.workloads`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from benchmarks.workloads import get_workload
from locoprop.losses import OUTPUT_TRANSFER, bernoulli_nll, gaussian_nll, squared_error
from locoprop.transfer import get_transfer

HIDDEN_ACTIVATIONS = ("tanh", "sigmoid", "relu")


def scale_sizes(sizes: list[int], width_multiplier: int = 1, depth_multiplier: int = 1) -> list[int]:
    """Apply the official code's model_size_multiplier and model_depth_multiplier.

    The width multiplier scales every hidden width (the code layer included, as the notebook
    does); the depth multiplier repeats the encoder's second hidden layer (MNIST: the 500-unit
    layer) and its mirror in the decoder.
    """
    if width_multiplier < 1 or depth_multiplier < 1:
        raise ValueError(f"multipliers must be >= 1, got width={width_multiplier}, depth={depth_multiplier}")
    if len(sizes) < 5 or len(sizes) % 2 == 0:
        raise ValueError(f"an autoencoder needs an odd number (>= 5) of layer sizes, got {sizes}")
    hidden = [h * width_multiplier for h in sizes[1:-1]]
    centre = len(hidden) // 2
    encoder, code, decoder = hidden[:centre], hidden[centre], hidden[centre + 1:]
    if len(encoder) >= 2:
        encoder = encoder[:1] + [encoder[1]] * depth_multiplier + encoder[2:]
        decoder = decoder[:-2] + [decoder[-2]] * depth_multiplier + decoder[-1:]
    return [sizes[0], *encoder, code, *decoder, sizes[-1]]


def glorot_uniform_(linear: nn.Linear) -> None:
    """Keras glorot_uniform for the weight AND the bias, as in the official code.

    A weight of fan-in m and fan-out n gets limit sqrt(6/(m+n)); a bias of size n is a 1-D
    tensor whose fans are both n, so its limit is sqrt(6/(2n)).
    """
    fan_out, fan_in = linear.weight.shape
    with torch.no_grad():
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        linear.weight.uniform_(-limit, limit)
        if linear.bias is not None:
            n = linear.bias.numel()
            linear.bias.uniform_(-math.sqrt(6.0 / (2 * n)), math.sqrt(6.0 / (2 * n)))


class Autoencoder(nn.Sequential):
    """Linear layers with a hidden activation, a linear code layer and a loss-specific output.

    `loss_kind` 'bernoulli' ends in a sigmoid and trains on the cross-entropy; 'gaussian' ends
    linear and trains on 0.5 * squared error. `forward` returns the reconstruction.
    """

    def __init__(self, sizes: list[int], activation: str = "tanh", loss_kind: str = "bernoulli",
                 init: str = "glorot_uniform"):
        hidden = get_transfer(activation)
        if hidden.name not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"hidden activation must be one of {', '.join(HIDDEN_ACTIVATIONS)}, got {activation!r}")
        if loss_kind not in OUTPUT_TRANSFER:
            raise ValueError(f"unknown loss_kind {loss_kind!r}; choose one of {', '.join(OUTPUT_TRANSFER)}")
        code_index = (len(sizes) - 1) // 2 - 1  # the bottleneck layer's index among the Linear layers
        modules: list[nn.Module] = []
        n_layers = len(sizes) - 1
        for i in range(n_layers):
            modules.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i == n_layers - 1:
                if loss_kind == "bernoulli":
                    modules.append(nn.Sigmoid())
            elif i != code_index:
                modules.append(hidden.module())
        super().__init__(*modules)
        self.sizes = list(sizes)
        self.activation = hidden.name
        self.loss_kind = loss_kind
        if init == "glorot_uniform":
            for m in self.linears():
                glorot_uniform_(m)
        elif init != "torch_default":
            raise ValueError(f"unknown init {init!r}; choose glorot_uniform or torch_default")

    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    def logits(self, x: Tensor) -> Tensor:
        """The last layer's pre-activation."""
        modules = list(self)
        if self.loss_kind == "bernoulli":
            modules = modules[:-1]  # drop the output sigmoid
        for module in modules:
            x = module(x)
        return x

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.loss_kind == "bernoulli":
            return bernoulli_nll(logits, targets)
        return gaussian_nll(logits, targets)

    def loss(self, x: Tensor) -> Tensor:
        """The training loss of reconstructing x (mean over examples)."""
        return self.loss_from_logits(self.logits(x), x)

    @torch.no_grad()
    def metrics(self, data: Tensor, batch_size: int = 10_000) -> dict[str, float]:
        """Cross-entropy (bernoulli only) and squared error over a whole dataset, in float64 sums.

        Summed batch by batch so a 60,000-example evaluation fits in memory; one host sync.
        """
        ce = torch.zeros((), dtype=torch.float64, device=data.device)
        se = torch.zeros((), dtype=torch.float64, device=data.device)
        for start in range(0, data.shape[0], batch_size):
            x = data[start:start + batch_size]
            logits = self.logits(x)
            n = x.shape[0]
            out = torch.sigmoid(logits) if self.loss_kind == "bernoulli" else logits
            se += squared_error(out, x).double() * n
            if self.loss_kind == "bernoulli":
                ce += bernoulli_nll(logits, x).double() * n
        n_total = data.shape[0]
        result = {"se": (se / n_total).item()}
        result["ce"] = (ce / n_total).item() if self.loss_kind == "bernoulli" else float("nan")
        return result


def build_autoencoder(dataset: str | None = None, sizes: list[int] | None = None, activation: str = "tanh",
                      loss_kind: str | None = None, width_multiplier: int = 1, depth_multiplier: int = 1,
                      init: str = "glorot_uniform") -> Autoencoder:
    """Build a benchmark autoencoder by workload name (its architecture and loss) or explicit sizes."""
    if sizes is None:
        workload = get_workload(dataset)
        sizes = list(workload.sizes)
        loss_kind = loss_kind or workload.loss_kind
    sizes = scale_sizes(list(sizes), width_multiplier, depth_multiplier)
    return Autoencoder(sizes, activation=activation, loss_kind=loss_kind or "bernoulli", init=init)
