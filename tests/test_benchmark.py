"""The benchmark's rows: one JSON line per setting with the CPU named, for K runs in either
layout and for the batch split over simulated devices; and the speed table's markdown rows."""

import json

import pytest
from cli import run_experiment

from experiments import speed_table

SMALL = ["--batch_size=16", "--iters=1", "--repeats=1", "--warmup=1", "--peak_size=64"]


def benchmark_lines(*args, devices=1):
    result = run_experiment("benchmark", *SMALL, *args, devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_k_runs_in_either_layout_do_k_times_one_runs_work():
    lines = {}
    for args in (
        ["--num_runs=1"],
        ["--num_runs=3", "--run_axis=vmap"],
        ["--num_runs=3", "--run_axis=map"],
    ):
        (line,) = benchmark_lines("--settings=mode", *args)
        lines[line["run_axis"]] = line
    single = lines[None]
    assert single["bench"] == "mode" and single["n_critic"] == 1 and single["cpu"]
    for layout in ("vmap", "map"):
        assert lines[layout]["num_runs"] == 3
        # Rounded to MFLOP in the lines.
        assert lines[layout]["gflop_per_iter"] == pytest.approx(
            3 * single["gflop_per_iter"], abs=2e-3
        )
        assert lines[layout]["ms_per_run"] == pytest.approx(
            lines[layout]["ms_per_iter"] / 3, abs=1e-3
        )


@pytest.mark.slow
def test_the_batch_splits_over_simulated_devices():
    (line,) = benchmark_lines("--settings=toy", "--width=16", "--num_devices=4", devices=4)
    assert line["devices"] == 4 and line["batch"] == 16 and line["width"] == 16
    assert line["ms_per_iter"] > 0 and 0 < line["peak_fraction"]


@pytest.mark.slow
def test_the_baselines_studys_networks_are_settings_with_their_own_n_critic():
    # SNGAN's standard CNN trains one critic update a step (CR-GAN's setting), the ResNets 5.
    (line,) = benchmark_lines("--settings=cnn16", "--width=4")
    assert (line["bench"], line["n_critic"], line["batch"]) == ("cnn16", 1, 16)
    assert line["conv_implementation"] == "sub_pixel_matmul" and line["gflop_per_iter"] > 0


def test_a_table_row_compares_k_runs_with_k_sequential_runs():
    result = {
        "bench": "toy",
        "batch": 256,
        "width": None,
        "num_runs": 5,
        "run_axis": "map",
        "devices": 1,
        "ms_per_iter": 500.0,
        "ms_per_run": 100.0,
        "gflops": 12.0,
        "peak_fraction": 0.5,
        "compile_s": 3.0,
        "cpu": "CPU",
        "backend": "cpu",
        "jax": "0",
    }
    lines = speed_table.row(result, single_ms=125.0).splitlines()
    assert lines[0].startswith("CPU, ") and lines[2] == speed_table.HEADER
    assert (
        lines[-1]
        == "| toy | 256 | default | 5 | map | 1 | 500.0 | 100.0 | 0.80 | 12.0 | 50 % | 3.0 |"
    )
