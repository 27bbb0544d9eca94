"""The training runner: `python -m benchmarks.train dataset=mnist optimizer=adam epochs=1`.

nanoGPT style: `start_run` builds everything (data, model, optimizer, fast paths, resumed state)
and returns a `Run`; `train` is the epoch loop, a dozen lines that read top to bottom. Every run
lives in `<results_dir>/runs/<group>/<dataset>/<optimizer>/<run_id>/` (see `benchmarks.rundir`)
with `config.yaml`, `metrics.csv` (one row per epoch; epoch 0 is the initial model),
`summary.json` (written at the end, whatever the end) and, while unfinished, `checkpoint.pt`, so an
interrupted run resumes where it stopped with the numbers of an uninterrupted one.
"""
from __future__ import annotations

import copy
import math
import os
import re
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from benchmarks import cli
from benchmarks.config import CONFIG_DIR, check_renamed, compose_config
from benchmarks.data import DataError
from benchmarks.fast import CudaGraphStep, compiled_step
from benchmarks.models import Autoencoder, build_autoencoder
from benchmarks.optimizers import evaluation_weights, has_weight_modes, make_optimizer, make_step
from benchmarks.rundir import (FINAL_STATUSES, RunLock, atomic_savez, atomic_torch_save, atomic_write_json,
                               atomic_write_text, cpu_model, device_name, git_commit, load_average, read_summary, run_dir_for,
                               summarize_rows, tracked_by_git)
from benchmarks.schedule import Schedule
from benchmarks.tracking import WandbLogger, metrics_csv_text
from benchmarks.workloads import Dataset, load_dataset


class PruneRun(Exception):
    """Raised by an `on_epoch` callback to end a run early (e.g. a tuning trial that Optuna prunes).

    The run ends with status 'pruned': its files are written, its checkpoint deleted, and the
    same config run again starts afresh."""


class StopRun(Exception):
    """The process was asked to stop (SIGTERM or SIGINT: a deadline, a scheduler's preemption, Ctrl-C).
    The run ends with status 'stopped' and keeps its last epoch checkpoint, so running it again
    resumes it; `signum` is the signal's number when a signal asked."""

    def __init__(self, reason: str = "", signum: int | None = None):
        super().__init__(reason)
        self.signum = signum


def _stop_run(signum, frame):
    raise StopRun(f"stopped by signal {signal.Signals(signum).name}", signum)


def _signal_named(reason: str) -> int | None:
    """The signal a stop reason names ('stopped by signal SIGTERM'), when a re-raise lost its number."""
    name = reason.removeprefix("stopped by signal ").strip()
    return int(signal.Signals[name]) if reason.startswith("stopped by signal ") and name in signal.Signals.__members__ \
        else None


class RunFailed(RuntimeError):
    """A run ended with status 'failed' (its summary.json says why)."""


