"""Times one training iteration (n_critic critic updates + one generator update).

    python -m experiments.benchmark --settings=toy,dcgan32 [--compare_torch]
    python -m experiments.benchmark --settings=resnet32 --batch_size=16 --iters=2 --repeats=3
    python -m experiments.benchmark --settings=convs

Prints one JSON line per setting, with

- ``ms_per_iter``: the median over ``--repeats`` timed runs of ``--iters`` iterations each,
  after compilation and ``--warmup`` iterations (``ms_per_iter_min``: the fastest run);
- ``images_per_s``: real images read by the critic per second (``n_critic * batch`` an
  iteration), and ``examples_per_s``, which also counts the generator update's batch;
- ``compile_s``: tracing, lowering and compiling the step (before its first call);
- ``gflop_per_iter``: XLA's cost analysis of one iteration with every critic update counted
  (a rolled ``lax.scan`` body is counted once by XLA, so the count is taken from the step with
  one and with two critic updates, both straight-line code, and extrapolated linearly);
- ``gflops`` and ``peak_fraction``: achieved FLOP/s, and its fraction of the FLOP/s of a
  ``--peak_size``-square float32 matrix product timed between the repeats (same process, same
  load: the ratio survives a busy machine better than either number);
- ``program_mb``: XLA's buffer assignment for the step (arguments, outputs and temporaries,
  donated buffers counted once), and ``max_rss_mb``: the process's peak resident memory.

With ``--compare_torch`` it runs the plain PyTorch reference steps in ``../shared/reference/``
(if PyTorch is installed) with the same sizes, in the same sitting, and prints the ratio.

``convs`` times the DCGAN-32 layers alone, each way of ``gans.models.layers.IMPLEMENTATIONS``
in turn within every repeat (so a busy machine slows them alike): the generator's transposed
convolutions (value and gradient with respect to input and kernel) and the critic's strided
convolutions (the gradient penalty's double backpropagation, with respect to the kernel).
Compare timings only from runs on the same, otherwise idle, machine.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

from absl import flags

from experiments import benchmark_settings, cli
from experiments.benchmark_settings import SETTINGS, build_setting, flops_per_iteration

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "settings", ["toy", "dcgan32"], "Named settings to time: toy, dcgan32, resnet32, convs."
)
flags.DEFINE_integer("iters", 10, "Iterations per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats; the median is reported.")
flags.DEFINE_integer("warmup", 2, "Untimed iterations after compilation.")
flags.DEFINE_integer("batch_size", 0, "Override the setting's batch size (0: keep).")
flags.DEFINE_integer("peak_size", 2048, "Side of the square matrix product timed as the peak.")
flags.DEFINE_enum(
    "conv_implementation",
    "auto",
    ["auto", "native", "sub_pixel", "sub_pixel_matmul"],
    "How the DCGAN models compute their convolutions (gans.models.layers.IMPLEMENTATIONS).",
)
flags.DEFINE_integer("num_runs", 1, "Runs trained together by one program (seeds 0, 1, ...).")
flags.DEFINE_enum(
    "run_axis",
    "auto",
    ["auto", "vmap", "map"],
    "How --num_runs runs share the program (gans.sweep.resolve_run_axis).",
)
flags.DEFINE_integer("width", 0, "Override the toy MLPs' hidden width or DCGAN's base width.")
flags.DEFINE_integer(
    "num_devices",
    1,
    "Devices to pmap over, the batch split over them (simulate CPU devices with XLA_FLAGS="
    "--xla_force_host_platform_device_count=N).",
)
flags.DEFINE_enum(
    "parallel",
    "pmap",
    ["pmap", "shard_map"],
    "How the step maps over --num_devices devices (gans.parallel.data_parallel).",
)
flags.DEFINE_bool("compare_torch", False, "Also time the PyTorch reference in this run.")
flags.DEFINE_string(
    "reference_dir",
    None,
    "Folder of torch_toy.py and torch_dcgan.py (default: ../shared/reference).",
)

# Layer microbenchmarks: (input side, input channels, output channels) at the setting's batch.
CONV_SETTING = "convs"
TRANSPOSED_LAYERS = ((4, 256, 128), (8, 128, 64), (16, 64, 3))  # The DCGAN-32 generator's.
STRIDED_LAYERS = ((32, 3, 64), (16, 64, 128), (8, 128, 256))  # The DCGAN-32 critic's.


def overrides() -> benchmark_settings.Overrides:
    """What the flags change in every setting."""
    return benchmark_settings.Overrides(FLAGS.width, FLAGS.conv_implementation, FLAGS.run_axis)


def matmul_timer(size: int):
    """Returns a function timing one ``size x size`` float32 product, in FLOP/s."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    jax.block_until_ready(product(a))

    def flops_per_s() -> float:
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        return 2 * size**3 / (time.perf_counter() - start)

    return flops_per_s


