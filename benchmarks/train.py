"""The training runner: `python -m benchmarks.train dataset=mnist optimizer=adam epochs=1`.

Linear top to bottom, nanoGPT style: config -> data -> model -> optimizer -> epochs of
(seeded on-device permutation, steps, synchronised wall-clock, untimed evaluation, metrics row,
divergence check, checkpoint) -> summary. Every run lives in
`<results_dir>/runs/<group>/<dataset>/<optimizer>/<run_id>/` with `config.yaml`, `metrics.csv`
(one row per epoch; epoch 0 is the initial model), `summary.json` (written once, at the end)
and, while unfinished, `checkpoint.pt` so an interrupted run resumes where it stopped.
The run id is `seed<seed>-<hash of the training-relevant config>`: the same config always maps
to the same directory (re-runs skip or resume), different configs never share one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from baselines.factory import make_optimizer, make_step
from benchmarks.data import load_dataset
from benchmarks.fast import CudaGraphStep, compiled_step
from benchmarks.models import ARCHITECTURES, build_autoencoder
from benchmarks.schedule import epochs_to_train, lr_factor, short_run
from benchmarks.tracking import WandbLogger, atomic_write_json, atomic_write_text, metrics_csv_text

# Keys that do not change what is trained, so they stay out of the run id.
_ID_EXCLUDED = ("logger", "results_dir", "progress", "group", "resume", "stop_epoch", "eval_batch_size", "warmup_steps",
                "eval_every", "tuned_source", "hydra", "device")
_ID_EXCLUDED_DATASET = ("root", "download")
FINAL_STATUSES = ("finished", "diverged")
DIVERGED_PENALTY = 1.0e9  # objective returned to sweepers for diverged or failed runs


class PruneRun(Exception):
    """Raised by an `on_epoch` callback to end a run early (e.g. a tuning trial that Optuna prunes).

    The run ends with status 'pruned': its files are written, its checkpoint deleted, and the
    same config run again starts afresh."""


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
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 0
    num = HydraConfig.get().job.get("num")
    return int(num) if num is not None else 0


def run_id_for(cfg: DictConfig) -> str:
    """`seed<seed>-<8 hex>`: a hash of the resolved config without the bookkeeping keys."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in _ID_EXCLUDED:
        data.pop(key, None)
    for key in _ID_EXCLUDED_DATASET:
        data.get("dataset", {}).pop(key, None)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"seed{cfg.seed}-{digest}"


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.results_dir) / "runs" / str(cfg.group) / cfg.dataset.name / cfg.optimizer.name / run_id_for(cfg)


def architecture_for(dataset_name: str) -> str:
    base = dataset_name.split("_")[0]
    if base not in ARCHITECTURES:
        raise ValueError(f"no architecture known for dataset {dataset_name!r}; set model.architecture or model.sizes")
    return base


