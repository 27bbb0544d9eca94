"""`make gpu-campaign` rehearsed on CPU: every phase within its limit, the runs longest first, a run
cut by the deadline stopped cleanly and resumable, so the first GPU minutes go to results."""
from __future__ import annotations

import json
import tarfile

import pytest

from benchmarks.optimizers import paper_optimizers
from benchmarks.orchestration import gpu_campaign as campaign_plan
from scripts import gpu_campaign


def test_dry_plan_names_every_run_its_order_and_its_concurrency(tmp_path):
    assert gpu_campaign.main(["--dry-run", "--tiny", "--out", str(tmp_path / "x")]) == 0
    plan = json.loads((tmp_path / "x" / "plan.json").read_text())
    assert plan["optimizers"] == paper_optimizers() and set(plan["commands"]) == set(paper_optimizers())
    assert sorted(plan["order"]) == sorted(paper_optimizers())
    assert plan["concurrency"] >= 1 and "processes" in plan["concurrency_reason"]
    assert all("tuned=mnist/" in cmd for cmd in plan["commands"].values())


@pytest.mark.slow
def test_tiny_rehearsal_keeps_its_budget_and_stops_the_last_run_cleanly(tmp_path):
    """Runs far too long for the budget: the one running at the deadline gets SIGTERM, ends as
    'stopped' with the epochs it reached, and its checkpoint travels in the archive."""
    out = tmp_path / "cpu-tiny"
    budget_s = 60  # the bench and test phases may take their 15 s floors each: the runs keep 20 s
    code = gpu_campaign.main(["--tiny", "--tiny-epochs", "100000", "--max-minutes", str(budget_s / 60),
                              "--out", str(out), "--archive"])
    plan = json.loads((out / "plan.json").read_text())
    assert code == 1  # not every run finished, as planned
    for name in ("bench", "tests", "runs", "report"):
        assert plan["phases"][name]["seconds"] <= plan["phases"][name]["limit_s"] + 15, (name, plan["phases"][name])
    assert plan["seconds"] <= budget_s + 30
    assert plan["phases"]["tests"]["exit"] == 0 and (out / "tests.xml").exists()
    ended = plan["ended"]
    stopped = [name for name, e in ended.items() if e["status"] == "stopped"]
    assert stopped, ended
    for name in stopped:
        assert ended[name]["reason"].startswith("stopped by signal SIGTERM after epoch") and ended[name]["epochs"] >= 1
    assert all(e["status"] in ("stopped", "not started (deadline)") for e in ended.values())
    bench_known = [o for o in plan["order"] if o in paper_optimizers()[:2]]
    assert plan["order"][:len(bench_known)] == bench_known  # priced runs first, the most expensive first
    with tarfile.open(f"{out}.tar.gz") as tar:
        names = tar.getnames()
    assert "cpu-tiny/plan.json" in names
    assert any(n.endswith("checkpoint.pt") and f"/{stopped[0]}/" in n for n in names)
    for name in ("summary.md", "README.md", "figures/curves_synth_train_vs_epoch.png"):
        assert (out / name).exists(), name


def test_missing_data_stops_the_campaign_before_anything_runs(tmp_path, monkeypatch):
    empty = tmp_path / "no-mnist-here"
    empty.mkdir()
    monkeypatch.setattr(campaign_plan, "TINY_RUN", ["dataset=mnist", f"dataset.root={empty}", "device=cpu"])
    with pytest.raises(SystemExit, match=r"data set mnist cannot be loaded, nothing was run.*train-images-idx3-ubyte"):
        gpu_campaign.main(["--tiny", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
