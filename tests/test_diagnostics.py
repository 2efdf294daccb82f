"""Training diagnostics: closed forms, a hand-written forward pass, and both critic families."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gans import diagnostics, models, step_config
from gans import state as state_lib

Z_DIM = 3
BATCH = 6
WGAN = step_config.StepConfig(loss="wasserstein", z_dim=Z_DIM)


class LinearCritic(nn.Module):
    """``f(x) = w . x + b``: its input gradient is ``w`` everywhere."""

    @nn.compact
    def __call__(self, x, train=True):
        del train
        return jnp.squeeze(nn.Dense(1)(x.reshape(x.shape[0], -1)), -1)


class ImageGenerator(nn.Module):
    """One Dense layer to 16x16 grey images: a generator that compiles in no time."""

    @nn.compact
    def __call__(self, z, train=True):
        del train
        return jnp.tanh(nn.Dense(16 * 16)(z)).reshape(z.shape[0], 16, 16, 1)


def make_state(critic, *, config=WGAN, generator=None, example=None, seed=0, compiled=True):
    create = functools.partial(
        state_lib.create_state,
        generator=generator or models.MLPGenerator(out_dim=2, hidden=(5,)),
        critic=critic,
        generator_tx=optax.sgd(1e-3),
        critic_tx=optax.sgd(1e-3),
        config=config,
        example=jnp.zeros((BATCH, 2)) if example is None else example,
    )
    # Compiled, as is most of what follows: op by op, XLA:CPU compiles each op on first use.
    key = jax.random.key(seed)
    return jax.jit(lambda key: create(key=key))(key) if compiled else create(key=key)


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def test_linear_critic_has_input_gradient_norm_w_everywhere():
    state = make_state(LinearCritic())
    w = state.critic_params["Dense_0"]["kernel"][:, 0]
    real, fake = normal(1, (BATCH, 2)), normal(2, (BATCH, 2))

    @jax.jit
    def norms(state, real, fake, key):
        critic_fn = lambda x: state.critic.apply({"params": state.critic_params}, x)
        return diagnostics.input_gradient_norms(critic_fn, real, fake, key)

    norms = norms(state, real, fake, jax.random.key(3))
    for points in ("real", "fake", "interpolates"):
        np.testing.assert_allclose(norms[points], jnp.linalg.norm(w), rtol=1e-5)
    # Per example, the Wasserstein loss's gradient at the input is +-w, at the score +-1.
    # Not jitted: the interceptor and the shape pass also work op by op.
    layer_norms, _ = diagnostics.activation_gradient_norms(state, WGAN, real, fake)
    assert list(layer_norms) == ["00_input", "01_Dense_0"]
    np.testing.assert_allclose(layer_norms["00_input"], jnp.linalg.norm(w), rtol=1e-5)
    np.testing.assert_allclose(layer_norms["01_Dense_0"], 1.0, rtol=1e-6)


def test_activation_gradients_match_a_hand_written_forward_pass():
    # Cross-entropy with label smoothing: each example's loss gradient has its own weight.
    config = step_config.StepConfig(loss="non_saturating", z_dim=Z_DIM, label_smoothing=0.1)
    state = make_state(models.MLPCritic(hidden=(4, 3), activation=nn.tanh), config=config)
    real, fake = normal(1, (BATCH, 2)), normal(2, (BATCH, 2))
    params = state.critic_params

    def loss_fn(perturbations, real, fake):
        h = jnp.concatenate([real, fake])
        for i, p in enumerate(perturbations):
            layer = params[f"Dense_{i}"]
            h = h @ layer["kernel"] + layer["bias"] + p
            if i < len(perturbations) - 1:
                h = jnp.tanh(h)
        real_scores, fake_scores = jnp.split(h[:, 0], 2)
        real_terms = 0.9 * jax.nn.log_sigmoid(real_scores) + 0.1 * jax.nn.log_sigmoid(-real_scores)
        loss = -jnp.mean(real_terms) - jnp.mean(jax.nn.log_sigmoid(-fake_scores))
        return loss, h[:, 0]

    zeros = [jnp.zeros((2 * BATCH, width)) for width in (4, 3, 1)]
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
    (value, scores), (grads, real_grad, fake_grad) = jax.jit(grad_fn)(zeros, real, fake)
    per_example = lambda g: jnp.mean(BATCH * jnp.linalg.norm(g.reshape(g.shape[0], -1), axis=1))
    expected = {"00_input": per_example(jnp.concatenate([real_grad, fake_grad]))}
    expected.update({f"0{i + 1}_Dense_{i}": per_example(g) for i, g in enumerate(grads)})

    norms, aux = jax.jit(functools.partial(diagnostics.activation_gradient_norms, config=config))(
        state, real=real, fake=fake
    )
    assert sorted(norms) == list(expected)
    chex.assert_trees_all_close(norms, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["critic_adversarial_loss"], value, rtol=1e-5)
    # The zero perturbations leave the critic's scores as they were.
    np.testing.assert_allclose(
        jnp.concatenate([aux["real_scores"], aux["fake_scores"]]), scores, rtol=1e-5
    )


def test_weight_histogram_counts_every_weight_and_piles_at_the_clip_bound():
    params = {"a": {"kernel": 3.0 * normal(1, (40, 30))}, "b": {"bias": normal(2, (30,))}}
    num_weights = 40 * 30 + 30
    hist = jax.jit(functools.partial(diagnostics.weight_histograms, bins=16, per_layer=True))(
        params
    )
    assert int(hist["all"].sum()) == num_weights
    assert int(hist["a/kernel"].sum()) == 1200 and int(hist["b/bias"].sum()) == 30
    np.testing.assert_array_equal(hist["a/kernel"] + hist["b/bias"], hist["all"])
    flat = np.concatenate([np.ravel(p) for p in jax.tree.leaves(params)])
    np.testing.assert_allclose(
        np.asarray(hist["edges"])[[0, -1]], [-np.abs(flat).max(), np.abs(flat).max()]
    )
    reference, _ = np.histogram(flat, bins=np.asarray(hist["edges"]))
    assert np.abs(reference - np.asarray(hist["all"])).sum() <= 2  # float32 edge rounding

    c = 0.01
    clipped = jax.tree.map(lambda p: jnp.clip(p, -c, c), params)
    hist = jax.jit(functools.partial(diagnostics.weight_histograms, bins=16, clip=c))(clipped)
    assert int(hist["all"].sum()) == num_weights
    np.testing.assert_allclose(np.asarray(hist["edges"])[[0, -1]], [-c, c])
    edge_mass = (hist["all"][0] + hist["all"][-1]) / num_weights
    assert edge_mass > 0.9
    fraction_at_clip = jax.jit(diagnostics.fraction_at_clip)
    np.testing.assert_allclose(fraction_at_clip(clipped, c), edge_mass, atol=0.02)
    assert fraction_at_clip(params, 10.0) < 0.01  # 3.3 sigma away


def test_generator_grad_norm_matches_a_direct_gradient():
    state = make_state(models.MLPCritic(hidden=(4,)))
    variables = lambda p: {"params": p}

    @jax.jit
    def both(state, z):
        def generator_loss(g_params):
            fake = state.generator.apply(variables(g_params), z)
            return -jnp.mean(state.critic.apply(variables(state.critic_params), fake))

        expected = optax.tree.norm(jax.grad(generator_loss)(state.generator_params))
        return diagnostics.generator_grad_norm(state, WGAN, z), expected

    np.testing.assert_allclose(*both(state, normal(3, (BATCH, Z_DIM))), rtol=1e-5)


def _check_diagnosis(diagnosis, state, layers, clip=None):
    scalars, histograms = diagnostics.to_host(diagnosis)
    assert all(np.isfinite(v) for v in scalars.values()), scalars
    activation = sorted(k for k in scalars if k.startswith("diag/activation_grad_norm/"))
    assert activation == [f"diag/activation_grad_norm/{name}" for name in layers]
    np.testing.assert_allclose(
        scalars["diag/wasserstein_estimate"],
        scalars["diag/critic_real_score"] - scalars["diag/critic_fake_score"],
        rtol=1e-5,
    )
    num_weights = sum(p.size for p in jax.tree.leaves(state.critic_params))
    assert histograms["diag/critic_weight_histogram"].sum() == num_weights
    for points in ("real", "fake", "interpolates"):  # Each example's norm, and their mean.
        norms = histograms[f"diag/critic_grad_norms_{points}"]
        assert norms.ndim == 1 and norms.max() == scalars[f"diag/critic_grad_norm_{points}_max"]
        np.testing.assert_allclose(
            norms.mean(), scalars[f"diag/critic_grad_norm_{points}"], rtol=1e-5
        )
    assert ("diag/critic_weight_frac_at_clip" in scalars) == (clip is not None)
    # Wasserstein: an example's loss gradient is +-grad f, so at the input the mean norm is
    # that of the critic's input gradients at real and fake points, and at the score it is 1.
    mean_of_both = scalars["diag/critic_grad_norm_real"] + scalars["diag/critic_grad_norm_fake"]
    np.testing.assert_allclose(
        scalars["diag/activation_grad_norm/00_input"], mean_of_both / 2, rtol=1e-5
    )
    np.testing.assert_allclose(scalars[f"diag/activation_grad_norm/{layers[-1]}"], 1.0, rtol=1e-5)


def test_activation_gradients_come_in_depth_order():
    # Eleven layers: the depth prefix keeps "Dense_10" after "Dense_9" when keys get sorted.
    # Equal widths and no jit: each op is compiled once and reused by every layer.
    state = make_state(
        models.MLPCritic(hidden=(2,) * 10),
        generator=models.MLPGenerator(out_dim=2, hidden=()),
        compiled=False,
    )
    norms, _ = diagnostics.activation_gradient_norms(
        state, WGAN, normal(1, (BATCH, 2)), normal(2, (BATCH, 2))
    )
    names = ["00_input"] + [f"{d:02d}_Dense_{d - 1}" for d in range(1, 12)]
    assert list(norms) == names == sorted(names)


def test_diagnose_mlp():
    state = make_state(models.MLPCritic(hidden=(4, 3)))
    batch = {"x": normal(1, (BATCH, 2))}
    diagnose = jax.jit(functools.partial(diagnostics.diagnose, config=WGAN, clip=0.01))
    layers = ["00_input", "01_Dense_0", "02_Dense_1", "03_Dense_2"]
    diagnosis = diagnose(state, batch=batch, key=jax.random.key(2))
    _check_diagnosis(diagnosis, state, layers, clip=0.01)
    # This critic was never clipped: the histogram's range widens past +-c to hold every weight.
    max_abs = max(np.abs(p).max() for p in jax.tree.leaves(state.critic_params))
    assert max_abs > 0.01
    edges = np.asarray(diagnosis.histograms["diag/critic_weight_histogram_edges"])
    np.testing.assert_allclose(edges[[0, -1]], [-max_abs, max_abs], rtol=1e-6)


def test_diagnose_dcgan_with_batch_norm():
    # BatchNorm: real and fake batches go through the critic separately, as in the train step.
    example = jnp.zeros((4, 16, 16, 1))
    critic = models.DCGANCritic(width=2, normalization="batch")
    state = make_state(critic, generator=ImageGenerator(), example=example)
    assert "batch_stats" in state.critic_state
    batch = {"x": normal(1, example.shape)}
    diagnose = jax.jit(
        functools.partial(diagnostics.diagnose, config=WGAN, per_layer_histograms=True)
    )
    diagnosis = diagnose(state, batch=batch, key=jax.random.key(2))
    _check_diagnosis(diagnosis, state, ["00_input", "01_Conv_0", "02_Conv_1", "03_Dense_0"])
    assert "diag/critic_weight_histogram/Conv_1/kernel" in diagnosis.histograms
