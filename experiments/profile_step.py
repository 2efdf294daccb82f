"""Where one training iteration's time goes: each XLA operation timed, by kind and by phase.

    python -m experiments.profile_step --settings=dcgan32 [--iters=3] [--top=15] [--out=F]

Traces ``--iters`` iterations of a benchmark setting (``experiments.benchmark``'s settings and
flags: ``--batch_size``, ``--width``, ``--conv_implementation``, ``--num_runs``) with
``jax.profiler`` and prints ``gans.profiling``'s summary as markdown: each phase of the step
(the generator's pass for the fakes, the critic's passes, the penalty's input gradient and
double backward pass, the generator update) split by kind (matrix products, data movement,
elementwise, ...), then the slowest operations. Beside it: the wall time, XLA's FLOP count for
the step, the matrix products' own FLOP rate and the machine's (``peak_gflops``: a
``--peak_size``-square float32 product, timed just before).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence

from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("top", 15, "Operations listed one by one, the slowest first.")
flags.DEFINE_string("profile_out", None, "Also write the profiles here, one JSON line per setting.")


def profile_setting(name: str, iters: int, top: int) -> dict:
    """Compiles a benchmark setting's step, traces ``iters`` iterations and summarises them."""
    import time

    import jax

    from experiments import benchmark, benchmark_settings
    from gans import profiling, sweep, train
    from gans import run as run_lib

    batch = FLAGS.batch_size or benchmark_settings.SETTINGS[name][1]
    overrides = benchmark.overrides()
    config, state, batches = benchmark_settings.build_setting(
        name, batch, num_runs=FLAGS.num_runs, overrides=overrides
    )
    if FLAGS.num_runs == 1:
        step = train.make_train_step(config)
    else:
        step = sweep.make_vmapped_train_step(config, FLAGS.run_axis)
    compiled = jax.jit(step, donate_argnums=0).lower(state, batches).compile()
    for _ in range(max(FLAGS.warmup, 1)):
        state, metrics = compiled(state, batches)
    jax.block_until_ready(metrics)
    peak = benchmark.matmul_timer(FLAGS.peak_size)
    peak_flops = max(peak() for _ in range(3))
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(iters):
                state, metrics = compiled(state, batches)
            jax.block_until_ready(metrics)
            wall = (time.perf_counter() - start) / iters
        seconds, calls = profiling.thunk_times(profiling.read_trace(directory))
    summary = profiling.summarize(compiled.as_text(), seconds, calls, iters, top)
    return {
        "bench": name,
        "batch": batch,
        "num_runs": FLAGS.num_runs,
        "cpu": run_lib.cpu_model(),
        "device_kind": jax.devices()[0].device_kind,
        "conv_implementation": FLAGS.conv_implementation,
        "iters": iters,
        "wall_ms_per_iter": round(wall * 1e3, 2),
        "peak_gflops": round(peak_flops / 1e9, 1),
        # XLA's count for the whole step, as the benchmark takes it.
        "gflop_per_iter": round(
            benchmark_settings.flops_per_iteration(
                name, batch, benchmark_settings.default_n_critic(name), FLAGS.num_runs, overrides
            )
            / 1e9,
            4,
        ),
        **summary,
    }


def main(argv: Sequence[str]) -> None:
    from experiments import benchmark_settings
    from gans import profiling

    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("iters", "num_runs"))
    cli.require_at_least(FLAGS, ("top", "width"), 0)
    if FLAGS.num_devices != 1 or FLAGS.compare_torch:
        cli.fail(
            "profile_step traces one device's step and no reference; drop --num_devices and "
            "--compare_torch (experiments.benchmark times those)."
        )
    for name in FLAGS.settings:
        if name not in benchmark_settings.SETTINGS:
            known = ", ".join(benchmark_settings.SETTINGS)
            cli.fail(f"unknown setting {name!r}; known settings: {known}.")
    for name in FLAGS.settings:
        profile = profile_setting(name, FLAGS.iters, FLAGS.top)
        print(profiling.markdown(profile), flush=True)
        if FLAGS.profile_out:
            with open(FLAGS.profile_out, "a") as f:
                f.write(json.dumps(profile) + "\n")


if __name__ == "__main__":
    # The benchmark's flags (settings, sizes, layouts) are this command's too.
    from experiments import benchmark  # noqa: F401

    cli.run(main)
