"""Shape, size and batch-dependence properties of the MLP and DCGAN models."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans.models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator

BATCH = 4
Z_DIM = 16
# Small widths keep the convolutions cheap on CPU.
WIDTH = 8


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _init(model, x):
    return model.init({"params": jax.random.key(0)}, x, train=False)


def _abstract_variables(model, x):
    """Shapes and dtypes of `model.init`'s variables, without running it."""
    return jax.eval_shape(
        functools.partial(model.init, train=False), {"params": jax.random.key(0)}, x
    )


def _variables(model, x, seed=0):
    """Variables with `model.init`'s structure, drawn with NumPy.

    On CPU, `model.init` compiles one random kernel per parameter shape (seconds per conv net);
    tracing it with `eval_shape` and filling the leaves here keeps the suite fast. `model.init`
    itself is exercised by the tests that call `_init`.
    """
    shapes = _abstract_variables(model, x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("mean", "var"):  # BatchNorm running statistics, as Flax initialises them.
            return jnp.full(leaf.shape, 1.0 if name == "var" else 0.0, leaf.dtype)
        # Kernels at LeCun scale; biases and norm scales small but non-zero, so they matter.
        fan_in = math.prod(leaf.shape[:-1]) if name == "kernel" else 100
        return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _images(key, size, channels, batch=BATCH):
    return jax.random.uniform(key, (batch, size, size, channels), minval=-1.0, maxval=1.0)


# --- MLP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dim", [1, 2, 5])
def test_mlp_generator_shape_and_dtype(out_dim):
    model = MLPGenerator(out_dim=out_dim, hidden=(16, 16))
    z = jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    variables = _variables(model, z)
    assert set(variables) == {"params"}
    samples = model.apply(variables, z)
    chex.assert_shape(samples, (BATCH, out_dim))
    chex.assert_type(samples, jnp.float32)
    chex.assert_tree_all_finite(samples)


@pytest.mark.parametrize("input_shape", [(2,), (4, 4, 1)])
def test_mlp_critic_flattens_and_squeezes(input_shape):
    model = MLPCritic(hidden=(16, 16))
    x = jax.random.normal(jax.random.key(1), (BATCH, *input_shape))
    variables = _variables(model, x)
    scores = model.apply(variables, x, train=True)
    chex.assert_shape(scores, (BATCH,))
    chex.assert_type(scores, jnp.float32)
    assert variables["params"]["Dense_0"]["kernel"].shape == (math.prod(input_shape), 16)


def test_mlp_default_is_wgan_gp_toy_size():
    params = _abstract_variables(MLPGenerator(), jnp.zeros((BATCH, 2)))["params"]
    # Linear(2, 512), Linear(512, 512) x 2, Linear(512, 2), all with bias.
    assert _count(params) == (2 * 512 + 512) + 2 * (512 * 512 + 512) + (512 * 2 + 2)


def test_mlp_kernel_init_reaches_every_layer():
    # The unrolled-GAN protocol: 2x128 tanh MLPs, orthogonal init.
    model = MLPCritic(hidden=(32, 32), activation=nn.tanh, kernel_init=nn.initializers.orthogonal())
    params = _init(model, jnp.zeros((BATCH, 32)))["params"]
    for name in ("Dense_0", "Dense_1"):
        kernel = params[name]["kernel"]
        np.testing.assert_allclose(kernel.T @ kernel, np.eye(32), atol=1e-5)
    kernel = params["Dense_2"]["kernel"]
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(1), atol=1e-5)


def test_a_maxout_layer_is_the_largest_of_its_pieces():
    # Blocks' LinearMaxout: unit i of a layer of k pieces is max_j (x W + b)[i k + j].
    model = MLPCritic(hidden=(3,), maxout_pieces=4)
    x = jax.random.normal(jax.random.key(1), (BATCH, 5))
    params = _variables(model, x)["params"]
    kernel, bias = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    assert kernel.shape == (5, 12)
    pieces = np.asarray(x @ kernel + bias).reshape(BATCH, 3, 4)
    head = params["Dense_1"]
    expected = pieces.max(-1) @ np.asarray(head["kernel"])[:, 0] + np.asarray(head["bias"])[0]
    np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="maxout_pieces must be an integer >= 1, got 0"):
        _abstract_variables(MLPCritic(hidden=(3,), maxout_pieces=0), x)


def test_pacgan_toy_networks_have_its_parameter_counts():
    # PacGAN's synthetic_data_experiments print these sizes: a decoder of four 400-unit layers
    # without biases, each with BatchNorm's scale and shift, a 2-D output with bias; a
    # discriminator of three maxout layers (200 units x 5 pieces) and one score on packs of m.
    norm = functools.partial(nn.BatchNorm, momentum=0.95, epsilon=1e-4)
    generator = MLPGenerator(out_dim=2, hidden=(400,) * 4, batch_norm=norm)
    variables = _abstract_variables(generator, jnp.zeros((BATCH, 2)))
    assert _count(variables["params"]) == 2 * 400 + 3 * 400 * 400 + 4 * 2 * 400 + (400 * 2 + 2)
    assert _count(variables["batch_stats"]) == 4 * 2 * 400  # Running mean and variance.
    for m in (1, 2, 4):
        critic = MLPCritic(hidden=(200,) * 3, maxout_pieces=5)
        params = _abstract_variables(critic, jnp.zeros((BATCH, 2 * m)))["params"]
        assert _count(params) == (2 * m * 1000 + 1000) + 2 * (200 * 1000 + 1000) + 201


