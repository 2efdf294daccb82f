"""The remedies for mode collapse: PacGAN packing, unrolled look-ahead, minibatch std."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import losses, packing, parallel, penalties, step_config, train, unrolled
from gans import state as state_lib
from gans.models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator
from gans.models.layers import minibatch_std
from tests.test_parallel import assert_same_training, toy_batches, train_both_ways

# --- packing -----------------------------------------------------------------------------


def test_pack_puts_m_consecutive_examples_side_by_side_on_the_channel_axis():
    x = jnp.arange(6 * 2, dtype=jnp.float32).reshape(6, 2)  # example i is (2i, 2i + 1)
    packed = packing.pack(x, 3)
    assert packed.shape == (2, 6)
    np.testing.assert_array_equal(packed[0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(packed[1], [6, 7, 8, 9, 10, 11])
    images = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    packed = packing.pack(images, 2)
    assert packed.shape == (4, 4, 4, 6)
    # Pack 1 holds example 2's channels, then example 3's, at every pixel.
    np.testing.assert_array_equal(packed[1, ..., :3], images[2])
    np.testing.assert_array_equal(packed[1, ..., 3:], images[3])
    np.testing.assert_array_equal(packing.unpack(packed, 2), images)
    np.testing.assert_array_equal(packing.pack(images, 1), images)


def test_pack_rejects_a_batch_that_does_not_split_into_packs():
    with pytest.raises(ValueError, match="divisible by --pack"):
        packing.pack(jnp.zeros((7, 2)), 2)
    with pytest.raises(ValueError, match=">= 1"):
        packing.check_pack(0)


def _toy_state(config, critic=None, generator=None, tx=None, batch=8):
    tx = tx or optax.adam(1e-3, b1=0.5)
    return state_lib.create_state(
        generator=generator or MLPGenerator(out_dim=2, hidden=(8,)),
        critic=critic or MLPCritic(hidden=(8,)),
        generator_tx=tx,
        critic_tx=tx,
        config=config,
        example=jnp.zeros((batch, 2)),
        key=jax.random.key(0),
    )


def test_a_packed_critic_sees_m_distinct_samples_of_one_kind():
    config = step_config.StepConfig(loss="non_saturating", z_dim=3, pack=4)
    state = _toy_state(config)
    # The critic is built for packs: its first kernel reads 4 examples' 2 features.
    assert state.critic_params["Dense_0"]["kernel"].shape == (8, 8)
    real = jax.random.normal(jax.random.key(1), (8, 2))
    fake = jax.random.normal(jax.random.key(2), (8, 2)) + 10.0
    keys = jax.random.split(jax.random.key(3))
    packed_real, packed_fake = train.critic_inputs(config, state, real, fake, *keys)
    assert packed_real.shape == packed_fake.shape == (2, 8)
    # Real with real, fake with fake, each pack four different examples in batch order.
    np.testing.assert_array_equal(packing.unpack(packed_real, 4), real)
    np.testing.assert_array_equal(packing.unpack(packed_fake, 4), fake)
    for pack in np.asarray(packed_fake).reshape(2, 4, 2):
        assert len({tuple(row) for row in pack}) == 4
    # One score per pack, and a step trains on packs end to end.
    step = jax.jit(train.make_train_step(config))
    state, metrics = step(state, {"x": real[None]})
    assert np.isfinite(float(metrics["critic_loss"]))


def test_the_penalty_of_a_packed_critic_is_one_norm_per_pack():
    # A linear critic of packs, D(p) = w . p: its input gradient is w for every pack, so the
    # per-pack norm is ||w|| (over the m examples' features together), not ||w_slice||.
    w = jnp.arange(1.0, 7.0)  # packs of 3 examples of 2 features
    critic_fn = lambda p: p @ w
    real = packing.pack(jax.random.normal(jax.random.key(0), (12, 2)), 3)
    fake = packing.pack(jax.random.normal(jax.random.key(1), (12, 2)), 3)
    value, norms = penalties.gradient_penalty(critic_fn, real, fake, jax.random.key(2))
    assert norms.shape == (4,)
    np.testing.assert_allclose(norms, jnp.linalg.norm(w), rtol=1e-6)
    np.testing.assert_allclose(value, 10.0 * (jnp.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 4}, "conditional"),
        ({"consistency_weight": 10.0}, "consistency"),
        ({"pack": 0}, ">= 1"),
    ],
)
def test_packing_refuses_what_scores_single_examples(options, message):
    with pytest.raises(ValueError, match=message):
        step_config.StepConfig(loss="non_saturating", z_dim=2, **{"pack": 2, **options})


# --- unrolled look-ahead -----------------------------------------------------------------


def test_look_ahead_of_gradient_descent_on_a_quadratic_is_its_closed_form():
    # loss(theta) = a / 2 theta^2 with SGD at rate eta: theta_k = (1 - eta a)^k theta_0.
    a, eta, theta0 = 3.0, 0.1, 2.0
    loss_fn = lambda theta, key: 0.5 * a * theta**2
    tx = optax.sgd(eta)
    theta = jnp.asarray(theta0)
    for k in (0, 1, 4):
        keys = list(jax.random.split(jax.random.key(0), k)) if k else []
        result, _ = unrolled.look_ahead(loss_fn, tx, theta, tx.init(theta), keys)
        np.testing.assert_allclose(result, (1 - eta * a) ** k * theta0, rtol=1e-6)


def _ns_gan_discriminator_loss(critic, params, real, fake):
    """NS-GAN's discriminator loss written out: softplus(-D(x)) + softplus(D(G(z)))."""
    real_scores = critic.apply({"params": params}, real)
    fake_scores = critic.apply({"params": params}, fake)
    return jnp.mean(jax.nn.softplus(-real_scores)) + jnp.mean(jax.nn.softplus(fake_scores))


