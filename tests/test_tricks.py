"""The step's options beyond the plain game: labels, InfoGAN codes, EMA, noise, multi-scale."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import models, step_config, train
from gans import run as run_lib
from gans import state as state_lib

Z_DIM = 4


def make(config, generator, critic, example):
    return state_lib.create_state(
        generator=generator,
        critic=critic,
        generator_tx=optax.adam(1e-3),
        critic_tx=optax.adam(1e-3),
        config=config,
        example=example,
        key=jax.random.key(0),
    )


def toy_models():
    return models.MLPGenerator(out_dim=2, hidden=(16,)), models.MLPCritic(hidden=(16,))


def toy_batches(n_critic=2, batch=8, classes=None, seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    batches = {"x": jax.random.normal(k1, (n_critic, batch, 2))}
    if classes:
        batches["y"] = jax.random.randint(k2, (n_critic, batch), 0, classes)
    return batches


def test_conditional_step_uses_the_labels():
    config = step_config.StepConfig(loss="non_saturating", z_dim=Z_DIM, num_classes=4)
    generator, critic = toy_models()
    generator = models.ConditionalGenerator(generator, 4)
    critic = models.ConditionalCritic(critic, 4)
    state = make(config, generator, critic, jnp.zeros((8, 2)))
    step = jax.jit(train.make_train_step(config))
    batches = toy_batches(classes=4)
    a, metrics = step(state, batches)
    b, _ = step(state, {**batches, "y": (batches["y"] + 1) % 4})
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert not np.allclose(
        a.critic_params["base"]["Dense_0"]["kernel"], b.critic_params["base"]["Dense_0"]["kernel"]
    )
    z = jnp.ones((2, Z_DIM))
    samples = train.generate(a, z, jnp.array([0, 1]))
    assert not np.allclose(samples[0], samples[1])


def test_infogan_step_reports_and_trains_the_information_term():
    info = step_config.InfoCodes(num_categories=3, num_continuous=1)
    config = step_config.StepConfig(loss="non_saturating", z_dim=Z_DIM, info=info)
    generator, critic = toy_models()
    state = make(config, generator, models.InfoGANCritic(critic, 3, 1), jnp.zeros((8, 2)))
    assert state.generator_params["Dense_0"]["kernel"].shape[0] == Z_DIM + 3 + 1
    step = jax.jit(train.make_train_step(config))
    first = None
    for i in range(60):
        state, metrics = step(state, toy_batches(seed=i))
        first = first if first is not None else float(metrics["information_categorical"])
    # L_I <= H(c) = log 3, and both players push it up from its start.
    assert float(metrics["information_categorical"]) <= np.log(3) + 1e-6
    assert float(metrics["information_categorical"]) > first


def test_ema_follows_the_incremental_formula():
    config = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM, ema_decay=0.9)
    generator, critic = toy_models()
    state = make(config, generator, critic, jnp.zeros((8, 2)))
    chex.assert_trees_all_equal(state.generator_ema_params, state.generator_params)
    new, _ = jax.jit(train.make_train_step(config))(state, toy_batches())
    expected = jax.tree.map(
        lambda old, p: 0.9 * old + 0.1 * p, state.generator_params, new.generator_params
    )
    chex.assert_trees_all_close(new.generator_ema_params, expected, rtol=1e-6)
    # Samples come from the average unless asked otherwise.
    z = jnp.ones((3, Z_DIM))
    averaged = generator.apply({"params": new.generator_ema_params}, z)
    np.testing.assert_allclose(train.generate(new, z), averaged, rtol=1e-6)


@pytest.mark.parametrize(
    "field, metric, value",
    [
        ("instance_noise", "instance_noise_std", 0.5),
        ("flip_probability", "flip_probability", 0.2),
    ],
)
def test_annealed_tricks_decay_linearly_to_zero(field, metric, value):
    anneal = "noise_anneal_steps" if field == "instance_noise" else "flip_anneal_steps"
    config = step_config.StepConfig(loss="non_saturating", z_dim=Z_DIM, **{field: value, anneal: 4})
    generator, critic = toy_models()
    state = make(config, generator, critic, jnp.zeros((8, 2)))
    step = jax.jit(train.make_train_step(config))
    seen = []
    for i in range(6):
        state, metrics = step(state, toy_batches(seed=i))
        seen.append(float(metrics[metric]))
    np.testing.assert_allclose(
        seen, [value, 0.75 * value, 0.5 * value, 0.25 * value, 0, 0], rtol=1e-6, atol=1e-7
    )


@pytest.mark.slow
def test_msg_gan_trains_under_a_pytree_gradient_penalty():
    real_transform = functools.partial(models.image_pyramid, num_scales=3)
    config = step_config.StepConfig(
        loss="wasserstein",
        z_dim=Z_DIM,
        penalty="gradient_penalty",
        penalty_options=(("weight", 10.0),),
        real_transform=real_transform,
    )
    generator = models.MSGGenerator(image_size=16, channels=1, width=4)
    critic = models.MSGCritic(width=4)
    state = make(config, generator, critic, jnp.zeros((4, 16, 16, 1)))
    batches = {"x": jax.random.uniform(jax.random.key(2), (2, 4, 16, 16, 1), minval=-1.0)}
    new, metrics = jax.jit(train.make_train_step(config))(state, batches)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["penalty"]) > 0
    # Every scale's to-image layer of the generator moved: gradients reach each scale.
    for name in [k for k in state.generator_params if k.startswith("to_rgb")]:
        assert not np.allclose(
            state.generator_params[name]["kernel"], new.generator_params[name]["kernel"]
        ), name


def test_wgan_warm_up_schedule():
    schedule = run_lib.wgan_critic_schedule(100, 5)
    assert [schedule(s) for s in (1, 25, 26, 499, 500, 501, 1000)] == [100, 100, 5, 5, 100, 5, 100]


def test_optimistic_optimizers_are_optax_ones():
    params = {"w": jnp.ones(3)}
    for name in ("adam", "sgd"):
        tx = state_lib.make_optimizer(name, 0.1, optimistic=True)
        updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
        assert np.all(np.asarray(updates["w"]) < 0)
    with pytest.raises(ValueError, match="optimistic updates exist for adam and sgd"):
        state_lib.make_optimizer("rmsprop", 0.1, optimistic=True)


@pytest.mark.parametrize(
    "critic, x",
    [
        (models.MLPCritic(hidden=(16, 16), spectral_norm=True), jnp.ones((8, 2))),
        (models.DCGANCritic(width=4, spectral_norm=True), jnp.ones((8, 16, 16, 1))),
    ],
)
def test_spectral_norm_bounds_every_layer_and_trains(critic, x):
    variables = critic.init(jax.random.key(0), x, train=False)
    assert "spectral_stats" in variables and "batch_stats" not in variables
    apply = jax.jit(lambda v, x: critic.apply(v, x, train=True, mutable=["spectral_stats"]))
    for _ in range(60):  # Power iterations converge on the largest singular value.
        _, updates = apply(variables, x)
        variables = {**variables, **updates}
    sigmas = {
        name.split("/")[0]: value
        for stats in variables["spectral_stats"].values()
        for name, value in stats.items()
        if name.endswith("/sigma")
    }
    assert len(sigmas) == len(variables["params"])  # Every layer, the score layer included.
    for layer, sigma in sigmas.items():
        kernel = np.asarray(variables["params"][layer]["kernel"])
        true_sigma = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2)
        np.testing.assert_allclose(sigma, true_sigma, rtol=1e-2)
    config = step_config.StepConfig(loss="hinge", z_dim=Z_DIM)
    generator = (
        models.MLPGenerator(out_dim=2, hidden=(16,))
        if x.ndim == 2
        else models.DCGANGenerator(image_size=16, channels=1, width=4)
    )
    state = make(config, generator, critic, x)
    new, metrics = jax.jit(train.make_train_step(config))(state, {"x": x[None]})
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert "spectral_stats" in new.critic_state


@pytest.mark.slow
def test_average_pooling_critic_and_no_max_pooling():
    critic = models.DCGANCritic(width=4, downsampling="avgpool")
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 1))
    variables = critic.init(jax.random.key(1), x, train=False)
    kernels = [v["kernel"].shape for k, v in variables["params"].items() if k.startswith("Conv")]
    assert kernels == [(3, 3, 1, 4), (3, 3, 4, 8)]  # Two halvings: 16 -> 8 -> 4.
    assert critic.apply(variables, x).shape == (3,)
    # Average pooling passes gradient to every input pixel.
    grads = jax.grad(lambda x: critic.apply(variables, x).sum())(x)
    assert float(jnp.mean(grads != 0)) > 0.99
    with pytest.raises(ValueError, match="never max pooling"):
        models.DCGANCritic(downsampling="maxpool")


def test_a_schedule_over_generator_steps_holds_for_every_critic_update_of_a_step():
    # Adam with beta1 0 on a constant gradient of ones moves by exactly the rate (bias-corrected
    # second moment 1), so the updates read the schedule off: 4 generator steps of 5 critic
    # updates, the linear decay of the released codes 1, 0.75, 0.5, 0.25 per generator step.
    rate = run_lib.per_critic_update(optax.linear_schedule(1.0, 0.0, 4), 4, lambda step: 5)
    tx = state_lib.make_optimizer("adam", rate, b1=0.0, b2=0.9)
    params = {"w": jnp.zeros(())}
    opt_state = tx.init(params)
    moves = []
    for _ in range(20):
        updates, opt_state = tx.update({"w": jnp.ones(())}, opt_state, params)
        moves.append(-float(updates["w"]))
    np.testing.assert_allclose(moves, np.repeat([1.0, 0.75, 0.5, 0.25], 5), rtol=1e-6)


def test_a_warm_up_s_extra_critic_updates_keep_their_generator_step_s_rate():
    # 3 critic updates before each of the first two generator steps, then 1: updates 0-2 are
    # step 0's, 3-5 step 1's, 6 step 2's and 7 step 3's.
    rate = run_lib.per_critic_update(lambda step: step, 4, lambda step: 3 if step <= 2 else 1)
    assert [int(rate(jnp.asarray(count))) for count in range(8)] == [0, 0, 0, 1, 1, 1, 2, 3]


def test_the_experiments_critic_rate_is_the_generators_at_the_same_generator_step():
    from experiments import compose

    critic, generator = compose.player_rates("linear", 2e-4, 1e-4, 10, lambda step: 5)
    for count in range(50):
        np.testing.assert_allclose(float(critic(count)), 2.0 * float(generator(count // 5)))
    assert float(critic(49)) > 0  # The last step's critic still learns.
    assert compose.player_rates("constant", 2e-4, 1e-4, 10, lambda step: 5) == (2e-4, 1e-4)
