"""Muon, SOAP and Schedule-Free AdamW: each config builds its library's optimizer with the usual
split or hook, checked against the library used by hand on a small problem; and the contract's
evaluation-weights hook as the runner uses it."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from baselines.muon import split_parameters
from benchmarks.config import compose_config
from benchmarks.models import build_autoencoder
from benchmarks.optimizers import evaluation_weights, make_optimizer, make_step
from benchmarks.rundir import run_dir_for
from benchmarks.train import train
from tests.tiny import one_thread, tiny_run  # noqa: F401 (one_thread: a fixture)

SIZES = [12, 8, 4, 8, 12]
TINY_RUN = ["dataset=curves_synth", *tiny_run(batch_size=50), "logger=disabled", "progress=false"]
COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se"]


def config(name: str, *overrides: str) -> dict:
    return OmegaConf.to_container(compose_config([f"optimizer={name}", *overrides]).optimizer, resolve=True)


def batches(n: int = 6) -> list[torch.Tensor]:
    return [torch.rand(16, SIZES[0], generator=torch.Generator().manual_seed(i)) for i in range(n)]


def harness_and_by_hand(name: str, build_by_hand, *overrides: str):
    """The same model trained by the harness's optimizer and step, and by the library used directly."""
    torch.manual_seed(0)
    model = build_autoencoder(sizes=SIZES)
    twin = copy.deepcopy(model)
    step = make_step(model, make_optimizer(model, config(name, *overrides)))
    by_hand = build_by_hand(twin)
    for x in batches():
        step(x)
        by_hand.zero_grad()
        twin.loss(x).backward()
        by_hand.step()
    return model, twin


