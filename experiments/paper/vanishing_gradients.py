"""Vanishing generator gradients against a near-optimal discriminator: Arjovsky & Bottou (2017),
"Towards principled methods for training GANs", Figs. 2 and 3 (and Fig. 1's discriminator).

    python -m experiments.paper.vanishing_gradients \
        --flagfile=experiments/flags/paper_vanishing_gradients.cfg --out=runs/vanishing

The paper trains a DCGAN on LSUN for 1, 10 and 25 epochs, freezes each generator, trains a fresh
discriminator from scratch, and every few discriminator steps measures the norm of the gradient
of the generator's cost with respect to the generator's parameters, for

- the minimax cost ``E[log(1 - D(G(z)))]``: its gradient is ``-D(G(z)) dlogit/dtheta``, which
  vanishes as the discriminator wins (Fig. 2, Theorem 2.4), and
- the ``-log D`` cost ``-E[log D(G(z))]``: its gradient ``-(1 - D(G(z))) dlogit/dtheta`` does not
  vanish, but grows and becomes noisy (Fig. 3, Theorem 2.6).

Here the same protocol runs on the embedded digits at 16x16 with the DCGAN models and the
NS-GAN settings of ``experiments/flags/ns_gan_digits.cfg`` (one epoch is 28 steps of 64). The
GAN is trained by ``gans.runner`` (each length resumes the previous one's checkpoint); each
discriminator trains by the library's jitted ``gans.train`` step, up to ten updates a call, with
the generator frozen by ``optax.set_to_zero``; the norms come from
``gans.diagnostics.generator_grad_norm`` under ``gans.losses``' two generator costs.

Writes into ``--out``: ``vanishing_gradients.json`` (every curve), ``vanishing_gradients.png``
(the figure) and ``gan/`` (the GAN run: metrics, samples, checkpoints).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pathlib
import sys
import time
from typing import Any

from absl import flags, logging

from experiments import cli

FLAGS = flags.FLAGS

flags.DEFINE_string("out", None, "Directory for the curves, the figure and the GAN run (new).")
flags.DEFINE_list(
    "gan_steps",
    ["28", "280", "700"],
    "NS-GAN lengths in generator steps, increasing; on the digits 28 steps of 64 are one epoch, "
    "so the default is the paper's 1, 10 and 25 epochs.",
)
flags.DEFINE_integer(
    "discriminator_steps", 4000, "Updates of each fresh discriminator against a frozen generator."
)
flags.DEFINE_integer("measure_every", 50, "Discriminator updates between measurements.")
flags.DEFINE_integer(
    "grad_batches", 8, "Batches of z per measurement; the curves show their mean and std."
)
flags.DEFINE_integer("seed", 0, "Seed of the GAN; the discriminators use seed + 1.")
flags.DEFINE_integer("image_size", 16, "Digits side: 16 or 32 (the DCGAN models need >= 16).")
flags.DEFINE_integer("z_dim", 64, "Latent size; z ~ N(0, I).")
flags.DEFINE_integer("width", 32, "DCGAN base channels.")
flags.DEFINE_integer("batch_size", 64, "Examples per update and per measured batch.")
flags.DEFINE_float("learning_rate", 2e-4, "Adam learning rate of both players (DCGAN).")
flags.DEFINE_float("beta1", 0.5, "Adam beta1 (DCGAN).")
flags.mark_flag_as_required("out")

# The two generator costs of the paper, as named in gans.losses.
COSTS = {"minimax": "E[log(1 - D(G(z)))]", "non_saturating": "-E[log D(G(z))]"}
# train_step lays out at most this many critic updates straight (gans.train._MAX_UNROLL); on
# XLA:CPU a rolled loop of DCGAN updates is about 10x slower (BUILD_NOTES.md).
MAX_UPDATES_PER_CALL = 10


def updates_per_call(measure_every: int, limit: int = MAX_UPDATES_PER_CALL) -> int:
    """The largest divisor of ``measure_every`` that is at most ``limit``."""
    return max(d for d in range(1, min(measure_every, limit) + 1) if measure_every % d == 0)


def parse_lengths(values: list[str]) -> list[int]:
    """``--gan_steps`` as increasing positive integers; ValueError with the reason otherwise."""
    try:
        lengths = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--gan_steps must be integers, got {','.join(values)}.") from None
    if not lengths or lengths[0] < 1 or any(b <= a for a, b in itertools.pairwise(lengths)):
        raise ValueError(f"--gan_steps must be increasing and >= 1, got {lengths}.")
    return lengths


def check_flags() -> list[int]:
    """Validates the flags; returns the GAN lengths."""
    lengths = parse_lengths(FLAGS.gan_steps)
    for name in ("discriminator_steps", "measure_every", "grad_batches", "z_dim", "width"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    if FLAGS.discriminator_steps % FLAGS.measure_every:
        raise ValueError(
            f"--discriminator_steps ({FLAGS.discriminator_steps}) must be a multiple of "
            f"--measure_every ({FLAGS.measure_every})."
        )
    if FLAGS.image_size not in (16, 32):
        raise ValueError(f"--image_size must be 16 or 32, got {FLAGS.image_size}.")
    if not FLAGS.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {FLAGS.learning_rate}.")
    if not 0 <= FLAGS.beta1 < 1:
        raise ValueError(f"--beta1 must be in [0, 1), got {FLAGS.beta1}.")
    return lengths


def build_run(steps: int):
    """The NS-GAN of ``experiments/flags/ns_gan_digits.cfg``: DCGAN models, DCGAN's Adam."""
    from gans import data, models, step_config
    from gans import run as run_lib
    from gans import state as state_lib

    dataset = data.get_dataset("digits", image_size=FLAGS.image_size)
    size, _, channels = dataset.element_shape
    adam = lambda: state_lib.make_optimizer("adam", FLAGS.learning_rate, b1=FLAGS.beta1, b2=0.999)
    return run_lib.Run(
        dataset=dataset,
        generator=models.DCGANGenerator(image_size=size, channels=channels, width=FLAGS.width),
        # Without a penalty the DCGAN critic has BatchNorm, as the experiments build it.
        critic=models.DCGANCritic(width=FLAGS.width, normalization="batch"),
        generator_tx=adam(),
        critic_tx=adam(),
        step=step_config.StepConfig(loss="non_saturating", z_dim=FLAGS.z_dim),
        n_critic=1,
        batch_size=FLAGS.batch_size,
        steps=steps,
        seed=FLAGS.seed,
        log_every=min(100, steps),
        checkpoint_every=0,
    )


