"""The VAE baseline: analytic KL vs Monte Carlo, the reparameterisation, shapes, training."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm

from gans import vae
from gans.models import DCGANGenerator, MLPGenerator
from gans.models.vae import VAE, VAEEncoder, reparameterize

LATENT_DIM = 3
BATCH = 32


def model_key(seed):
    """Keys for initialising and training models: the code is PRNG-agnostic, and XLA:CPU
    compiles the 'rbg' generator several times faster than threefry, which keeps the suite fast."""
    return jax.random.key(seed, impl="rbg")


def mlp_vae(hidden=(16, 16)):
    return VAE(
        encoder=VAEEncoder(LATENT_DIM, kind="mlp", hidden=hidden),
        decoder=MLPGenerator(out_dim=2, hidden=hidden),
    )


def conv_vae(image_size=16, channels=1):
    return VAE(
        encoder=VAEEncoder(LATENT_DIM, width=4, kind="conv"),
        decoder=DCGANGenerator(image_size, channels, width=4, batch_norm=False),
    )


MLP_VAE = mlp_vae()
ADAM = optax.adam(3e-3)
STEP = jax.jit(vae.make_vae_train_step(vae.VAEConfig()))


def make_state(model, example):
    # Jitted: one compile of the whole initialisation beats op-by-op dispatch on CPU.
    create = functools.partial(vae.create_vae_state, model=model, tx=ADAM)
    return jax.jit(create)(example=example, key=model_key(0))


@functools.cache
def mlp_state():
    """The MLP VAE's initial state, shared between tests: states are immutable."""
    return make_state(MLP_VAE, jnp.zeros((BATCH, 2)))


@functools.cache
def conv_state():
    """A conv VAE for 16x16 grey images (the digits' size), shared between tests."""
    return make_state(conv_vae(16, 1), jnp.zeros((BATCH, 16, 16, 1)))


def gaussian_batches(n, batch=BATCH, seed=1):
    """A tiny 2-D Gaussian away from the origin: N((1, -2), 0.3^2 I)."""
    noise = jax.random.normal(jax.random.key(seed), (n, batch, 2))
    return {"x": jnp.array([1.0, -2.0]) + 0.3 * noise}


# --------------------------------------------------------------------------- #
# KL and reconstruction terms.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "mean, log_variance",
    [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([1.0, -0.5, 2.0], [0.0, 0.0, 0.0]),
        ([0.0, 0.0, 0.0], [-1.0, 0.5, 1.5]),
        ([0.3, -1.2, 0.7], [-2.0, 0.8, -0.4]),
    ],
)
def test_analytic_kl_matches_monte_carlo(mean, log_variance):
    mean = jnp.array([mean])
    log_variance = jnp.array([log_variance])
    num_samples = 200_000
    z = reparameterize(
        jax.random.key(0),
        jnp.broadcast_to(mean, (num_samples, LATENT_DIM)),
        jnp.broadcast_to(log_variance, (num_samples, LATENT_DIM)),
    )
    log_q = norm.logpdf(z, mean, jnp.exp(0.5 * log_variance)).sum(-1)
    log_p = norm.logpdf(z).sum(-1)
    log_ratio = log_q - log_p
    estimate = jnp.mean(log_ratio)
    standard_error = jnp.std(log_ratio) / np.sqrt(num_samples)
    analytic = vae.gaussian_kl(mean, log_variance)
    chex.assert_shape(analytic, (1,))
    assert abs(float(analytic[0] - estimate)) <= 4.0 * float(standard_error) + 1e-5


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zero = vae.gaussian_kl(jnp.zeros((2, 5)), jnp.zeros((2, 5)))
    np.testing.assert_array_equal(zero, 0.0)
    mean_key, log_variance_key = jax.random.split(jax.random.key(0))
    mean = 3.0 * jax.random.normal(mean_key, (1000, 4))
    log_variance = 3.0 * jax.random.normal(log_variance_key, (1000, 4))
    kl = vae.gaussian_kl(mean, log_variance)
    chex.assert_shape(kl, (1000,))
    assert bool(jnp.all(kl >= 0.0)) and bool(jnp.all(jnp.isfinite(kl)))


