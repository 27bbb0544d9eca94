"""`make gpu-campaign` in its smallest setting on CPU, so the first GPU run spends no minute on a typo."""
from __future__ import annotations

import json
import tarfile

import pytest

from benchmarks.optimizers import paper_optimizers
from scripts import gpu_campaign


def test_dry_plan_names_every_run_and_its_concurrency(tmp_path):
    assert gpu_campaign.main(["--dry-run", "--tiny", "--out", str(tmp_path / "x")]) == 0
    plan = json.loads((tmp_path / "x" / "plan.json").read_text())
    assert plan["optimizers"] == paper_optimizers() and set(plan["commands"]) == set(paper_optimizers())
    assert plan["concurrency"] >= 1 and "processes" in plan["concurrency_reason"]
    assert all("tuned=mnist/" in cmd for cmd in plan["commands"].values())


def test_tiny_campaign_writes_every_expected_file(tmp_path):
    out = tmp_path / "cpu-tiny"
    code = gpu_campaign.main(["--tiny", "--out", str(out), "--archive"])
    plan = json.loads((out / "plan.json").read_text())
    assert code == 0, plan
    assert plan["statuses"] == {o: "finished" for o in paper_optimizers()}
    assert plan["tests"]["exit"] == 0 and (out / "tests.xml").exists()
    assert json.loads((out / "device.json").read_text())["device"].startswith("cpu")
    assert list((out / "bench").glob("*.json")) and list((out / "bench").glob("*.md"))
    for name in ("summary.md", "summary.csv", "README.md", "figures/curves_synth_train_vs_time.png",
                 "figures/curves_synth_train_vs_epoch.png", "figures_measured/curves_synth_train_vs_time.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "figures/provenance.json").read_text())["time_axis"] == "bench"
    with tarfile.open(f"{out}.tar.gz") as tar:
        names = tar.getnames()
    assert "cpu-tiny/plan.json" in names and not any(n.endswith("checkpoint.pt") for n in names)


def test_missing_data_stops_the_campaign_before_anything_runs(tmp_path, monkeypatch):
    empty = tmp_path / "no-mnist-here"
    empty.mkdir()
    monkeypatch.setattr(gpu_campaign, "TINY_RUN", ["dataset=mnist", f"dataset.root={empty}", "device=cpu"])
    with pytest.raises(SystemExit, match=r"data set mnist cannot be loaded, nothing was run.*train-images-idx3-ubyte"):
        gpu_campaign.main(["--tiny", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
