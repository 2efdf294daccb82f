"""Critic value surfaces under weight clipping and the gradient penalty [WGAN-GP, Fig. 1a].

    python -m experiments.paper.critic_surfaces \\
        --flagfile=experiments/flags/paper_critic_surfaces.cfg --out=critic_surfaces.png

The generator is held fixed at the real data plus unit Gaussian noise, ``x~ = x + n`` with
``n ~ N(0, I)`` (the paper's toy code adds the noise to the very real batch the critic sees),
and a critic is trained towards optimality on each toy set twice: with weight clipping (RMSProp,
``c = 0.01``) and with the gradient penalty (Adam, ``lambda = 0.1`` as for the paper's toys).
The critics of one setting train as one compiled program, ``vmap`` over the data sets.

The figure is a grid of contour plots (rows: the two settings; columns: the data sets) with the
real points on top. Two scale-free numbers say "too simple" or "follows the data":

- *peaks on the data*: the fraction of real points ``x`` the critic scores above a random point
  nearby, ``x + s u`` with ``u ~ N(0, I)`` and ``s = --probe_std``. Near the data the optimal
  critic against ``x + n`` falls off with the distance from the data (for data at one point it
  is ``-||x||``), so the fraction nears 1; a critic too simple to follow the data is close to
  linear across each real point, which gives about one half;
- *share of W1*: the Wasserstein estimate divided by the critic's largest input-gradient norm
  on the evaluation points, ``(E f(x) - E f(x~)) / max ||grad f||``, as a fraction of the exact
  ``W1`` of the two evaluation sets (``gans.metrics.transport``). By Kantorovich-Rubinstein
  duality a 1-Lipschitz function reaches at most ``W1``, whatever the critic's scale.

Reference:
  [WGAN-GP] Gulrajani et al., Improved Training of Wasserstein GANs, 2017, Sec. 3, Fig. 1a.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags

from experiments import cli
from gans import data, diagnostics, losses, penalties
from gans import state as state_lib
from gans.metrics import transport
from gans.models import mlp

matplotlib.use("Agg")  # Files only; never a window.
import matplotlib.pyplot as plt

Array = jax.Array
Params = dict

CLIPPING = "weight clipping"
PENALTY = "gradient penalty"


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one row of the figure trains its critics.

    Attributes:
      name: the row's title.
      optimizer: the critic's optax optimizer, weight clipping included where it applies.
      penalty_weight: lambda of the gradient penalty; 0 for none.
    """

    name: str
    optimizer: optax.GradientTransformation
    penalty_weight: float = 0.0


def settings(
    *,
    clip: float,
    clip_lr: float,
    penalty_weight: float,
    penalty_lr: float,
    beta1: float,
    beta2: float,
) -> tuple[Setting, Setting]:
    """The paper's two critics: RMSProp with clipping to ``[-c, c]``, and Adam with the penalty."""
    return (
        Setting(CLIPPING, state_lib.make_optimizer("rmsprop", clip_lr, clip=clip)),
        Setting(
            PENALTY,
            state_lib.make_optimizer("adam", penalty_lr, b1=beta1, b2=beta2),
            penalty_weight,
        ),
    )


def fixed_generator(real: Array, key: Array, noise_std: float = 1.0) -> Array:
    """The paper's fixed generator: ``x~ = x + noise_std * n``, ``n ~ N(0, I)``, per real point."""
    return real + noise_std * jax.random.normal(key, real.shape, real.dtype)


def critic_loss(
    params: Params,
    real: Array,
    key: Array,
    *,
    critic: mlp.MLPCritic,
    noise_std: float,
    penalty_weight: float,
) -> tuple[Array, Array]:
    """The WGAN-GP critic loss against the fixed generator [WGAN-GP, Alg. 1, line 7].

    ``L = E f(x~) - E f(x) + lambda E[(||grad f(x^)||_2 - 1)^2]`` with ``x^`` random
    interpolates (``gans.penalties.gradient_penalty``); ``lambda = 0`` gives WGAN's loss.

    Returns:
      ``(loss, wasserstein_estimate)``, the estimate being ``E f(x) - E f(x~)``.
    """
    noise_key, penalty_key = jax.random.split(key)
    fake = fixed_generator(real, noise_key, noise_std)
    critic_fn = lambda x: critic.apply({"params": params}, x)
    real_scores, fake_scores = jnp.split(critic_fn(jnp.concatenate([real, fake])), 2)
    adversarial = losses.wasserstein_critic_loss(real_scores, fake_scores)
    loss = adversarial
    if penalty_weight:
        loss += penalties.gradient_penalty(
            critic_fn, real, fake, penalty_key, weight=penalty_weight
        )[0]
    return loss, -adversarial


