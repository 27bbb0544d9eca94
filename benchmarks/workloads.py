"""One record per workload (data set), read from its config: everything the harness knows about it.

A data set is one config, `configs/dataset/<name>.yaml`, and one loader function. The config holds
the run's knobs (root, download, n_train, n_test) and the facts: its label, whether it is one of
the LocoProp paper's workloads (`paper`) or a generated stand-in for one (`stand_in_for`), the
autoencoder's layer sizes, the loss, the image shape, the folder its files live in and the
tuning exits that apply. The loader, named by dotted path, has the signature
`(root, download, seed, n_train, n_test) -> (train, test)` float32 tensors of rows (row-major
images). The sizes of a file-backed data set are its files' (the loader states them with
`@canonical_split`, and benchmarks.data checks the files against them); a generated one's are its
config's n_train and n_test. In the spirit of AlgoPerf's `Workload`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import get_object

from benchmarks import data, synth
from benchmarks.config import CONFIG_DIR, compose_group, unknown_name
from benchmarks.schedule import Schedule

# The LocoProp notebook's tuning exits (cross-entropy scale): a trial ends when its loss is above
# max_loss, its best above max_best_loss, or its best still above patience_loss after patience_epoch.
NOTEBOOK_EXITS = {"max_loss": 1000.0, "max_best_loss": 600.0, "patience_epoch": 12, "patience_loss": 350.0}
TUNING_EXITS = {"notebook": NOTEBOOK_EXITS, None: None}
# Keys of a dataset config that state facts about the data set rather than settings of a run.
FACT_KEYS = ("order", "label", "paper", "stand_in_for", "loader", "data_dir", "architecture", "loss", "image_shape",
             "tuning_exits")

Loader = Callable[[Path, bool, int, "int | None", "int | None"], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Workload:
    """A data set with its autoencoder and its loss conventions."""

    name: str
    label: str  # for figures and tables
    sizes: tuple[int, ...]  # autoencoder layer sizes, input to output
    loss_kind: str  # 'bernoulli' (sigmoid output, cross-entropy) or 'gaussian' (linear output, squared error)
    image_shape: tuple[int, int]
    loader_path: str  # dotted path of the loader function
    data_dir: str | None = None  # the folder under $LOCOPROP_DATA (or ./data) holding its files
    paper: bool = False  # one of the LocoProp paper's workloads
    stand_in_for: str | None = None  # the paper's data set a generated stand-in imitates
    tuning_exits: dict | None = None  # the notebook's early exits for tuning trials (None: none apply)
    default_sizes: tuple[int | None, int | None] = (None, None)  # a generated set's (n_train, n_test)
    order: int = 99  # position in tables and figures

    @property
    def loader(self) -> Loader:
        return get_object(self.loader_path)

    @property
    def n_train(self) -> int:
        """The training set's size: the files' canonical split, or the generator's default."""
        return getattr(self.loader, "canonical_split", self.default_sizes)[0]

    @property
    def n_test(self) -> int:
        return getattr(self.loader, "canonical_split", self.default_sizes)[1]

    def default_root(self) -> Path:
        """$LOCOPROP_DATA/<data_dir> when that is set, else ./data/<data_dir> (`.` for a generator
        that reads no file)."""
        return data.default_root(self.data_dir) if self.data_dir else Path(".")

    @property
    def seed_draws_data(self) -> bool:
        """Whether a run's seed draws the data too (a generator), not only the initialisation and the
        batch order (files): then seed k of every optimizer trains on the same data, and two
        optimizers' seeds are compared in pairs."""
        return not hasattr(self.loader, "canonical_split")

    @property
    def primary_metric(self) -> str:
        """The training loss the paper plots: cross-entropy, or squared error for linear outputs."""
        return "train_ce" if self.loss_kind == "bernoulli" else "train_se"

    @property
    def test_metric(self) -> str:
        return self.primary_metric.replace("train", "test")

    @property
    def architecture(self) -> str:
        """The paper's data set whose autoencoder this workload trains."""
        return self.stand_in_for or self.name

    @property
    def running_loss_scale(self) -> float:
        """Training (mini-batch) loss -> primary metric: the gaussian loss is half the squared error."""
        return 1.0 if self.loss_kind == "bernoulli" else 2.0


