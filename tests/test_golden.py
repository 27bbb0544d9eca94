"""Behaviour is preserved: short runs of every optimizer give the metrics recorded before the redesign.

The golden files in tests/golden/ were written by this test (`RECORD_GOLDEN=1 pytest
tests/test_golden.py`) at the last commit before the one-way-architecture redesign, on one thread.
On the machine and torch build that recorded them the numbers must match exactly; elsewhere a
different BLAS kernel may round float32 differently, so they must match to 1e-5 (relative).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks import data
from benchmarks.config import CONFIG_DIR, compose_config
from benchmarks.rundir import cpu_model, run_dir_for
from benchmarks.train import train
from tests.tiny import one_thread  # noqa: F401 (a fixture)

GOLDEN = Path(__file__).resolve().parent / "golden"
COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se"]
COMMON = ["logger=disabled", "progress=false", "throwaway_steps=0"]  # recorded as warmup_steps=0 (renamed)
CURVES = ["dataset=curves_synth", "dataset.n_train=300", "dataset.n_test=100", "batch_size=100",
          "model.sizes=[784,32,8,32,784]", "epochs=2", "schedule=constant"]
MNIST = ["dataset=mnist", "dataset.n_train=2000", "dataset.n_test=500", "epochs=1"]
OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
CASES = {**{f"curves_synth-{o}": [*CURVES, f"optimizer={o}"] for o in OPTIMIZERS},
         **{f"mnist-{o}": [*MNIST, f"optimizer={o}"] for o in ("locoprop_m", "kfac")}}
RECORD = os.environ.get("RECORD_GOLDEN") == "1"


def machine() -> dict[str, str]:
    """What decides float32 rounding: the CPU model and the torch build."""
    return {"cpu": cpu_model(), "torch": torch.__version__}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", sorted(CASES) if RECORD else sorted(p.stem for p in GOLDEN.glob("*.csv")))
def test_metrics_equal_the_recorded_golden_run(case, tmp_path):
    if case.startswith("mnist") and not data.default_root("mnist").is_dir():
        pytest.skip("the real MNIST files are not beside the repository")
    cfg = compose_config([*CASES[case], *COMMON, f"results_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["status"] == "finished", summary["reason"]
    got = pd.read_csv(run_dir_for(cfg) / "metrics.csv")[COLUMNS]
    path = GOLDEN / f"{case}.csv"
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        got.to_csv(path, index=False, float_format="%.17g")
        (GOLDEN / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")
        return
    want = pd.read_csv(path)
    same_machine = json.loads((GOLDEN / "machine.json").read_text()) == machine()
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=same_machine, rtol=1e-5)