class RunLock:
    """An exclusive lock file, so two concurrent jobs never write the same run directory."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "run.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, me.encode())
                os.close(fd)
                return self
            except FileExistsError:
                owner = self.path.read_text().strip()
                host, _, pid = owner.partition(":")
                if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
                    self.path.unlink(missing_ok=True)  # stale lock of a killed process on this host
                    continue
                raise RuntimeError(f"run directory {self.path.parent} is in use by {owner} (remove {self.path} if stale)")
        raise RuntimeError(f"could not lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host is running (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def divergence_reason(cfg: DictConfig, loss: float, best: float, epoch: int, initial: float) -> str | None:
    """Why the run counts as diverged after `epoch`, or None.

    Always on: a non-finite loss, or a loss above `max_loss_ratio` x the initial model's (a
    ceiling that scales with the data set). Optional: the LocoProp notebook's tuning exits.
    """
    rules = cfg.divergence
    if not math.isfinite(loss):
        return f"non-finite train loss at epoch {epoch}"
    ratio = rules.get("max_loss_ratio")
    if ratio is not None and math.isfinite(initial) and loss > ratio * initial:
        return f"train loss {loss:.4g} > {ratio} x the initial {initial:.4g} at epoch {epoch}"
    if rules.max_loss is not None and loss > rules.max_loss:
        return f"train loss {loss:.4g} > max_loss {rules.max_loss} at epoch {epoch}"
    if rules.max_best_loss is not None and best > rules.max_best_loss:
        return f"best train loss {best:.4g} > max_best_loss {rules.max_best_loss} at epoch {epoch}"
    if (rules.patience_epoch is not None and rules.patience_loss is not None
            and epoch >= rules.patience_epoch and best > rules.patience_loss):
        return f"best train loss {best:.4g} still > {rules.patience_loss} after epoch {epoch}"
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(device: torch.device, data_rng: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": data_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device, data_rng: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_rng.set_state(state["data"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _summary(rows: list[dict[str, Any]], status: str, reason: str | None, primary: str, extra: dict[str, Any]) -> dict[str, Any]:
    trained = [r for r in rows if r["epoch"] > 0]
    summary = {"status": status, "reason": reason, "primary_metric": primary,
               "epochs_completed": rows[-1]["epoch"] if rows else 0,
               "wallclock_s": rows[-1]["wallclock_s"] if rows else 0.0,
               "step_ms_median": float(np.median([r["step_ms"] for r in trained])) if trained else None}
    for key in ("train_ce", "test_ce", "train_se", "test_se"):
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        summary[f"final_{key}"] = values[-1] if values else None
        finite = [v for v in values if math.isfinite(v)]
        summary[f"best_{key}"] = min(finite) if finite else None
    summary.update(extra)
    return summary


def train(cfg: DictConfig, on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train one run described by `cfg`; returns its summary (also written to summary.json).

    `on_epoch(epoch, loss)` is called after every trained epoch with the epoch's primary train
    loss (the full evaluation where one ran, else the running mean of the mini-batch losses in
    the primary metric's units); it may raise `PruneRun` to end the run early.
    """
    device = resolve_device(cfg.device)
    run_dir = run_dir_for(cfg)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        previous = json.loads(summary_path.read_text())
        if previous.get("status") in FINAL_STATUSES:
            print(f"[skip] {run_dir} already {previous['status']}")
            return previous
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)  # recorded in config.yaml either way
    torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)

    with RunLock(run_dir):
        load_start = _load_average()
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        data = load_dataset(cfg.dataset.name, root=cfg.dataset.root, download=cfg.dataset.download, device=device,
                            seed=cfg.seed, n_train=cfg.dataset.n_train, n_test=cfg.dataset.n_test)
        primary = "train_ce" if data.loss_kind == "bernoulli" else "train_se"
        n_train, batch_size = data.train.shape[0], int(cfg.batch_size)
        if not 1 <= batch_size <= n_train:
            raise ValueError(f"batch_size must be in [1, {n_train}] for {cfg.dataset.name}, got {batch_size}")
        steps_per_epoch = n_train // batch_size  # the notebook drops the last partial batch

        torch.manual_seed(cfg.seed)
        m = cfg.model
        model = build_autoencoder(sizes=list(m.sizes) if m.sizes else None,
                                  dataset=m.architecture or architecture_for(cfg.dataset.name),
                                  activation=m.activation, loss_kind=data.loss_kind, init=m.init,
                                  width_multiplier=m.width_multiplier, depth_multiplier=m.depth_multiplier).to(device)
        if model.sizes[0] != data.train.shape[1]:
            raise ValueError(f"model input size {model.sizes[0]} does not match data dimension {data.train.shape[1]}")
        optimizer_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
        optimizer = make_optimizer(model, optimizer_cfg)
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        step = make_step(model, optimizer)
        _warm_up(model, optimizer_cfg, data.train[:batch_size], int(cfg.warmup_steps))
        if cfg.compile:
            step = compiled_step(step)
        if cfg.cuda_graph:
            step = CudaGraphStep(step, optimizer)
        data_rng = torch.Generator(device=device)
        data_rng.manual_seed(cfg.seed)

        sched_name, warmup_epochs, skip_final = cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.skip_final_epoch
        if short_run(sched_name, cfg.epochs, warmup_epochs):
            warnings.warn(f"epochs={cfg.epochs} is too short for the {sched_name} schedule with {warmup_epochs} "
                          "warm-up epochs: using a constant learning rate for this run")
            sched_name, warmup_epochs, skip_final = "constant", 0, False
        n_epochs = epochs_to_train(cfg.epochs, skip_final, cfg.stop_epoch)
        rows: list[dict[str, Any]] = []
        start_epoch, wallclock, wandb_id = 1, 0.0, None
        checkpoint_path = run_dir / "checkpoint.pt"
        if cfg.resume and checkpoint_path.exists():
            ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            _set_rng_state(ckpt["rng"], device, data_rng)
            rows, wallclock, wandb_id = ckpt["rows"], ckpt["wallclock"], ckpt.get("wandb_id")
            start_epoch = ckpt["epoch"] + 1
            print(f"[resume] {run_dir} from epoch {ckpt['epoch']}")

        name = cfg.logger.name or f"{cfg.dataset.name}-{cfg.optimizer.name}-seed{cfg.seed}"
        logger = WandbLogger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True), name=name,
                             group=str(cfg.group), run_id=wandb_id)

        eval_every = int(cfg.eval_every)
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")

        def evaluate(epoch: int, lr: float, train_loss: float, epoch_time: float) -> dict[str, Any]:
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "wallclock_s": wallclock,
                   "epoch_time_s": epoch_time, "step_ms": 1e3 * epoch_time / steps_per_epoch if epoch else None}
            if epoch % eval_every and epoch != n_epochs:  # cheap epoch: no full evaluation
                return {**row, "train_ce": math.nan, "test_ce": math.nan, "train_se": math.nan, "test_se": math.nan}
            model.eval()
            train_m = model.metrics(data.train, cfg.eval_batch_size)
            test_m = model.metrics(data.test, cfg.eval_batch_size)
            model.train()
            return {**row, "train_ce": train_m["ce"], "test_ce": test_m["ce"], "train_se": train_m["se"],
                    "test_se": test_m["se"]}

        if not rows:
            rows.append(evaluate(0, 0.0, float("nan"), 0.0))
            logger.log_epoch(rows[0])
        status, reason = "running", None
        initial = rows[0][primary]
        running_scale = 2.0 if primary == "train_se" else 1.0  # the gaussian training loss is SE / 2
        best = min((_epoch_loss(r, primary, running_scale) for r in rows[1:]), default=math.inf)
        best = best if math.isfinite(best) else math.inf
        bar = None
        if cfg.progress and n_epochs - start_epoch + 1 > 1:
            from tqdm import tqdm
            bar = tqdm(total=n_epochs, initial=start_epoch - 1, desc=name, unit="epoch", file=sys.stderr)
        try:
            if on_epoch is not None:  # a resumed run replays its finished epochs to the callback
                for r in rows[1:]:
                    on_epoch(r["epoch"], _epoch_loss(r, primary, running_scale))
            for epoch in range(start_epoch, n_epochs + 1):
                factor = lr_factor(sched_name, epoch - 1, cfg.epochs, warmup_epochs)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                perm = torch.randperm(n_train, generator=data_rng, device=device)
                losses = []
                _sync(device)
                t0 = time.perf_counter()
                for b in range(steps_per_epoch):
                    losses.append(step(data.train[perm[b * batch_size:(b + 1) * batch_size]]))
                _sync(device)
                epoch_time = time.perf_counter() - t0
                wallclock += epoch_time
                step_losses = torch.stack(losses).float().cpu().tolist()  # the epoch's one host read
                train_loss = float(np.mean(step_losses))
                if cfg.logger.get("log_steps", True):
                    logger.log_steps((epoch - 1) * steps_per_epoch, step_losses)
                row = evaluate(epoch, base_lrs[0] * factor, train_loss, epoch_time)
                rows.append(row)
                logger.log_epoch(row)
                loss = _epoch_loss(row, primary, running_scale)
                best = min(best, loss) if math.isfinite(loss) else best
                atomic_write_text(run_dir / "metrics.csv", metrics_csv_text(rows))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({primary: f"{loss:.3f}"})
                reason = divergence_reason(cfg, loss, best, epoch, initial)
                if reason:
                    status = "diverged"
                    break
                if on_epoch is not None:
                    on_epoch(epoch, loss)
                _save_checkpoint(checkpoint_path, {"epoch": epoch, "model": model.state_dict(),
                                                   "optimizer": optimizer.state_dict(), "rng": _rng_state(device, data_rng),
                                                   "rows": rows, "wallclock": wallclock, "wandb_id": logger.id})
            else:
                finished = n_epochs >= epochs_to_train(cfg.epochs, skip_final)
                status = "finished" if finished else "stopped"
        except PruneRun as stop:
            status, reason = "pruned", str(stop) or None
        except Exception as err:  # noqa: BLE001 - record, then let the caller decide
            if isinstance(err, FloatingPointError) or not _finite_parameters(model):
                status, reason = "diverged", f"non-finite values during training ({type(err).__name__}: {err})"
            else:
                status, reason = "failed", f"{type(err).__name__}: {err}"
                traceback.print_exc()
        finally:
            if bar is not None:
                bar.close()
        atomic_write_text(run_dir / "metrics.csv", metrics_csv_text(rows))
        _save_reconstructions(run_dir, model, data)
        extra = {"run_dir": run_dir.relative_to(cfg.results_dir).as_posix(), "device": device_name(device),
                 "dataset": cfg.dataset.name, "optimizer": cfg.optimizer.name, "seed": int(cfg.seed),
                 "steps_per_epoch": steps_per_epoch, "eval_every": eval_every, "torch": torch.__version__,
                 "git_commit": git_commit(), "load_average_start": load_start, "load_average_end": _load_average(),
                 "cpu_count": os.cpu_count()}
        summary = _summary(rows, status, reason, primary, extra)
        atomic_write_json(summary_path, summary)
        if status in FINAL_STATUSES or status == "pruned":
            checkpoint_path.unlink(missing_ok=True)
        logger.finish(summary)
    print(f"[{status}] {run_dir}" + (f" ({reason})" if reason else ""))
    return summary


