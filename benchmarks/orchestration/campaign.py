"""A long, resumable batch of searches and runs, shared by a few worker processes.

    python -m scripts.campaign cpu-reference [--workers 2] [--threads 1]

A campaign is an ordered plan of items: searches (`benchmarks.tuning.search.Search`: trials, the winner's
seeds, the exported config) and plain runs (published defaults, extra seeds). Every worker walks
the plan from the top and does the first unit of work that is free, so the earliest items finish
first and several workers never wait for each other while work is left. Everything resumes: the
studies from their SQLite files, interrupted runs from their epoch checkpoints, and a trial whose
worker died is retried with the same settings. Run it again (or start more workers) at any time.

`cpu-reference` is the comparison this repository ships in `results/reference/cpu/`: the CURVES-like
stand-in with all nine optimizers of the paper (16 full-length trials each), the real MNIST
(all nine with 8 full-length trials each, and LocoProp-M at the authors' published defaults too,
`results/tuned/mnist/locoprop_m_published.yaml`, group `published`) and the FACES-like stand-in (all nine with 8 trials each: no published
FACES defaults exist for LocoProp-M); every winner runs 3 seeds. `cpu-relatives` adds DTP and FOOF
with the same protocol and budget on each data set, and the LocoProp ablations; `cpu-modern` the
optimizers of the 'modern' family (Muon, SOAP, Schedule-Free AdamW), apart from the paper's.
"""
from __future__ import annotations

import contextlib
import itertools
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable

import optuna
import yaml
from omegaconf import DictConfig

from benchmarks.config import compose_config
from benchmarks.optimizers import optimizer_info, optimizer_names, paper_optimizers
from benchmarks.results import read_summary
from benchmarks.tuning.studies import best_trial
from benchmarks.rundir import RunInUse, atomic_write, atomic_write_text, run_dir_for
from benchmarks.train import train
from benchmarks.orchestration.ablations import ablation_configs, ablation_names
from benchmarks.tuning.sampler import describe as describe_sampler
from benchmarks.tuning.protocol import REFERENCE_TRIALS, Protocol, reference
from benchmarks.tuning.search import RUN_OVERRIDES, Search, overrides_for, seed_done


class Runs:
    """Plain runs of fixed configs (e.g. a published default over seeds), one per `step()`."""

    def __init__(self, dataset: str, configs: Callable[[], list[DictConfig]]):
        self.dataset, self.configs = dataset, configs

    def describe(self, ms: dict) -> tuple[str, float | None]:
        done = [seed_done(read_summary(run_dir_for(cfg))) for cfg in self.configs()]
        return f"{self.dataset}: {sum(done)}/{len(done)} runs done", None

    def step(self) -> str:
        busy = False
        for cfg in self.configs():
            if seed_done(read_summary(run_dir_for(cfg))):
                continue
            try:
                train(cfg)  # a signal that stops the run stops this worker too (train raises)
            except RunInUse:  # another worker holds this run
                busy = True
                continue
            return "seed"
        return "busy" if busy else "done"


def published_default_runs(dataset: str, optimizer: str, results: str, seeds: range, eval_every: int) -> Runs:
    def configs() -> list[DictConfig]:
        return [compose_config([f"tuned={dataset}/{optimizer}_published", f"dataset={dataset}", f"seed={s}", "group=published",
                                f"results_dir={results}", f"eval_every={eval_every}", *RUN_OVERRIDES])
                for s in seeds]
    return Runs(dataset, configs)


def cpu_reference(root: str = "results/reference/cpu", tuned_dir: str = "results/tuned", create: bool = True) -> list:
    """The plan of the shipped CPU reference comparison (see the module docstring)."""
    curves_dir, mnist_dir, faces_dir = f"{root}/curves_synth", f"{root}/mnist", f"{root}/faces_synth"
    note = "CPU reference campaign (scripts/campaign.py cpu-reference)"
    paper = paper_optimizers()
    baselines = [o for o in paper if optimizer_info(o)["family"] != "local_loss"]
    curves = [Search("curves_synth", o, curves_dir, reference("curves_synth"), tuned_dir=tuned_dir,
                     note=note, create=create) for o in paper]
    mnist = [Search("mnist", o, mnist_dir, reference("mnist"), tuned_dir=tuned_dir, note=note, create=create)
             for o in (*baselines, "locoprop_s", "locoprop_m")]
    faces = [Search("faces_synth", o, faces_dir, reference("faces_synth"), tuned_dir=tuned_dir,
                    note=note, create=create) for o in paper]
    return [*curves,
            published_default_runs("mnist", "locoprop_m", mnist_dir, range(3), eval_every=5),
            *mnist,
            *faces]


def ablation_runs(name: str, results: str) -> Runs:
    return Runs("curves_synth", lambda: ablation_configs(name, results=results))


