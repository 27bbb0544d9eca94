"""K-FAC's and Shampoo's preconditioner refreshes, batched by size with one host synchronisation:
the same numbers as a plain layer-by-layer refresh (written out here), and, on a GPU, one sync."""
from __future__ import annotations

import warnings

import pytest
import torch

from baselines.kfac import KFAC
from baselines.shampoo import Shampoo
from tests.tiny import batch, tiny


# ----------------------------------------------------------------------------- K-FAC

def reference_kfac_refresh(opt: KFAC) -> list[dict]:
    """The refresh layer by layer, in float64: a finite check, a Cholesky (or a clamped eigh) per
    factor for factored damping, eigh per factor for exact damping. Returns per layer what it
    would store (None where it keeps the previous inverse)."""
    group = opt._group()
    lam_eta = (opt._damping + group["weight_decay"]).double()
    gamma = lam_eta.sqrt()
    out = []
    for layer in opt.layers:
        st = opt.state[layer.linear.weight]
        a, g = st["A"].double(), st["G"].double()
        if not (torch.isfinite(a).all() and torch.isfinite(g).all()):
            out.append(None)
            continue
        if group["exact_damping"]:
            (ea, qa), (eg, qg) = [torch.linalg.eigh(f) for f in (a, g)]
            out.append({"QA": qa, "QG": qg, "scale": 1.0 / (eg.clamp(min=0)[:, None] * ea.clamp(min=0)[None, :] + lam_eta)})
            continue
        pi = (a.diagonal().mean().clamp(min=1e-30) / g.diagonal().mean().clamp(min=1e-30)).sqrt()
        entry = {}
        for key, factor, shift in (("A_inv", a, pi * gamma), ("G_inv", g, gamma / pi)):
            damped = factor + shift * torch.eye(factor.shape[0], dtype=factor.dtype)
            chol, info = torch.linalg.cholesky_ex(damped)
            if int(info) == 0:
                entry[key] = torch.cholesky_inverse(chol)
            else:
                e, q = torch.linalg.eigh(factor)
                entry[key] = (q * (1.0 / (e.clamp(min=0) + shift))) @ q.T
        out.append(entry)
    return out


def kfac_after_steps(exact: bool, sizes=(9, 7, 7, 3, 7, 7, 9)) -> KFAC:
    """A K-FAC whose factors have seen a few batches (layers of equal size share a batch)."""
    model = tiny(sizes=list(sizes))
    opt = KFAC(model, loss=model.loss_kind, exact_damping=exact, inverse_update_period=100)
    for seed in range(3):
        x = batch(seed=seed, dim=sizes[0])
        opt.step(x, x)
    return opt


def preconditioned(st: dict, v: torch.Tensor) -> torch.Tensor:
    """The inverse's action on a direction (sign-invariant, whatever eigenvectors eigh returns)."""
    if "QA" in st:
        return st["QG"] @ ((st["QG"].T @ v @ st["QA"]) * st["scale"]) @ st["QA"].T
    return st["G_inv"] @ v @ st["A_inv"]


@pytest.mark.parametrize("exact", [False, True])
def test_batched_kfac_refresh_equals_the_layer_by_layer_one(exact):
    opt = kfac_after_steps(exact)
    expected = reference_kfac_refresh(opt)
    opt._refresh_inverses()
    gen = torch.Generator().manual_seed(3)
    for layer, want in zip(opt.layers, expected):
        st = opt.state[layer.linear.weight]
        v = torch.randn(st["G"].shape[0], st["A"].shape[0], generator=gen, dtype=torch.float64)
        torch.testing.assert_close(preconditioned(st, v), preconditioned(want, v), rtol=1e-10, atol=1e-12)