def test_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        vae.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_gaussian_reconstruction_with_half_variance_is_the_sum_of_squared_errors():
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
    reconstruction = jax.random.normal(jax.random.key(1), (4, 3, 3, 2))
    sse = jnp.sum((x - reconstruction) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(vae.reconstruction_loss(x, reconstruction), sse, rtol=1e-6)
    np.testing.assert_allclose(
        vae.reconstruction_loss(x, reconstruction, variance=2.0), sse / 4.0, rtol=1e-6
    )
    # With the constant it is the exact negative log-density.
    exact = -norm.logpdf(x, reconstruction, np.sqrt(0.3)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(
        vae.reconstruction_loss(x, reconstruction, variance=0.3, include_constant=True),
        exact,
        rtol=1e-5,
    )


def test_reconstruction_rejects_bad_arguments():
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="known likelihoods: gaussian"):
        vae.reconstruction_loss(x, x, kind="bernoulli")
    with pytest.raises(ValueError, match="variance"):
        vae.reconstruction_loss(x, x, variance=0.0)
    with pytest.raises(ValueError, match="same shape"):
        vae.reconstruction_loss(x, jnp.zeros((2, 3)))


def test_elbo_loss_combines_the_terms():
    keys = jax.random.split(jax.random.key(0), 4)
    x, reconstruction = (jax.random.normal(k, (BATCH, 2)) for k in keys[:2])
    mean, log_variance = (jax.random.normal(k, (BATCH, LATENT_DIM)) for k in keys[2:])
    rec = vae.reconstruction_loss(x, reconstruction, variance=0.2)
    kl = vae.gaussian_kl(mean, log_variance)
    loss, metrics = vae.elbo_loss(x, reconstruction, mean, log_variance, beta=4.0, variance=0.2)
    np.testing.assert_allclose(loss, jnp.mean(rec + 4.0 * kl), rtol=1e-6)
    np.testing.assert_allclose(metrics["reconstruction"], jnp.mean(rec), rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], jnp.mean(kl), rtol=1e-6)
    # The reported ELBO is the true bound: beta 1 and the likelihood's constant.
    nll = vae.reconstruction_loss(x, reconstruction, variance=0.2, include_constant=True)
    np.testing.assert_allclose(metrics["elbo"], -jnp.mean(nll + kl), rtol=1e-6)
    np.testing.assert_allclose(metrics["mse"], jnp.mean((x - reconstruction) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        vae.elbo_loss(x, reconstruction, mean, log_variance, beta=-1.0)


# --------------------------------------------------------------------------- #
# Reparameterisation.
# --------------------------------------------------------------------------- #
def test_reparameterised_samples_have_the_posterior_moments():
    mean = jnp.array([0.5, -1.0, 2.0])
    log_variance = jnp.array([0.0, -2.0, 1.0])
    n = 100_000
    z = reparameterize(
        jax.random.key(3), jnp.broadcast_to(mean, (n, 3)), jnp.broadcast_to(log_variance, (n, 3))
    )
    std = jnp.exp(0.5 * log_variance)
    # Five standard errors of the sample mean and of the sample standard deviation.
    np.testing.assert_allclose(jnp.mean(z, 0), mean, atol=float(5 * jnp.max(std) / np.sqrt(n)))
    np.testing.assert_allclose(jnp.std(z, 0), std, rtol=5 / np.sqrt(2 * n))


def test_gradient_flows_through_the_sample():
    key = jax.random.key(4)
    mean = jnp.array([[0.5, -1.0, 2.0]])
    log_variance = jnp.array([[0.0, -2.0, 1.0]])
    eps = jax.random.normal(key, mean.shape)
    grad_mean, grad_log_variance = jax.grad(
        lambda m, lv: jnp.sum(reparameterize(key, m, lv)), argnums=(0, 1)
    )(mean, log_variance)
    # dz/dmean = 1 and dz/dlog_variance = exp(lv / 2) eps / 2, coordinate by coordinate.
    np.testing.assert_allclose(grad_mean, jnp.ones_like(mean))
    np.testing.assert_allclose(
        grad_log_variance, 0.5 * jnp.exp(0.5 * log_variance) * eps, rtol=1e-6
    )
    assert bool(jnp.all(grad_log_variance != 0.0))


# --------------------------------------------------------------------------- #
# Models.
# --------------------------------------------------------------------------- #
def test_conv_vae_shapes_on_16x16_images():
    state = conv_state()
    assert set(state.params) == {"encoder", "decoder"}
    x = jax.random.uniform(jax.random.key(0), (BATCH, 16, 16, 1), minval=-1.0, maxval=1.0)
    reconstruction, mean, log_variance = jax.jit(state.model.apply)(
        {"params": state.params}, x, model_key(3)
    )
    chex.assert_shape(reconstruction, x.shape)
    chex.assert_shape([mean, log_variance], (BATCH, LATENT_DIM))
    assert bool(jnp.all(jnp.abs(reconstruction) <= 1.0))  # tanh: the likelihood's mean.
    samples = jax.eval_shape(vae.vae_generate, state, jnp.zeros((5, LATENT_DIM)))
    chex.assert_shape(samples, (5, 16, 16, 1))
    chex.assert_shape(jax.eval_shape(vae.vae_reconstruct, state, x), x.shape)


@pytest.mark.parametrize("image_size, channels", [(8, 3), (32, 1)])
def test_conv_encoder_takes_any_supported_size_and_channels(image_size, channels):
    encoder = VAEEncoder(LATENT_DIM, width=4)
    x = jnp.zeros((2, image_size, image_size, channels))
    mean, log_variance = jax.eval_shape(lambda: encoder.init_with_output(jax.random.key(0), x)[0])
    assert mean.shape == log_variance.shape == (2, LATENT_DIM)


def test_mlp_vae_shapes_on_2d_data():
    x = jnp.ones((BATCH, 2))
    reconstruction, mean, log_variance = MLP_VAE.apply(
        {"params": mlp_state().params}, x, model_key(3)
    )
    chex.assert_shape(reconstruction, (BATCH, 2))
    chex.assert_shape([mean, log_variance], (BATCH, LATENT_DIM))
    chex.assert_shape(vae.vae_generate(mlp_state(), jnp.zeros((5, LATENT_DIM))), (5, 2))
    chex.assert_shape(vae.vae_reconstruct(mlp_state(), x), (BATCH, 2))


def test_encoder_rejects_bad_settings():
    with pytest.raises(ValueError, match="kind"):
        VAEEncoder(LATENT_DIM, kind="resnet")
    with pytest.raises(ValueError, match="latent_dim"):
        VAEEncoder(0)
    with pytest.raises(ValueError, match="square images"):
        jax.eval_shape(
            VAEEncoder(LATENT_DIM, width=4).init, model_key(0), jnp.zeros((1, 12, 12, 1))
        )


def test_state_refuses_batch_norm_decoders():
    model = VAE(
        encoder=VAEEncoder(LATENT_DIM, width=4),
        decoder=DCGANGenerator(8, 1, width=4, batch_norm=True),
    )
    with pytest.raises(ValueError, match="batch_norm=False"):
        vae.create_vae_state(
            model=model, tx=ADAM, example=jnp.zeros((2, 8, 8, 1)), key=model_key(0)
        )


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="beta"):
        vae.VAEConfig(beta=-0.1)
    with pytest.raises(ValueError, match="known likelihoods"):
        vae.VAEConfig(likelihood="laplace")
    with pytest.raises(ValueError, match="variance"):
        vae.VAEConfig(variance=-1.0)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        vae.VAEConfig(ema_decay=1.0)


# --------------------------------------------------------------------------- #
# Train step.
# --------------------------------------------------------------------------- #
class ELBOJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_elbo_loss_with_and_without_jit(self):
        keys = jax.random.split(jax.random.key(5), 4)
        x, reconstruction = (jax.random.normal(k, (BATCH, 2)) for k in keys[:2])
        mean, log_variance = (jax.random.normal(k, (BATCH, LATENT_DIM)) for k in keys[2:])
        # beta and the variance may be traced, e.g. when annealed by a schedule.
        loss_fn = lambda beta, variance: vae.elbo_loss(
            x, reconstruction, mean, log_variance, beta=beta, variance=variance
        )
        result = self.variant(loss_fn)(jnp.float32(0.5), jnp.float32(0.2))
        chex.assert_trees_all_close(result, loss_fn(0.5, 0.2), rtol=1e-6)


def test_n_batches_in_one_call_equal_n_calls_of_one():
    batches = gaussian_batches(2)
    grouped, grouped_metrics = STEP(mlp_state(), batches)
    single, losses = mlp_state(), []
    for i in range(2):
        single, metrics = STEP(single, {"x": batches["x"][i : i + 1]})
        losses.append(metrics["loss"])
    assert int(grouped.step) == int(single.step) == 2
    chex.assert_trees_all_close(grouped.params, single.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grouped_metrics["loss"], np.mean(losses), rtol=1e-5)


@pytest.mark.slow
def test_the_weight_average_moves_by_one_minus_decay_and_decodes_the_samples():
    config = vae.VAEConfig(ema_decay=0.9)
    state = vae.create_vae_state(
        model=MLP_VAE, tx=ADAM, example=jnp.zeros((BATCH, 2)), key=model_key(0), config=config
    )
    chex.assert_trees_all_equal(state.ema_params, state.params)
    new, _ = jax.jit(vae.make_vae_train_step(config))(state, gaussian_batches(1))
    expected = jax.tree.map(lambda old, p: 0.9 * old + 0.1 * p, state.params, new.params)
    chex.assert_trees_all_close(new.ema_params, expected, rtol=1e-6, atol=1e-7)
    z = jax.random.normal(jax.random.key(3), (4, LATENT_DIM))
    averaged = new.model.apply({"params": new.ema_params}, z, train=False, method=VAE.decode)
    chex.assert_trees_all_close(vae.vae_generate(new, z), averaged)
    assert not np.allclose(vae.vae_generate(new, z, use_ema=False), averaged)
    # Without an average, samples come from the trained weights.
    assert mlp_state().ema_params is None


def test_replicas_stay_in_sync_with_an_axis_name():
    # vmap with an axis name stands in for pmap: each replica draws its own noise, and the
    # averaged gradients keep the replicas' parameters equal.
    config = vae.VAEConfig(axis_name="batch")
    replicated = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), mlp_state())
    x = jnp.swapaxes(gaussian_batches(2)["x"][None], 0, 1)  # [replicas, n=1, B, 2]
    new_state, metrics = jax.jit(jax.vmap(vae.make_vae_train_step(config), axis_name="batch"))(
        replicated, {"x": x}
    )
    first, second = (jax.tree.map(lambda leaf, i=i: leaf[i], new_state.params) for i in (0, 1))
    chex.assert_trees_all_close(first, second)
    np.testing.assert_allclose(metrics["loss"][0], metrics["loss"][1])


