"""The protocol that makes two searches comparable, defined once.

Tuning (`search.py`) stores it in every study, the campaigns build theirs from `REFERENCE`, the
GPU campaign and `make compare` read the committed one back (`read_protocol`), and the report
takes it from the studies it reads, never from constants. What a trial trains (epochs, trained
epochs, batch, steps) is the runner's config composed with the protocol's overrides
(`run_setting`); what a seed changes is the workload's (`seed_changes`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna

from benchmarks.config import compose_config
from benchmarks.workloads import get_workload, run_steps, trained_epochs
from benchmarks.tuning.sampler import SAMPLER_NAME

ROOT = Path("results/reference/cpu")  # <dataset>/runs/final/..., <dataset>/tuning/<dataset>/<optimizer>.db
BENCH = Path("results/bench/intel_xeon_processor_family_6_model_167_x1.json")  # the quiet bench of the reference


class ProtocolError(ValueError):
    """The committed studies of a workload do not state one protocol."""


@dataclass
class Protocol:
    """Stored in the study (all but `seeds`, which may grow later), so a resumed search cannot drift."""

    trials: int = 16
    seeds: int = 3  # of the winner; the winning trial itself is seed 0
    eval_every: int = 5  # epochs between full evaluations
    min_resource: int = 11  # successive halving rungs at 11, 33, 99 epochs
    reduction_factor: int = 3
    startup_trials: int = 5  # random draws before TPE
    sampler_seed: int = 0
    sampler: str = SAMPLER_NAME  # studies begun before it was recorded used TPE seeded by the trial count
    exits: bool = True  # the notebook's exits (the workload's tuning_exits), if it has any
    overrides: list[str] = field(default_factory=list)  # Hydra overrides of every trial and seed
    sources: list[str] = field(default_factory=list, compare=False)  # studies it was read from (not stored)

    def as_dict(self) -> dict[str, Any]:
        """The record a study stores."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}

    @classmethod
    def from_record(cls, record: dict[str, Any], **changes: Any) -> "Protocol":
        """A protocol from a study's stored record (keys it does not know are ignored, missing ones
        take the defaults of the code that wrote older studies)."""
        known = {f.name for f in fields(cls)}
        return replace(cls(**{k: v for k, v in record.items() if k in known}), **changes)


# The committed reference: every optimizer of a workload gets the same trials; 3 seeds per winner.
REFERENCE_TRIALS = {"curves_synth": 16, "faces_synth": 8, "mnist": 8}
REFERENCE_SEEDS = 3


def reference(dataset: str) -> Protocol:
    """The protocol the committed reference searches `dataset` with (`make campaign`'s plans)."""
    return Protocol(trials=REFERENCE_TRIALS[dataset], seeds=REFERENCE_SEEDS)


def run_setting(dataset: str, protocol: Protocol) -> dict[str, int]:
    """What one trial (or seed) of `protocol` trains on `dataset`: the runner's config with the
    protocol's overrides, so it is never retyped."""
    cfg = compose_config([f"dataset={dataset}", *protocol.overrides])
    return {"epochs": int(cfg.epochs), "trained_epochs": trained_epochs(cfg), "batch": int(cfg.batch_size),
            "n_train": int(cfg.dataset.n_train or get_workload(dataset).n_train), "steps": run_steps(cfg)}


def seed_changes(dataset: str) -> str:
    """What a run's seed changes on `dataset`, and so how two optimizers' seeds are compared."""
    if get_workload(dataset).seed_draws_data:
        return "the generated data, the initialisation and the batch order (seeds compared in pairs)"
    return "the initialisation and the batch order (the data files are fixed; seeds are independent)"


# ----------------------------------------------------------------------------- the committed protocol

def _study_protocols(root: Path, dataset: str) -> list[tuple[Path, dict[str, Any]]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for db in sorted((root / dataset / "tuning" / dataset).glob("*.db")):
        storage = f"sqlite:///{db}"
        for name in optuna.get_all_study_names(storage):
            recorded = optuna.load_study(study_name=name, storage=storage).user_attrs.get("protocol")
            if recorded:
                out.append((db, recorded))
    return out


def committed_seeds(root: Path, dataset: str) -> int:
    """The number of seeds per committed row (the most common count over the optimizers)."""
    counts = Counter()
    for folder in sorted((root / dataset / "runs" / "final" / dataset).glob("*")):
        seeds = {json.loads(p.read_text()).get("seed") for p in folder.glob("*/summary.json")}
        if seeds:
            counts[len(seeds)] += 1
    if not counts:
        raise ProtocolError(f"{root / dataset / 'runs' / 'final'}: no committed final runs to count seeds from")
    return counts.most_common(1)[0][0]


RECORDED = ("trials", "eval_every", "min_resource", "reduction_factor", "startup_trials", "sampler_seed",
            "sampler", "exits", "overrides")  # what a study records of the protocol
REQUIRED = RECORDED[:6]  # the rest takes the defaults older studies ran with


def read_protocol(root: str | Path = ROOT, dataset: str = "curves_synth") -> Protocol:
    """The protocol of the committed rows of `dataset`: read from the studies that record the keyed
    sampler (the newest; they must all agree), or from every study when none records it; the
    seeds from the committed final runs."""
    root = Path(root)
    studies = _study_protocols(root, dataset)
    if not studies:
        raise ProtocolError(f"{root / dataset / 'tuning'}: no committed study records its protocol")
    keyed = [(db, p) for db, p in studies if "sampler" in p]
    chosen = keyed or studies
    values: dict[str, Any] = {}
    for key in RECORDED:
        seen = {json.dumps(p.get(key), sort_keys=True) for _, p in chosen if key in p}
        if len(seen) > 1:
            raise ProtocolError(f"{root / dataset}: the committed studies disagree on {key!r}: {sorted(seen)}")
        if seen:
            values[key] = json.loads(seen.pop())
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ProtocolError(f"{root / dataset}: the committed studies do not record {', '.join(missing)}")
    values.setdefault("sampler", "tpe")
    return Protocol(**values, seeds=committed_seeds(root, dataset), sources=[db.as_posix() for db, _ in chosen])
