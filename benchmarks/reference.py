"""The committed reference comparison: where it lives and the protocol its searches ran under.

The protocol is read from the committed Optuna studies (`study.user_attrs["protocol"]`) and the
seeds from the committed final runs, never retyped, so a new optimizer can be searched exactly as
the committed rows were (`benchmarks.compare`, `scripts/compare.py`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path("results/reference/cpu")  # <dataset>/runs/final/..., <dataset>/tuning/<dataset>/<optimizer>.db
BENCH = Path("results/bench/intel_xeon_processor_family_6_model_167_x1.json")  # the quiet bench of the reference
PROTOCOL_KEYS = ("trials", "eval_every", "min_resource", "reduction_factor", "startup_trials", "sampler_seed",
                 "sampler", "exits", "overrides")


class ProtocolError(ValueError):
    """The committed studies of a workload do not state one protocol."""


@dataclass(frozen=True)
class ReferenceProtocol:
    """The fields of `scripts.tune.Protocol`, as the committed studies of one workload recorded them."""

    trials: int
    seeds: int
    eval_every: int
    min_resource: int
    reduction_factor: int
    startup_trials: int
    sampler_seed: int
    sampler: str
    exits: bool
    overrides: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the studies it was read from

    def as_protocol_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `scripts.tune.Protocol`."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items() if k != "sources"}


def _study_protocols(root: Path, dataset: str) -> list[tuple[Path, dict[str, Any]]]:
    import optuna

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


def reference_protocol(root: str | Path = ROOT, dataset: str = "curves_synth") -> ReferenceProtocol:
    """The protocol of the committed rows of `dataset`: read from the studies that record the keyed
    sampler (the newest; they must all agree), or from every study when none records it."""
    root = Path(root)
    studies = _study_protocols(root, dataset)
    if not studies:
        raise ProtocolError(f"{root / dataset / 'tuning'}: no committed study records its protocol")
    keyed = [(db, p) for db, p in studies if "sampler" in p]
    chosen = keyed or studies
    values: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        seen = {json.dumps(p.get(key), sort_keys=True) for _, p in chosen if key in p}
        if len(seen) > 1:
            raise ProtocolError(f"{root / dataset}: the committed studies disagree on {key!r}: {sorted(seen)}")
        if seen:
            values[key] = json.loads(seen.pop())
    missing = [k for k in PROTOCOL_KEYS if k not in values and k not in ("sampler", "exits", "overrides")]
    if missing:
        raise ProtocolError(f"{root / dataset}: the committed studies do not record {', '.join(missing)}")
    return ReferenceProtocol(
        trials=values["trials"], seeds=committed_seeds(root, dataset), eval_every=values["eval_every"],
        min_resource=values["min_resource"], reduction_factor=values["reduction_factor"],
        startup_trials=values["startup_trials"], sampler_seed=values["sampler_seed"],
        sampler=values.get("sampler", "tpe"), exits=values.get("exits", True), overrides=values.get("overrides", []),
        sources=[db.as_posix() for db, _ in chosen])