def test_training_the_mlp_vae_reduces_the_loss():
    data = gaussian_batches(300)["x"]
    state, history = mlp_state(), []
    for i in range(300):
        state, metrics = STEP(state, {"x": data[i : i + 1]})
        history.append(metrics)
    history = jax.device_get(history)
    assert int(state.step) == 300
    for name in ("loss", "reconstruction", "kl", "elbo", "mse", "param_grad_norm", "param_norm"):
        assert all(np.isfinite(entry[name]) for entry in history), name
    first = np.mean([entry["loss"] for entry in history[:10]])
    last = np.mean([entry["loss"] for entry in history[-10:]])
    assert last < 0.2 * first, (first, last)
    assert history[-1]["elbo"] > history[0]["elbo"]
    assert history[-1]["mse"] < 0.2  # The data's variance per coordinate is 0.09.


def test_conv_vae_train_step_on_digit_sized_images():
    x = jax.random.uniform(jax.random.key(0), (1, BATCH, 16, 16, 1), minval=-1.0, maxval=1.0)
    state, metrics = STEP(conv_state(), {"x": x})
    assert {"loss", "reconstruction", "kl", "elbo"} <= set(metrics)
    assert all(bool(jnp.isfinite(value)) for value in metrics.values())
    assert int(state.step) == 1
