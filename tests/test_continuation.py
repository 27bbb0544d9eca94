"""The model-aware optimizers continue from their state_dict exactly as uninterrupted training goes on
(what a resumed run relies on): same losses, same weights, same optimizer state, bit for bit."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from baselines.dtp import DTP
from baselines.foof import FOOF
from baselines.kfac import KFAC
from tests.tiny import batch, tiny


@dataclass
class Case:
    make: type
    kwargs: dict[str, Any]
    batch_rows: int
    steps_before: int  # steps before the state is saved; as many after
    kept: Callable[[Any], list] = lambda opt: []  # what else must continue identically
    saved_check: Callable[[dict], bool] | None = None  # the saved state holds what the continuation needs


def _inverse_optimizers_have_state(saved: dict) -> bool:
    return all(len(st["state"]) == 2 for st in saved["extra"]["inverse_optimizers"])


CASES = {
    "foof": Case(FOOF, dict(lr=0.2, damping=0.1, inverse_update_period=3, momentum=0.5, weight_decay=1e-3), 10, 4),
    "kfac": Case(KFAC, dict(loss="bernoulli", damping=1.0, inverse_update_period=3, damping_adaptation_period=2), 12, 4,
                 kept=lambda opt: [opt.damping]),
    "dtp": Case(DTP, dict(lr=1e-2, inverse_lr=1e-2, top_lr=0.1, noise_std=0.2, forward_steps=2, inverse_steps=2), 10, 3,
                kept=lambda opt: list(opt.inverses.parameters()), saved_check=_inverse_optimizers_have_state),
}


@pytest.mark.parametrize("name", CASES)
def test_state_dict_continuation_equals_uninterrupted_training(name):
    case = CASES[name]
    xs = [batch(seed=30 + k, n=case.batch_rows) for k in range(2 * case.steps_before)]
    before, after = xs[:case.steps_before], xs[case.steps_before:]
    model_a = tiny()
    opt_a = case.make(model_a, **case.kwargs)
    torch.manual_seed(5)
    for x in before:
        opt_a.step(x, x)
    rng = torch.get_rng_state()
    saved_model = copy.deepcopy(model_a.state_dict())
    saved_opt = copy.deepcopy(opt_a.state_dict())
    losses_a = [opt_a.step(x, x) for x in after]

    model_b = tiny(seed=99)  # other initial weights, all overwritten below
    model_b.load_state_dict(saved_model)
    opt_b = case.make(model_b, **case.kwargs)
    opt_b.load_state_dict(saved_opt)
    if case.saved_check is not None:
        assert case.saved_check(saved_opt)
    torch.set_rng_state(rng)
    losses_b = [opt_b.step(x, x) for x in after]
    assert opt_a.steps == opt_b.steps == len(xs)
    torch.testing.assert_close(torch.stack(losses_b), torch.stack(losses_a), rtol=0, atol=0)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0)
    torch.testing.assert_close(case.kept(opt_b), case.kept(opt_a), rtol=0, atol=0)
