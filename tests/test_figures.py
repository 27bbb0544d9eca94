"""scripts.figures on a small hand-made results tree (tests/fixtures.py)."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from benchmarks.figure_files import figure_style
from benchmarks.optimizers import legend_sorted, optimizer_names
from benchmarks.reporting import figures
from scripts import figures as figures_cli
from benchmarks.results import load_runs
from tests.fixtures import make_results

REPO = Path(__file__).resolve().parents[1]


def in_git_checkout() -> bool:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode == 0
    except OSError:  # no git at all
        return False
DATASETS = ("curves_synth", "faces_synth")
FIGURES = [f"{d}_{kind}" for d in DATASETS
           for kind in ("train_vs_epoch", "train_vs_epoch_late", "train_vs_time", "train_vs_time_late",
                        "test_vs_epoch", "reconstructions")]
FIGURES += ["overview", "step_time"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Run the CLI once on the fixture (broken and unfinished runs included); share the output."""
    results = make_results(tmp_path_factory.mktemp("results"), broken=True)
    out = results / "figures"
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        code = figures_cli.main(["--results", str(results), "--group", "default", "--out", str(out)])
    return results, out, code, [str(w.message) for w in caught], printed.getvalue().split()


def test_every_figure_is_written_as_png_and_pdf(drawn):
    _, out, code, _, printed = drawn
    assert code == 0
    for name in FIGURES:
        for ext in ("png", "pdf"):
            path = out / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
            assert str(path) in printed
    assert str(out / "provenance.json") in printed
    assert not list(out.glob(".*tmp")), "temporary files left behind"


def test_provenance_comes_from_the_runs_and_figures_carry_no_time_stamp(drawn):
    """What a figure shows is named by the runs behind it (their commits, machines); nothing about
    the drawing (date, host, current commit) enters the files, so a redraw is byte-identical."""
    results, out, _, _, _ = drawn
    info = json.loads((out / "provenance.json").read_text())
    assert set(info["provenance"]) == {"n_runs", "devices", "run_git_commits", "run_torch_versions"}
    assert b"CreationDate" not in (out / "overview.pdf").read_bytes()
    assert set(info["figures"]) == set(FIGURES)
    assert info["provenance"]["devices"] == ["cpu (2 threads)"]
    diverged = "runs/default/faces_synth/sgd/seed1-0000abcd"  # paths relative to the results folder
    assert diverged in info["figures"]["faces_synth_train_vs_epoch"]["runs"]
    assert info["runs"][diverged]["status"] == "diverged"
    assert info["runs"][diverged]["config"]["optimizer"]["lr"] == 0.01
    assert len(info["runs"]) == 12  # the broken and the unfinished run are not used
    assert not any(str(results) in path for path in info["runs"])  # no machine paths in a committed report


@pytest.mark.slow
def test_a_redrawn_figure_is_the_same_file(drawn, tmp_path):
    results, out, _, _, _ = drawn
    again = tmp_path / "again"
    assert figures_cli.main(["--results", str(results), "--group", "default", "--out", str(again)]) == 0
    for name in ("overview.png", "overview.pdf", "faces_synth_train_vs_epoch.png"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_broken_run_is_skipped_with_a_warning(drawn):
    _, _, code, messages, _ = drawn
    assert code == 0
    assert any("skipping unreadable run" in m and "seed7-deadbeef" in m for m in messages)
    assert not any("seed8-cafef00d" in m for m in messages)  # unfinished: skipped quietly


def test_diverged_run_is_marked_and_counted_in_the_legend(tmp_path):
    runs, metrics = load_runs(make_results(tmp_path), "default")
    faces = runs["dataset"] == "faces_synth"
    fig, drawn_runs = figures.curve_figure("faces_synth", runs[faces], metrics[metrics["dataset"] == "faces_synth"],
                                           "train_se", "epoch")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "SGD (diverged 1/2)" in labels and "Adam" in labels and "LocoProp-M" in labels
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert crosses[0].get_xdata()[0] == 1 and crosses[0].get_ydata()[0] == 45  # last finite value
    assert len(drawn_runs) == 6
    plt.close(fig)


def test_partial_results_one_dataset_all_seeds_diverged(tmp_path):
    """Only faces_synth: sgd with every seed diverged, one healthy adam run; each figure still renders."""
    from tests.fixtures import write_run

    write_run(tmp_path, "faces_synth", "sgd", 0, [80, 50, float("inf")])
    write_run(tmp_path, "faces_synth", "sgd", 1, [80, 45, float("inf")])
    write_run(tmp_path, "faces_synth", "adam", 0, [80, 40, 30])
    runs, metrics = load_runs(tmp_path, "default")
    assert figures.final_scores(runs).loc["faces_synth"].to_dict() == {"adam": 30.0, "sgd": np.inf}
    built = [figures.curve_figure("faces_synth", runs, metrics, "train_se", "wallclock_s"),
             figures.overview_figure(runs, metrics), figures.step_time_figure(runs),
             figures.reconstruction_figure("faces_synth", runs)]
    for fig, drawn_runs in built:
        fig.canvas.draw()  # render (no file): catches e.g. log axes without finite data
        assert drawn_runs
        plt.close(fig)
    legend = [t.get_text() for t in built[0][0].axes[0].get_legend().get_texts()]
    assert "SGD (diverged 2/2)" in legend


def test_axes_are_honest_log_ticks_units_integer_epochs_linear_step_time(tmp_path):
    """Loss axes: labelled ticks across the plotted range and units; epochs as integers; the
    step-time bars on a linear axis from zero (a log axis made 107 vs 129 ms look like 1:10)."""
    from tests.fixtures import write_run

    write_run(tmp_path, "curves_synth", "adam", 0, [545, 300, 200, 150, 136])
    write_run(tmp_path, "curves_synth", "sgd", 0, [545, 400, 300, 250, 210])
    runs, metrics = load_runs(tmp_path, "default")
    fig, _ = figures.curve_figure("curves_synth", runs, metrics, "train_ce", "epoch")
    ax = fig.axes[0]
    fig.canvas.draw()
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 3 and min(ticks) <= 150 and max(ticks) >= 500  # labelled across 136..545
    assert all(label.replace(".", "").isdigit() for label in labels)  # plain numbers, no 10^x
    assert "nats, summed over pixels" in ax.get_ylabel()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)
    fig, _ = figures.step_time_figure(runs)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    plt.close(fig)


