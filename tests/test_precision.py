"""Precision options: bf16 autocast for gradient optimizers, refused for model-aware ones; a
setting added later leaves the ids of earlier runs as they were."""
from __future__ import annotations

import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmarks.config import compose_config
from benchmarks.rundir import config_hash, run_dir_for, run_id_for, training_config
from benchmarks.train import train
from tests.tiny import one_thread  # noqa: F401 (a fixture)

TINY = ["dataset=curves_synth", "dataset.n_train=400", "dataset.n_test=100", "batch_size=100",
        "model.sizes=[784,32,8,32,784]", "epochs=6", "schedule=constant", "logger=disabled", "progress=false",
        "throwaway_steps=0"]


@pytest.mark.usefixtures("one_thread")
def test_a_bf16_run_follows_the_float32_trajectory(tmp_path):
    """Forward and backward under bf16 autocast, weights and Adam's state in float32: the loss of a
    short run stays within a few percent of the float32 run's, epoch by epoch (bf16 has 8 bits of
    mantissa: the two are not equal, and the test says how close)."""
    losses = {}
    for precision in ("float32", "bf16"):
        cfg = compose_config([*TINY, "optimizer=adam", "optimizer.lr=3e-3", f"precision={precision}",
                              f"results_dir={tmp_path / precision}"])
        assert train(cfg)["status"] == "finished"
        losses[precision] = pd.read_csv(run_dir_for(cfg) / "metrics.csv").train_ce.to_numpy()
    relative = abs(losses["bf16"] - losses["float32"]) / losses["float32"]
    assert relative.max() < 0.03, relative
    assert losses["bf16"][-1] < 0.8 * losses["bf16"][0]  # it trains
    assert (losses["bf16"] != losses["float32"]).any()  # and it did run in bf16


def test_bf16_is_refused_for_a_model_aware_optimizer_before_anything_is_written(tmp_path):
    cfg = compose_config([*TINY, "optimizer=kfac", "precision=bf16", f"results_dir={tmp_path}"])
    with pytest.raises(ValueError, match="precision=bf16 is offered for gradient optimizers; KFAC runs its own"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_precision_at_its_default_leaves_run_ids_as_before():
    cfg = compose_config([*TINY, "optimizer=adam"])
    older = OmegaConf.to_container(cfg, resolve=True)
    older.pop("precision")  # a run configured before the setting existed
    assert run_id_for(cfg) == f"seed0-{config_hash(training_config(OmegaConf.create(older)))}"
    assert run_id_for(compose_config([*TINY, "optimizer=adam", "precision=bf16"])) != run_id_for(cfg)
