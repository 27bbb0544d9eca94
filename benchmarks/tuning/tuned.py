"""Which tuned config a run of an optimizer on a data set uses, and how its setting was found.

In order: a config searched on this data set (`results/tuned/<dataset>/<optimizer>.yaml`); one
searched on a generated stand-in for it (a transfer: FACES and CURVES borrow faces_synth's and
curves_synth's); the authors' published defaults (`<optimizer>_published.yaml`) while no search
exists. Reproduce, the GPU campaign and the report's callers all ask here.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.config import TUNED_DIR
from benchmarks.workloads import WORKLOADS

PUBLISHED_SUFFIX = "_published"


def tuned_name(dataset: str, optimizer: str, tuned_dir: Path = TUNED_DIR) -> str | None:
    """`<folder>/<name>` of the tuned config for this pair (for `tuned=`), or None."""
    stand_ins = [w.name for w in WORKLOADS.values() if w.stand_in_for == dataset]
    for folder, name in [*((d, optimizer) for d in (dataset, *stand_ins)), (dataset, optimizer + PUBLISHED_SUFFIX)]:
        if (Path(tuned_dir) / folder / f"{name}.yaml").exists():
            return f"{folder}/{name}"
    return None


def tuned_note(dataset: str, tuned: str | None) -> str:
    """How a run's setting was found, for its label in a plan ('' when searched on this data set)."""
    if tuned is None:
        return " (untuned: the optimizer's defaults)"
    folder, name = tuned.split("/")
    if name.endswith(PUBLISHED_SUFFIX):
        return " (published defaults: not searched)"
    return "" if folder == dataset else f" (setting searched on {folder}, not on {dataset})"
