"""`make bench` in its smallest setting: the table's schema and the ratios' definition."""
import json

import pytest
import torch

from benchmarks import speed
from benchmarks.rundir import cpu_model


def test_smallest_bench_writes_table_with_schema(tmp_path, capsys):
    rows = speed.main(["--datasets", "curves", "--optimizers", "adam", "locoprop_m", "--steps", "1", "--warmup", "1",
                       "--batch-sizes", "50", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| dataset | optimizer |" in out and "ms/step" in out
    (json_path,) = tmp_path.glob("*.json")
    data = json.loads(json_path.read_text())
    assert set(data) >= {"device", "matmul_peak_gflops", "torch", "steps", "rows"}
    assert data["device"] == f"{cpu_model()} x{torch.get_num_threads()}"  # the CPU model: tables of two CPUs differ
    assert json_path.stem == speed.file_stem(data["device"])
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


def test_table_file_names_come_from_the_device_name():
    assert speed.file_stem("Intel(R) Xeon(R) Processor x1") == "intel_xeon_processor_x1"
    assert speed.file_stem("AMD EPYC 7B13 64-Core Processor x2") == "amd_epyc_7b13_64_core_processor_x2"
    assert speed.file_stem("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"


def test_cpu_model_adds_the_family_and_model_that_tell_generic_names_apart():
    # two virtual machines both calling themselves "Intel(R) Xeon(R) Processor" ran float32 matmuls at 93 and 172 GFLOP/s
    first_core = "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 167\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    second_core = first_core.replace(": 0", ": 1").replace("167", "999")
    assert cpu_model(first_core + "\n" + second_core) == "Intel(R) Xeon(R) Processor (family 6, model 167)"
    assert cpu_model("model name\t: AMD EPYC\n") == "AMD EPYC"  # nothing to add where the numbers are missing
    assert speed.file_stem(cpu_model(first_core) + " x1") == "intel_xeon_processor_family_6_model_167_x1"


def test_unknown_optimizer_is_named(tmp_path):
    with pytest.raises(SystemExit, match="unknown optimizer"):
        speed.main(["--optimizers", "adamw9", "--out", str(tmp_path)])


def _exact_flops(sizes, n, inner_steps=None):
    """Matmul FLOPs by hand for a chain of Linear layers on n examples (2 per multiply-add).

    Back-prop step: forward 2n*in*out per layer, weight gradient 2n*in*out per layer, input
    gradient 2n*in*out per layer but the first. LocoProp step (T inner steps): forward, the input
    gradients (no weight gradients), then per inner step a weight gradient and a bias gemv (2n*out)
    per layer, and for k >= 1 a forward per layer.
    """
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * n * i * o for i, o in pairs)
    input_grads = sum(2 * n * i * o for i, o in pairs[1:])
    if inner_steps is None:
        return forward + forward + input_grads
    inner = sum(2 * n * i * o + 2 * n * o for i, o in pairs)
    return forward + input_grads + inner_steps * inner + (inner_steps - 1) * forward


def test_flop_counter_counts_every_matmul_form_exactly():
    """FlopCounterMode with the in-place and matrix-vector forms added agrees with hand counts."""
    import torch

    from benchmarks.config import compose_config
    from benchmarks.models import build_autoencoder
    from benchmarks.optimizers import make_optimizer, make_step
    from omegaconf import OmegaConf

    sizes, n = [20, 8, 4, 8, 20], 16
    x = torch.rand(n, sizes[0])
    for name, expected in (("sgd", _exact_flops(sizes, n)), ("locoprop_m", _exact_flops(sizes, n, inner_steps=10))):
        model = build_autoencoder(sizes=sizes)
        opt = make_optimizer(model, OmegaConf.to_container(compose_config([f"optimizer={name}"]).optimizer))
        assert speed.count_flops(make_step(model, opt), x) == {torch.float32: expected}, name


def test_muon_counts_its_newton_schulz_iterations_exactly_and_as_bf16_work():
    """Muon = a back-prop step in float32 plus, per hidden matrix (m <= n after transposing), ns_steps
    Newton-Schulz iterations of X X^T (2m^2 n), the quintic term A A (2m^3) and B X (2m^2 n), in bf16."""
    from benchmarks.config import compose_config
    from benchmarks.models import build_autoencoder
    from benchmarks.optimizers import make_optimizer, make_step
    from omegaconf import OmegaConf

    sizes, n = [20, 12, 4, 12, 20], 16
    cfg = OmegaConf.to_container(compose_config(["optimizer=muon"]).optimizer)
    model = build_autoencoder(sizes=sizes)
    counts = speed.count_flops(make_step(model, make_optimizer(model, cfg)), torch.rand(n, sizes[0]), steps=3)
    hidden = [sorted(p) for p in zip(sizes[1:-2], sizes[2:-1])]  # the first and last layers go to AdamW
    newton_schulz = sum(cfg["ns_steps"] * (4 * m * m * k + 2 * m ** 3) for m, k in hidden)
    assert counts == {torch.float32: _exact_flops(sizes, n), torch.bfloat16: newton_schulz}


def test_a_fraction_of_peak_above_one_is_flagged_never_printed_as_a_percentage():
    peaks = {torch.float32: 100.0, torch.bfloat16: 400.0}  # GFLOP/s
    flops = {torch.float32: 50e9, torch.bfloat16: 100e9}  # 0.5 s + 0.25 s at peak
    assert speed.fraction_of_peak(flops, 1.0, peaks) == pytest.approx(0.75)
    assert speed.fraction_of_peak(flops, 0.5, peaks) == pytest.approx(1.5)
    row = {"dataset": "curves", "optimizer": "kfac", "fraction_of_peak": 1.5, "status": "count wrong"}
    table = speed.markdown_table([row], "cpu x1", 100.0)
    assert "| count wrong |" in table and "150.0" not in table