def workload_from_config(cfg: dict[str, Any], where: str = "a dataset config") -> Workload:
    missing = [k for k in ("name", "loader", "architecture", "loss", "image_shape") if cfg.get(k) is None]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (see benchmarks/workloads.py)")
    if cfg["loss"] not in ("bernoulli", "gaussian"):
        raise ValueError(f"{where}: loss must be 'bernoulli' or 'gaussian', got {cfg['loss']!r}")
    exits = cfg.get("tuning_exits")
    return Workload(name=cfg["name"], label=cfg.get("label") or cfg["name"], sizes=tuple(cfg["architecture"]),
                    loss_kind=cfg["loss"], image_shape=tuple(cfg["image_shape"]), loader_path=cfg["loader"],
                    data_dir=cfg.get("data_dir"), paper=bool(cfg.get("paper")), stand_in_for=cfg.get("stand_in_for"),
                    tuning_exits=TUNING_EXITS[exits] if exits in TUNING_EXITS else dict(exits),
                    default_sizes=(cfg.get("n_train"), cfg.get("n_test")), order=int(cfg.get("order") or 99))


def _read_workloads() -> dict[str, Workload]:
    """Every dataset config's workload (as the runner composes it), in table order (the paper's data
    sets before their stand-ins)."""
    workloads = [workload_from_config(compose_group("dataset", path.stem), str(path))
                 for path in (CONFIG_DIR / "dataset").glob("*.yaml")]
    return {w.name: w for w in sorted(workloads, key=lambda w: (w.order, not w.paper, w.name))}


# ----------------------------------------------------------------------------- loaders

def canonical_split(n_train: int, n_test: int):
    """Mark a loader of files with its files' train and test sizes."""
    def mark(loader):
        loader.canonical_split = (n_train, n_test)
        return loader
    return mark


def _first(array: np.ndarray, n: int | None, name: str, split: str) -> torch.Tensor:
    """The first n rows of a validated file (all of them for None)."""
    if n is not None and n > array.shape[0]:
        raise ValueError(f"{name}: n_{split}={n} is outside [0, {array.shape[0]}] (the {split} set's size)")
    return torch.from_numpy(np.ascontiguousarray(array[:n]))


@canonical_split(*data.MNIST_SPLIT)
def load_mnist_rows(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_mnist(root, download)
    scale = lambda images: (images.astype(np.float32) / 255.0)  # noqa: E731
    return _first(scale(train), n_train, "mnist", "train"), _first(scale(test), n_test, "mnist", "test")


@canonical_split(data.FACES_N_TRAIN, data.FACES_N_TEST)
def load_faces_rows(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_faces(root, download)
    return _first(train, n_train, "faces", "train"), _first(test, n_test, "faces", "test")


@canonical_split(data.CURVES_TRAIN_SHAPE[0], data.CURVES_TEST_SHAPE[0])
def load_curves_rows(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    train, test = data.load_curves(root, download)
    return _first(train, n_train, "curves", "train"), _first(test, n_test, "curves", "test")


def generate_curves(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    w = WORKLOADS["curves_synth"]
    return (synth.curves_synth(w.n_train if n_train is None else n_train, synth.stream_seed(seed, 0)),
            synth.curves_synth(w.n_test if n_test is None else n_test, synth.stream_seed(seed, 1)))


def generate_faces(root: Path, download: bool, seed: int, n_train: int | None, n_test: int | None):
    w = WORKLOADS["faces_synth"]
    return synth.faces_synth(w.n_train if n_train is None else n_train, w.n_test if n_test is None else n_test,
                             seed, root / synth.OLIVETTI_FILE)


WORKLOADS: dict[str, Workload] = _read_workloads()


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(unknown_name("dataset", name, WORKLOADS))
    return WORKLOADS[name]


def paper_datasets() -> list[str]:
    """The data sets of the LocoProp paper, in its order: mnist, faces, curves."""
    return [name for name, w in WORKLOADS.items() if w.paper]


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


def trained_epochs(cfg) -> int:
    """The epochs a run of `cfg` trains: the schedule's rule (the notebook trains one epoch fewer than
    its schedule's length), cut at `stop_epoch` for short runs."""
    return Schedule.from_config(cfg.schedule, int(cfg.epochs)).trained_epochs(cfg.stop_epoch)


def run_steps(cfg) -> int:
    """Optimizer steps of a whole run of `cfg`: full batches per epoch (the last partial batch is
    dropped, as in the notebook) x trained epochs."""
    n_train = cfg.dataset.n_train or get_workload(cfg.dataset.name).n_train
    return n_train // int(cfg.batch_size) * trained_epochs(cfg)
