"""`make report` is the only source of the numbers a reader sees: regenerating it from the committed
runs reproduces every committed generated file, and an edited result is caught."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts import report

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


def test_gap_verdicts_follow_welchs_test():
    assert report.welch_p([1.0, 1.1, 0.9], [5.0, 5.1, 4.9]) < 1e-3  # far apart: larger than noise
    assert report.welch_p([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) > 0.5  # overlapping: noise
    assert report.welch_p([1.0], [2.0, 3.0]) != report.welch_p([1.0], [2.0, 3.0])  # NaN: one seed


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
    assert f"(1 of {report.SEEDS} seeds)" in line and "| searching (3 of 8 trials) |" in line


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
