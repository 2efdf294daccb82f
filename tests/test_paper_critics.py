"""The WGAN-GP Fig. 1 reproductions: both programs run, and what they measure is right."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cli import FLAGS, run_experiment

from experiments.paper import critic_surfaces, gradient_depth
from gans import models, step_config
from gans import state as state_lib


@pytest.mark.slow
def test_critic_surfaces_runs_from_its_flagfile_and_draws_the_grid(tmp_path):
    out = tmp_path / "surfaces.png"
    result = run_experiment(
        "paper.critic_surfaces",
        f"--flagfile={FLAGS / 'paper_critic_surfaces.cfg'}",
        *("--width=8", "--steps=4", "--batch_size=16", "--eval_size=32"),
        *("--plot_points=16", "--resolution=8", f"--out={out}"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[:2] for line in result.stdout.splitlines() if line.endswith("%")]
    assert len(rows) == 6  # Two critics on each of the three toy sets.
    largest = float(
        result.stdout.split("largest |parameter| of the clipped critics:")[1].split()[0]
    )
    assert largest == pytest.approx(0.01, rel=1e-6)  # Initial weights are larger than c.
    assert out.stat().st_size > 10_000


@pytest.mark.slow
def test_gradient_depth_runs_from_its_flagfile_and_draws_both_panels(tmp_path):
    out = tmp_path / "depth.png"
    result = run_experiment(
        "paper.gradient_depth",
        f"--flagfile={FLAGS / 'paper_gradient_depth.cfg'}",
        *("--depth=2", "--width=8", "--generator_depth=1", "--generator_width=8"),
        *("--steps=2", "--n_critic=1", "--batch_size=16", "--eval_size=32", "--bins=8"),
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for run in ("clipping c=0.1 ", "clipping c=0.01 ", "clipping c=0.001 ", "penalty lambda=0.1 "):
        at = next(i for i, line in enumerate(lines) if line.startswith(run))
        # Input, two hidden layers, the score: and the score's entry is 1 for the WGAN loss.
        profile = [float(v) for v in lines[at].split()[-4:]]
        assert profile[-1] == pytest.approx(1.0)
        if run.startswith("clipping"):
            # Each of the vmapped runs keeps its own bound: the initial weights (std ~0.4-0.7)
            # are larger than every c, so the largest sits at it.
            largest = float(lines[at + 1].split("largest |w|")[1])
            assert largest == pytest.approx(float(run.split("=")[1]), rel=1e-6)
    assert out.stat().st_size > 10_000


def test_penalised_critic_against_a_point_mass_learns_the_cone_and_reaches_w1():
    # Real data all at 0 and x~ = n ~ N(0, I): the optimal critic is -s ||x||, W1 = E||n||
    # = sqrt(pi / 2), and with the penalty the slope is s = 1 + W1 / (2 lambda) (maximise
    # s W1 - lambda (s - 1)^2).
    weight = 2.0
    critic = models.MLPCritic(hidden=(32, 32))
    _, penalty = critic_surfaces.settings(
        clip=0.01, clip_lr=1e-3, penalty_weight=weight, penalty_lr=3e-3, beta1=0.5, beta2=0.9
    )
    batches = jnp.zeros((300, 256, 2))
    fit = jax.jit(lambda k, b: critic_surfaces.fit_critic(critic, penalty, k, b))
    params, _ = fit(jax.random.key(0), batches)
    scores = jax.jit(lambda p, x, k: critic_surfaces.evaluate(critic, p, x, k))(
        params, jnp.zeros((2000, 2)), jax.random.key(1)
    )
    w1 = np.sqrt(np.pi / 2)
    assert float(scores["normalised"]) / w1 > 0.9  # 0.97 and 0.98 on seeds 0 and 1.
    slope = 1 + w1 / (2 * weight)
    assert float(scores["interpolates"]) == pytest.approx(slope, rel=0.05)  # Within 3%.
    assert float(scores["peaks"]) > 0.95  # The data sit on the cone's apex.


def test_peaks_are_all_at_a_strict_maximum_and_half_for_a_linear_critic():
    real = jax.random.normal(jax.random.key(0), (4000, 2))
    key = jax.random.key(1)
    linear = critic_surfaces.peak_fraction(
        lambda x: x @ jnp.array([3.0, -1.0]), real, key, scale=0.1
    )
    assert 0.46 < float(linear) < 0.54  # 4,000 fair coins: 0.5 +- 0.008.
    apex = critic_surfaces.peak_fraction(
        lambda x: -jnp.linalg.norm(x, axis=1), 0 * real, key, scale=0.1
    )
    assert float(apex) == 1.0


def _hand_written_profile(params, real, fake):
    """Per-example ``||d score / d h_l||`` by backpropagation through a hand-written forward."""
    layers = [params[f"Dense_{i}"] for i in range(len(params))]

    def score_from(depth, h):
        # ``h`` is the output of layer ``depth - 1`` (the input for depth 0), before its ReLU.
        for i in range(depth, len(layers)):
            h = (h if i == 0 else jax.nn.relu(h)) @ layers[i]["kernel"] + layers[i]["bias"]
        return h[0]

    points = jnp.concatenate([real, fake])
    profile, h = [], points
    for depth in range(len(layers) + 1):
        grads = jax.vmap(jax.grad(lambda x, d=depth: score_from(d, x)))(h)
        profile.append(jnp.mean(jnp.linalg.norm(grads, axis=1)))
        if depth < len(layers):
            layer = layers[depth]
            h = (h if depth == 0 else jax.nn.relu(h)) @ layer["kernel"] + layer["bias"]
    return jnp.stack(profile)


def test_depth_profile_of_a_12_layer_critic_matches_backpropagation_by_hand():
    critic = models.MLPCritic(hidden=(3,) * 12)
    config = step_config.StepConfig(loss="wasserstein", z_dim=2)
    create = lambda key: state_lib.create_state(
        generator=models.MLPGenerator(out_dim=2, hidden=(4,)),
        critic=critic,
        generator_tx=optax.sgd(1e-3),
        critic_tx=optax.sgd(1e-3),
        config=config,
        example=jnp.zeros((1, 2)),
        key=key,
    )
    state = jax.jit(create)(jax.random.key(0))  # Op by op, every op would compile once.
    # Larger weights than the initialisation's, so the norms change over the 14 entries.
    doubled = jax.jit(lambda params: jax.tree.map(lambda p: 2.0 * p, params))
    state = state.replace(critic_params=doubled(state.critic_params))
    real = jax.random.normal(jax.random.key(1), (5, 2))
    fake = jax.random.normal(jax.random.key(2), (5, 2))
    profile = jax.jit(gradient_depth.depth_profile, static_argnums=1)(state, config, real, fake)
    expected = jax.jit(_hand_written_profile)(state.critic_params, real, fake)
    assert profile.shape == (14,)  # Input, 12 hidden layers, the score.
    np.testing.assert_allclose(profile, expected, rtol=1e-4)
    assert profile[-1] == pytest.approx(1.0)
