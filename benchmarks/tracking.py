"""Where a run's numbers go: atomic local files (the source of truth) and Weights & Biases.

Local tables never depend on W&B: figures and tables are drawn from `metrics.csv` and
`summary.json`. W&B is best effort: 'auto' goes online only when credentials exist and falls
back to offline (sync later with `wandb sync <run_dir>/wandb/offline-run-*`) when the service
cannot be reached, so no network call can hang or kill a run.
"""
from __future__ import annotations

import csv
import io
import math
import netrc
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmarks.rundir import json_safe

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se",
                  "wallclock_s", "epoch_time_s", "step_ms"]


def metrics_csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                         for k, v in row.items()})
    return buf.getvalue()


def wandb_credentials_present() -> bool:
    """True when an API key is configured (env var or ~/.netrc), i.e. online logging can work."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_reachable(host: str = "api.wandb.ai", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class WandbLogger:
    """A thin W&B wrapper whose mode is resolved once and whose failures only warn."""

    def __init__(self, cfg: Mapping[str, Any], run_dir: Path, run_config: Mapping[str, Any], name: str,
                 group: str, run_id: str | None = None):
        self.run = None
        self.mode = None
        mode = cfg.get("mode", "auto")
        if mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"logger.mode must be auto, online, offline or disabled, got {mode!r}")
        if mode == "disabled":
            return
        if mode == "auto":
            mode = "online" if wandb_credentials_present() and _wandb_reachable() else "offline"
        elif mode == "online" and not _wandb_reachable():
            warnings.warn("W&B is unreachable: logging offline instead (sync later with `wandb sync`)")
            mode = "offline"
        import wandb

        (run_dir / "wandb").parent.mkdir(parents=True, exist_ok=True)
        kwargs = dict(project=cfg.get("project"), entity=cfg.get("entity"), group=group, name=name,
                      tags=list(cfg.get("tags") or []), config=dict(run_config), dir=str(run_dir),
                      id=run_id, resume="allow" if run_id else None, reinit="finish_previous")
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=cfg.get("init_timeout", 30),
                                                                     console="off", silent=True), **kwargs)
        except Exception as err:  # noqa: BLE001 - any W&B failure must not kill the run
            if mode == "online":
                warnings.warn(f"W&B online init failed ({err}); logging offline instead")
                try:
                    self.run = wandb.init(mode="offline", settings=wandb.Settings(console="off", silent=True), **kwargs)
                except Exception as err2:  # noqa: BLE001
                    warnings.warn(f"W&B offline init failed too ({err2}); W&B logging disabled for this run")
            else:
                warnings.warn(f"W&B init failed ({err}); W&B logging disabled for this run")
        if self.run is not None:
            self.mode = "offline" if self.run.settings.mode == "offline" else mode
            self.run.define_metric("global_step")
            self.run.define_metric("train/minibatch_loss", step_metric="global_step")
            self.run.define_metric("epoch")
            for key in METRIC_COLUMNS[1:]:
                self.run.define_metric(f"epoch/{key}", step_metric="epoch")
                self.run.define_metric(f"time/{key}", step_metric="wallclock_s")
            self.run.define_metric("wallclock_s")

    @property
    def id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log_steps(self, first_step: int, losses: list[float]) -> None:
        if self.run is None:
            return
        for i, loss in enumerate(losses):
            self.run.log({"global_step": first_step + i, "train/minibatch_loss": loss})

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        data = {"epoch": row["epoch"], "wallclock_s": row["wallclock_s"]}
        for key in METRIC_COLUMNS[1:]:
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                data[f"epoch/{key}"] = value
                data[f"time/{key}"] = value
        self.run.log(data)

    def finish(self, summary: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(json_safe(dict(summary)))
            run_dir = Path(self.run.dir).parent.parent
            self.run.finish()
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"W&B finish failed ({err})")
            return
        if self.mode == "offline":
            print(f"[wandb] offline run {self.id}; upload it with: {sync_command(self.id, run_dir)}")


def sync_command(run_id: str, wandb_dir: Path) -> str:
    """How to upload a run logged offline. A resumed run leaves one offline folder per session, all
    with the same run id; `--id` syncs them into that one run, oldest first."""
    return f"wandb sync --id {run_id} {wandb_dir}/offline-run-*-{run_id}"