def test_end_of_training_view_spans_the_lowest_loss_to_1_3_x_the_best_final(tmp_path):
    """Linear axis from 0.98 x the lowest plotted loss to LATE_TOP x the best mean final; the worse
    run's tail (above the top) leaves the frame rather than stretching it."""
    from tests.fixtures import write_run

    for seed, tail in ((0, [60, 50]), (1, [62, 54])):  # mean final 52
        write_run(tmp_path, "curves_synth", "adam", seed, [545, 300, 100, *tail])
    write_run(tmp_path, "curves_synth", "sgd", 0, [545, 400, 300, 250, 210])
    runs, metrics = load_runs(tmp_path, "default")
    fig, drawn = figures.late_figure("curves_synth", runs, metrics, "train_ce", "epoch")
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and len(drawn) == 3
    assert ax.get_ylim() == pytest.approx((0.98 * 50, figures.LATE_TOP * 52))
    assert "up to 1.3 x the best final" in ax.get_title()
    plt.close(fig)


def test_a_sweep_draws_one_line_per_configuration(tmp_path):
    from tests.fixtures import write_run

    for lr, losses in ((0.01, [100, 50, 30]), (0.1, [100, 60, 40])):
        for seed in (0, 1):
            write_run(tmp_path, "curves_synth", "adam", seed, losses, lr=lr)
    runs, metrics = load_runs(tmp_path, "default")
    fig, drawn = figures.curve_figure("curves_synth", runs, metrics, "train_ce", "epoch")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["Adam lr=0.01", "Adam lr=0.1"] and len(drawn) == 4
    means = sorted(line.get_ydata()[-1] for line in fig.axes[0].get_lines())
    assert means == [30, 40]  # each configuration's own mean, never pooled across learning rates
    plt.close(fig)


def test_styles_are_fixed_distinct_and_locoprop_stands_out():
    names = optimizer_names()
    looks = [(figures.style_for(n)["color"], figures.style_for(n)["linestyle"], figures.style_for(n)["marker"])
             for n in names]
    assert len(set(looks)) == len(looks)
    widths = {name: figures.style_for(name)["linewidth"] for name in names}
    assert min(widths["locoprop_s"], widths["locoprop_m"]) > max(w for n, w in widths.items() if "locoprop" not in n)
    assert figures.style_for("unknown_opt")["label"] == "unknown_opt"
    assert legend_sorted(["sgd", "zzz", "locoprop_m", "adam"]) == ["locoprop_m", "adam", "sgd", "zzz"]


@pytest.mark.parametrize("losses", [[545, 200, 90, 60, 50], [545, 300, 200, 150, 136], [60, 55, 52, 51, 50]])
def test_log_tick_labels_never_overlap(tmp_path, losses):
    """On MNIST's 50..545 span the labels 70, 80, 90, 100 used to run into each other."""
    from tests.fixtures import write_run

    write_run(tmp_path, "curves_synth", "adam", 0, losses)
    runs, metrics = load_runs(tmp_path, "default")
    with figure_style():
        fig, ax = plt.subplots(figsize=(1.9, 1.5))  # one panel of the comparison figure
        figures.plot_curves(ax, runs, metrics, "train_ce")
        fig.canvas.draw()
        low, high = ax.get_ylim()
        boxes = [label.get_window_extent() for tick, label in zip(ax.get_yticks(), ax.get_yticklabels())
                 if label.get_text() and low <= tick <= high]
    plt.close(fig)
    assert len(boxes) >= 2
    boxes.sort(key=lambda box: box.y0)
    assert all(below.y1 <= above.y0 for below, above in zip(boxes, boxes[1:])), [(b.y0, b.y1) for b in boxes]


