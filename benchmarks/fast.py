"""Fast paths for a training step: `torch.compile` and whole-step CUDA-graph capture.

Both wrap the `step(x) -> loss` of `benchmarks.optimizers.make_step`, so they apply to every
optimizer family, and both are opt-in (`compile=true`, `cuda_graph=true`); tests check that
they give the eager step's numbers.

CUDA graphs replay the kernels of one captured step with a single launch, which removes the
Python and launch overhead that dominates small steps on a fast GPU. Requirements: the step
keeps all its state on the GPU and has no host-side state that changes from step to step
(true for SGD/momentum, the TF1 RMSProp/AdaGrad, torch optimizers with `capturable`
(switched on here), and LocoProp with those inner optimizers; not for Shampoo/K-FAC refresh
steps, nor for optimizers counting steps in Python such as AdamTF1). Learning rates are
Python floats baked into the captured kernels, so the step is re-captured whenever a
param_group's lr changes (once per epoch under the official schedule).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from locoprop import AdagradTF1, RMSpropTF1

Step = Callable[[Tensor], Tensor]


def compiled_step(step: Step) -> Step:
    """`torch.compile` of the whole step (forward, backward and optimizer update)."""
    return torch.compile(step)


def graph_safe(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a captured step of this optimizer replays exactly (see the module docstring)."""
    if getattr(optimizer, "model_aware", False):
        inner = getattr(optimizer, "inner_optimizer", None)  # LocoProp: a class or a partial of one
        inner = getattr(inner, "func", inner)
        return isinstance(inner, type) and issubclass(inner, (torch.optim.SGD, RMSpropTF1, AdagradTF1))
    if isinstance(optimizer, (torch.optim.SGD, RMSpropTF1, AdagradTF1)):
        return True
    return all("capturable" in group for group in optimizer.param_groups)


class CudaGraphStep:
    """Capture `step` once per learning-rate setting and replay it for every batch."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer):
        if not torch.cuda.is_available():
            raise RuntimeError("cuda_graph=true needs a CUDA device")
        if not graph_safe(optimizer):
            raise ValueError(f"cuda_graph=true is not supported for {type(optimizer).__name__}: its step has "
                             "host-side state or data-dependent branches (see benchmarks/fast.py)")
        self.step, self.optimizer = step, optimizer
        for group in optimizer.param_groups:  # torch optimizers keep their step counts on the GPU then
            if "capturable" in group:
                group["capturable"] = True
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: Tensor | None = None
        self.static_loss: Tensor | None = None
        self.lrs: tuple[float, ...] | None = None

    def _current_lrs(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def __call__(self, x: Tensor) -> Tensor:
        if self.graph is None or self._current_lrs() != self.lrs or x.shape != self.static_x.shape:
            return self._eager_then_capture(x)
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss.clone()

    def _eager_then_capture(self, x: Tensor) -> Tensor:
        """Run this batch eagerly on a side stream (it also creates any lazy optimizer state),
        then capture the step for the following batches; capture itself executes nothing."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.step(x)
        torch.cuda.current_stream().wait_stream(side)
        self.static_x = x.detach().clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.step(self.static_x)
        self.lrs = self._current_lrs()
        return loss