def _program_mb(compiled) -> float | None:
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    total = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    return round(total / 2**20, 1)


def time_jax(name: str, batch: int) -> dict:
    import jax

    from gans import parallel, sweep, train
    from gans import run as run_lib
    from gans.models import layers

    num_runs, num_devices = FLAGS.num_runs, FLAGS.num_devices
    axis_name = parallel.AXIS if num_devices > 1 else None
    config, state, batches = build_setting(
        name, batch, num_runs=num_runs, axis_name=axis_name, overrides=overrides()
    )
    n_critic = batches["x"].shape[1 if num_runs > 1 else 0]
    start = time.perf_counter()
    if num_devices == 1:
        if num_runs == 1:
            step = train.make_train_step(config)
        else:
            step = sweep.make_vmapped_train_step(config, FLAGS.run_axis)
        compiled = jax.jit(step, donate_argnums=0).lower(state, batches).compile()
    else:  # The global batch split over the devices, as gans.runner trains it.
        devices = parallel.devices(num_devices, batch)
        layout = parallel.Layout(FLAGS.parallel, tuple(devices), 2 if num_runs > 1 else 1)
        state, batches = layout.replicate(state), layout.shard(batches)
        compiled = run_lib.make_pmapped_train_step(
            config,
            devices,
            vmapped=num_runs > 1,
            run_axis=FLAGS.run_axis,
            transform=FLAGS.parallel,
        )
        state, _ = compiled(state, batches)  # Compiles on its first call.
    compile_seconds = time.perf_counter() - start
    for _ in range(max(FLAGS.warmup, 1)):
        state, metrics = compiled(state, batches)
    jax.block_until_ready(metrics)
    matmul_flops_per_s = matmul_timer(FLAGS.peak_size)
    times, peaks = [], []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        for _ in range(FLAGS.iters):
            state, metrics = compiled(state, batches)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / FLAGS.iters)
        peaks.append(max(matmul_flops_per_s() for _ in range(3)))
    seconds, peak = statistics.median(times), statistics.median(peaks)
    flops = flops_per_iteration(name, batch, n_critic, num_runs, overrides())
    result = {
        "impl": "jax",
        "bench": name,
        "batch": batch,
        "n_critic": n_critic,
        "num_runs": num_runs,
        "run_axis": sweep.resolve_run_axis(FLAGS.run_axis) if num_runs > 1 else None,
        "width": FLAGS.width or None,
        "devices": num_devices,
        "cpu": run_lib.cpu_model(),
        "device_kind": jax.devices()[0].device_kind,
        "ms_per_iter": round(seconds * 1e3, 3),
        "ms_per_iter_min": round(min(times) * 1e3, 3),
        "ms_per_run": round(seconds * 1e3 / num_runs, 3),
        "images_per_s": round(num_runs * batch * n_critic / seconds, 1),
        "examples_per_s": round(num_runs * batch * (n_critic + 1) / seconds, 1),
        "compile_s": round(compile_seconds, 2),
        "gflop_per_iter": round(flops / 1e9, 3),
        "gflops": round(flops / seconds / 1e9, 1),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "peak_fraction": round(flops / seconds / peak, 3),
        "program_mb": _program_mb(compiled) if num_devices == 1 else None,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if name not in ("toy", "mode"):
        result["conv_implementation"] = layers.resolve_implementation(FLAGS.conv_implementation)
    return result


def _conv_programs(kind: str, side: int, c_in: int, c_out: int, batch: int):
    """One jitted program per implementation, and its arguments, for one layer."""
    import jax
    import jax.numpy as jnp

    from gans.models import layers

    x = jax.random.normal(jax.random.key(0), (batch, side, side, c_in))
    programs = {}
    for implementation in layers.IMPLEMENTATIONS[1:]:
        if kind == "transposed":
            module = layers.SubPixelConvTranspose(
                c_out, (4, 4), strides=(2, 2), padding="SAME", implementation=implementation
            )
        else:
            module = layers.conv(
                c_out,
                (4, 4),
                strides=(2, 2),
                padding=((1, 1), (1, 1)),
                implementation=implementation,
            )
        params = module.init(jax.random.key(1), x)["params"]
        y = jax.eval_shape(module.apply, {"params": params}, x)
        cotangent = jax.random.normal(jax.random.key(2), y.shape)

        def output_loss(params, x, module=module, cotangent=cotangent):
            return jnp.sum(module.apply({"params": params}, x) * cotangent)

        def penalty(params, x, module=module, cotangent=cotangent):
            def score(x):
                return jnp.sum(
                    jax.nn.leaky_relu(module.apply({"params": params}, x), 0.2) * cotangent
                )

            norms = jnp.sqrt(jnp.sum(jax.grad(score)(x) ** 2, axis=(1, 2, 3)))
            return jnp.mean((norms - 1.0) ** 2)

        if kind == "transposed":
            program = jax.jit(jax.value_and_grad(output_loss, argnums=(0, 1)))
        else:
            program = jax.jit(jax.grad(penalty))
        jax.block_until_ready(program(params, x))
        programs[implementation] = (program, (params, x))
    return programs


def time_convs(batch: int) -> list[dict]:
    """Median ms of each layer's program per implementation (see the module docstring)."""
    import jax

    results = []
    for kind, shapes, what, batches in (
        ("transposed", TRANSPOSED_LAYERS, "value_and_grad (input, kernel)", batch),
        ("strided", STRIDED_LAYERS, "gradient-penalty grad (kernel)", 2 * batch),
    ):
        for side, c_in, c_out in shapes:
            programs = _conv_programs(kind, side, c_in, c_out, batches)
            times = {name: [] for name in programs}
            for _ in range(FLAGS.repeats):
                for name, (program, args) in programs.items():
                    start = time.perf_counter()
                    jax.block_until_ready(program(*args))
                    times[name].append((time.perf_counter() - start) * 1e3)
            out = side * 2 if kind == "transposed" else side // 2
            results.append(
                {
                    "bench": CONV_SETTING,
                    "layer": f"{kind} {side}x{side}x{c_in} -> {out}x{out}x{c_out}",
                    "batch": batches,
                    "timed": what,
                    **{f"{name}_ms": round(statistics.median(t), 2) for name, t in times.items()},
                }
            )
    return results


def time_torch(name: str, batch: int) -> dict | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    if SETTINGS[name][0] is None or FLAGS.num_runs > 1 or FLAGS.width or FLAGS.num_devices > 1:
        return None  # No reference: the mode program, several runs or another width.
    folder = pathlib.Path(FLAGS.reference_dir or pathlib.Path.cwd().parent / "shared" / "reference")
    script = folder / SETTINGS[name][0]
    if not script.exists():
        raise FileNotFoundError(f"reference script {script} not found; pass --reference_dir.")
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--batch",
            str(batch),
            "--iters",
            str(FLAGS.iters * FLAGS.repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("num_runs", "num_devices", "iters", "repeats"))
    cli.require_at_least(FLAGS, ("width",), 0)
    known = (*SETTINGS, CONV_SETTING)
    for name in FLAGS.settings:
        if name not in known:
            cli.fail(f"unknown setting {name!r}; known settings: {', '.join(known)}.")
    for name in FLAGS.settings:
        if name == CONV_SETTING:
            for line in time_convs(FLAGS.batch_size or SETTINGS["dcgan32"][1]):
                print(json.dumps(line), flush=True)
            continue
        batch = FLAGS.batch_size or SETTINGS[name][1]
        ours = time_jax(name, batch)
        print(json.dumps(ours), flush=True)
        if FLAGS.compare_torch:
            reference = time_torch(name, batch)
            if reference is None:
                print(json.dumps({"bench": name, "torch": "no reference run"}), flush=True)
                continue
            print(json.dumps(reference), flush=True)
            print(
                json.dumps(
                    {
                        "bench": name,
                        "speedup_vs_torch": round(
                            reference["ms_per_iter"] / ours["ms_per_iter"], 2
                        ),
                        "torch_gflops": round(
                            ours["gflop_per_iter"] / reference["ms_per_iter"] * 1e3, 1
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    cli.run(main)
