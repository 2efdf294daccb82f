"""Arjovsky & Bottou's vanishing gradients: the closed forms behind Figs. 2 and 3, and the
experiment run end to end on tiny settings."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import diagnostics, losses, models, step_config
from gans import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
Z_DIM = 3
BATCH = 8


def test_logit_gradients_of_the_two_generator_costs_have_their_closed_forms():
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l), d/dl -log sigmoid(l) = sigmoid(l) - 1, per example.
    logits = jnp.array([3.0, 0.0, -5.0, -20.0, -60.0, -200.0])
    minimax = jax.grad(losses.minimax_generator_loss)(logits)
    non_saturating = jax.grad(losses.non_saturating_generator_loss)(logits)
    n = logits.shape[0]
    np.testing.assert_allclose(minimax, -jax.nn.sigmoid(logits) / n, rtol=1e-5, atol=0)
    np.testing.assert_allclose(non_saturating, (jax.nn.sigmoid(logits) - 1) / n, rtol=1e-5)
    # Against a confident discriminator the first vanishes, the second tends to -1 / n.
    assert 0 < -minimax[-3] < 1e-8 / n and minimax[-1] == 0
    np.testing.assert_allclose(non_saturating[-3:], -1 / n, rtol=1e-6)


@functools.cache
def _fixed_players() -> state_lib.GANState:
    """A tiny generator and critic, initialised once."""
    create = functools.partial(
        state_lib.create_state,
        generator=models.MLPGenerator(out_dim=2, hidden=(5,)),
        critic=models.MLPCritic(hidden=(4,)),
        generator_tx=optax.sgd(1e-3),
        critic_tx=optax.sgd(1e-3),
        config=step_config.StepConfig(loss="non_saturating", z_dim=Z_DIM),
        example=jnp.zeros((BATCH, 2)),
    )
    return jax.jit(lambda key: create(key=key))(jax.random.key(0))


@functools.partial(jax.jit, static_argnames="loss")
def _grad_norm(state: state_lib.GANState, offset: jax.Array, z: jax.Array, loss: str) -> jax.Array:
    """``generator_grad_norm`` with the critic's score-layer bias set to ``offset``."""
    params = dict(state.critic_params)
    params["Dense_1"] = {**params["Dense_1"], "bias": jnp.full((1,), offset)}
    state = state.replace(critic_params=params)
    return diagnostics.generator_grad_norm(state, step_config.StepConfig(loss=loss, z_dim=Z_DIM), z)


def test_minimax_generator_gradient_vanishes_as_fake_logits_go_to_minus_infinity():
    # Logits l_i = f_i + b. As b -> -inf the minimax gradient -mean(sigmoid(l_i) dl_i) shrinks
    # like e^b, while the -log D gradient -mean((1 - sigmoid(l_i)) dl_i) tends to -mean(dl_i),
    # the gradient of the Wasserstein generator loss -mean(f), which does not depend on b.
    # (Not beyond b = -30: squared float32 gradient entries would underflow in the norm.)
    state, z = _fixed_players(), jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    losses_ = ("minimax", "non_saturating", "wasserstein")
    norms = {
        b: {loss: float(_grad_norm(state, b, z, loss=loss)) for loss in losses_}
        for b in (0.0, -10.0, -20.0, -30.0)
    }
    assert norms[0.0]["minimax"] > 1e-3
    np.testing.assert_allclose(
        norms[-30.0]["minimax"] / norms[-20.0]["minimax"], np.exp(-10.0), rtol=1e-4
    )
    assert norms[-30.0]["minimax"] < 1e-11 * norms[0.0]["minimax"]
    limit = norms[0.0]["wasserstein"]
    assert limit > 1e-3
    for b in (-20.0, -30.0):
        np.testing.assert_allclose(norms[b]["non_saturating"], limit, rtol=1e-5)
        assert norms[b]["wasserstein"] == limit
    np.testing.assert_allclose(norms[-10.0]["non_saturating"], limit, rtol=1e-3)
    assert abs(norms[0.0]["non_saturating"] - limit) > 1e-3 * limit


def _run(*args: str) -> subprocess.CompletedProcess:
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=1".strip(),
        # Behaviour, not speed: compiles in about half the time.
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    command = [sys.executable, "-m", "experiments.paper.vanishing_gradients", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_experiment_writes_the_curves_and_the_figure(tmp_path):
    out = tmp_path / "out"
    result = _run(
        f"--flagfile={ROOT / 'experiments/flags/paper_vanishing_gradients.cfg'}",
        f"--out={out}",
        "--gan_steps=2",
        "--discriminator_steps=6",
        "--measure_every=3",
        "--grad_batches=2",
        "--width=8",
        "--z_dim=8",
        "--batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "vanishing_gradients.png").stat().st_size > 10_000
    curves = json.loads((out / "vanishing_gradients.json").read_text())
    assert curves["gan_steps"] == [2] and curves["steps"] == [0, 3, 6]
    for cost in ("minimax", "non_saturating"):
        norms = np.array(curves[f"{cost}_grad_norm"])
        assert norms.shape == (1, 3, 2) and np.all(np.isfinite(norms)) and np.all(norms > 0)
    accuracy = np.array(curves["discriminator_accuracy"])
    assert accuracy.shape == (1, 3) and np.all((0 <= accuracy) & (accuracy <= 1))
    # A fresh discriminator learns, and the minimax gradient shrinks as it does.
    loss = np.array(curves["discriminator_loss"])
    assert np.all(loss[:, -1] < loss[:, 0])
    minimax = np.array(curves["minimax_grad_norm"]).mean(-1)
    assert np.all(minimax[:, -1] < minimax[:, 0])
    lines = (out / "gan" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2]


def test_bad_lengths_fail_with_one_sentence(tmp_path):
    result = _run(f"--out={tmp_path / 'out'}", "--gan_steps=10,5")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --gan_steps must be increasing and >= 1, got [10, 5]."
    assert not (tmp_path / "out").exists()