def test_a_run_diverged_above_the_healthy_range_is_marked_on_the_top_edge(tmp_path):
    """The axis keeps the healthy runs' range (a DTP seed at 5,000 once stretched it); the diverged
    run ends in an arrow on the top edge, labelled, and explained in the legend."""
    from tests.fixtures import write_run

    write_run(tmp_path, "curves_synth", "adam", 0, [545, 300, 200, 150, 136])
    write_run(tmp_path, "curves_synth", "dtp", 0, [545, 220, 5000, float("inf"), float("inf")])
    runs, metrics = load_runs(tmp_path, "default")
    fig, drawn = figures.curve_figure("curves_synth", runs, metrics, "train_ce", "epoch")
    ax = fig.axes[0]
    assert len(drawn) == 2 and 545 < ax.get_ylim()[1] < 1000
    above = [line for line in ax.get_lines() if line.get_gid() == figures.ABOVE_GID]
    assert len(above) == 1 and above[0].get_xdata()[0] == 2 and above[0].get_ydata()[0] == 1.0  # axes fraction
    assert not [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert [t.get_text() for t in ax.texts] == ["diverged"]
    assert "arrow on the top edge: diverged above the axis" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_the_zoom_reaches_just_above_the_fourth_best_final(tmp_path):
    """MNIST's leaders lie within a few percent: the zoom's linear axis spans the lowest loss to just
    above the 4th best mean final, so the 5th (and the plateaus of the rest) leave the frame."""
    from tests.fixtures import write_run

    finals = {"kfac": 50.7, "shampoo": 51.1, "locoprop_m": 51.4, "locoprop_s": 52.5, "rmsprop": 53.2, "sgd": 74.0}
    for optimizer, final in finals.items():
        write_run(tmp_path, "curves_synth", optimizer, 0, [545, 200, 100, final + 1, final])
    runs, metrics = load_runs(tmp_path, "default")
    fig, ax = plt.subplots()
    drawn = figures.zoom_panel(ax, runs, metrics, "train_ce")
    low, high = ax.get_ylim()
    assert len(drawn) == 6 and ax.get_yscale() == "linear"
    assert low < 50.7 and 52.5 < high < 53.2
    plt.close(fig)


def test_comparison_figures_keep_the_modern_family_apart_with_a_caption_from_the_runs(tmp_path):
    from tests.fixtures import write_run

    results = make_results(tmp_path / "results")
    for seed in (0, 1):
        write_run(results, "curves_synth", "muon", seed, [100, 20, 5])
    write_run(results, "faces_synth", "muon", 0, [100, 50, 40])
    runs, _ = load_runs(results, "default")
    split = figures.comparison_runs(runs)
    assert "muon" not in set(split["paper_comparison"]["optimizer"])
    assert set(split["paper_comparison"]["optimizer"]) == {"locoprop_m", "adam", "sgd"}
    best = figures.field_best(runs)  # the reference rows: the field's best mean finals, best first
    assert best["curves_synth"] == ["locoprop_m", "adam", "sgd"]
    modern = split["modern_comparison"]
    assert set(modern["optimizer"]) == {"muon", "locoprop_m", "adam", "sgd"}
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"device": "Test CPU x1"}))
    captions = figures.comparison_captions(runs, bench)
    assert set(captions) == {"paper_comparison", "modern_comparison"}
    paper = captions["paper_comparison"]
    assert "mean over 2 seeds per row" in paper and "Muon" not in paper
    assert "CURVES (synthetic): a generated stand-in for CURVES" in paper
    assert "Test CPU x1 (bench.json), not measured seconds" in paper and "cpu (2 threads)" in paper
    assert "2 seeds per row (except Muon on FACES (synthetic): 1)" in captions["modern_comparison"]
    assert "(Muon)" in captions["modern_comparison"]


def test_final_scores_from_the_fixture(tmp_path):
    runs, _ = load_runs(make_results(tmp_path), "default")
    scores = figures.final_scores(runs)
    # mean final primary loss over healthy seeds; faces_synth/sgd keeps only seed 0 (seed 1 diverged)
    assert scores.loc["curves_synth"].to_dict() == {"locoprop_m": 9.5, "adam": 11.0, "sgd": 55.0}
    assert scores.loc["faces_synth"].to_dict() == {"locoprop_m": 16.0, "adam": 21.0, "sgd": 25.0}


def test_reconstruction_display_scaling():
    faces = figures._display(np.array([[-2.0, 0.0, 2.0], [np.nan, 1.0, 3.0]]), gaussian=True)
    np.testing.assert_allclose(faces, [[0.0, 0.5, 1.0], [0.0, 1 / 3, 1.0]])
    probs = figures._display(np.array([[-0.1, 0.4, 1.2]]), gaussian=False)
    np.testing.assert_allclose(probs, [[0.0, 0.4, 1.0]])


def test_no_runs_exits_1_with_a_clear_message(tmp_path, capsys):
    assert figures_cli.main(["--results", str(tmp_path), "--group", "default"]) == 1
    assert "no runs found" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


def test_cli_exit_code_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scripts.figures", "--results", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no runs found" in proc.stderr
