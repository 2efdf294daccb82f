"""The two-player step: n_critic updates, jit/no-jit agreement, clipping, metrics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import models, penalties, step_config, train
from gans import state as state_lib

Z_DIM = 4


def make_state(config=None, *, critic_tx=None, generator=None, critic=None, example=None, seed=0):
    generator = generator or models.MLPGenerator(out_dim=2, hidden=(16, 16))
    critic = critic or models.MLPCritic(hidden=(16, 16))
    return state_lib.create_state(
        generator=generator,
        critic=critic,
        generator_tx=optax.adam(1e-3, b1=0.5, b2=0.9),
        critic_tx=critic_tx or optax.adam(1e-3, b1=0.5, b2=0.9),
        config=config or WGAN_GP,
        example=jnp.zeros((8, 2)) if example is None else example,
        key=jax.random.key(seed),
    )


def real_batches(n_critic, batch=8, shape=(2,), seed=1):
    return {"x": jax.random.normal(jax.random.key(seed), (n_critic, batch) + shape)}


WGAN_GP = step_config.StepConfig(
    loss="wasserstein", z_dim=Z_DIM, penalty=penalties.GradientPenalty(weight=0.1)
)


class TrainStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_no_jit_agree(self):
        step = self.variant(train.make_train_step(WGAN_GP))
        state, metrics = step(make_state(), real_batches(3))
        reference_state, reference_metrics = jax.jit(train.make_train_step(WGAN_GP))(
            make_state(), real_batches(3)
        )
        chex.assert_trees_all_close(
            state.critic_params, reference_state.critic_params, rtol=1e-5, atol=1e-6
        )
        chex.assert_trees_all_close(
            state.generator_params, reference_state.generator_params, rtol=1e-5, atol=1e-6
        )
        chex.assert_trees_all_close(metrics, reference_metrics, rtol=1e-4, atol=1e-6)


def test_n_critic_critic_updates_then_one_generator_update():
    state = make_state()
    step = jax.jit(train.make_train_step(WGAN_GP))
    for _ in range(2):
        state, _ = step(state, real_batches(5))
    # Adam counts its updates: 2 x 5 for the critic, 2 for the generator.
    assert int(state.critic_opt_state[0].count) == 10
    assert int(state.generator_opt_state[0].count) == 2
    assert int(state.step) == 2


def test_each_critic_update_sees_its_own_batch():
    step = jax.jit(train.make_train_step(WGAN_GP))
    same = real_batches(1)
    repeated = {"x": jnp.concatenate([same["x"]] * 3)}
    distinct = real_batches(3)
    distinct["x"] = distinct["x"].at[0].set(same["x"][0])
    a, _ = step(make_state(), repeated)
    b, _ = step(make_state(), distinct)
    diff = jax.tree.map(
        lambda x, y: float(jnp.max(jnp.abs(x - y))), a.critic_params, b.critic_params
    )
    assert max(jax.tree.leaves(diff)) > 0


def test_wgan_clipping_holds_after_every_step():
    config = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM)
    tx = state_lib.make_optimizer("rmsprop", 5e-3, clip=0.01)
    state = make_state(critic_tx=tx)
    step = jax.jit(train.make_train_step(config))
    for i in range(5):
        state, metrics = step(state, real_batches(5, seed=i))
        assert max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(state.critic_params)) <= 0.01
    assert np.isfinite(metrics["critic_grad_norm_interpolates"])


def test_metrics_are_flat_finite_scalars():
    _, metrics = jax.jit(train.make_train_step(WGAN_GP))(make_state(), real_batches(5))
    expected = {
        "critic_loss",
        "critic_adversarial_loss",
        "penalty",
        "critic_grad_norm_interpolates",
        "wasserstein_estimate",
        "critic_real_score",
        "critic_fake_score",
        "generator_loss",
        "critic_param_grad_norm",
        "generator_param_grad_norm",
        "critic_param_norm",
        "generator_param_norm",
    }
    assert expected <= set(metrics)
    for name, value in metrics.items():
        assert jnp.shape(value) == (), name
        assert jnp.isfinite(value), name
    np.testing.assert_allclose(
        metrics["critic_loss"], metrics["critic_adversarial_loss"] + metrics["penalty"], rtol=1e-5
    )
    np.testing.assert_allclose(
        metrics["wasserstein_estimate"],
        metrics["critic_real_score"] - metrics["critic_fake_score"],
        rtol=1e-5,
    )


def test_the_same_seed_gives_the_same_step_and_another_seed_does_not():
    step = jax.jit(train.make_train_step(WGAN_GP))
    _, ma = step(make_state(seed=3), real_batches(2))
    _, mb = step(make_state(seed=3), real_batches(2))
    _, mc = step(make_state(seed=4), real_batches(2))
    chex.assert_trees_all_equal(ma, mb)
    assert float(ma["critic_loss"]) != float(mc["critic_loss"])


@pytest.mark.slow
def test_batchnorm_models_train_and_update_their_statistics():
    generator = models.DCGANGenerator(image_size=16, channels=1, width=4)
    critic = models.DCGANCritic(width=4, normalization="batch")
    state = make_state(generator=generator, critic=critic, example=jnp.zeros((4, 16, 16, 1)))
    config = step_config.StepConfig(
        loss="non_saturating", z_dim=Z_DIM, label_smoothing=0.1, flip_probability=0.05
    )
    new, metrics = jax.jit(train.make_train_step(config))(state, real_batches(2, 4, (16, 16, 1)))
    assert all(jnp.isfinite(v) for v in metrics.values())
    for old_stats, new_stats in (
        (state.generator_state, new.generator_state),
        (state.critic_state, new.critic_state),
    ):
        assert "batch_stats" in new_stats
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), old_stats, new_stats)
        assert any(jax.tree.leaves(changed))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "wasserstien"}, "unknown loss"),
        ({"loss": "wasserstein", "penalty": "gp"}, "unknown penalty"),
        ({"loss": "wasserstein", "label_smoothing": 0.1}, "cross-entropy losses only"),
        (
            {
                "loss": "wasserstein",
                "penalty": "gradient_penalty",
                "penalty_options": (("weight", -1.0),),
            },
            "must be >= 0",
        ),
        ({"loss": "minimax", "flip_probability": 0.9}, "flip_probability"),
        (
            {
                "loss": "wasserstein",
                "penalty": "gradient_penalty",
                "penalty_options": (("symmetric", 1),),
            },
            "no option 'symmetric'; its options: weight, target, one_sided, mode",
        ),
        (
            {
                "loss": "wasserstein",
                "penalty": penalties.GradientPenalty(),
                "penalty_options": (("weight", 1.0),),
            },
            "penalty_options go with a penalty name",
        ),
        ({"loss": "wasserstein", "penalty": penalties.gradient_penalty}, "PenaltyOptions such as"),
    ],
)
def test_bad_step_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        step_config.StepConfig(z_dim=2, **kwargs)


def test_a_penalty_name_and_its_options_give_the_one_typed_config():
    shorthand = step_config.StepConfig(
        loss="wasserstein",
        z_dim=Z_DIM,
        penalty="gradient_penalty",
        penalty_options=(("weight", 0.1),),
    )
    assert shorthand.penalty == penalties.GradientPenalty(weight=0.1)
    assert shorthand.penalty_options == ()
    # Equal and equally hashed: caches and comparisons see one configuration either way.
    assert shorthand == WGAN_GP and hash(shorthand) == hash(WGAN_GP)


def test_without_a_penalty_only_the_last_critic_update_measures_the_slope():
    # The slope on interpolates costs a backward pass of its own without a penalty: the step
    # reports the last update's, replayed here with the step's own keys.
    config = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM)
    state, batches = make_state(config), real_batches(3)
    _, metrics = jax.jit(train.make_train_step(config))(state, batches)
    keys = jax.random.split(jax.random.split(train._step_key(state))[0], 3)
    update = jax.jit(lambda s, x, k: train._critic_update(config, s, {"x": x}, k))
    slopes = []
    for x, k in zip(batches["x"], keys):
        state, update_metrics = update(state, x, k)
        slopes.append(float(update_metrics["critic_grad_norm_interpolates"]))
    assert len(set(slopes)) == 3  # The updates differ, so the choice of one shows.
    np.testing.assert_allclose(metrics["critic_grad_norm_interpolates"], slopes[-1], rtol=1e-6)
    skipped = jax.jit(lambda s, x, k: train._critic_update(config, s, {"x": x}, k, probe=False))(
        state, batches["x"][0], keys[0]
    )[1]
    assert "critic_grad_norm_interpolates" not in skipped
