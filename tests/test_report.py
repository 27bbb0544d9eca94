"""`make report` is the only source of the numbers a reader sees: regenerating it from the committed
runs reproduces every committed generated file, and an edited result is caught."""
from __future__ import annotations

import importlib.metadata
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
