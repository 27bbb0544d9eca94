"""`make report` is the only source of the numbers a reader sees: regenerating it from the committed
runs reproduces every committed generated file, and an edited result is caught."""
from __future__ import annotations

import importlib.metadata
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.reporting import plateau
from benchmarks.reporting import statistics
from benchmarks.reporting import report
from benchmarks.tuning.protocol import Protocol

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    report.report(report.ROOT, report.BENCH, out, draw=False)
    return out


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_committed_report_is_what_the_committed_runs_give(regenerated):
    written = sorted(p.relative_to(regenerated).as_posix() for p in regenerated.rglob("*") if p.is_file())
    assert "docs/results.md" in written and "README.md" in written
    assert any(p.endswith("mnist/summary.csv") for p in written) and any(p.endswith("comparison.md") for p in written)
    stale = report.stale_files(regenerated)
    assert not stale, f"generated files differ from what `make report` gives (run it and commit): {stale}"


FIGURE_PINS = ("matplotlib", "fonttools", "pillow")  # what the figures' bytes depend on (constraints-ci.txt)


def pinned_versions() -> dict[str, str]:
    lines = (REPO / "constraints-ci.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    return {name: pins[name].strip() for name in FIGURE_PINS}


@pytest.mark.slow
def test_committed_figures_are_byte_for_byte_what_the_committed_runs_give(tmp_path):
    """Every PNG and PDF of `make report` regenerated into a temporary folder equals the committed
    file, and no committed figure is left that the report no longer draws (with the pinned renderer)."""
    installed = {name: importlib.metadata.version(name) for name in FIGURE_PINS}
    if installed != pinned_versions():
        pytest.skip(f"figure bytes are compared with the pins of constraints-ci.txt {pinned_versions()}; "
                    f"installed: {installed}")
    report.report(report.ROOT, report.BENCH, tmp_path, draw=True)

    def figure_files(root: Path, under: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in (root / under).rglob("*") if p.suffix in (".png", ".pdf")}

    drawn = figure_files(tmp_path, report.ROOT)
    assert drawn == figure_files(REPO, report.ROOT)
    differ = [name for name in sorted(drawn) if (tmp_path / name).read_bytes() != (REPO / name).read_bytes()]
    assert not differ, f"figures differ from what `make report` gives (run it and commit): {differ}"
    assert not report.stale_files(tmp_path, draw=True)


def test_an_edited_result_is_caught(regenerated, tmp_path):
    """A value changed by hand in a committed summary.csv no longer matches its regeneration."""
    copy = tmp_path / "copy"
    shutil.copytree(regenerated, copy)
    target = next(copy.rglob("mnist/summary.csv"))
    text = target.read_text()
    first_number = next(token for token in text.splitlines()[1].split(",") if token.replace(".", "").isdigit()
                        and "." in token)
    target.write_text(text.replace(first_number, str(float(first_number) + 0.01), 1))
    assert any(p.endswith("mnist/summary.csv") for p in report.stale_files(copy))


def test_generated_blocks_are_replaced_whole_and_missing_markers_are_named():
    text = "a\n<!-- report:x:begin -->\nold\n<!-- report:x:end -->\nb\n"
    assert report.replace_block(text, "x", "new", "t.md") == "a\n<!-- report:x:begin -->\nnew\n<!-- report:x:end -->\nb\n"
    with pytest.raises(SystemExit, match="t.md: no <!-- report:y:begin -->"):
        report.replace_block(text, "y", "new", "t.md")


def test_welch_separates_far_rows_and_not_overlapping_ones():
    assert statistics.welch_p({0: 1.0, 1: 1.1, 2: 0.9}, {0: 5.0, 1: 5.1, 2: 4.9}) < 1e-3
    assert statistics.welch_p({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5}) > 0.5
    assert math.isnan(statistics.welch_p({0: 1.0}, {0: 2.0, 1: 3.0}))  # one seed: noise unknown


def test_rows_that_share_data_by_seed_are_compared_in_pairs():
    """Two rows whose seeds differ a lot (the data) but whose difference is the same on every seed:
    Welch's test calls the gap noise, the paired test does not, and the verdict follows the
    workload's seeds (paired on a stand-in, Welch on fixed data) and names its test."""
    a = {0: 10.0, 1: 20.0, 2: 30.0}
    b = {0: 10.5, 1: 20.52, 2: 30.48}
    assert statistics.welch_p(a, b) > 0.9
    assert statistics.paired_p(a, b) < 0.01
    from scipy import stats
    assert statistics.paired_p(a, b) == pytest.approx(stats.ttest_rel([10.0, 20.0, 30.0], [10.5, 20.52, 30.48]).pvalue)
    assert statistics.paired_p({0: 1.0, 1: 2.0, 3: 9.0}, {0: 1.5, 1: 2.5, 2: 0.0}) == 0.0  # seeds 0, 1 only; equal gaps
    assert math.isnan(statistics.paired_p({0: 1.0, 1: 2.0}, {1: 2.5, 2: 3.0}))  # one shared seed
    assert statistics.seed_test(a, b, paired=True)[1] == statistics.PAIRED
    assert statistics.seed_test(a, b, paired=False)[1] == statistics.WELCH

    def results_of(dataset):
        runs = pd.DataFrame({"optimizer": ["adam"] * 3 + ["sgd"] * 3, "seed": [0, 1, 2] * 2,
                             "status": ["finished"] * 6, "final_train_ce": [*a.values(), *b.values()]})
        return report.WorkloadResults(dataset, Path("."), runs, pd.DataFrame(), pd.DataFrame(), {}, Protocol())
    words, note = report.compare(results_of("curves_synth"), "adam", "sgd")
    assert words == "lower than" and "paired t-test by seed" in note
    words, note = report.compare(results_of("mnist"), "adam", "sgd")
    assert words == "within seed noise of" and "Welch" in note


def test_a_row_that_never_leaves_the_plateau_is_stalled_and_gets_no_gap_verdict():
    """The plateau is the loss of predicting the mean training image (the best constant output: any
    other constant scores worse); a row none of whose seeds got measurably below it is stalled."""
    x = torch.rand(50, 6, dtype=torch.float64).round()
    level = plateau.mean_image_loss(x, "bernoulli")
    p = x.mean(0).clamp(plateau.EPS, 1 - plateau.EPS)
    assert level == pytest.approx(float(-(x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean()), rel=1e-12)
    q = (p + 0.05).clamp(0.01, 0.99)
    assert float(-(x * q.log() + (1 - x) * (1 - q).log()).sum(1).mean()) > level
    y = torch.randn(40, 5, dtype=torch.float64)
    assert plateau.mean_image_loss(y, "gaussian") == pytest.approx(float(y.var(0, unbiased=False).sum()), rel=1e-12)

    runs = pd.DataFrame({"optimizer": ["adam", "adam", "sgd", "sgd", "kfac", "kfac"], "seed": [0, 1] * 3,
                         "status": ["finished"] * 6, "best_train_ce": [99.5, 99.9, 98.5, 99.8, 50.0, 51.0],
                         "final_train_ce": [99.6, 99.9, 99.0, 99.9, 50.0, 51.0]})
    record = {"dataset": "curves_synth", "by_seed": {"0": 100.0, "1": 100.0}}
    results = report.WorkloadResults("curves_synth", Path("."), runs, pd.DataFrame(), pd.DataFrame(), record, Protocol())
    assert report.stalled_rows(results) == {"adam"}  # sgd's seed 0 got 1.5% below the plateau
    unknown = report.WorkloadResults("curves_synth", Path("."), runs, pd.DataFrame(), pd.DataFrame(),
                                     {"dataset": "curves_synth", "by_seed": {}}, Protocol())
    assert report.stalled_rows(unknown) == set()


def test_a_row_not_finished_says_how_far_it_is():
    """A workload's cell without runs names its search's progress; a row with fewer seeds than the
    protocol says how many it has, so a bare number is never mistaken for a mean over three."""
    trials = [{"state": s} for s in ("COMPLETE", "PRUNED", "PRUNED", "RUNNING", "FAIL")]
    study = {"trials": trials, "protocol": {"trials": 8}}
    assert report.progress_text(study) == "searching (3 of 8 trials)"
    assert report.progress_text(None) == "not run" and report.progress_text({"trials": []}) == "not run"
    results = report.load_workloads(report.ROOT, report.bench_ms_per_step(report.BENCH))
    frame = report.comparison_table(results).set_index("optimizer")
    first, second = results[0].name, results[1].name
    frame.loc["sgd", f"{first}_n_seeds"] = 1
    frame.loc["sgd", f"{second}_n_seeds"] = float("nan")
    text = report.comparison_markdown(frame.reset_index(), results, {(second, "sgd"): study})
    line = next(l for l in text.splitlines() if l.startswith("| SGD |"))
    assert f"(1 of {results[0].protocol.seeds} seeds)" in line and results[0].protocol.seeds == 3 and "| searching (3 of 8 trials) |" in line


def block(text: str, name: str) -> str:
    return text.split(f"<!-- report:{name}:begin -->", 1)[1].split(f"<!-- report:{name}:end -->", 1)[0]


def test_the_tuning_tables_cover_every_study_and_an_edit_is_caught(regenerated, tmp_path):
    """The tuning-budget table has a row per committed study and the sensitivity block a section per
    workload; a number changed by hand in either block no longer matches its regeneration."""
    text = (regenerated / report.DOCS).read_text()
    budget, sensitivity = block(text, "tuning-budget"), block(text, "sensitivity")
    studies = sorted(report.ROOT.glob("*/tuning/*/*.db"))
    assert sum(line.startswith("| ") for line in budget.splitlines()) == len(studies) + 1  # + the header
    assert all(f"**{r.label}**" in sensitivity for r in report.load_workloads(report.ROOT, report.bench_ms_per_step(report.BENCH)))
    for name, body in (("tuning-budget", budget), ("sensitivity", sensitivity)):
        copy = tmp_path / name
        shutil.copytree(regenerated, copy)
        number = next(token for token in body.replace("|", " ").split() if token.replace(".", "").isdigit() and "." in token)
        edited = body.replace(number, f"{float(number) + 0.01:.2f}", 1)
        (copy / report.DOCS).write_text(text.replace(body, edited))
        assert report.stale_files(copy) == [report.DOCS.as_posix()]