def train_generators(lengths: list[int], workdir: pathlib.Path) -> list[Any]:
    """Trains one NS-GAN to each length in turn, resuming; returns the state at each length."""
    from gans import runner

    states = []
    for steps in lengths:
        run = build_run(steps)
        summary = runner.train_and_evaluate(run, workdir)
        (state,), step = runner.restore(run, workdir)
        assert step == steps, (step, steps)
        print(
            f"GAN at {steps} steps ({steps * FLAGS.batch_size / len(run.dataset.images):.1f} "
            f"epochs): generator loss {summary['generator_loss']:.3f}, "
            f"discriminator loss {summary['critic_loss']:.3f}",
            flush=True,
        )
        states.append(state)
    return states


def fresh_discriminator(run, generator_state, frozen, key):
    """A new discriminator and its Adam state against ``generator_state``'s generator, frozen by
    the optimizer ``frozen`` (``optax.set_to_zero()``, one object for every generator: it is a
    static field of the state, so the jitted step then compiles once)."""
    import jax
    import jax.numpy as jnp

    from gans import state as state_lib

    state = state_lib.create_state(
        generator=run.generator,
        critic=run.critic,
        generator_tx=frozen,
        critic_tx=run.critic_tx,
        config=run.step,
        example=jnp.zeros((1, *run.dataset.element_shape), jnp.float32),
        key=key,
    )
    # Copies: the jitted step donates its state, and the GAN's states are sampled afterwards.
    return state.replace(
        generator_params=jax.tree.map(jnp.copy, generator_state.generator_params),
        generator_state=jax.tree.map(jnp.copy, generator_state.generator_state),
    )


def critic_logits(state, x):
    """The discriminator's logits on ``x`` in training mode (batch statistics), as it trains."""
    variables = {"params": state.critic_params, **state.critic_state}
    logits, _ = state.critic.apply(variables, x, train=True, mutable=list(state.critic_state))
    return logits


