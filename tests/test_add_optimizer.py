"""Adding an optimizer is one file: a class in the user's own module and one config. Nothing else
is edited, and it trains, tunes over the default search space, and shows in the summary and figures."""
from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import yaml

from benchmarks import config, optimizers, workloads
from benchmarks.config import compose_config
from benchmarks.optimizers import optimizer_info
from benchmarks.tuning.space import search_space
from benchmarks.train import train
from scripts import figures
from scripts import summary as summary_cli
from benchmarks.tuning.protocol import Protocol
from benchmarks.tuning.search import Search
from tests.tiny import TINY_RUN

NAME = "signsgd_user_test"  # a name no shipped optimizer uses
TINY = [*TINY_RUN, "epochs=8"]

MODULE = '''
import torch


class SignSGD(torch.optim.Optimizer):
    """w <- w - lr * sign(g): a user's own optimizer, unknown to the harness."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
'''

CONFIG = f"""
_target_: user_optimizers.SignSGD
name: {NAME}
label: SignSGD
lr: 3.0e-3
"""


@pytest.fixture
def user_optimizer(tmp_path, monkeypatch):
    """The user's module on sys.path and their one config in a copy of configs/ (the checkout is
    never written: the registry and the composer read the copy)."""
    (tmp_path / "user_optimizers.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, configs)
    (configs / "optimizer" / f"{NAME}.yaml").write_text(CONFIG)
    for module in (config, optimizers, workloads):
        monkeypatch.setattr(module, "CONFIG_DIR", configs)
    yield


@pytest.mark.usefixtures("user_optimizer")
@pytest.mark.slow
def test_an_optimizer_of_one_module_and_one_config_trains_tunes_and_is_reported(tmp_path):
    info = optimizer_info(NAME)
    assert (info["label"], info["family"], info["paper"]) == ("SignSGD", "other", False)
    assert set(info["style"]) >= {"color", "linestyle", "marker"}
    space = search_space(NAME)  # no benchmarks/tuning/search_spaces file: the lr over three decades around 3e-3
    assert space == {"optimizer.lr": {"low": pytest.approx(3e-3 / 10 ** 1.5), "high": pytest.approx(3e-3 * 10 ** 1.5),
                                      "log": True}}

    results = tmp_path / "res"
    cfg = compose_config(["dataset=curves_synth", f"optimizer={NAME}", *TINY, "logger=disabled", "progress=false",
                          f"results_dir={results}"])
    assert train(cfg)["status"] == "finished"

    search = Search("curves_synth", NAME, results, Protocol(trials=2, seeds=2, eval_every=2, min_resource=2,
                                                             startup_trials=1, overrides=TINY),
                    tuned_dir=tmp_path / "tuned")
    while search.step() != "done":
        pass
    lrs = [t.params["optimizer.lr"] for t in search.study.get_trials()]
    assert len(lrs) == 2 and all(3e-3 / 10 ** 1.5 <= lr <= 3e-3 * 10 ** 1.5 for lr in lrs)
    exported = yaml.safe_load((tmp_path / "tuned" / "curves_synth" / f"{NAME}.yaml").read_text())
    assert exported["optimizer"]["lr"] in lrs

    assert summary_cli.main(["--results", str(results), "--group", "final", "--out", str(tmp_path / "sum")]) == 0
    assert "SignSGD" in (tmp_path / "sum" / "summary.md").read_text()
    assert figures.main(["--results", str(results), "--group", "final", "--out", str(tmp_path / "fig")]) == 0
    drawn = json.loads((tmp_path / "fig" / "provenance.json").read_text())
    assert any(NAME in json.dumps(entry) for entry in drawn.values())