def test_the_batch_norm_mlp_generator_uses_batch_statistics_to_train_and_running_ones_to_sample():
    norm = functools.partial(nn.BatchNorm, momentum=0.5)
    model = MLPGenerator(out_dim=2, hidden=(8,), batch_norm=norm)
    z = jax.random.normal(jax.random.key(1), (16, 3))
    variables = _init(model, z)
    assert "bias" not in variables["params"]["Dense_0"]  # BatchNorm's shift replaces it.
    # Training: every hidden unit is normalised over the batch, then ReLU'd, whatever z's scale.
    trained, updates = model.apply(variables, 100.0 * z, train=True, mutable=["batch_stats"])
    again, _ = model.apply(variables, z, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(trained, again, rtol=1e-3, atol=1e-3)
    # The running mean moves halfway (momentum 0.5) towards the batch's mean of the Dense output.
    hidden = np.asarray(100.0 * z @ variables["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(
        updates["batch_stats"]["BatchNorm_0"]["mean"], 0.5 * hidden.mean(0), rtol=1e-4, atol=1e-4
    )
    # Sampling reads the running averages: the batch's scale now shows in the output.
    sampled = model.apply(variables, 100.0 * z, train=False)
    assert not np.allclose(sampled, trained, atol=1e-2)


# --- DCGAN shapes ---------------------------------------------------------------------------


# Shapes and dtypes are decided at trace time, so `eval_shape` checks them without compiling.
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_dcgan_generator_shape_and_dtype(image_size, channels):
    model = DCGANGenerator(image_size=image_size, channels=channels, width=WIDTH)
    z = jnp.zeros((BATCH, Z_DIM))
    variables = _abstract_variables(model, z)
    for train in (True, False):
        samples, updates = jax.eval_shape(
            functools.partial(model.apply, train=train, mutable=["batch_stats"]), variables, z
        )
        chex.assert_shape(samples, (BATCH, image_size, image_size, channels))
        chex.assert_type(samples, jnp.float32)
        chex.assert_trees_all_equal_shapes(updates["batch_stats"], variables["batch_stats"])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_dcgan_critic_shape_and_dtype(image_size, channels):
    x = jnp.zeros((BATCH, image_size, image_size, channels))
    num_stages = int(math.log2(image_size // 4))
    for normalization in ("none", "layer", "batch"):
        model = DCGANCritic(width=WIDTH, normalization=normalization)
        variables = _abstract_variables(model, x)
        scores, _ = jax.eval_shape(
            functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, x
        )
        chex.assert_shape(scores, (BATCH,))
        chex.assert_type(scores, jnp.float32)
        # Channels double per stage down to 4x4, so the last conv has width * 2^(n-1) channels.
        last_channels = WIDTH * 2 ** (num_stages - 1)
        chex.assert_shape(variables["params"]["Dense_0"]["kernel"], (4 * 4 * last_channels, 1))


@pytest.mark.parametrize("image_size", [8, 16])
def test_dcgan_generator_output_in_tanh_range(image_size):
    model = DCGANGenerator(image_size=image_size, channels=3, width=WIDTH)
    # Large latents push the pre-activations far out, where tanh saturates.
    z = 100.0 * jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    variables = _variables(model, z)
    for train in (True, False):
        samples, _ = model.apply(variables, z, train=train, mutable=["batch_stats"])
        chex.assert_tree_all_finite(samples)
        assert jnp.all(jnp.abs(samples) <= 1.0)


@pytest.mark.parametrize("normalization", ["none", "layer", "batch"])
def test_dcgan_critic_normalizations_run(normalization):
    model = DCGANCritic(width=WIDTH, normalization=normalization)
    x = _images(jax.random.key(1), 16, 3)
    variables = _variables(model, x)
    scores, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(scores, (BATCH,))
    chex.assert_tree_all_finite(scores)
    assert ("batch_stats" in variables) == (normalization == "batch")


@pytest.mark.parametrize("batch_norm", [True, False])
def test_dcgan_generator_state_follows_batch_norm(batch_norm):
    model = DCGANGenerator(image_size=8, width=WIDTH, batch_norm=batch_norm)
    variables = _abstract_variables(model, jnp.zeros((BATCH, Z_DIM)))
    assert set(variables) == ({"params", "batch_stats"} if batch_norm else {"params"})


def test_dcgan_init_as_the_trainer_calls_it():
    z = jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    generator = DCGANGenerator(image_size=8, width=WIDTH)
    generator_variables = _init(generator, z)
    images = generator.apply(generator_variables, z, train=False)
    critic = DCGANCritic(width=WIDTH)
    critic_variables = _init(critic, images)
    chex.assert_shape(critic.apply(critic_variables, images, train=False), (BATCH,))
    chex.assert_tree_all_finite((generator_variables, critic_variables))


# --- WGAN-GP DCGAN-32 sizes -----------------------------------------------------------------


def test_dcgan_generator_matches_wgan_gp_reference_size():
    model = DCGANGenerator(image_size=32, channels=3, width=64)
    variables = _abstract_variables(model, jnp.zeros((2, 128)))

    def conv_transpose(c_in, c_out, k):  # PyTorch ConvTranspose2d, bias=True.
        return c_in * c_out * k * k + c_out

    def batch_norm(c):  # weight + bias; running stats are buffers.
        return 2 * c

    reference = (
        (128 * 4096 + 4096)
        + batch_norm(4096)
        + conv_transpose(256, 128, 4)
        + batch_norm(128)
        + conv_transpose(128, 64, 4)
        + batch_norm(64)
        + conv_transpose(64, 3, 4)
    )
    assert _count(variables["params"]) == reference
    # Running mean and variance of each BatchNorm.
    assert _count(variables["batch_stats"]) == 2 * (4096 + 128 + 64)


def test_dcgan_critic_matches_wgan_gp_reference_size():
    model = DCGANCritic(width=64)
    variables = _abstract_variables(model, jnp.zeros((2, 32, 32, 3)))

    def conv(c_in, c_out, k):  # PyTorch Conv2d, bias=True.
        return c_in * c_out * k * k + c_out

    reference = conv(3, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4) + (4096 + 1)
    assert set(variables) == {"params"}
    assert _count(variables["params"]) == reference


# --- Cross-example dependence ---------------------------------------------------------------


def _scores_with_other_examples_replaced(normalization, train):
    """Scores of example 0 in two batches that differ only in examples 1..B-1."""
    model = DCGANCritic(width=WIDTH, normalization=normalization)
    x = _images(jax.random.key(1), 16, 3)
    other = _images(jax.random.key(2), 16, 3)
    y = x.at[1:].set(other[1:])
    variables = _variables(model, x)
    apply = functools.partial(model.apply, variables, train=train, mutable=["batch_stats"])
    return apply(x)[0][0], apply(y)[0][0]


@pytest.mark.parametrize("normalization", ["none", "layer"])
def test_critic_without_batch_norm_has_no_cross_example_dependence(normalization):
    score_x, score_y = _scores_with_other_examples_replaced(normalization, train=True)
    np.testing.assert_allclose(score_x, score_y, rtol=1e-6)


def test_critic_batch_norm_train_mode_depends_on_other_examples():
    score_x, score_y = _scores_with_other_examples_replaced("batch", train=True)
    assert abs(score_x - score_y) > 1e-4


def test_critic_batch_norm_eval_mode_uses_running_averages():
    score_x, score_y = _scores_with_other_examples_replaced("batch", train=False)
    np.testing.assert_allclose(score_x, score_y, rtol=1e-6)

    model = DCGANCritic(width=WIDTH, normalization="batch")
    x = _images(jax.random.key(1), 16, 3)
    variables = _variables(model, x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # One train step moves the running averages, and evaluation mode reads them.
    moved = jax.tree.map(
        lambda new, old: not jnp.allclose(new, old),
        updates["batch_stats"],
        variables["batch_stats"],
    )
    assert all(jax.tree.leaves(moved))
    before = model.apply(variables, x, train=False)
    after = model.apply({**variables, **updates}, x, train=False)
    assert not jnp.allclose(before, after)


def test_batch_norm_axis_name_syncs_statistics_across_shards():
    # vmap with a named axis stands in for pmap: two shards must see the full-batch statistics.
    model = DCGANCritic(width=WIDTH, normalization="batch", axis_name="batch")
    x = _images(jax.random.key(1), 16, 3)
    single = DCGANCritic(width=WIDTH, normalization="batch")
    variables = _variables(single, x)
    expected, _ = single.apply(variables, x, train=True, mutable=["batch_stats"])
    sharded, _ = jax.vmap(
        lambda shard: model.apply(variables, shard, train=True, mutable=["batch_stats"]),
        axis_name="batch",
    )(x.reshape(2, BATCH // 2, *x.shape[1:]))
    np.testing.assert_allclose(sharded.reshape(-1), expected, rtol=1e-4, atol=1e-5)


# --- Configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [4, 28, 128])
def test_generator_rejects_unsupported_image_size(image_size):
    with pytest.raises(ValueError, match="image_size"):
        DCGANGenerator(image_size=image_size)


def test_critic_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="'none', 'layer', 'batch'"):
        DCGANCritic(normalization="spectral")


@pytest.mark.parametrize("shape", [(BATCH, 28, 28, 1), (BATCH, 32, 16, 3), (BATCH, 32, 32)])
def test_critic_rejects_unsupported_input_shape(shape):
    with pytest.raises(ValueError, match="square images"):
        _init(DCGANCritic(width=WIDTH), jnp.zeros(shape))
