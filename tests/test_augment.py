"""Differentiable augmentation, ADA's adaptive probability and consistency regularisation."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from gans import augment, parallel, penalties, step_config, train
from gans import state as state_lib

KEY = jax.random.key(7)


def _images(batch=6, side=8, channels=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, side, side, channels), minval=-1.0)


@pytest.mark.parametrize("policy", [augment.DIFFAUGMENT_POLICY, ("flip",), ("cutout",)])
def test_probability_zero_is_the_identity(policy):
    x = _images()
    chex.assert_trees_all_equal(augment.augment(x, KEY, policy, probability=0.0), x)


@pytest.mark.parametrize("name", list(augment.TRANSFORMS))
def test_every_transform_changes_images_and_keeps_shape_and_dtype(name):
    x = _images()
    y = augment.augment(x, KEY, (name,))
    chex.assert_equal_shape([x, y])
    assert y.dtype == x.dtype and not np.allclose(x, y)


def test_shift_matrices_move_a_vector_and_shift_in_zeros():
    v = jnp.arange(1.0, 6.0)
    moved = jnp.einsum("bij,j->bi", augment.shift_matrices(jnp.array([0, 2, -1]), 5), v)
    np.testing.assert_array_equal(moved, [[1, 2, 3, 4, 5], [3, 4, 5, 0, 0], [0, 1, 2, 3, 4]])


def test_translation_is_an_integer_shift_of_at_most_an_eighth_with_zeros_shifted_in():
    side = 16
    x = jnp.broadcast_to(
        jnp.arange(1.0, side * side + 1).reshape(1, side, side, 1), (32, side, side, 1)
    )
    y = np.asarray(augment.augment(x, KEY, ("translation",)))
    reach = 2  # int(16 * 0.125 + 0.5)
    seen = set()
    for image in y[..., 0]:
        matches = []
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                expected = np.zeros((side, side))
                src = np.asarray(x[0, ..., 0])
                for i in range(side):
                    for j in range(side):
                        if 0 <= i + dy < side and 0 <= j + dx < side:
                            expected[i, j] = src[i + dy, j + dx]
                if np.array_equal(image, expected):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5  # Shifts are drawn per example.


def test_cutout_zeroes_one_clipped_square_of_half_the_side():
    side, size = 8, 4
    y = np.asarray(augment.augment(jnp.ones((64, side, side, 2)), KEY, ("cutout",)))
    areas = []
    for image in y:
        hole = image[..., 0] == 0
        np.testing.assert_array_equal(hole, image[..., 1] == 0)  # Every channel alike.
        rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
        # One rectangle, at most size x size, touching the border whenever it is clipped.
        assert hole[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert hole.sum() == len(rows) * len(cols)
        assert len(rows) <= size and len(cols) <= size
        if len(rows) < size:
            assert rows.min() == 0 or rows.max() == side - 1
        areas.append(hole.sum())
    assert max(areas) == size * size and min(areas) < size * size


def test_color_shifts_a_constant_image_by_its_brightness_only():
    # Saturation and contrast scale deviations from a mean, and a constant image has none.
    x = jnp.full((16, 4, 4, 3), 0.25)
    y = np.asarray(augment.augment(x, KEY, ("color",)))
    offsets = y - 0.25
    np.testing.assert_allclose(offsets, offsets[:, :1, :1, :1] * np.ones_like(offsets), atol=1e-6)
    assert np.all(offsets >= -0.5) and np.all(offsets < 0.5)
    assert len(np.unique(offsets[:, 0, 0, 0].round(6))) == 16


def test_color_saturation_is_the_identity_on_one_channel_and_contrast_keeps_the_mean_shift():
    x = _images(channels=1)
    y = augment.augment(x, KEY, ("color",))
    # On one channel, colour is x + b - 0.5 then a contrast about the image mean: the mean
    # moves by the brightness alone, and the deviations are scaled by one factor in [0.5, 1.5).
    deviation_in = x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    deviation_out = y - jnp.mean(y, axis=(1, 2, 3), keepdims=True)
    factor = jnp.sum(deviation_out * deviation_in, axis=(1, 2, 3), keepdims=True) / jnp.sum(
        deviation_in**2, axis=(1, 2, 3), keepdims=True
    )
    np.testing.assert_allclose(deviation_out, factor * deviation_in, atol=1e-5)
    assert np.all(factor >= 0.5 - 1e-5) and np.all(factor < 1.5 + 1e-5)


@pytest.mark.parametrize("name", list(augment.TRANSFORMS))
def test_gradients_of_every_transform_by_finite_differences(name):
    x = (
        _images(batch=2, side=4, channels=2).astype(jnp.float64)
        if jax.config.x64_enabled
        else _images(batch=2, side=4, channels=2)
    )
    f = lambda x: augment.augment(x, KEY, (name,), probability=0.7)
    check_grads(f, (x,), order=2, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_the_same_draw_on_one_and_eight_devices():
    if jax.local_device_count() < 8:
        pytest.skip("needs 8 simulated devices (tests/conftest.py)")
    x = _images(batch=16)
    single = augment.augment(x, KEY, augment.DIFFAUGMENT_POLICY, probability=0.5)
    sharded = jax.pmap(
        lambda x, key: augment.augment(
            x, key, augment.DIFFAUGMENT_POLICY, probability=0.5, axis_name=parallel.AXIS
        ),
        axis_name=parallel.AXIS,
    )(x.reshape(8, 2, *x.shape[1:]), parallel.replicate(KEY, jax.local_devices()))
    np.testing.assert_allclose(sharded.reshape(x.shape), single, atol=1e-6)


def test_unknown_and_repeated_augmentations_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'; known augmentations"):
        augment.parse_policy("translation,rotate")
    with pytest.raises(ValueError, match="names a transform twice"):
        augment.parse_policy("cutout,cutout")
    with pytest.raises(ValueError, match="names no transform"):
        augment.parse_policy("")
    with pytest.raises(ValueError, match="image batches"):
        augment.augment(jnp.ones((4, 2)), KEY, ("flip",))
    with pytest.raises(ValueError, match="unknown augmentation"):
        step_config.StepConfig(loss="hinge", z_dim=4, augment=("zoom",))
    with pytest.raises(ValueError, match="give --augment too"):
        step_config.StepConfig(loss="hinge", z_dim=4, ada_target=0.6)
    with pytest.raises(ValueError, match="target must be in"):
        step_config.StepConfig(loss="hinge", z_dim=4, augment=("flip",), ada_target=1.5)
    with pytest.raises(ValueError, match="probability must be in"):
        step_config.StepConfig(loss="hinge", z_dim=4, augment=("flip",), augment_probability=2.0)
    with pytest.raises(ValueError, match="multi-scale"):
        step_config.StepConfig(
            loss="hinge", z_dim=4, consistency_weight=10.0, real_transform=lambda x: x
        )


def test_ada_moves_p_by_the_images_seen_toward_the_target_and_stays_in_range():
    step = lambda p, r: float(
        augment.adapt_probability(jnp.float32(p), jnp.float32(r), target=0.6, images=640, kimg=10)
    )
    assert step(0.5, 0.9) == pytest.approx(0.5 + 640 / 10_000)
    assert step(0.5, 0.1) == pytest.approx(0.5 - 640 / 10_000)
    assert step(0.0, 0.0) == 0.0 and step(0.99, 1.0) == 1.0
    assert float(augment.overfitting_signal(jnp.array([2.0, 1.0, -3.0, 0.5]))) == 0.5


# --- In the train step ---------------------------------------------------------------------

Z_DIM = 4


class _ImageGenerator(nn.Module):
    """z to 8x8x1 images through one dense layer: a generator that compiles in a moment."""

    @nn.compact
    def __call__(self, z, train=True):
        return jnp.tanh(nn.Dense(64)(z)).reshape(-1, 8, 8, 1)


class _ImageCritic(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
        h = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(1)(h)[:, 0]


def _state(config, seed=0):
    return state_lib.create_state(
        generator=_ImageGenerator(),
        critic=_ImageCritic(),
        generator_tx=optax.sgd(0.01),
        critic_tx=optax.sgd(0.01),
        config=config,
        example=jnp.zeros((8, 8, 8, 1)),
        key=jax.random.key(seed),
    )


def _batches(n_critic=1, batch=8):
    return {"x": jnp.tanh(jax.random.normal(jax.random.key(3), (n_critic, batch, 8, 8, 1)))}


GP = dict(penalty="gradient_penalty", penalty_options=(("weight", 10.0),))


@pytest.mark.slow
def test_a_step_at_probability_zero_is_the_step_without_augmentation():
    plain = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM, **GP)
    off = step_config.StepConfig(
        loss="wasserstein",
        z_dim=Z_DIM,
        augment=augment.DIFFAUGMENT_POLICY,
        augment_probability=0.0,
        **GP,
    )
    a, _ = jax.jit(train.make_train_step(plain))(_state(plain), _batches())
    b, metrics_b = jax.jit(train.make_train_step(off))(_state(off), _batches())
    chex.assert_trees_all_equal(a.critic_params, b.critic_params)
    chex.assert_trees_all_equal(a.generator_params, b.generator_params)
    assert metrics_b["augment_probability"] == 0.0
    on = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM, augment=("translation",), **GP)
    c, _ = jax.jit(train.make_train_step(on))(_state(on), _batches())
    assert not np.allclose(
        c.generator_params["Dense_0"]["kernel"], a.generator_params["Dense_0"]["kernel"]
    )


def test_the_penalty_is_taken_on_interpolates_of_augmented_images():
    config = step_config.StepConfig(
        loss="wasserstein", z_dim=Z_DIM, augment=("translation", "cutout"), **GP
    )
    state = _state(config)
    batches = _batches()
    _, metrics = jax.jit(train.make_train_step(config))(state, batches)
    # The key path of the step's one critic update (gans.train.train_step, _critic_update).
    critic_key = jax.random.split(jax.random.fold_in(state.key, state.step))[0]
    key = jax.random.split(critic_key, 1)[0]
    z_key, penalty_key, _, _, noise_key = jax.random.split(key, 5)
    z, _ = train._latents(config, z_key, 8)
    fake, _ = train._apply(
        state.generator, state.generator_params, state.generator_state, (z,), True
    )
    real = batches["x"][0]
    seen = train.critic_inputs(config, state, real, fake, train._augment_key(key), noise_key)
    critic_fn = lambda x: state.critic.apply({"params": state.critic_params}, x)
    expected, _ = penalties.gradient_penalty(critic_fn, *seen, penalty_key, weight=10.0)
    unaugmented, _ = penalties.gradient_penalty(critic_fn, real, fake, penalty_key, weight=10.0)
    np.testing.assert_allclose(metrics["penalty"], expected, rtol=1e-5)
    assert not np.isclose(float(expected), float(unaugmented), rtol=1e-3)


def test_ada_step_moves_p_by_one_increment_in_the_signal_direction():
    config = step_config.StepConfig(
        loss="hinge",
        z_dim=Z_DIM,
        augment=("translation",),
        augment_probability=0.3,
        ada_target=0.6,
        ada_kimg=1.0,
    )
    state = _state(config)
    new, metrics = jax.jit(train.make_train_step(config))(state, _batches(n_critic=2))
    increment = 2 * 8 / 1000.0  # n_critic * batch real images, over kimg * 1000.
    direction = np.sign(float(metrics["augment_signal"]) - 0.6)
    assert direction != 0
    np.testing.assert_allclose(new.augment_probability, 0.3 + direction * increment, rtol=1e-6)
    assert metrics["augment_probability"] == pytest.approx(0.3)


def test_consistency_regularization_of_a_linear_critic_in_closed_form():
    x, fake = _images(seed=1), _images(seed=2)
    w = jax.random.normal(jax.random.key(5), x.shape[1:])
    critic_fn = lambda batch: jnp.einsum("bhwc,hwc->b", batch, w)
    real_key, fake_key = jax.random.split(KEY)
    moved_real = augment.augment(x, real_key, ("translation",))
    moved_fake = augment.augment(fake, fake_key, ("translation",))
    real_term = np.mean(np.asarray(critic_fn(x) - critic_fn(moved_real)) ** 2)
    fake_term = np.mean(np.asarray(critic_fn(fake) - critic_fn(moved_fake)) ** 2)
    cr, changes = penalties.consistency_regularization(critic_fn, x, fake, KEY, weight=10.0)
    np.testing.assert_allclose(cr, 10 * real_term, rtol=1e-5)
    assert changes.shape == (x.shape[0],)
    bcr, _ = penalties.consistency_regularization(
        critic_fn, x, fake, KEY, weight=10.0, fake_weight=5.0
    )
    np.testing.assert_allclose(bcr, 10 * real_term + 5 * fake_term, rtol=1e-5)


def test_consistency_is_added_to_the_critic_loss_and_logged():
    config = step_config.StepConfig(
        loss="hinge", z_dim=Z_DIM, consistency_weight=10.0, consistency_fake_weight=10.0
    )
    _, metrics = jax.jit(train.make_train_step(config))(_state(config), _batches())
    assert metrics["consistency"] > 0
    np.testing.assert_allclose(
        metrics["critic_loss"],
        metrics["critic_adversarial_loss"] + metrics["consistency"],
        rtol=1e-5,
    )
