"""Gradient norms through a deep critic under weight clipping and the penalty [WGAN-GP, Fig. 1b].

    python -m experiments.paper.gradient_depth \\
        --flagfile=experiments/flags/paper_gradient_depth.cfg --out=gradient_depth.png

WGANs on the Swiss roll, generator and critic both trained, with critics that are deep ReLU MLPs
without normalisation (12 hidden layers and a linear score): weight clipping with
``c in {0.1, 0.01, 0.001}`` (RMSProp, n_critic 5; the runs differ only in ``c`` and train as one
vmapped program, ``gans.sweep``) against the gradient penalty (Adam, ``lambda = 0.1`` as in the
paper's toys). After training, on one batch of real and generated points, the figure shows

- left: the norm of the gradient of the critic loss with respect to each layer's output
  (``gans.diagnostics.activation_gradient_norms``), from the input (layer 0) to the score, on a
  log scale. Backpropagation multiplies by one weight matrix per layer, so under clipping the
  norms grow or shrink geometrically with depth; under the penalty they stay within a
  modest range;
- right: histograms of the critic's weights (the Dense kernels) for ``c = 0.01`` and for the
  penalty: clipping piles them at ``+-c``.

Reference:
  [WGAN-GP] Gulrajani et al., Improved Training of Wasserstein GANs, 2017, Sec. 3, Fig. 1b.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags

from experiments import cli
from gans import data, diagnostics, penalties, step_config, sweep, train
from gans import state as state_lib
from gans.metrics import transport
from gans.models import mlp

matplotlib.use("Agg")  # Files only; never a window.
import matplotlib.pyplot as plt

Array = jax.Array
Params = dict


@dataclasses.dataclass(frozen=True)
class Runs:
    """Runs that share one step configuration, trained as one vmapped program.

    Attributes:
      names: one label per run.
      config: the train step's settings.
      state: the runs' ``GANState`` s, stacked along a leading run axis (``sweep.stack``).
      clips: each run's clip bound, or None for unclipped runs.
    """

    names: tuple[str, ...]
    config: step_config.StepConfig
    state: state_lib.GANState
    clips: tuple[float, ...] | None = None


def _create_state(
    generator: mlp.MLPGenerator,
    critic: mlp.MLPCritic,
    generator_tx: optax.GradientTransformation,
    critic_tx: optax.GradientTransformation,
    config: step_config.StepConfig,
    key: Array,
) -> state_lib.GANState:
    """``state_lib.create_state`` for 2-D data, compiled (op by op it compiles every op once)."""
    create = functools.partial(
        state_lib.create_state,
        generator=generator,
        critic=critic,
        generator_tx=generator_tx,
        critic_tx=critic_tx,
        config=config,
        example=jnp.zeros((1, 2)),
    )
    return jax.jit(lambda key: create(key=key))(key)


def clipping_runs(
    generator: mlp.MLPGenerator,
    critic: mlp.MLPCritic,
    clips: Sequence[float],
    *,
    learning_rate: float,
    z_dim: int,
    key: Array,
) -> Runs:
    """WGANs with RMSProp and weight clipping, one run per bound, all from one initialisation."""
    config = step_config.StepConfig(loss="wasserstein", z_dim=z_dim)
    critic_tx = state_lib.make_optimizer("rmsprop", learning_rate, clip=clips[0], sweepable=True)
    generator_tx = state_lib.make_optimizer("rmsprop", learning_rate)
    state = _create_state(generator, critic, generator_tx, critic_tx, config, key)
    stacked = sweep.stack([state] * len(clips))
    if len(clips) > 1:
        stacked = sweep.set_hyperparameter(stacked, "clip", clips)
    names = tuple(f"clipping c={c:g}" for c in clips)
    return Runs(names, config, stacked, tuple(clips))


def penalty_runs(
    generator: mlp.MLPGenerator,
    critic: mlp.MLPCritic,
    *,
    penalty_weight: float,
    learning_rate: float,
    beta1: float,
    beta2: float,
    z_dim: int,
    key: Array,
) -> Runs:
    """One WGAN-GP run: Adam and the two-sided gradient penalty with weight ``lambda``."""
    config = step_config.StepConfig(
        loss="wasserstein",
        z_dim=z_dim,
        penalty=penalties.GradientPenalty(weight=penalty_weight),
    )
    tx = lambda: state_lib.make_optimizer("adam", learning_rate, b1=beta1, b2=beta2)
    state = _create_state(generator, critic, tx(), tx(), config, key)
    return Runs((f"penalty lambda={penalty_weight:g}",), config, sweep.stack([state]))


def train_runs(
    runs: Runs,
    dataset: data.Dataset,
    *,
    steps: int,
    batch_size: int,
    n_critic: int,
    seed: int,
) -> tuple[Runs, dict[str, np.ndarray]]:
    """``steps`` train steps of every run, all runs on the same real batches.

    Returns:
      The trained runs and the last step's metrics, ``[K]`` per name.
    """
    step = jax.jit(sweep.make_vmapped_train_step(runs.config), donate_argnums=0)
    num_runs = len(runs.names)
    state, metrics = runs.state, {}
    for item in itertools.islice(dataset.batches(batch_size, seed, group=n_critic), steps):
        x = jnp.broadcast_to(item["x"], (num_runs, *item["x"].shape))
        state, metrics = step(state, {"x": x})
    metrics = jax.device_get(metrics)
    bad = [name for name, value in metrics.items() if not np.all(np.isfinite(value))]
    if bad:
        raise FloatingPointError(f"non-finite {', '.join(bad)} after {steps} steps.")
    return dataclasses.replace(runs, state=state), metrics


def depth_profile(
    state: state_lib.GANState, config: step_config.StepConfig, real: Array, fake: Array
) -> Array:
    """``[L + 2]`` mean per-example gradient norms of the critic loss, input first, score last.

    Entry 0 is at the input, entry ``l >= 1`` at the output of ``Dense_{l-1}`` (before its
    ReLU); each is the mean over real and fake examples of the per-example norm
    (``gans.diagnostics.activation_gradient_norms``), so the score's entry is 1.
    """
    norms, _ = diagnostics.activation_gradient_norms(state, config, real, fake)
    # The keys carry the depth as a zero-padded prefix: sorted is input to score.
    return jnp.stack([norms[name] for name in sorted(norms)])


def measure(
    state: state_lib.GANState, config: step_config.StepConfig, real: Array, z: Array
) -> tuple[Array, Array]:
    """The depth profile on ``real`` and the generator's samples at ``z``, and the samples."""
    fake = train.generate(state, z)
    return depth_profile(state, config, real, fake), fake