def fit_critic(
    critic: mlp.MLPCritic,
    setting: Setting,
    key: Array,
    batches: Array,
    *,
    noise_std: float = 1.0,
) -> tuple[Params, Array]:
    """Trains one critic, one update per real batch of ``batches`` ``[steps, B, 2]``.

    Pure and jittable: the updates are a ``lax.scan``; ``vmap`` it over data sets.

    Returns:
      The trained parameters and the Wasserstein estimate of every update, ``[steps]``.
    """
    init_key, train_key = jax.random.split(key)
    params = critic.init(init_key, batches[0])["params"]
    loss_fn = functools.partial(
        critic_loss, critic=critic, noise_std=noise_std, penalty_weight=setting.penalty_weight
    )
    grad_fn = jax.grad(loss_fn, has_aux=True)

    def update(carry, inputs):
        params, opt_state = carry
        real, step_key = inputs
        grads, estimate = grad_fn(params, real, step_key)
        updates, opt_state = setting.optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), estimate

    keys = jax.random.split(train_key, batches.shape[0])
    carry = (params, setting.optimizer.init(params))
    (params, _), estimates = jax.lax.scan(update, carry, (batches, keys))
    return params, estimates


def peak_fraction(
    critic_fn: Callable[[Array], Array], real: Array, key: Array, *, scale: float
) -> Array:
    """Fraction of the points ``x`` of ``real`` with ``f(x) > f(x + scale * u)``, ``u ~ N(0, I)``."""
    nearby = real + scale * jax.random.normal(key, real.shape, real.dtype)
    return jnp.mean(critic_fn(real) > critic_fn(nearby))


def evaluate(
    critic: mlp.MLPCritic,
    params: Params,
    real: Array,
    key: Array,
    *,
    noise_std: float = 1.0,
    probe_std: float = 0.1,
) -> dict[str, Array]:
    """The critic's Wasserstein estimate, input-gradient norms and peaks on fresh points.

    Returns:
      Scalars: ``"estimate"`` ``E f(x) - E f(x~)``; the mean input-gradient norm at
      ``"real"``, ``"fake"`` and ``"interpolates"``; ``"lipschitz"``, the largest of all of
      them; ``"normalised"``, the estimate divided by it; ``"peaks"``, ``peak_fraction`` at
      scale ``probe_std``. Also the generated points, ``"fake_points"``.
    """
    noise_key, interpolation_key, probe_key = jax.random.split(key, 3)
    fake = fixed_generator(real, noise_key, noise_std)
    critic_fn = lambda x: critic.apply({"params": params}, x)
    norms = diagnostics.input_gradient_norms(critic_fn, real, fake, interpolation_key)
    estimate = jnp.mean(critic_fn(real)) - jnp.mean(critic_fn(fake))
    lipschitz = jnp.max(jnp.concatenate(list(norms.values())))
    return {
        "estimate": estimate,
        **{name: jnp.mean(value) for name, value in norms.items()},
        "lipschitz": lipschitz,
        "normalised": estimate / lipschitz,
        "peaks": peak_fraction(critic_fn, real, probe_key, scale=probe_std),
        "fake_points": fake,
    }


def surface(critic: mlp.MLPCritic, params: Params, *, extent: float, resolution: int) -> Array:
    """The critic's values ``[resolution, resolution]`` on a grid over ``[-extent, extent]^2``."""
    axis = jnp.linspace(-extent, extent, resolution)
    xx, yy = jnp.meshgrid(axis, axis)
    points = jnp.stack([xx.ravel(), yy.ravel()], axis=1)
    return critic.apply({"params": params}, points).reshape(xx.shape)


