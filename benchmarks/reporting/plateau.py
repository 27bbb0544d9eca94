"""The mean-image plateau of a workload: the loss of predicting the mean training image for every image.

An autoencoder that has learned nothing about its input reaches this loss first (its output layer
alone can learn the mean image); a run whose loss never falls measurably below it has stalled.
The plateau is a property of the data, so it is computed from the data (per seed where the seed
draws the data) and kept beside the runs in `plateau.json`, where a report without the data finds it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.workloads import get_workload, load_dataset

PLATEAU_FILE = "plateau.json"
EPS = 1e-7  # the clamp of a predicted probability before the log (a pixel that is 0 or 1 in every image)
STALL_MARGIN = 0.01  # a run has left the plateau once its best loss is this fraction below it


def mean_image_loss(train: torch.Tensor, loss_kind: str) -> float:
    """The primary training loss of predicting the mean image: Bernoulli cross-entropy or squared
    error, summed over pixels and averaged over images, in float64."""
    x = train.double()
    mean = x.mean(0)
    if loss_kind == "bernoulli":
        p = mean.clamp(EPS, 1 - EPS)
        return float(-(x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean())
    return float(((x - mean) ** 2).sum(1).mean())


def plateau_record(folder: str | Path, dataset: str, seeds: list[int]) -> dict:
    """The plateau of `dataset` for `seeds` (one value for all seeds where the data does not depend on
    the seed): the record in `<folder>/plateau.json`, completed from the data where it is at hand.
    The caller writes it (`PLATEAU_FILE`); a seed whose plateau is unknown is absent."""
    path = Path(folder) / PLATEAU_FILE
    stored = json.loads(path.read_text()) if path.is_file() else {}
    workload = get_workload(dataset)
    by_seed = {int(k): float(v) for k, v in stored.get("by_seed", {}).items()}
    for seed in (sorted(set(seeds)) if workload.seed_draws_data else [0]):
        if seed not in by_seed:
            try:
                train = load_dataset(dataset, seed=seed).train
            except Exception:  # noqa: BLE001 - no data here: the plateau stays unknown
                continue
            by_seed[seed] = mean_image_loss(train, workload.loss_kind)
    return {"dataset": dataset, "metric": workload.primary_metric,
            "definition": "loss of predicting the mean training image"
                          + ("" if workload.seed_draws_data else " (the data does not depend on the seed)"),
            "by_seed": {str(k): by_seed[k] for k in sorted(by_seed)}}


def plateau_of(record: dict, seed: int) -> float | None:
    """The plateau a run of `seed` starts from (seed 0's where the data does not depend on it)."""
    by_seed = record.get("by_seed", {})
    value = by_seed.get(str(seed), by_seed.get("0") if get_workload(record["dataset"]).seed_draws_data is False else None)
    return None if value is None else float(value)


def on_plateau(best_loss: float, level: float | None) -> bool:
    """Whether a run never got measurably below the plateau `level` (its best loss above
    (1 - STALL_MARGIN) x the plateau); False where the plateau is unknown (not judged)."""
    return level is not None and best_loss >= (1 - STALL_MARGIN) * level