OnEpoch = Callable[[int, float, bool], None]  # (epoch, loss, replayed)


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda when available; with several GPUs, job k of a multirun gets cuda:(k mod #GPUs)."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", _job_number() % torch.cuda.device_count())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu or auto")
    return torch.device(name)


def _job_number() -> int:
    if not HydraConfig.initialized():
        return 0
    num = HydraConfig.get().job.get("num")
    return int(num) if num is not None else 0


def validate(cfg: DictConfig) -> None:
    """Reject settings that cannot describe a run, before any file is written."""
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={cfg.seed}")
    lr = cfg.optimizer.get("lr")
    if isinstance(lr, (int, float)) and lr < 0:
        raise ValueError(f"optimizer.lr must be >= 0, got optimizer.lr={lr}")
    if int(cfg.epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.stop_epoch is not None and int(cfg.stop_epoch) < 1:
        raise ValueError(f"stop_epoch must be >= 1 (or null for the whole schedule), got {cfg.stop_epoch}")
    if int(cfg.eval_every) < 1:
        raise ValueError(f"eval_every must be >= 1, got {cfg.eval_every}")
    if int(cfg.throwaway_steps) < 0:
        raise ValueError(f"throwaway_steps must be >= 0, got {cfg.throwaway_steps}")


def threshold_exit(rules: Mapping | None, loss: float, best: float, epoch: int) -> str | None:
    """Why a run ends by fixed loss thresholds after `epoch`, or None (no rules: never).

    The LocoProp notebook's tuning exits are of this form (max_loss 1000, max_best_loss 600,
    patience 12 epochs / 350); the runner's divergence rules and the tuner's exits share it.
    """
    if not rules:
        return None
    max_loss, max_best = rules.get("max_loss"), rules.get("max_best_loss")
    patience_epoch, patience_loss = rules.get("patience_epoch"), rules.get("patience_loss")
    if max_loss is not None and loss > max_loss:
        return f"train loss {loss:.4g} > max_loss {max_loss} at epoch {epoch}"
    if max_best is not None and best > max_best:
        return f"best train loss {best:.4g} > max_best_loss {max_best} at epoch {epoch}"
    if patience_epoch is not None and patience_loss is not None and epoch >= patience_epoch and best > patience_loss:
        return f"best train loss {best:.4g} still > {patience_loss} after epoch {epoch}"
    return None


def divergence_reason(rules: DictConfig, loss: float, best: float, epoch: int, initial: float) -> str | None:
    """Why the run counts as diverged after `epoch`, or None.

    Always on: a non-finite loss, or a loss above `max_loss_ratio` x the initial model's (a
    ceiling that scales with the data set). Optional: the fixed thresholds of `threshold_exit`.
    """
    if not math.isfinite(loss):
        return f"non-finite train loss at epoch {epoch}"
    ratio = rules.get("max_loss_ratio")
    if ratio is not None and math.isfinite(initial) and loss > ratio * initial:
        return f"train loss {loss:.4g} > {ratio} x the initial {initial:.4g} at epoch {epoch}"
    return threshold_exit(rules, loss, best, epoch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _finite_parameters(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _numerical_failure(err: Exception, model: torch.nn.Module) -> bool:
    """An error that means the numbers blew up (a diverged run), not a bug or a missing file."""
    return (isinstance(err, FloatingPointError) or not _finite_parameters(model)
            or bool(re.search(r"overflow|non-finite|\bnan\b|\binf\b", str(err), re.IGNORECASE)))


@dataclass
class Run:
    """One run's state: what `train`'s loop reads and updates."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    data: Dataset
    model: Autoencoder
    optimizer: torch.optim.Optimizer
    step: Callable[[torch.Tensor], torch.Tensor]
    schedule: Schedule
    n_epochs: int
    steps_per_epoch: int
    data_rng: torch.Generator
    base_lrs: list[float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    wallclock: float = 0.0
    start_epoch: int = 1
    logger: WandbLogger | None = None
    bar: Any = None
    load_start: list[float] | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)  # what each stretch of epochs ran on

    @property
    def primary(self) -> str:
        return self.data.workload.primary_metric

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def epochs(self) -> range:
        return range(self.start_epoch, self.n_epochs + 1)

    # -- one epoch
    def set_lr(self, epoch: int) -> float:
        factor = self.schedule.factor(epoch - 1)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over a seeded on-device permutation; (mean mini-batch loss, training seconds)."""
        batch_size, data = int(self.cfg.batch_size), self.data.train
        perm = torch.randperm(data.shape[0], generator=self.data_rng, device=self.device)
        losses = []
        _sync(self.device)
        t0 = time.perf_counter()
        for b in range(self.steps_per_epoch):
            losses.append(self.step(data[perm[b * batch_size:(b + 1) * batch_size]]))
            if self.bar is not None:
                self.bar.update(1)
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self.wallclock += seconds
        step_losses = torch.stack(losses).float().cpu().tolist()  # the epoch's one host read
        if self.logger is not None and self.cfg.logger.get("log_steps", True):
            self.logger.log_steps((epoch - 1) * self.steps_per_epoch, step_losses)
        return float(np.mean(step_losses)), seconds

    def evaluate(self, epoch: int, lr: float, train_loss: float, seconds: float) -> dict[str, Any]:
        """The epoch's metrics row; the full train/test evaluation (untimed) every `eval_every` epochs and last."""
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "wallclock_s": self.wallclock,
               "epoch_time_s": seconds, "step_ms": 1e3 * seconds / self.steps_per_epoch if epoch else None}
        if epoch % int(self.cfg.eval_every) and epoch != self.n_epochs:
            return {**row, "train_ce": math.nan, "test_ce": math.nan, "train_se": math.nan, "test_se": math.nan}
        self.model.eval()
        with evaluation_weights(self.optimizer):
            train_m = self.model.metrics(self.data.train, self.cfg.eval_batch_size)
            test_m = self.model.metrics(self.data.test, self.cfg.eval_batch_size)
        self.model.train()
        return {**row, "train_ce": train_m["ce"], "test_ce": test_m["ce"], "train_se": train_m["se"],
                "test_se": test_m["se"]}

    def epoch_loss(self, row: dict[str, Any]) -> float:
        """The epoch's primary train loss: the full evaluation if one ran, else the running mean of
        the mini-batch losses in the primary metric's units (NaN stays NaN: it means divergence)."""
        value = row[self.primary]
        if value is None or math.isnan(value) or not math.isfinite(row["train_loss"]):
            value = row["train_loss"] * self.data.workload.running_loss_scale
        return value

    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.logger is not None:
            self.logger.log_epoch(row)
        atomic_write_text(self.run_dir / "metrics.csv", metrics_csv_text(self.rows))
        if self.bar is not None and row["epoch"]:
            self.bar.set_postfix({"epoch": row["epoch"], self.primary: f"{self.epoch_loss(row):.3f}"})

    def divergence(self) -> str | None:
        losses = [self.epoch_loss(r) for r in self.rows[1:]]
        best = min((v for v in losses if math.isfinite(v)), default=math.inf)
        return divergence_reason(self.cfg.divergence, losses[-1], best, self.rows[-1]["epoch"], self.rows[0][self.primary])

    def checkpoint(self) -> None:
        """Everything a resumed run needs to continue bit for bit (with the evaluation weights in
        the model for an optimizer that keeps two sets: the resumed run switches back)."""
        state = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        with evaluation_weights(self.optimizer):
            atomic_torch_save(self.checkpoint_path, {
                "epoch": self.rows[-1]["epoch"], "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": state, "rows": self.rows, "wallclock": self.wallclock,
                "wandb_id": self.logger.id if self.logger is not None else None, "segments": self.segments})

    def begin_segment(self, epoch: int, before: list[dict[str, Any]] | None) -> None:
        """Record the code and machine this process trains with from `epoch` on, read now (not at the
        end, when the checkout may have moved). A resumed run keeps its earlier segments (an older
        checkpoint's first segment is unknown) and adds one only when something changed."""
        here = {"from_epoch": epoch, "git_commit": git_commit(), "device": device_name(self.device),
                "cpu_model": cpu_model()}
        segments = list(before) if before else ([{"from_epoch": 0, "git_commit": None, "device": None,
                                                  "cpu_model": None}] if epoch > 0 else [])
        if not segments or any(segments[-1][k] != here[k] for k in ("git_commit", "device", "cpu_model")):
            segments.append(here)
        self.segments = segments

    def end_status(self) -> str:
        return "finished" if self.n_epochs >= self.schedule.trained_epochs() else "stopped"

    # -- the end
    def finish(self, status: str, reason: str | None) -> dict[str, Any]:
        """Write metrics, reconstructions and summary.json; drop the checkpoint of an ended run."""
        if self.bar is not None:
            self.bar.close()
        atomic_write_text(self.run_dir / "metrics.csv", metrics_csv_text(self.rows))
        with torch.no_grad(), evaluation_weights(self.optimizer):
            x = self.data.test[:10]
            out = self.model(x)
        atomic_savez(self.run_dir / "reconstructions.npz", inputs=x.float().cpu().numpy(),
                     outputs=out.float().cpu().numpy(), image_shape=np.array(self.data.image_shape))
        cfg = self.cfg
        extra = {"run_dir": self.run_dir.relative_to(cfg.results_dir).as_posix(), "device": device_name(self.device),
                 "cpu_model": cpu_model(), "dataset": cfg.dataset.name, "optimizer": cfg.optimizer.name, "seed": int(cfg.seed),
                 "steps_per_epoch": self.steps_per_epoch, "eval_every": int(cfg.eval_every),
                 "torch": torch.__version__, "git_commit": self.segments[-1]["git_commit"] if self.segments else git_commit(),
                 "load_average_start": self.load_start, "load_average_end": load_average(), "cpu_count": os.cpu_count()}
        if len(self.segments) > 1:  # resumed on other code or another machine: say which epochs ran where
            extra["segments"] = self.segments
        summary = summarize_rows(self.rows, status, reason, self.primary, extra)
        atomic_write_json(self.run_dir / "summary.json", summary)
        if status in (*FINAL_STATUSES, "pruned"):
            self.checkpoint_path.unlink(missing_ok=True)
        if self.logger is not None:
            self.logger.finish(summary)
        return summary


def start_run(cfg: DictConfig) -> Run:
    """Data, model and optimizer, before any file is written: a bad setting or a missing data file
    raises here and leaves no run directory behind."""
    validate(cfg)
    device = resolve_device(cfg.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)  # recorded in config.yaml either way
    torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)
    try:
        data = load_dataset(cfg.dataset.name, root=cfg.dataset.root, download=cfg.dataset.download, device=device,
                            seed=cfg.seed, n_train=cfg.dataset.n_train, n_test=cfg.dataset.n_test)
    except DataError as err:
        raise DataError(f"dataset={cfg.dataset.name} dataset.root={cfg.dataset.root}: {err}") from err
    n_train, batch_size = data.train.shape[0], int(cfg.batch_size)
    if not 1 <= batch_size <= n_train:
        raise ValueError(f"batch_size must be in [1, {n_train}] for {cfg.dataset.name}, got {batch_size}")
    torch.manual_seed(cfg.seed)
    m = cfg.model
    model = build_autoencoder(sizes=list(m.sizes) if m.sizes else None,
                              dataset=m.architecture or data.workload.architecture,
                              activation=m.activation, loss_kind=data.loss_kind, init=m.init,
                              width_multiplier=m.width_multiplier, depth_multiplier=m.depth_multiplier).to(device)
    if model.sizes[0] != data.train.shape[1]:
        raise ValueError(f"model input size {model.sizes[0]} does not match data dimension {data.train.shape[1]}")
    optimizer = make_optimizer(model, OmegaConf.to_container(cfg.optimizer, resolve=True))
    schedule = Schedule.from_config(cfg.schedule, int(cfg.epochs))
    return Run(cfg=cfg, run_dir=run_dir_for(cfg), device=device, data=data, model=model, optimizer=optimizer,
               step=make_step(model, optimizer, str(cfg.precision)), schedule=schedule, n_epochs=schedule.trained_epochs(cfg.stop_epoch),
               steps_per_epoch=n_train // batch_size,  # the notebook drops the last partial batch
               data_rng=torch.Generator(device=device), base_lrs=[g["lr"] for g in optimizer.param_groups])


def prepare(run: Run) -> None:
    """Inside the locked run directory: throw-away warm-up, fast paths, resumed state, logger, epoch 0."""
    cfg = run.cfg
    run.load_start = load_average()
    atomic_write_text(run.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    _throwaway_steps(run.model, OmegaConf.to_container(cfg.optimizer, resolve=True),
                     run.data.train[:int(cfg.batch_size)], int(cfg.throwaway_steps), str(cfg.precision))
    if cfg.compile:
        run.step = compiled_step(run.step)
    if cfg.cuda_graph:
        run.step = CudaGraphStep(run.step, run.optimizer)
    run.data_rng.manual_seed(cfg.seed)
    wandb_id = None
    if cfg.resume and run.checkpoint_path.exists():
        ckpt = torch.load(run.checkpoint_path, map_location=run.device, weights_only=False)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        if has_weight_modes(run.optimizer):  # saved with its evaluation weights in the model
            run.optimizer.train()
        torch.set_rng_state(ckpt["rng"]["torch"])
        run.data_rng.set_state(ckpt["rng"]["data"])
        if "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], run.device)
        run.rows, run.wallclock, wandb_id = ckpt["rows"], ckpt["wallclock"], ckpt.get("wandb_id")
        run.start_epoch = ckpt["epoch"] + 1
        run.begin_segment(ckpt["epoch"], ckpt.get("segments"))
        print(f"[resume] {run.run_dir} from epoch {ckpt['epoch']}")
    else:
        run.begin_segment(0, None)
    name = cfg.logger.name or f"{cfg.dataset.name}-{cfg.optimizer.name}-seed{cfg.seed}"
    run.logger = WandbLogger(cfg.logger, run.run_dir, OmegaConf.to_container(cfg, resolve=True), name=name,
                             group=str(cfg.logger.get("group") or cfg.group), run_id=wandb_id)
    if cfg.progress:
        steps = run.steps_per_epoch
        run.bar = tqdm(total=run.n_epochs * steps, initial=(run.start_epoch - 1) * steps, desc=name, unit="step",
                       file=sys.stderr, dynamic_ncols=True)
    if not run.rows:
        run.record(run.evaluate(0, 0.0, math.nan, 0.0))


def train(cfg: DictConfig, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Train one run described by `cfg`; returns its summary (also written to summary.json).

    `on_epoch(epoch, loss, replayed)` is called after every trained epoch with the epoch's primary
    train loss (see `Run.epoch_loss`); it may raise `PruneRun` to end the run. A resumed run first
    replays the epochs it trained before it stopped, with `replayed=True`: the callback had already
    seen them (its checkpoint is written after the call), so it may record them without judging them
    again. A run stopped by SIGTERM or SIGINT is recorded as 'stopped' (resumable), then
    `cli.Interrupted` is raised, so that the caller starts no other run.
    """
    previous = read_summary(run_dir_for(cfg))
    if previous is not None and previous.get("status") in FINAL_STATUSES:
        print(f"[skip] {run_dir_for(cfg)} already {previous['status']}")
        return previous
    summary_path = run_dir_for(cfg) / "summary.json"
    if previous is not None and not (summary_path.parent / "checkpoint.pt").exists() and tracked_by_git(summary_path):
        raise ValueError(f"{summary_path.parent} is a committed run ({previous.get('status')}); not overwriting it: "
                         "use another results_dir (or delete its summary.json to run it again)")
    run = start_run(cfg)
    with RunLock(run.run_dir):
        status, reason = "running", None
        signum = None
        with cli.stop_on_signals(_stop_run):  # a deadline, a scheduler or Ctrl-C ends the run as stopped, resumable
            try:
                prepare(run)
                for row in run.rows[1:] if on_epoch is not None else []:  # a resumed run replays its epochs
                    on_epoch(row["epoch"], run.epoch_loss(row), True)
                for epoch in run.epochs():
                    lr = run.set_lr(epoch)
                    train_loss, seconds = run.train_epoch(epoch)
                    run.record(run.evaluate(epoch, lr, train_loss, seconds))
                    reason = run.divergence()
                    if reason:
                        status = "diverged"
                        break
                    if on_epoch is not None:
                        on_epoch(epoch, run.epoch_loss(run.rows[-1]), False)
                    run.checkpoint()
                else:
                    status = run.end_status()
            except PruneRun as stop:
                status, reason = "pruned", str(stop) or None
            except StopRun as stop:
                while isinstance(stop.__cause__, StopRun):  # OmegaConf re-raises a signal it caught, wordier
                    stop = stop.__cause__
                said = str(stop).splitlines()[0] if str(stop) else "stopped"  # without what OmegaConf may add
                status, reason = "stopped", f"{said} after epoch {run.rows[-1]['epoch'] if run.rows else 0}"
                signum = stop.signum if stop.signum is not None else _signal_named(said)
            except Exception as err:  # noqa: BLE001 - record, then let the caller decide
                diverged = _numerical_failure(err, run.model)
                status = "diverged" if diverged else "failed"
                reason = f"{'non-finite values: ' if diverged else ''}{type(err).__name__}: {err}"
                if not diverged:
                    traceback.print_exc()
        summary = run.finish(status, reason)
    print(f"[{status}] {run.run_dir}" + (f" ({reason})" if reason else ""))
    if signum is not None:  # recorded and resumable; now the caller stops too, and starts no other run
        raise cli.Interrupted(signum)
    return summary


def _throwaway_steps(model, optimizer_cfg: dict[str, Any], batch, n_steps: int, precision: str = "float32") -> None:
    """Run a few steps on a throw-away copy of the model with its own optimizer, so one-time
    costs (allocator, kernel selection, lazy initialisation) stay out of the first epoch's
    wall-clock without touching the real trajectory."""
    if n_steps <= 0:
        return
    model_copy = copy.deepcopy(model)
    step = make_step(model_copy, make_optimizer(model_copy, optimizer_cfg), precision)
    for _ in range(n_steps):
        step(batch)
    _sync(batch.device)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    single = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN
    with cli.one_line_errors(debug=cli.debugging() or not single):  # in a multirun, Hydra reports each job
        summary = train(cfg)
    if summary["status"] == "failed":  # in a multirun, the other jobs still run; the exit status is 1
        raise RunFailed(f"run failed: {summary['reason']}")


def check_overrides(argv: list[str]) -> None:
    """Compose a single run's config before Hydra starts, so that a mistake in an override (an
    unknown key or choice, a renamed key) is reported in one line naming it."""
    check_renamed(argv)
    if not any(a.startswith("-") or a.startswith("hydra") for a in argv):  # Hydra's own flags: Hydra checks
        compose_config(argv)


def cli_main(argv: list[str], task: Callable[[], None]) -> None:
    """The command line: check the overrides, then run Hydra's app `task` on them."""
    check_overrides(argv)
    sys.argv = [sys.argv[0], *argv]
    task()


if __name__ == "__main__":
    # the task function by its module's name: a launcher that pickles it (hydra's submitit launcher)
    # then refers to benchmarks.train.main instead of copying this __main__ module with its globals
    from benchmarks.train import main as run_main
    cli.run(lambda argv: cli_main(argv, run_main))