def plot(
    path: str,
    surfaces: np.ndarray,
    real: np.ndarray,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    extent: float,
    captions: np.ndarray,
) -> None:
    """A rows x columns grid of filled contours ``surfaces [R, C, H, W]`` with ``real [C, N, 2]``."""
    num_rows, num_columns = surfaces.shape[:2]
    fig, axes = plt.subplots(
        num_rows, num_columns, figsize=(3.3 * num_columns, 3.4 * num_rows), squeeze=False
    )
    axis = np.linspace(-extent, extent, surfaces.shape[-1])
    for r in range(num_rows):
        for c in range(num_columns):
            ax = axes[r, c]
            ax.contourf(axis, axis, surfaces[r, c], levels=20, cmap="viridis")
            ax.contour(axis, axis, surfaces[r, c], levels=20, colors="k", linewidths=0.3)
            ax.scatter(real[c, :, 0], real[c, :, 1], s=2, c="orange", alpha=0.6)
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{rows[r]}, {columns[c]}\n{captions[r, c]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The table's columns; those in PERCENT are printed as percentages.
COLUMNS = (
    "W est.",
    "drift",
    "|g| real",
    "|g| fake",
    "|g| int.",
    "1+W1/2lam",
    "max |g|",
    "W/max|g|",
    "exact W1",
    "share",
    "peaks",
)
PERCENT = ("drift", "share", "peaks")


def summary(
    setting: Setting, scores: dict[str, np.ndarray], estimates: np.ndarray, real: np.ndarray
) -> dict[str, float]:
    """One critic's row of the table, from its ``evaluate`` scores and training estimates.

    ``drift`` is the relative change of the mean Wasserstein estimate from the second-to-last
    tenth of the updates to the last: near 0 once the critic has settled. ``1+W1/2lam`` is the
    slope the penalised critic should settle at (``s`` maximising ``s W1 - lambda (s - 1)^2``
    when the optimal critic has slope 1), to compare with ``|g| int.``.
    """
    estimates = np.asarray(estimates)
    tenth = max(1, len(estimates) // 10)
    before, last = np.mean(estimates[-2 * tenth : -tenth]), np.mean(estimates[-tenth:])
    exact = transport.wasserstein_1(np.asarray(real), np.asarray(scores["fake_points"]))
    weight = setting.penalty_weight
    return {
        "W est.": float(scores["estimate"]),
        "drift": float((last - before) / abs(before)),
        "|g| real": float(scores["real"]),
        "|g| fake": float(scores["fake"]),
        "|g| int.": float(scores["interpolates"]),
        "1+W1/2lam": 1 + exact / (2 * weight) if weight else float("nan"),
        "max |g|": float(scores["lipschitz"]),
        "W/max|g|": float(scores["normalised"]),
        "exact W1": exact,
        "share": float(scores["normalised"]) / exact,
        "peaks": float(scores["peaks"]),
    }


def _cells(row: dict[str, float]) -> str:
    """The row's values, 11 characters each; a value that does not apply (NaN) is "-"."""
    cells = []
    for column in COLUMNS:
        value = row[column]
        if np.isnan(value):
            cells.append(f"{'-':>11}")
        else:
            cells.append(f"{value:>11.1%}" if column in PERCENT else f"{value:>11.3g}")
    return "".join(cells)


def define_flags() -> None:
    """The program's flags (defined only when it runs, so tests can import every module)."""
    flags.DEFINE_list("datasets", ["8gaussians", "25gaussians", "swissroll"], "Toy sets.")
    flags.DEFINE_integer("width", 512, "Units per hidden layer of the critic.")
    flags.DEFINE_integer("depth", 3, "Hidden ReLU layers of the critic.")
    flags.DEFINE_integer("steps", 3000, "Critic updates per critic.")
    flags.DEFINE_integer("batch_size", 256, "Real points per update.")
    flags.DEFINE_float("noise_std", 1.0, "Std of the fixed generator's noise.")
    flags.DEFINE_float("clip", 0.01, "Weight clipping bound c.")
    flags.DEFINE_float("clip_lr", 5e-5, "RMSProp learning rate of the clipped critic.")
    flags.DEFINE_float("penalty_weight", 0.1, "Gradient penalty lambda.")
    flags.DEFINE_float("penalty_lr", 1e-4, "Adam learning rate of the penalised critic.")
    flags.DEFINE_float("beta1", 0.5, "Adam beta1.")
    flags.DEFINE_float("beta2", 0.9, "Adam beta2.")
    flags.DEFINE_integer("eval_size", 2000, "Real points for the scores and the exact W1.")
    flags.DEFINE_float("probe_std", 0.1, "Std of the nearby points the peaks are checked on.")
    flags.DEFINE_integer("plot_points", 500, "Real points drawn on each panel.")
    flags.DEFINE_float("extent", 2.5, "Plots span [-extent, extent]^2.")
    flags.DEFINE_integer("resolution", 128, "Grid points per side of a contour plot.")
    flags.DEFINE_integer("seed", 0, "Seed of the data, the noise and the initialisation.")
    flags.DEFINE_string("out", None, "The PNG to write.")
    flags.mark_flag_as_required("out")


def _check_flags(FLAGS: flags.FlagValues) -> None:
    for name in ("width", "steps", "batch_size", "eval_size", "resolution"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    names = ("clip", "clip_lr", "penalty_weight", "penalty_lr", "noise_std", "probe_std", "extent")
    for name in names:
        if not FLAGS[name].value > 0:
            raise app.UsageError(f"--{name} must be > 0, got {FLAGS[name].value}.")
    if FLAGS.depth < 0:
        raise app.UsageError(f"--depth must be >= 0, got {FLAGS.depth}.")
    unknown = sorted(set(FLAGS.datasets) - {"8gaussians", "25gaussians", "swissroll"})
    if unknown:
        raise app.UsageError(
            f"unknown toy sets {unknown}; choose from 8gaussians, 25gaussians, swissroll."
        )


def main(argv: Sequence[str]) -> None:
    cli.check_command_line(argv)
    FLAGS = flags.FLAGS
    _check_flags(FLAGS)
    start = time.time()
    names = FLAGS.datasets
    sets = [data.get_dataset(name) for name in names]
    # One stream of real batches per data set, shared by both settings: [K, steps, B, 2].
    batches = jnp.stack(
        [d.batch(0, FLAGS.batch_size, FLAGS.seed, group=FLAGS.steps)["x"] for d in sets]
    )
    real = jnp.stack([d.batch(1, FLAGS.eval_size, FLAGS.seed)["x"][0] for d in sets])
    train_key, eval_key = jax.random.split(jax.random.key(FLAGS.seed))
    train_keys = jax.random.split(train_key, len(sets))
    eval_keys = jax.random.split(eval_key, len(sets))
    critic = mlp.MLPCritic(hidden=(FLAGS.width,) * FLAGS.depth)
    rows = settings(
        clip=FLAGS.clip,
        clip_lr=FLAGS.clip_lr,
        penalty_weight=FLAGS.penalty_weight,
        penalty_lr=FLAGS.penalty_lr,
        beta1=FLAGS.beta1,
        beta2=FLAGS.beta2,
    )
    fit = lambda setting: jax.jit(
        jax.vmap(functools.partial(fit_critic, critic, setting, noise_std=FLAGS.noise_std))
    )
    score = jax.jit(
        jax.vmap(
            functools.partial(
                evaluate, critic, noise_std=FLAGS.noise_std, probe_std=FLAGS.probe_std
            )
        )
    )
    draw = jax.jit(
        jax.vmap(
            functools.partial(surface, critic, extent=FLAGS.extent, resolution=FLAGS.resolution)
        )
    )
    print(f"{'critic':<17} {'data':<12}" + "".join(f"{c:>11}" for c in COLUMNS), flush=True)
    surfaces, captions = [], []
    for setting in rows:
        params, estimates = fit(setting)(train_keys, batches)
        scores = jax.device_get(score(params, real, eval_keys))
        surfaces.append(np.asarray(draw(params)))
        captions.append([])
        for k, name in enumerate(names):
            row = summary(setting, jax.tree.map(lambda v, k=k: v[k], scores), estimates[k], real[k])
            print(f"{setting.name:<17} {name:<12}{_cells(row)}", flush=True)
            captions[-1].append(
                f"peaks on the data {row['peaks']:.0%}, share of W1 {row['share']:.0%}"
            )
        if setting.name == CLIPPING:
            largest = max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(params))
            print(f"largest |parameter| of the clipped critics: {largest:.4g}", flush=True)
    plot(
        FLAGS.out,
        np.stack(surfaces),
        np.asarray(real[:, : FLAGS.plot_points]),
        rows=[setting.name for setting in rows],
        columns=names,
        extent=FLAGS.extent,
        captions=np.array(captions, dtype=object),
    )
    print(f"wrote {FLAGS.out} in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