def cpu_relatives(root: str = "results/reference/cpu", tuned_dir: str = "results/tuned", create: bool = True) -> list:
    """LocoProp's relatives and ablations beside the reference comparison: DTP and FOOF searched with
    the same protocol and budget as the paper's optimizers (CURVES-like: 16 trials; MNIST and
    FACES-like: 8 trials; 3 seeds of each winner), and the LocoProp ablations on the CURVES-like data."""
    note = "CPU reference campaign (scripts/campaign.py cpu-relatives)"
    relatives = ("foof", "dtp")
    searches = lambda dataset: [  # noqa: E731
        Search(dataset, o, f"{root}/{dataset}", reference(dataset), tuned_dir=tuned_dir,
               note=note, create=create) for o in relatives]
    return [*searches("curves_synth"),
            *(ablation_runs(name, f"{root}/curves_synth") for name in ablation_names()),
            *searches("mnist"),
            *searches("faces_synth")]


def cpu_modern(root: str = "results/reference/cpu", tuned_dir: str = "results/tuned", create: bool = True) -> list:
    """Optimizers a practitioner would compare against today, apart from the paper's (the 'modern'
    family: Muon, SOAP, Schedule-Free AdamW), with the reference protocol and budget of each data
    set (CURVES-like: 16 trials; FACES-like and MNIST: 8; 3 seeds of each winner)."""
    note = "CPU reference campaign (scripts/campaign.py cpu-modern)"
    modern = [n for n in optimizer_names() if optimizer_info(n)["family"] == "modern"]
    return [Search(dataset, o, f"{root}/{dataset}", reference(dataset), tuned_dir=tuned_dir, note=note, create=create)
            for dataset in REFERENCE_TRIALS
            for o in modern]


# The setting that plays the learning rate's role where an optimizer searches no `optimizer.lr`
# (K-FAC adapts its step from the quadratic model; its damping sets the step's scale) or where the
# issue of scale lies elsewhere (FOOF's damping divides its step).
LR_ROLE = {"kfac": "optimizer.damping", "foof": "optimizer.damping"}
SENSITIVITY_GROUP = "sensitivity"


def winner_values(root: str | Path, dataset: str, optimizer: str) -> dict | None:
    """The winning setting of a committed study (None when there is none yet)."""
    db = Path(root) / dataset / "tuning" / dataset / f"{optimizer}.db"
    if not db.is_file():
        return None
    study = optuna.load_study(study_name=f"{dataset}-{optimizer}", storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    if len(ended) < study.user_attrs.get("protocol", {}).get("trials", 0):  # still searching
        return None
    best = best_trial(trials)
    return dict(best.params) if best is not None else None


def sensitivity_runs(dataset: str, optimizer: str, key: str, values: list, root: str, eval_every: int = 5) -> Runs:
    """Seed-0 full-length runs of the winner of `dataset` x `optimizer` with `key` set to each of
    `values` (given the winner's setting, returns them), everything else at the winner."""

    def configs() -> list[DictConfig]:
        base = winner_values(root, dataset, optimizer)
        if base is None:
            return []
        cfgs = []
        for value in values(base):
            setting = {**base, key: value}
            cfgs.append(compose_config([f"dataset={dataset}", f"optimizer={optimizer}", "seed=0",
                                        f"group={SENSITIVITY_GROUP}", f"results_dir={root}/{dataset}",
                                        f"eval_every={eval_every}", *RUN_OVERRIDES, *overrides_for(setting)]))
        return cfgs
    return Runs(dataset, configs)


def _base_value(dataset: str, optimizer: str, key: str, base: dict) -> float:
    if key in base:
        return base[key]
    cfg = compose_config([f"dataset={dataset}", f"optimizer={optimizer}"])
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def cpu_sensitivity(root: str = "results/reference/cpu", tuned_dir: str = "results/tuned", create: bool = True) -> list:
    """How much each winner loses off its optimum: its learning rate (or LR_ROLE) times 1/4, 1/2, 2, 4 on
    CURVES-like (every optimizer) and 1/2, 2 on MNIST (eight), then LocoProp's gamma and inner steps."""
    def scaled(dataset, optimizer, key, factors):
        return lambda base: [_base_value(dataset, optimizer, key, base) * f for f in factors]

    def steps(dataset, optimizer, factors):
        return lambda base: [max(1, round(_base_value(dataset, optimizer, "optimizer.inner_steps", base) * f))
                             for f in factors]

    wide, narrow = (0.25, 0.5, 2.0, 4.0), (0.5, 2.0)
    curves = sorted(p.stem for p in (Path(root) / "curves_synth/tuning/curves_synth").glob("*.db"))
    items = [sensitivity_runs("curves_synth", o, LR_ROLE.get(o, "optimizer.lr"),
                              scaled("curves_synth", o, LR_ROLE.get(o, "optimizer.lr"), wide), root) for o in curves]
    for o in ("locoprop_m", "locoprop_s"):
        items.append(sensitivity_runs("curves_synth", o, "optimizer.gamma", scaled("curves_synth", o, "optimizer.gamma", wide), root))
        items.append(sensitivity_runs("curves_synth", o, "optimizer.inner_steps", steps("curves_synth", o, wide), root))
    mnist = ("locoprop_s", "kfac", "shampoo", "rmsprop", "adam", "muon", "soap", "locoprop_m")
    items += [sensitivity_runs("mnist", o, LR_ROLE.get(o, "optimizer.lr"),
                               scaled("mnist", o, LR_ROLE.get(o, "optimizer.lr"), narrow), root) for o in mnist]
    for o in ("locoprop_m", "locoprop_s"):
        items.append(sensitivity_runs("mnist", o, "optimizer.gamma", scaled("mnist", o, "optimizer.gamma", narrow), root))
        items.append(sensitivity_runs("mnist", o, "optimizer.inner_steps", steps("mnist", o, narrow), root))
    return items


PLANS = {"cpu-reference": cpu_reference, "cpu-relatives": cpu_relatives, "cpu-modern": cpu_modern,
         "cpu-sensitivity": cpu_sensitivity}


def plan_items(plan: str, only: str | None = None, create: bool = True) -> list:
    """The items of a plan, or only those of one data set (a campaign split across machines or
    commits: e.g. the CURVES-like half finished at one commit, the MNIST half resumed at another)."""
    items = PLANS[plan](create=create)
    if only is None:
        return items
    kept = [item for item in items if item.dataset == only]
    if not kept:
        raise SystemExit(f"plan {plan} has no items for data set {only!r}; it has "
                         f"{', '.join(sorted({item.dataset for item in items}))}")
    return kept


# ----------------------------------------------------------------------------- collect and report

RUN_FILES = ("config.yaml", "metrics.csv", "summary.json")


def _trial_counts(db: Path) -> tuple[int, int]:
    """(trials that have ended: complete, pruned or failed; all trials) in a study file, read through
    Optuna (which adds its tables to a file that has none yet: give it a snapshot, not a live file)."""
    if not db.exists():
        return 0, 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    trials = [trial for name in optuna.get_all_study_names(storage)
              for trial in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)]
    return sum(trial.state.is_finished() for trial in trials), len(trials)