def test_look_ahead_equals_k_explicit_critic_updates():
    config = step_config.StepConfig(loss="non_saturating", z_dim=3, unroll_steps=3)
    critic = MLPCritic(hidden=(8,))
    state = _toy_state(config, critic=critic)
    real = jax.random.normal(jax.random.key(1), (8, 2))
    fake = jax.random.normal(jax.random.key(2), (8, 2))
    ahead = train.look_ahead_params(config, state, real, fake, jax.random.key(3))
    params, opt_state = state.critic_params, state.critic_opt_state
    for _ in range(3):
        grads = jax.grad(functools.partial(_ns_gan_discriminator_loss, critic))(params, real, fake)
        updates, opt_state = state.critic_tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(ahead, params, rtol=1e-5, atol=1e-7)
    # The look-ahead moved the critic: it is not the current critic.
    moved = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), ahead, state.critic_params)
    assert max(jax.tree.leaves(moved)) > 1e-4


def _float64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def _vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_unrolled_generator_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        config = step_config.StepConfig(loss="non_saturating", z_dim=2, unroll_steps=2)
        generator, critic = MLPGenerator(out_dim=2, hidden=(4,)), MLPCritic(hidden=(4,))
        tx = optax.sgd(0.5, momentum=0.5)
        state = _toy_state(config, critic, generator, tx=tx)
        critic_params = _float64(state.critic_params)
        state = state.replace(critic_params=critic_params, critic_opt_state=tx.init(critic_params))
        params = _float64(state.generator_params)
        real = jax.random.normal(jax.random.key(1), (6, 2), jnp.float64)
        z = jax.random.normal(jax.random.key(2), (6, 2), jnp.float64)
        family = losses.get_loss(config.loss)

        def generator_loss(g_params, stop=False):
            fake = generator.apply({"params": g_params}, z)
            ahead = train.look_ahead_params(config, state, real, fake, jax.random.key(3))
            ahead = jax.lax.stop_gradient(ahead) if stop else ahead
            return family.generator(critic.apply({"params": ahead}, fake))

        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(4), len(leaves))
        direction = treedef.unflatten(
            [jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
        )
        eps = 1e-5
        shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
        numeric = (generator_loss(shifted(1.0)) - generator_loss(shifted(-1.0))) / (2 * eps)
        analytic = _vdot(jax.grad(generator_loss)(params), direction)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        # Through the look-ahead, not at a fixed look-ahead critic: the second-order term counts.
        frozen = _vdot(jax.grad(functools.partial(generator_loss, stop=True))(params), direction)
        assert abs(float(frozen - analytic)) > 1e-3 * abs(float(analytic))


def _unrolled_adam_steps(generator, critic, real, eps_root, steps=1, dead_unit=False):
    """``steps`` unrolled (2 look-ahead updates) NS-GAN steps with Adam on both players."""
    config = step_config.StepConfig(loss="non_saturating", z_dim=3, unroll_steps=2)
    tx = state_lib.make_optimizer("adam", 1e-3, b1=0.5, eps_root=eps_root)
    state = state_lib.create_state(
        generator=generator,
        critic=critic,
        generator_tx=tx,
        critic_tx=tx,
        config=config,
        example=real,
        key=jax.random.key(0),
    )
    if dead_unit:  # The first hidden unit never fires: its gradients are exactly zero.
        params = jax.tree.map(lambda a: a, state.critic_params)
        params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[0].set(-1e3)
        state = state.replace(critic_params=params)
    step = jax.jit(train.make_train_step(config))
    for _ in range(steps):
        state, metrics = step(state, {"x": real[None]})
    return state, metrics


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def test_unrolling_through_adam_on_a_relu_critic_needs_eps_root():
    # Adam's sqrt(nu) has an infinite derivative at nu = 0, the second moment of a dead ReLU
    # unit: 0 * inf is NaN in the generator's gradient. sqrt(nu + EPS_ROOT) keeps it finite.
    real = jax.random.normal(jax.random.key(1), (8, 2))

    def nets():
        return MLPGenerator(out_dim=2, hidden=(8,)), MLPCritic(hidden=(8,))

    broken, _ = _unrolled_adam_steps(*nets(), real, eps_root=0.0, dead_unit=True)
    assert not _finite(broken.generator_params)
    fixed, metrics = _unrolled_adam_steps(
        *nets(), real, eps_root=unrolled.EPS_ROOT, steps=3, dead_unit=True
    )
    assert _finite(fixed.generator_params) and _finite(metrics)


@pytest.mark.slow
def test_unrolling_trains_the_dcgan_networks_of_stacked_mnist():
    # 32x32x3 as Stacked MNIST is served to the DCGAN networks (ReLU generator, LeakyReLU critic).
    real = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3), minval=-1.0, maxval=1.0)
    generator = DCGANGenerator(image_size=32, channels=3, width=8)
    state, metrics = _unrolled_adam_steps(
        generator, DCGANCritic(width=8), real, eps_root=unrolled.EPS_ROOT, steps=2
    )
    assert _finite(state.generator_params) and _finite(state.critic_params) and _finite(metrics)