def test_kfac_refresh_keeps_a_bad_layers_inverse_and_clamps_an_indefinite_factor():
    opt = kfac_after_steps(exact=False)
    first, second = (opt.state[layer.linear.weight] for layer in opt.layers[:2])
    kept = first["A_inv"].clone()
    first["A"][0, 0] = float("nan")  # a non-finite factor: keeps its previous inverse, with a warning
    second["G"].copy_(-second["G"])  # negative definite: the Cholesky fails, the clamped eigh takes over
    expected = reference_kfac_refresh(opt)
    with pytest.warns(RuntimeWarning, match="layer 0 could not be inverted"):
        opt._refresh_inverses()
    torch.testing.assert_close(first["A_inv"], kept, rtol=0, atol=0)
    assert expected[0] is None
    for key in ("A_inv", "G_inv"):
        torch.testing.assert_close(second[key], expected[1][key], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- Shampoo

def reference_shampoo_roots(stats: list[torch.Tensor], epsilon: float, alpha: float) -> list[torch.Tensor | None]:
    """(S + epsilon * lambda_max I)^-alpha of each statistic on its own (None: not finite)."""
    out = []
    for s in stats:
        s = 0.5 * (s.double() + s.double().T)
        if not torch.isfinite(s).all():
            out.append(None)
            continue
        e, q = torch.linalg.eigh(s)
        e = e.clamp(min=0)
        ridge = epsilon * e[-1].clamp(min=1e-16)
        out.append((q * (e + ridge).pow(-alpha)) @ q.T)
    return out


def test_batched_shampoo_roots_equal_the_one_by_one_ones():
    torch.manual_seed(0)
    model = tiny(sizes=[9, 7, 7, 3, 7, 7, 9])
    opt = Shampoo(model.parameters(), lr=1e-2, precondition_frequency=1, start_preconditioning_step=1,
                  relative_epsilon=True, epsilon=1e-6)
    for seed in range(3):
        x = batch(seed=seed, dim=9)
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
    states = [opt.state[p] for p in model.parameters() if "L" in opt.state[p]]
    stats = [s for st in states for side in ("L", "R") for s in st[side]]
    stats[1].fill_(float("nan"))  # one non-finite statistic: its root is kept, with a warning
    kept = [r.clone() for st in states for side in ("L_root", "R_root") for r in st[side]]
    opt.zero_grad()
    model.loss(batch(seed=9, dim=9)).backward()
    with pytest.warns(RuntimeWarning, match="non-finite statistic"):
        opt.step()  # the statistics take this step's gradient, then every root is refreshed
    expected = reference_shampoo_roots(stats, 1e-6, 0.25)
    roots = [r for st in states for side in ("L_root", "R_root") for r in st[side]]
    for root, want, before in zip(roots, expected, kept):
        if want is None:
            torch.testing.assert_close(root, before, rtol=0, atol=0)
        else:
            assert not torch.equal(root, before)
            torch.testing.assert_close(root.double(), want, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- on a GPU

def count_syncs(fn) -> int:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA synchronisations: needs a CUDA device")
@pytest.mark.parametrize("exact", [False, True])
def test_a_kfac_refresh_waits_for_the_gpu_once(exact):
    model = tiny(sizes=[9, 7, 7, 3, 7, 7, 9]).cuda()
    opt = KFAC(model, loss=model.loss_kind, exact_damping=exact, inverse_update_period=100)
    x = batch(seed=0, dim=9).cuda()
    opt.step(x, x)
    opt.step(x, x)
    syncs = count_syncs(opt._refresh_inverses)
    assert syncs <= (1 if not exact else 1 + len({(f.shape[0]) for st in opt.state.values() for f in (st["A"], st["G"])}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA synchronisations: needs a CUDA device")
def test_a_shampoo_refresh_waits_for_the_gpu_once_plus_its_eigendecompositions():
    model = tiny(sizes=[9, 7, 7, 3, 7, 7, 9]).cuda()
    opt = Shampoo(model.parameters(), lr=1e-2, precondition_frequency=1, start_preconditioning_step=1)
    x = batch(seed=0, dim=9).cuda()

    def step():
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()

    step()
    sizes = {s.shape[0] for st in opt.state.values() if "L" in st for side in ("L", "R") for s in st[side]}
    assert count_syncs(step) <= 1 + len(sizes)  # the flags, and what each batched eigh does itself