def kernels(params: Params) -> dict[str, Array]:
    """The critic's weight matrices (``Dense_i/kernel``), without the biases."""
    return {name: layer["kernel"] for name, layer in params.items()}


def plot(
    path: str,
    profiles: dict[str, np.ndarray],
    histograms: dict[str, dict[str, np.ndarray]],
) -> None:
    """Depth profiles on a log scale (left) and the weight histograms, by title (right)."""
    fig = plt.figure(figsize=(11, 4.2))
    grid = fig.add_gridspec(len(histograms), 2, width_ratios=(1.3, 1))
    ax = fig.add_subplot(grid[:, 0])
    for name, profile in profiles.items():
        underflow = np.flatnonzero(profile == 0)
        if underflow.size:
            # Norms below float32's smallest number are exactly 0: no point on a log scale.
            name = f"{name} (0 up to layer {underflow.max()})"
        shown = np.where(profile > 0, profile, np.nan)
        ax.semilogy(np.arange(len(profile)), shown, marker="o", markersize=3, label=name)
    ax.set_xlabel("critic layer (0: input, last: score)")
    ax.set_ylabel("gradient norm of the critic loss")
    ax.set_title("gradient norms through the critic")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    for row, (name, histogram) in enumerate(histograms.items()):
        hx = fig.add_subplot(grid[row, 1])
        edges = histogram["edges"]
        hx.bar(edges[:-1], histogram["all"], width=np.diff(edges), align="edge")
        hx.set_title(f"critic weights, {name}", fontsize=9)
        hx.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def define_flags() -> None:
    """The program's flags (defined only when it runs, so tests can import every module)."""
    flags.DEFINE_string("dataset", "swissroll", "Toy set (swissroll in the paper).")
    flags.DEFINE_integer("depth", 12, "Hidden ReLU layers of the critic.")
    flags.DEFINE_integer("width", 512, "Units per hidden layer of the critic.")
    flags.DEFINE_integer("generator_depth", 3, "Hidden ReLU layers of the generator.")
    flags.DEFINE_integer("generator_width", 512, "Units per hidden layer of the generator.")
    flags.DEFINE_integer("z_dim", 2, "Size of the generator's noise.")
    flags.DEFINE_list("clips", ["0.1", "0.01", "0.001"], "Weight clipping bounds c.")
    flags.DEFINE_float("clip_lr", 5e-5, "RMSProp learning rate of the clipped WGANs.")
    flags.DEFINE_float("penalty_weight", 0.1, "Gradient penalty lambda.")
    flags.DEFINE_float("penalty_lr", 1e-4, "Adam learning rate of the penalised WGAN.")
    flags.DEFINE_float("beta1", 0.5, "Adam beta1.")
    flags.DEFINE_float("beta2", 0.9, "Adam beta2.")
    flags.DEFINE_integer("steps", 1000, "Generator steps.")
    flags.DEFINE_integer("n_critic", 5, "Critic updates per generator step.")
    flags.DEFINE_integer("batch_size", 256, "Real points per critic update.")
    flags.DEFINE_integer("eval_size", 1000, "Real and generated points the norms are taken on.")
    flags.DEFINE_integer("bins", 64, "Bins of the weight histograms.")
    flags.DEFINE_float("histogram_clip", 0.01, "The clip bound whose weights are drawn.")
    flags.DEFINE_integer("seed", 0, "Seed of the data, the noise and the initialisation.")
    flags.DEFINE_string("out", None, "The PNG to write.")
    flags.mark_flag_as_required("out")


