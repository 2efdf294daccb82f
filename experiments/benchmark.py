"""Times one training iteration (n_critic critic updates + one generator update).

    python -m experiments.benchmark --settings=toy,dcgan32 [--compare_torch]

Prints one JSON line per setting: median ms per iteration over ``--repeats``
timed runs of ``--iters`` iterations each, after compilation and warm-up. With
``--compare_torch`` it runs the plain PyTorch reference steps in
``../shared/reference/`` (if PyTorch is installed) with the same sizes, in the
same sitting, and prints the ratio.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("settings", ["toy", "dcgan32"], "Named settings to time: toy, dcgan32.")
flags.DEFINE_integer("iters", 10, "Iterations per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats; the median is reported.")
flags.DEFINE_integer("batch_size", 0, "Override the setting's batch size (0: keep).")
flags.DEFINE_bool("compare_torch", False, "Also time the PyTorch reference in this run.")
flags.DEFINE_string(
    "reference_dir",
    None,
    "Folder of torch_toy.py and torch_dcgan.py (default: ../shared/reference).",
)

# name: (reference script, batch, description)
SETTINGS = {
    "toy": ("torch_toy.py", 256, "WGAN-GP toy: 3x512 ReLU MLPs, lambda 0.1, n_critic 5"),
    "dcgan32": ("torch_dcgan.py", 64, "WGAN-GP DCGAN 32x32x3, width 64, lambda 10, n_critic 5"),
}


def _build(name: str, batch: int):
    import jax
    import jax.numpy as jnp

    from gans import models, train

    if name == "toy":
        generator, critic = models.MLPGenerator(out_dim=2), models.MLPCritic()
        z_dim, shape, weight, b1 = 2, (2,), 0.1, 0.5
    else:
        generator = models.DCGANGenerator(image_size=32, channels=3, width=64)
        critic = models.DCGANCritic(width=64, normalization="none")
        z_dim, shape, weight, b1 = 128, (32, 32, 3), 10.0, 0.0
    config = train.StepConfig(
        loss="wasserstein",
        z_dim=z_dim,
        penalty="gradient_penalty",
        penalty_options=(("weight", weight),),
    )
    state = train.create_state(
        generator=generator,
        critic=critic,
        generator_tx=train.make_optimizer("adam", 1e-4, b1=b1, b2=0.9),
        critic_tx=train.make_optimizer("adam", 1e-4, b1=b1, b2=0.9),
        config=config,
        example=jnp.zeros((batch,) + shape),
        key=jax.random.key(0),
    )
    batches = {"x": jax.random.uniform(jax.random.key(1), (5, batch) + shape, minval=-1.0)}
    return jax.jit(train.make_train_step(config), donate_argnums=0), state, batches


def time_jax(name: str, batch: int) -> dict:
    import jax

    step, state, batches = _build(name, batch)
    start = time.perf_counter()
    state, metrics = step(state, batches)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    for _ in range(2):
        state, metrics = step(state, batches)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        for _ in range(FLAGS.iters):
            state, metrics = step(state, batches)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / FLAGS.iters * 1e3)
    ms = statistics.median(times)
    return {
        "impl": "jax",
        "bench": name,
        "batch": batch,
        "ms_per_iter": round(ms, 3),
        "examples_per_s": round(batch * 6 / ms * 1e3, 1),
        "first_step_s": round(compile_seconds, 2),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }


def time_torch(name: str, batch: int) -> dict | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
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
    del argv
    for name in FLAGS.settings:
        if name not in SETTINGS:
            print(
                f"error: unknown setting {name!r}; known settings: {', '.join(SETTINGS)}.",
                file=sys.stderr,
            )
            sys.exit(2)
    for name in FLAGS.settings:
        batch = FLAGS.batch_size or SETTINGS[name][1]
        ours = time_jax(name, batch)
        print(json.dumps(ours), flush=True)
        if FLAGS.compare_torch:
            reference = time_torch(name, batch)
            if reference is None:
                print(json.dumps({"bench": name, "torch": "not installed"}), flush=True)
                continue
            print(json.dumps(reference), flush=True)
            print(
                json.dumps(
                    {
                        "bench": name,
                        "speedup_vs_torch": round(
                            reference["ms_per_iter"] / ours["ms_per_iter"], 2
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
