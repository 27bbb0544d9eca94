"""Reading Optuna studies back: a search's winner, and every committed study as plain records
(what the report, the campaigns and the exported provenance read)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import optuna


def best_trial(trials: list[Any]) -> Any | None:
    """A search's winner among Optuna (frozen) trials: the complete trial with the lowest objective;
    when none completed, the pruned, not diverged trial that got furthest, lowest last loss first
    (its seeds then all run at full length)."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        return min(complete, key=lambda t: t.value)
    survivors = [t for t in trials if t.state.name == "PRUNED" and t.user_attrs.get("status") == "pruned"
                 and t.intermediate_values]
    if not survivors:
        return None
    return min(survivors, key=lambda t: (-max(t.intermediate_values), t.intermediate_values[max(t.intermediate_values)]))


def read_studies(root: str | Path) -> Iterator[dict[str, Any]]:
    """Every study under `<root>/<dataset>/tuning/<dataset>/<optimizer>.db` as plain records: its
    protocol, its trials (state, setting, how it ended, whether its worker was lost, whether its
    setting was enqueued rather than drawn, the sampler that drew it, the last running loss it
    reported) and its winner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for db in sorted(Path(root).glob("*/tuning/*/*.db")):
        dataset, optimizer = db.parent.name, db.stem
        try:
            study = optuna.load_study(study_name=f"{dataset}-{optimizer}", storage=f"sqlite:///{db}")
        except KeyError:  # created, no study in it yet
            continue
        trials = study.get_trials(deepcopy=False)
        records = [{"number": t.number, "state": t.state.name, "params": dict(t.params), "value": t.value,
                    "status": t.user_attrs.get("status"), "reason": t.user_attrs.get("reason"),
                    "lost": t.state.name == "FAIL" and "error" not in t.user_attrs,
                    "enqueued": "retry_of" in t.user_attrs or "failed_trial" in t.system_attrs
                    or "fixed_params" in t.system_attrs,
                    "sampler": t.user_attrs.get("sampler"),
                    "last_epoch": max(t.intermediate_values) if t.intermediate_values else None,
                    "last_value": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None}
                   for t in trials]
        best = best_trial(trials)
        yield {"dataset": dataset, "optimizer": optimizer, "protocol": study.user_attrs.get("protocol"),
               "trials": records,
               "winner": None if best is None else {"number": best.number, "params": dict(best.params),
                                                    "complete": best.state.name == "COMPLETE"}}