def _check_flags(FLAGS: flags.FlagValues) -> list[float]:
    """Raises ``app.UsageError`` on a bad flag; returns the clip bounds."""
    for name in ("depth", "width", "generator_width", "z_dim", "steps", "n_critic"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    for name in ("batch_size", "eval_size", "bins"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    for name in ("clip_lr", "penalty_weight", "penalty_lr"):
        if not FLAGS[name].value > 0:
            raise app.UsageError(f"--{name} must be > 0, got {FLAGS[name].value}.")
    try:
        clips = [float(c) for c in FLAGS.clips]
    except ValueError:
        raise app.UsageError(f"--clips must be numbers, got {FLAGS.clips}.") from None
    if not clips or min(clips) <= 0:
        raise app.UsageError(f"--clips must be one or more bounds > 0, got {FLAGS.clips}.")
    if FLAGS.histogram_clip not in clips:
        raise app.UsageError(f"--histogram_clip={FLAGS.histogram_clip:g} is not in --clips.")
    return clips


def main(argv: Sequence[str]) -> None:
    cli.check_command_line(argv)
    FLAGS = flags.FLAGS
    clips = _check_flags(FLAGS)
    try:
        dataset = data.get_dataset(FLAGS.dataset)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    if dataset.element_shape != (2,):
        raise app.UsageError(f"--dataset must be a 2-D toy set, got {FLAGS.dataset}.")
    start = time.time()
    generator = mlp.MLPGenerator(out_dim=2, hidden=(FLAGS.generator_width,) * FLAGS.generator_depth)
    critic = mlp.MLPCritic(hidden=(FLAGS.width,) * FLAGS.depth)
    init_key, eval_key = jax.random.split(jax.random.key(FLAGS.seed))
    groups = [
        clipping_runs(
            generator, critic, clips, learning_rate=FLAGS.clip_lr, z_dim=FLAGS.z_dim, key=init_key
        ),
        penalty_runs(
            generator,
            critic,
            penalty_weight=FLAGS.penalty_weight,
            learning_rate=FLAGS.penalty_lr,
            beta1=FLAGS.beta1,
            beta2=FLAGS.beta2,
            z_dim=FLAGS.z_dim,
            key=init_key,
        ),
    ]
    real = dataset.batch(0, FLAGS.eval_size, FLAGS.seed + 1)["x"][0]
    z = jax.random.normal(eval_key, (FLAGS.eval_size, FLAGS.z_dim))
    profiles, histograms = {}, {}
    print(
        "run                   W est.  W1(G,real)  |grad| at each layer, input .. score",
        flush=True,
    )
    for runs in groups:
        runs, metrics = train_runs(
            runs,
            dataset,
            steps=FLAGS.steps,
            batch_size=FLAGS.batch_size,
            n_critic=FLAGS.n_critic,
            seed=FLAGS.seed,
        )
        measured = jax.vmap(functools.partial(measure, config=runs.config, real=real, z=z))
        profile, fake = jax.device_get(jax.jit(measured)(runs.state))
        for k, name in enumerate(runs.names):
            profiles[name] = profile[k]
            weights = kernels(sweep.unstack(runs.state.critic_params, k))
            clip = None if runs.clips is None else runs.clips[k]
            w1 = transport.wasserstein_1(np.asarray(real), fake[k])
            norms = " ".join(f"{v:.2g}" for v in profile[k])
            print(
                f"{name:<20} {metrics['wasserstein_estimate'][k]:7.3g} {w1:11.3f}  {norms}",
                flush=True,
            )
            if clip is None:
                title = f"{name}: max |w| = {float(diagnostics.weight_range(weights)):.2g}"
            else:
                at_clip = float(diagnostics.fraction_at_clip(weights, clip))
                largest = float(diagnostics.weight_range(weights))
                print(
                    f"{'':<20} weights within 1% of +-c: {at_clip:.1%}, largest |w| {largest:.4g}",
                    flush=True,
                )
                title = f"{name}: {at_clip:.1%} within 1% of +-c"
            if clip is None or clip == FLAGS.histogram_clip:
                histograms[title] = jax.device_get(
                    diagnostics.weight_histograms(weights, bins=FLAGS.bins, clip=clip)
                )
    plot(FLAGS.out, profiles, histograms)
    print(f"wrote {FLAGS.out} in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
