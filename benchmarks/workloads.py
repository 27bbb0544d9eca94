"""One record per workload (data set): everything the runner, the tuner and the reports know about it.

In the spirit of AlgoPerf's `Workload`: the architecture, the loss and the metric a run is judged
by, the image shape (rows are row-major images after loading, for every data set), the split
sizes, the real counterpart of a stand-in, and the LocoProp notebook's tuning exits. Adding a
data set means adding a record here (and a loader in `data.py` or a generator in `synth.py`) and a
`configs/dataset/<name>.yaml` for its knobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks import data, synth

# The LocoProp notebook's tuning exits (cross-entropy scale): a trial ends when its loss is above
# max_loss, its best above max_best_loss, or its best still above patience_loss after patience_epoch.
NOTEBOOK_EXITS = {"max_loss": 1000.0, "max_best_loss": 600.0, "patience_epoch": 12, "patience_loss": 350.0}

Loader = Callable[[Path, bool, int, "int | None", "int | None"], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Workload:
    """A data set with its autoencoder and its loss conventions."""

    name: str
    label: str  # for figures and tables
    sizes: tuple[int, ...]  # autoencoder layer sizes, input to output
    loss_kind: str  # 'bernoulli' (sigmoid output, cross-entropy) or 'gaussian' (linear output, squared error)
    image_shape: tuple[int, int]
    n_train: int  # the canonical split, or the generator's default size
    n_test: int
    loader: Loader = field(repr=False)  # (root, download, seed, n_train, n_test) -> float32 (train, test); None = all
    default_root: Callable[[], Path] = field(repr=False)
    real: str | None = None  # the real data set a synthetic stand-in imitates
    tuning_exits: dict | None = None  # the notebook's early exits for tuning trials (None: none apply)

    @property
    def primary_metric(self) -> str:
        """The training loss the paper plots: cross-entropy, or squared error for linear outputs."""
        return "train_ce" if self.loss_kind == "bernoulli" else "train_se"

    @property
    def test_metric(self) -> str:
        return self.primary_metric.replace("train", "test")

    @property
    def architecture(self) -> str:
        """The real data set whose autoencoder this workload trains."""
        return self.real or self.name

    @property
    def running_loss_scale(self) -> float:
        """Training (mini-batch) loss -> primary metric: the gaussian loss is half the squared error."""
        return 1.0 if self.loss_kind == "bernoulli" else 2.0


def _first(array: np.ndarray, n: int | None, name: str, split: str) -> torch.Tensor:
    """The first n rows of a validated file (all of them for None)."""
    if n is not None and n > array.shape[0]:
        raise ValueError(f"{name}: n_{split}={n} is outside [0, {array.shape[0]}] (the {split} set's size)")
    return torch.from_numpy(np.ascontiguousarray(array[:n]))


def _mnist(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_mnist(root, download)
    scale = lambda images: (images.astype(np.float32) / 255.0)  # noqa: E731
    return _first(scale(train), n_train, "mnist", "train"), _first(scale(test), n_test, "mnist", "test")


def _faces(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_faces(root, download)
    return _first(train, n_train, "faces", "train"), _first(test, n_test, "faces", "test")


def _curves(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_curves(root, download)
    return _first(train, n_train, "curves", "train"), _first(test, n_test, "curves", "test")


def _curves_synth(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    w = WORKLOADS["curves_synth"]
    return (synth.curves_synth(w.n_train if n_train is None else n_train, synth.stream_seed(seed, 0)),
            synth.curves_synth(w.n_test if n_test is None else n_test, synth.stream_seed(seed, 1)))


def _faces_synth(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    w = WORKLOADS["faces_synth"]
    return synth.faces_synth(w.n_train if n_train is None else n_train, w.n_test if n_test is None else n_test,
                             seed, root / synth.OLIVETTI_FILE)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("mnist", "MNIST", (784, 1000, 500, 250, 30, 250, 500, 1000, 784), "bernoulli", (28, 28),
             60_000, 10_000, _mnist, lambda: data.default_root("mnist"), tuning_exits=NOTEBOOK_EXITS),
    Workload("faces", "FACES", (625, 2000, 1000, 500, 30, 500, 1000, 2000, 625), "gaussian", (25, 25),
             data.FACES_N_TRAIN, data.FACES_N_TEST, _faces, lambda: data.default_root("faces")),
    Workload("curves", "CURVES", (784, 400, 200, 100, 50, 25, 6, 25, 50, 100, 200, 400, 784), "bernoulli", (28, 28),
             20_000, 10_000, _curves, lambda: data.default_root("curves"), tuning_exits=NOTEBOOK_EXITS),
    Workload("curves_synth", "CURVES (synthetic)", (784, 400, 200, 100, 50, 25, 6, 25, 50, 100, 200, 400, 784),
             "bernoulli", (synth.CURVES_SIZE, synth.CURVES_SIZE), 10_000, 2_000, _curves_synth,
             lambda: Path("."), real="curves", tuning_exits=NOTEBOOK_EXITS),
    Workload("faces_synth", "FACES (synthetic)", (625, 2000, 1000, 500, 30, 500, 1000, 2000, 625), "gaussian",
             (synth.FACES_SIZE, synth.FACES_SIZE), 6_000, 2_000, _faces_synth,
             lambda: data.default_root("olivetti"), real="faces"),
)}


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


@dataclass
class Dataset:
    """Train and test rows of one workload, on the requested device."""

    workload: Workload
    train: torch.Tensor  # (n_train, dim) float32
    test: torch.Tensor  # (n_test, dim) float32

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def loss_kind(self) -> str:
        return self.workload.loss_kind

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.workload.image_shape


def load_dataset(name: str, root: str | None = None, download: bool = False, device="cpu",
                 seed: int = 0, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Load a workload's data as float32 rows on `device`.

    `root` is the folder holding the files (for faces_synth: olivettifaces.mat); by default
    $LOCOPROP_DATA/<name> when that is set, else ./data/<name>. `n_train`/`n_test` truncate the real data sets
    (after validating the full files) or size the generators; `seed` only affects the generators.
    """
    workload = get_workload(name)
    root_path = Path(root) if root is not None else workload.default_root()
    for split, n in (("train", n_train), ("test", n_test)):
        if n is not None and n < 0:
            raise ValueError(f"{name}: n_{split}={n} must be >= 0")
    train, test = workload.loader(root_path, download, seed, n_train, n_test)
    return Dataset(workload, train.to(device), test.to(device))