def test_unrolling_changes_the_generator_update_only():
    plain = step_config.StepConfig(loss="non_saturating", z_dim=3)
    unrolled_config = step_config.StepConfig(loss="non_saturating", z_dim=3, unroll_steps=2)
    batches = {"x": jax.random.normal(jax.random.key(1), (1, 8, 2))}
    # SGD, not Adam, whose first update is about lr * sign(g) whatever the gradient's size.
    sgd = optax.sgd(0.1)
    a, _ = jax.jit(train.make_train_step(plain))(_toy_state(plain, tx=sgd), batches)
    b, _ = jax.jit(train.make_train_step(unrolled_config))(
        _toy_state(unrolled_config, tx=sgd), batches
    )
    chex.assert_trees_all_close(a.critic_params, b.critic_params)
    chex.assert_trees_all_close(a.critic_opt_state, b.critic_opt_state)
    differs = jax.tree.map(
        lambda u, v: jnp.max(jnp.abs(u - v)), a.generator_params, b.generator_params
    )
    assert max(jax.tree.leaves(differs)) > 1e-6


# --- minibatch standard deviation --------------------------------------------------------


def _minibatch_std_formula(x, group):
    """ProGAN's layer in NumPy, float64."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    group = n if group is None else min(group, n)
    out = np.empty(x.shape[:-1] + (1,))
    for start in range(0, n, group):
        g = x[start : start + group]
        value = np.mean(np.sqrt(np.mean((g - g.mean(axis=0)) ** 2, axis=0) + 1e-8))
        out[start : start + group] = value
    return np.concatenate([x, out], axis=-1)


@pytest.mark.parametrize("group", [None, 4, 2])
@pytest.mark.parametrize("shape", [(8, 5), (8, 4, 4, 3)])
def test_minibatch_std_equals_its_formula(group, shape):
    x = jax.random.normal(jax.random.key(0), shape) * jnp.arange(1.0, shape[-1] + 1)
    np.testing.assert_allclose(minibatch_std(x, group), _minibatch_std_formula(x, group), rtol=1e-5)


def test_minibatch_std_of_the_global_batch_is_the_same_on_one_and_eight_devices():
    x = jax.random.normal(jax.random.key(0), (16, 4, 4, 3))
    single = minibatch_std(x)
    on_devices = jax.pmap(
        lambda shard: minibatch_std(shard, None, parallel.AXIS), axis_name=parallel.AXIS
    )(x.reshape(8, 2, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(on_devices).reshape(single.shape), single, rtol=1e-5)
    # Groups within one device's batch are the same groups as on one device.
    grouped = jax.pmap(lambda shard: minibatch_std(shard, 2), axis_name=parallel.AXIS)(
        x.reshape(8, 2, 4, 4, 3)
    )
    np.testing.assert_allclose(
        np.asarray(grouped).reshape(single.shape), minibatch_std(x, 2), rtol=1e-6
    )


def test_a_minibatch_std_critic_scores_real_and_fake_in_separate_passes():
    config = step_config.StepConfig(loss="non_saturating", z_dim=3)
    critic = MLPCritic(hidden=(8, 8), minibatch_std=True)
    state = _toy_state(config, critic=critic)
    assert train.scores_mix_examples(state)
    real = jax.random.normal(jax.random.key(1), (8, 2))
    fake = jax.random.normal(jax.random.key(2), (8, 2)) * 5.0
    batch = train.CriticBatch(real, fake, real, fake, (), None)
    keys = tuple(jax.random.split(jax.random.key(3), 4))
    _, aux = train.critic_objective(config, state, state.critic_params, batch, keys)
    alone = critic.apply({"params": state.critic_params}, real)
    np.testing.assert_allclose(aux["real_score"], jnp.mean(alone), rtol=1e-6)
    # The DCGAN critic takes the statistic on its last 4x4 map: one channel more there.
    dcgan = DCGANCritic(width=4, minibatch_std=True, minibatch_std_group=4)
    params = dcgan.init(jax.random.key(0), jnp.zeros((4, 8, 8, 1)), train=False)["params"]
    # 8x8 images: one stride-2 stage of width 4 down to 4x4, plus the statistic's channel.
    assert params["Dense_0"]["kernel"].shape[0] == 4 * 4 * (4 + 1)


# --- under pmap ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, critic_options",
    [
        ({"pack": 2, "penalty": "gradient_penalty", "loss": "wasserstein"}, {}),
        ({"unroll_steps": 2}, {}),
        ({}, {"minibatch_std": True}),
    ],
    ids=["pack", "unroll", "minibatch_std"],
)
def test_each_remedy_trains_alike_on_one_and_eight_devices(options, critic_options):
    options = {"loss": "non_saturating", **options}
    config = step_config.StepConfig(z_dim=3, **options)
    generator = MLPGenerator(out_dim=2, hidden=(16,))
    critic = MLPCritic(hidden=(16, 16), **critic_options)
    parallel_critic = MLPCritic(hidden=(16, 16), axis_name=parallel.AXIS, **critic_options)
    batches = toy_batches(steps=2, n_critic=2, batch=16)
    results = train_both_ways(
        config,
        generator,
        critic,
        batches,
        jnp.zeros((16, 2)),
        parallel_models=(generator, parallel_critic),
    )
    assert_same_training(*results)