def _epoch_loss(row: dict[str, Any], primary: str, running_scale: float) -> float:
    """The epoch's primary train loss: the full evaluation if one ran, else the running mean of the
    mini-batch losses in the primary metric's units (NaN stays NaN: it means divergence)."""
    value = row[primary]
    if value is None or math.isnan(value) or not math.isfinite(row["train_loss"]):
        value = row["train_loss"] * running_scale
    return value


def _finite_parameters(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: wall-clock times measured under load are inflated."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _warm_up(model, optimizer_cfg: dict[str, Any], batch, n_steps: int) -> None:
    """Run a few steps on a throw-away copy of the model with its own optimizer, so one-time
    costs (allocator, kernel selection, lazy initialisation) stay out of the first epoch's
    wall-clock without touching the real trajectory."""
    if n_steps <= 0:
        return
    model_copy = copy.deepcopy(model)
    step = make_step(model_copy, make_optimizer(model_copy, optimizer_cfg))
    for _ in range(n_steps):
        step(batch)
    _sync(batch.device)


def _save_reconstructions(run_dir: Path, model, data, n: int = 10) -> None:
    """The first test images and the model's reconstructions, for the figures' image grid."""
    with torch.no_grad():
        x = data.test[:n]
        out = model(x)
    tmp = run_dir / "reconstructions.tmp.npz"
    np.savez_compressed(tmp, inputs=x.float().cpu().numpy(), outputs=out.float().cpu().numpy(),
                        image_shape=np.array(data.image_shape))
    os.replace(tmp, run_dir / "reconstructions.npz")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def git_commit() -> str | None:
    """The repository's HEAD commit, recorded with every run and tuned config (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def objective(summary: dict[str, Any]) -> float:
    """What a sweeper minimises: the best primary train loss; a large penalty for diverged/failed runs."""
    if summary.get("status") not in ("finished", "stopped"):
        return DIVERGED_PENALTY
    best = summary.get(f"best_{summary['primary_metric']}")
    return float(best) if best is not None else DIVERGED_PENALTY


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    summary = train(cfg)
    if summary["status"] == "failed" and HydraConfig.get().mode != RunMode.MULTIRUN:
        raise SystemExit(f"run failed: {summary['reason']}")
    return objective(summary)


if __name__ == "__main__":
    main()