def assert_same_parameters(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.usefixtures("one_thread")
def test_muon_on_hidden_matrices_and_adamw_on_the_rest_equals_torch_by_hand():
    def by_hand(model):
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        hidden = [m.weight for m in linears[1:-1]]
        rest = [linears[0].weight, linears[-1].weight, *(m.bias for m in linears)]
        muon = torch.optim.Muon(hidden, lr=3e-3, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0,
                                adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(rest, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

        class Both:
            def zero_grad(self):
                muon.zero_grad(), adamw.zero_grad()

            def step(self):
                muon.step(), adamw.step()
        return Both()

    model, twin = harness_and_by_hand("muon", by_hand, "optimizer.lr=3e-3")
    assert_same_parameters(model, twin)
    hidden, rest = split_parameters(model)
    assert [tuple(p.shape) for p in hidden] == [(4, 8), (8, 4)]
    assert sorted(tuple(p.shape) for p in rest) == [(4,), (8,), (8,), (8, 12), (12,), (12, 8)]


@pytest.mark.usefixtures("one_thread")
def test_muon_lr_schedule_reaches_both_parts_and_its_state_round_trips():
    torch.manual_seed(0)
    model = build_autoencoder(sizes=SIZES)
    opt = make_optimizer(model, config("muon"))
    assert len(opt.param_groups) == 2
    for group in opt.param_groups:  # what the runner's schedule does every epoch
        group["lr"] = 0.5e-3
    assert [g["lr"] for part in opt.optimizers for g in part.param_groups] == [0.5e-3, 0.5e-3]
    step = make_step(model, opt)
    xs = batches(8)
    for x in xs[:4]:
        step(x)
    twin = copy.deepcopy(model)
    resumed = make_optimizer(twin, config("muon"))
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    step_twin = make_step(twin, resumed)
    for x in xs[4:]:
        step(x), step_twin(x)
    assert_same_parameters(model, twin)


@pytest.mark.usefixtures("one_thread")
def test_soap_config_is_pytorch_optimizers_soap():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer", reason="the optional dependencies 'modern' "
                                            "(pip install -e '.[modern]') are not installed")

    def by_hand(model):
        return pytorch_optimizer.SOAP(model.parameters(), lr=1e-3, betas=(0.95, 0.95), shampoo_beta=None, eps=1e-8,
                                      weight_decay=0.0, precondition_frequency=10, max_precondition_dim=10000,
                                      precondition_1d=False, correct_bias=True)

    model, twin = harness_and_by_hand("soap", by_hand, "optimizer.lr=1e-3", "optimizer.precondition_frequency=10")
    assert_same_parameters(model, twin)


@pytest.mark.usefixtures("one_thread")
def test_schedule_free_config_is_the_library_with_its_weights_switched_for_evaluation():
    schedulefree = pytest.importorskip("schedulefree", reason="the optional dependencies 'modern' "
                                       "(pip install -e '.[modern]') are not installed")
    torch.manual_seed(0)
    model = build_autoencoder(sizes=SIZES)
    twin = copy.deepcopy(model)
    opt = make_optimizer(model, config("schedulefree_adamw", "optimizer.lr=1e-2"))
    by_hand = schedulefree.AdamWScheduleFree(twin.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                             weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0)
    by_hand.train()
    step = make_step(model, opt)
    for x in batches():
        step(x)
        by_hand.zero_grad()
        twin.loss(x).backward()
        by_hand.step()
    assert_same_parameters(model, twin)
    training = [p.detach().clone() for p in model.parameters()]
    by_hand.eval()  # the average x: what evaluations and checkpoints must see
    with evaluation_weights(opt):
        assert_same_parameters(model, twin)
        assert max(float((p.detach() - q).abs().max()) for p, q in zip(model.parameters(), training)) > 1e-4
    for p, q in zip(model.parameters(), training):  # back to the training weights y
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_schedule_free_runs_warm_up_then_a_constant_lr():
    cfg = compose_config(["optimizer=schedulefree_adamw"])
    assert (cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.skip_final_epoch) == ("constant", 5, True)
    assert compose_config(["optimizer=schedulefree_adamw", "schedule=official"]).schedule.name == "official"


class SwitchSpy(torch.optim.SGD):
    """SGD with Schedule-Free's hook: eval() and train() flip a flag (and shift the weights, so a
    metric computed in the wrong mode shows)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)
        self.evaluating = False
        self.log: list[str] = []

    def eval(self):
        assert not self.evaluating
        self.evaluating = True
        self.log.append("eval")

    def train(self):
        self.evaluating = False
        self.log.append("train")


def test_runner_evaluates_and_checkpoints_with_the_evaluation_weights_and_trains_with_the_others(tmp_path, monkeypatch):
    from benchmarks import train as runner

    seen = []
    real_metrics, real_save = runner.Autoencoder.metrics, runner.atomic_torch_save
    spies = []
    real_make = runner.make_optimizer

    def make(model, cfg):
        opt = real_make(model, cfg)
        spies.append(opt)
        return opt

    def metrics(self, *args, **kwargs):
        seen.append(("metrics", spies[-1].evaluating))
        return real_metrics(self, *args, **kwargs)

    def save(path, obj):
        seen.append(("checkpoint", spies[-1].evaluating))
        return real_save(path, obj)

    monkeypatch.setattr(runner, "make_optimizer", make)
    monkeypatch.setattr(runner.Autoencoder, "metrics", metrics)
    monkeypatch.setattr(runner, "atomic_torch_save", save)
    cfg = compose_config([*TINY_RUN, "optimizer=sgd", "optimizer._target_=tests.test_modern_optimizers.SwitchSpy",
                          "~optimizer.weight_decay", f"results_dir={tmp_path}", "epochs=3", "schedule=constant"])
    assert train(cfg)["status"] == "finished"
    assert seen and all(evaluating for _, evaluating in seen)
    assert spies[-1].log[0] == "train" and spies[-1].log[-1] == "train"  # built, and left, in training mode


def test_a_resumed_schedule_free_run_equals_the_uninterrupted_one(tmp_path):
    pytest.importorskip("schedulefree", reason="the optional dependencies 'modern' are not installed")
    common = [*TINY_RUN, "optimizer=schedulefree_adamw", "optimizer.lr=3e-3", "epochs=8", "eval_every=1"]
    whole = compose_config([*common, f"results_dir={tmp_path / 'whole'}"])
    assert train(whole)["status"] == "finished"
    parts = [*common, f"results_dir={tmp_path / 'parts'}"]
    assert train(compose_config([*parts, "stop_epoch=3"]))["status"] == "stopped"  # its checkpoint stays
    assert train(compose_config(parts))["status"] == "finished"  # resumes at epoch 4
    a = pd.read_csv(run_dir_for(whole) / "metrics.csv")[COLUMNS]
    b = pd.read_csv(run_dir_for(compose_config(parts)) / "metrics.csv")[COLUMNS]
    pd.testing.assert_frame_equal(a, b)