def measure(state, real, key, *, config, num_batches: int) -> dict[str, Any]:
    """Both costs' generator-gradient norms on ``num_batches`` batches of z, and D's fitness.

    Returns ``{"<cost>_grad_norm": [num_batches]}`` for each cost in ``COSTS`` and, on one real
    and one fake batch, the discriminator's cross-entropy loss, its accuracy (real logits > 0,
    fake logits < 0) and the mean ``D(G(z))``.
    """
    import jax
    import jax.numpy as jnp

    from gans import diagnostics, losses, train

    batch_size = real.shape[0]
    z = jax.random.normal(key, (num_batches, batch_size, config.z_dim), jnp.float32)
    out = {}
    for cost in COSTS:
        cost_config = dataclasses.replace(config, loss=cost)
        norm = lambda zs, c=cost_config: diagnostics.generator_grad_norm(state, c, zs)
        out[f"{cost}_grad_norm"] = jax.vmap(norm)(z)
    fake = train.generate(state, z[0], train=True, use_ema=False)
    real_logits, fake_logits = critic_logits(state, real), critic_logits(state, fake)
    out["discriminator_loss"] = losses.cross_entropy_discriminator_loss(real_logits, fake_logits)
    out["discriminator_accuracy"] = 0.5 * (jnp.mean(real_logits > 0) + jnp.mean(fake_logits < 0))
    out["fake_probability"] = jnp.mean(jax.nn.sigmoid(fake_logits))
    return out


