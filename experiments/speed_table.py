"""Runs ``experiments.benchmark`` over a grid of settings and prints the rows of a speed table.

    python -m experiments.speed_table --grid=runs          # K = 1, 5, 8 runs, vmapped and mapped
    python -m experiments.speed_table --grid=scaling       # batch, width, runs, devices
    python -m experiments.speed_table --grid=accelerator   # on a GPU or TPU, beside PyTorch

Each cell is one ``experiments.benchmark`` process (simulated CPU devices need their own
``XLA_FLAGS`` before JAX starts), so one row's compile or memory never touches another's. Rows
print as they finish, as markdown, after a line naming the CPU, the backend and the date; the
raw JSON lines go to ``--out`` when given. ``x sequential`` is a K-run row's time over K times
the one-run row of the same setting: below 1, the K runs in one program beat running them one
after another.

``accelerator`` is the one command to run where a GPU is lent: every setting at its reference
batch with ``--compare_torch`` (the PyTorch references in ``../shared/reference``, which need a
CUDA build of PyTorch there), then the K-run rows.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys

from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("grid", "runs", ["runs", "scaling", "accelerator"], "Which grid to run.")
flags.DEFINE_string("out", None, "Also append every benchmark JSON line to this file.")
flags.DEFINE_integer("iters", 3, "Iterations per timed repeat (experiments.benchmark).")
flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.")
flags.DEFINE_list("runs_settings", ["toy", "dcgan32", "mode"], "Settings of the runs grid.")
flags.DEFINE_list("scaling_settings", ["toy", "dcgan32"], "Settings of the scaling grid.")

RUNS = (1, 5, 8)
# (setting, flag varied, values): how cost grows with the work.
SCALING = (
    ("toy", "batch_size", (64, 256, 1024)),
    ("toy", "width", (128, 512, 1024)),
    ("toy", "num_runs", (1, 2, 4, 8)),
    ("toy", "num_devices", (1, 2, 4, 8)),
    ("dcgan32", "batch_size", (16, 64, 128)),
    ("dcgan32", "width", (32, 64, 128)),
    ("dcgan32", "num_runs", (1, 2, 4)),
    ("dcgan32", "num_devices", (1, 2, 4, 8)),
)
HEADER = (
    "| setting | batch | width | runs | layout | devices | ms / iter | ms / run | x sequential "
    "| GFLOP/s | of peak | compile s |"
)


def benchmark(setting: str, **options) -> list[dict]:
    """The JSON lines of one ``experiments.benchmark`` process."""
    devices = options.get("num_devices", 1)
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        ).strip()
    args = [f"--settings={setting}", f"--iters={FLAGS.iters}", f"--repeats={FLAGS.repeats}"]
    args += [f"--{name}={value}" for name, value in options.items()]
    done = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=pathlib.Path(__file__).resolve().parents[1],
        check=False,  # A failure is reported below, in one sentence.
    )
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        cli.fail(f"experiments.benchmark {' '.join(args)} failed: {tail[0]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
    return lines


_started: list[bool] = []


def row(result: dict, single_ms: float | None = None) -> str:
    """The table row of one benchmark line; the first also brings the machine and the header."""
    head = ""
    if not _started:
        _started.append(True)
        today = datetime.date.today().isoformat()
        machine = f"{result['cpu']}, {os.cpu_count()} cores"
        if result["backend"] != "cpu":
            machine = f"{result['device_kind']} ({result['backend']}) beside {machine}"
        head = (
            f"{machine}, JAX {result['jax']}, "
            f"{today}\n\n{HEADER}\n" + "|---" * (HEADER.count("|") - 1) + "|\n"
        )
    runs = result["num_runs"]
    sequential = ""
    if single_ms and runs > 1:
        sequential = f"{result['ms_per_iter'] / (runs * single_ms):.2f}"
    return head + (
        f"| {result['bench']} | {result['batch']} | {result['width'] or 'default'} | {runs} "
        f"| {result['run_axis'] or '-'} | {result['devices']} | {result['ms_per_iter']:.1f} "
        f"| {result['ms_per_run']:.1f} | {sequential} | {result['gflops']:.1f} "
        f"| {100 * result['peak_fraction']:.0f} % | {result['compile_s']:.1f} |"
    )


def jax_line(lines: list[dict]) -> dict:
    return next(line for line in lines if line.get("impl") == "jax")


def runs_grid(settings, compare_torch: bool = False) -> None:
    for setting in settings:
        first = benchmark(setting, compare_torch=compare_torch)
        single = jax_line(first)
        print(row(single), flush=True)
        for line in first:
            if "speedup_vs_torch" in line:
                print(
                    f"| {setting} | PyTorch reference: {line['speedup_vs_torch']:.2f}x its time "
                    f"({line['torch_gflops']:.1f} GFLOP/s) | | | | | | | | | | |",
                    flush=True,
                )
        for runs in RUNS[1:]:
            for layout in ("vmap", "map"):
                result = jax_line(benchmark(setting, num_runs=runs, run_axis=layout))
                print(row(result, single["ms_per_iter"]), flush=True)


def scaling_grid() -> None:
    singles: dict[str, float] = {}
    for setting, name, values in SCALING:
        if setting not in FLAGS.scaling_settings:
            continue
        for value in values:
            result = jax_line(benchmark(setting, **{name: value}))
            if name == "num_runs" and value == 1:
                singles[setting] = result["ms_per_iter"]
            print(row(result, singles.get(setting) if name == "num_runs" else None), flush=True)


def main(argv):
    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("iters", "repeats"))
    if FLAGS.grid == "runs":
        runs_grid(FLAGS.runs_settings)
    elif FLAGS.grid == "scaling":
        scaling_grid()
    else:
        runs_grid(("toy", "dcgan32", "resnet32", "mode"), compare_torch=True)


if __name__ == "__main__":
    cli.run(main)
