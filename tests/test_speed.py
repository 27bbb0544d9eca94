"""`make bench` in its smallest setting: the table's schema and the ratios' definition."""
import json

import pytest

from benchmarks import speed


def test_smallest_bench_writes_table_with_schema(tmp_path, capsys):
    rows = speed.main(["--datasets", "curves", "--optimizers", "adam", "locoprop_m", "--steps", "1", "--warmup", "1",
                       "--batch-sizes", "50", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| dataset | optimizer |" in out and "ms/step" in out
    (json_path,) = tmp_path.glob("*.json")
    data = json.loads(json_path.read_text())
    assert set(data) >= {"device", "matmul_peak_gflops", "torch", "steps", "rows"}
    assert data["steps"] == 1 and len(rows) == 2 == len(data["rows"])
    assert json_path.with_suffix(".md").exists()
    for row in data["rows"]:
        assert set(speed.RESULT_KEYS) <= set(row), set(speed.RESULT_KEYS) - set(row)
        assert row["status"] == "ok" and row["ms_per_step"] > 0 and row["gflop_per_step"] > 0
        assert row["n_params"] == 2 * (784 * 400 + 400 * 200 + 200 * 100 + 100 * 50 + 50 * 25 + 25 * 6) + \
            (400 + 200 + 100 + 50 + 25 + 6) + (25 + 50 + 100 + 200 + 400 + 784)
    locoprop = next(r for r in data["rows"] if r["optimizer"] == "locoprop_m")
    # LocoProp-M does T = 10 inner iterations per layer: far more matmul work than one BP step
    adam = next(r for r in data["rows"] if r["optimizer"] == "adam")
    assert locoprop["gflop_per_step"] > 4 * adam["gflop_per_step"]


def test_unknown_optimizer_is_named(tmp_path):
    with pytest.raises(SystemExit, match="unknown optimizer"):
        speed.main(["--optimizers", "adamw9", "--out", str(tmp_path)])