def train_discriminators(run, lengths: list[int], generator_states: list[Any]) -> dict[str, Any]:
    """Trains a fresh discriminator against each frozen generator in turn, measuring as it goes.

    Every generator gets the same initial discriminator, real batches and noise: only G differs.
    One generator at a time, by one jitted step compiled once: vmapped over the generators
    (``gans.sweep``) the convolutions of different weights ran 10x slower on XLA:CPU.

    Returns the measurement steps and, per measured quantity, an array ``[K, T(, batches)]``
    over the K generators and T measurement steps.
    """
    import functools

    import jax
    import numpy as np
    import optax

    from gans import train

    disc_seed = FLAGS.seed + 1
    init_key, measure_key = jax.random.split(jax.random.key(disc_seed))
    frozen = optax.set_to_zero()
    per_call = updates_per_call(FLAGS.measure_every)
    step_fn = jax.jit(train.make_train_step(run.step), donate_argnums=0)
    measure_fn = jax.jit(
        functools.partial(measure, config=run.step, num_batches=FLAGS.grad_batches)
    )

    def measured(state, step):
        real = run.dataset.batch(step, run.batch_size, disc_seed + 1)["x"][0]
        return jax.device_get(measure_fn(state, real, jax.random.fold_in(measure_key, step)))

    curves, steps = [], list(range(0, FLAGS.discriminator_steps + 1, FLAGS.measure_every))
    for length, generator_state in zip(lengths, generator_states):
        state = fresh_discriminator(run, generator_state, frozen, init_key)
        records = [measured(state, 0)]
        started = time.perf_counter()
        for index in range(FLAGS.discriminator_steps // per_call):
            batches = run.dataset.batch(index, run.batch_size, disc_seed, group=per_call)
            state, _ = step_fn(state, batches)
            step = (index + 1) * per_call
            if step % FLAGS.measure_every == 0:
                records.append(measured(state, step))
                if step % max(FLAGS.discriminator_steps // 4, FLAGS.measure_every) == 0:
                    _print_measurement(length, step, records[-1], time.perf_counter() - started)
        curves.append({name: np.stack([r[name] for r in records]) for name in records[0]})
    stacked = {name: np.stack([c[name] for c in curves]) for name in curves[0]}
    _check_finite(stacked)
    return {"steps": np.asarray(steps), **stacked}


def _check_finite(curves: dict[str, Any]) -> None:
    import numpy as np

    bad = [name for name, values in curves.items() if not np.all(np.isfinite(values))]
    if bad:
        raise FloatingPointError(f"non-finite measurements: {', '.join(bad)}.")


def _print_measurement(length: int, step: int, record: dict[str, Any], seconds: float) -> None:
    print(
        f"G of {length} steps, D step {step} ({seconds:.0f}s): |grad| minimax "
        f"{record['minimax_grad_norm'].mean():.2e}, -log D "
        f"{record['non_saturating_grad_norm'].mean():.2e}; D accuracy "
        f"{record['discriminator_accuracy']:.3f}, loss {record['discriminator_loss']:.2e}",
        flush=True,
    )


def sample_grids(run, generator_states: list[Any], num: int = 32) -> list[Any]:
    """A grid of ``num`` samples of each generator, at fixed latents."""
    import jax

    from gans import sampling, visualize

    key = jax.random.key(FLAGS.seed + 2)
    return [
        visualize.image_grid(sampling.draw_samples(run.step, s, num, key)[0], columns=8)
        for s in generator_states
    ]


def epochs_label(epochs: float) -> str:
    """``"1 epoch"``, ``"25 epochs"``: two significant digits."""
    shown = f"{epochs:.2g}"
    return f"{shown} epoch" + ("" if shown == "1" else "s")


def perfect_from(steps: Any, accuracy: Any) -> int | None:
    """The first measured step from which the accuracy stays 1, or None."""
    imperfect = [step for step, a in zip(steps, accuracy) if a < 1]
    if not imperfect:
        return steps[0]
    later = [step for step in steps if step > imperfect[-1]]
    return later[0] if later else None


def plot(results: dict[str, Any], lengths: list[int], grids: list[Any], path: pathlib.Path):
    """Figs. 2 and 3 of the paper side by side, the discriminator's loss, and the samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    epochs = results["epochs"]
    steps = results["steps"]
    fig, axes = plt.subplots(
        2, 3, figsize=(14, 7.5), gridspec_kw={"height_ratios": [3, 2]}, squeeze=False
    )
    titles = {
        "minimax": "minimax cost E[log(1 - D(G(z)))] (Fig. 2)",
        "non_saturating": "-log D cost -E[log D(G(z))] (Fig. 3)",
    }
    for ax, cost in zip(axes[0], COSTS):
        norms = np.asarray(results[f"{cost}_grad_norm"], np.float64)
        for k, length in enumerate(lengths):
            mean, std = norms[k].mean(-1), norms[k].std(-1)
            # A log axis shows no band below 0: the lower edge stops at a tenth of the mean.
            low = np.maximum(mean - std, mean / 10)
            (line,) = ax.plot(
                steps, mean, label=f"G after {length} steps ({epochs_label(epochs[k])})"
            )
            ax.fill_between(steps, low, mean + std, color=line.get_color(), alpha=0.25)
        ax.set_yscale("log")
        ax.set_title(titles[cost], fontsize=10)
        ax.set_xlabel("discriminator steps")
        ax.set_ylabel("||grad_theta cost||")
        ax.legend(fontsize=8)
    ax = axes[0][2]
    for k, length in enumerate(lengths):
        accuracy = results["discriminator_accuracy"][k][-1]
        ax.plot(
            steps,
            results["discriminator_loss"][k],
            label=f"G after {length} steps (final accuracy {accuracy:.3f})",
        )
    ax.set_yscale("log")
    ax.set_title("discriminator cross-entropy (Fig. 1)", fontsize=10)
    ax.set_xlabel("discriminator steps")
    ax.legend(fontsize=8)
    for ax, grid, length, epoch in zip(axes[1], grids, lengths, epochs):
        ax.imshow(np.asarray(grid)[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(f"frozen generator after {length} steps ({epochs_label(epoch)})", fontsize=9)
        ax.axis("off")
    for ax in axes[1][len(grids) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    try:
        lengths = check_flags()
    except ValueError as e:
        cli.fail(str(e))
    out = pathlib.Path(FLAGS.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        cli.fail(f"--out {str(out)!r} exists and is not an empty directory; choose a new one.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generator_states = train_generators(lengths, out / "gan")
    gan_seconds = time.perf_counter() - started
    run = build_run(lengths[-1])
    curves = train_discriminators(run, lengths, generator_states)
    epochs = [n * FLAGS.batch_size / len(run.dataset.images) for n in lengths]
    results = {
        "gan_steps": lengths,
        "epochs": epochs,
        **{name: values.tolist() for name, values in curves.items()},
        "settings": {
            f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])
        },
        "gan_seconds": gan_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    with open(out / "vanishing_gradients.json", "w") as f:
        json.dump(results, f, indent=1)
    plot(results, lengths, sample_grids(run, generator_states), out / "vanishing_gradients.png")
    for k, length in enumerate(lengths):
        first, last = (
            {c: math.fsum(results[f"{c}_grad_norm"][k][t]) / FLAGS.grad_batches for c in COSTS}
            for t in (0, -1)
        )
        accuracy = results["discriminator_accuracy"][k]
        perfect = perfect_from(results["steps"], accuracy)
        print(
            f"{length} G steps: minimax |grad| {first['minimax']:.2e} -> {last['minimax']:.2e}, "
            f"-log D |grad| {first['non_saturating']:.2e} -> {last['non_saturating']:.2e}, "
            f"D accuracy {accuracy[-1]:.3f}"
            + ("" if perfect is None else f" (1 from step {perfect} on)"),
            flush=True,
        )
    print(f"done in {results['wall_seconds']:.0f}s; {out / 'vanishing_gradients.png'}", flush=True)


def _main(argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    cli.check_command_line(argv)
    main()


if __name__ == "__main__":
    cli.run(_main)
