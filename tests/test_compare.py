"""Comparing a user's own optimizer with the committed reference: the protocol comes from the
committed studies, the default search space follows its rule, and the quick path writes a
self-contained comparison with the new row ranked among the committed rows, leaving the checkout
untouched."""
from __future__ import annotations

import json
import math
import subprocess
import textwrap
from pathlib import Path

import optuna
import pandas as pd
import pytest
from scipy import stats

from benchmarks.orchestration.compare import QUICK_NOTE, default_lr, quick_protocol, resolve_optimizer, verdict
from benchmarks.reporting.statistics import paired_p
from benchmarks.tuning.protocol import ROOT, read_protocol
from benchmarks.results import HEALTHY, family_of, load_runs, mean_std
from scripts import compare

REPO = Path(__file__).resolve().parents[1]
MODULE = '''
import torch


class SignDescent(torch.optim.Optimizer):
    """w <- w - lr * sign(g): a user's optimizer the harness has never seen."""

    def __init__(self, params, lr=0.004):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


def without_lr(model, beta=0.9):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=beta)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_sign.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_sign"


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.slow
def test_the_read_protocol_is_the_one_every_keyed_study_recorded():
    for dataset in ("mnist", "faces_synth", "curves_synth"):
        protocol = read_protocol(ROOT, dataset)
        assert protocol.sources
        for source in protocol.sources:
            storage = f"sqlite:///{source}"
            recorded = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                                         storage=storage).user_attrs["protocol"]
            kwargs = protocol.as_dict()
            assert {k: recorded[k] for k in recorded if k in kwargs} == {k: kwargs[k] for k in recorded if k in kwargs}
        finals = ROOT / dataset / "runs" / "final" / dataset / "soap"
        assert protocol.seeds == len({json.loads(p.read_text())["seed"] for p in finals.glob("*/summary.json")})
        quick = quick_protocol(protocol)
        assert (quick.trials, quick.seeds) == (2, 1) and quick.sampler == protocol.sampler


def test_default_search_space_is_three_decades_of_lr_centred_on_the_signature_default(user_module, tmp_path):
    spec = resolve_optimizer(f"{user_module}.SignDescent", tmp_path / "out")
    lr = 0.004  # SignDescent's default
    assert default_lr(__import__(user_module).SignDescent) == lr
    assert spec.space == {"optimizer.lr": {"low": lr / 10 ** 1.5, "high": lr * 10 ** 1.5, "log": True}}
    assert "default search space" in spec.space_note
    assert (spec.name, spec.label, spec.family) == ("signdescent", "SignDescent", "other")
    config = tmp_path / "out" / "configs" / "optimizer" / "signdescent.yaml"
    assert config.is_file() and "_target_: user_sign.SignDescent" in config.read_text()
    with pytest.raises(ValueError, match="no positive lr default"):
        resolve_optimizer(f"{user_module}.without_lr", tmp_path / "out")
    with pytest.raises(ValueError, match="'adam' is a shipped optimizer"):
        resolve_optimizer("torch.optim.Adam", tmp_path / "out")


def test_the_verdict_pairs_seeds_on_regenerated_data_and_uses_welch_on_fixed_data():
    new, best = {0: 40.0, 1: 41.5, 2: 39.0}, {0: 37.0, 1: 37.2, 2: 36.9}
    p = paired_p(new, best)
    assert p == pytest.approx(stats.ttest_rel([40.0, 41.5, 39.0], [37.0, 37.2, 36.9]).pvalue)
    assert "paired t-test by seed, 3 pairs" in verdict("curves_synth", new, best, "Muon")
    assert "paired t-test" in verdict("faces_synth", new, best, "Muon")
    assert "Welch's t-test, 3 vs 3 seeds" in verdict("mnist", new, best, "SOAP")
    assert verdict("curves_synth", new, best, "Muon").startswith("higher than Muon")


@pytest.mark.slow
def test_quick_comparison_of_a_users_module_ranks_its_row_and_leaves_the_checkout_clean(user_module, tmp_path):
    before = _git_status()
    out = tmp_path / "cmp"
    common = [f"{user_module}.SignDescent", "--workloads", "curves_synth", "--protocol", "quick", "--out", str(out),
              "--bench-steps", "1", "--threads", "1"]
    assert compare.main([*common, "--dry-run"]) == 0
    assert not (out / "tuning").exists()  # a dry run trains nothing
    assert compare.main(common) == 0

    index = (out / "index.md").read_text()
    table = (out / "curves_synth.md").read_text()
    assert QUICK_NOTE in index and QUICK_NOTE in table
    assert (out / "figures" / "comparison.png").stat().st_size > 0
    assert (out / "tuning" / "curves_synth" / "signdescent.db").is_file()
    assert (out / "tuned" / "curves_synth" / "signdescent.yaml").is_file()

    # its rank: 1 + the committed rows of the paper's field with a lower mean final train loss
    new, _ = load_runs(out, "final")
    final = float(new["final_train_ce"].iloc[0])
    committed, _ = load_runs(ROOT / "curves_synth", "final")
    healthy = committed[committed["status"].isin(HEALTHY)]
    means = {o: mean_std(g["final_train_ce"])[0] for o, g in healthy.groupby("optimizer") if family_of(o) != "modern"}
    rank = 1 + sum(m < final for m in means.values() if math.isfinite(m))
    row = next(line for line in table.splitlines() if "**SignDescent** (new)" in line)
    assert row.split("|")[1].strip() == str(rank)
    assert f"{final:,.2f}" in row and "paired t-test by seed" in row
    n_rows = sum(1 for line in table.splitlines() if line.startswith("| ") and not line.startswith("| rank"))
    assert n_rows == committed["optimizer"].nunique() + 1
    assert pd.read_csv(out / "tables.csv")["optimizer"].tolist().count("signdescent") == 1
    assert _git_status() == before
