"""A tuned config is filed under the workload it was searched on, and composing it alone gives the
setting of the committed row it came from (so `tuned=<dataset>/<optimizer>` reproduces that row)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from benchmarks.config import compose_config
from benchmarks.results import read_config, settings

REPO = Path(__file__).resolve().parents[1]
TUNED = REPO / "results" / "tuned"
REFERENCE = REPO / "results" / "reference" / "cpu"
# Keys the runner's config gained after some committed runs: absent from their config.yaml, implied
# there by the optimizer's name; and keys renamed since (benchmarks.config.RENAMED), old -> new prefix.
ADDED_SINCE = {"optimizer._target_", "optimizer.nesterov", "optimizer.inner_optimizer._target_",
               "optimizer.inner_optimizer._partial_"}
RENAMED_SINCE = {"optimizer.inner.": "optimizer.inner_optimizer.", "optimizer.parallel": "optimizer.fused"}


def renamed(key: str) -> str:
    for old, new in RENAMED_SINCE.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def tuned_configs() -> list[tuple[str, str]]:
    return [(p.parent.name, p.stem) for p in sorted(TUNED.glob("*/*.yaml"))]


@pytest.mark.parametrize("dataset,optimizer", tuned_configs())
def test_a_tuned_config_reproduces_its_committed_row(dataset, optimizer):
    body = yaml.safe_load((TUNED / dataset / f"{optimizer}.yaml").read_text())
    assert {"override /dataset": dataset} in body["defaults"], "filed under another data set than it selects"
    group, name = ("published", optimizer.removesuffix("_published")) if optimizer.endswith("_published") \
        else ("final", optimizer)
    runs = sorted((REFERENCE / dataset / "runs" / group / dataset / name).glob("seed0-*"))
    if not runs:
        pytest.skip(f"no committed row of {optimizer} on {dataset}")
    mine = flat(settings(OmegaConf.to_container(compose_config([f"tuned={dataset}/{optimizer}", "seed=0"]),
                                                resolve=True)))
    differences = []
    for run in runs:
        theirs = {renamed(k): v for k, v in flat(settings(read_config(run))).items()}
        differences.append({k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)
                            and not (k in ADDED_SINCE and k not in theirs)})
    assert set() in differences, f"no committed seed-0 run of {dataset}/{optimizer} has this setting: {differences}"


def test_no_tuned_config_claims_a_workload_it_was_not_searched_on():
    """The stand-ins' configs live under the stand-ins' names; none is filed for the real FACES or
    CURVES (`make reproduce` there borrows the stand-in's config and says so)."""
    assert not (TUNED / "faces").exists() and not (TUNED / "curves").exists()
    for dataset, optimizer in tuned_configs():
        source = yaml.safe_load((TUNED / dataset / f"{optimizer}.yaml").read_text())["tuned_source"]
        if source.get("kind") == "search":
            assert source["study_name"] == f"{dataset}-{optimizer}"