def _snapshot(db: Path, copy: Path) -> None:
    """A consistent copy of a SQLite file, even while a worker writes to it."""
    with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)


def _export_date(path: Path) -> str:
    source = (yaml.safe_load(path.read_text()) or {}).get("tuned_source", {}) if path.exists() else {}
    return str(source.get("date", "")) if source.get("study_name") else ""


def collect(source: str | Path, root: str | Path = "results/reference/cpu", tuned_from: str | Path | None = None,
            tuned_dir: str | Path = "results/tuned") -> int:
    """Copy the small files of a campaign running elsewhere (another checkout, a cluster's scratch)
    into `root`: per finished run config.yaml, metrics.csv, summary.json (and reconstructions.npz
    outside the trials), per study a consistent snapshot of its SQLite file; never checkpoints.
    With `tuned_from`, also the tuned configs there that a study exported (`tuned_source.study_name`).
    Nothing newer is overwritten by something older: a study file only replaces one with fewer
    ended trials (or as many, and fewer started), a tuned config only one exported earlier (or
    not exported by a study)."""
    source, root = Path(source), Path(root)
    copied = 0
    for summary in sorted(source.glob("*/runs/*/*/*/*/summary.json")):
        run = summary.parent
        target = root / run.relative_to(source)
        names = RUN_FILES if run.parts[-4] == "tune" else (*RUN_FILES, "reconstructions.npz")
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (run / name).exists() and (not (target / name).exists()
                                          or (target / name).stat().st_mtime < (run / name).stat().st_mtime):
                shutil.copy2(run / name, target / name)
                copied += 1
    for db in sorted(source.glob("*/tuning/*/*.db")):
        target = root / db.relative_to(source)
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = Path(tmp) / db.name
            _snapshot(db, snapshot)
            if _trial_counts(snapshot) <= _trial_counts(target):  # nothing new there
                continue
            atomic_write(target, lambda partial: shutil.copyfile(snapshot, partial))
        copied += 1
    for path in sorted(Path(tuned_from).glob("*/*.yaml")) if tuned_from else []:
        target = Path(tuned_dir) / path.relative_to(tuned_from)
        date = _export_date(path)
        if date and date >= _export_date(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            restate_sampler(target)
            copied += 1
    print(f"collected {copied} files from {source} into {root}")
    return copied


def restate_sampler(tuned: Path) -> None:
    """Describe a collected tuned config's sampler from its study's trials: a campaign running older
    code describes the sampler of its code, not necessarily the one that drew the study's trials."""
    text = tuned.read_text()
    body = yaml.safe_load(text)
    source = body.get("tuned_source", {})
    study = Path(str(source.get("study", "")))
    if not study.suffix == ".db" or not study.is_file():
        return
    storage = optuna.storages.RDBStorage(f"sqlite:///{study}")
    loaded = optuna.load_study(study_name=source["study_name"], storage=storage)
    protocol = {**Protocol().as_dict(), **loaded.user_attrs.get("protocol", {})}
    described = describe_sampler(loaded.get_trials(deepcopy=False), protocol["startup_trials"], protocol["sampler_seed"])
    if source.get("sampler") != described:
        source["sampler"] = described
        header = "".join(line + "\n" for line in itertools.takewhile(lambda l: l.startswith("#"), text.splitlines()))
        atomic_write_text(tuned, header + yaml.safe_dump(body, sort_keys=False))
