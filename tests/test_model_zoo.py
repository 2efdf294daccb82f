"""Conditional, InfoGAN and MSG-GAN models: shapes, conditioning, the MI bound, multi-scale flow."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Pytest puts tests/ on sys.path; these helpers fill variables without compiling `model.init`.
from test_models import BATCH, WIDTH, Z_DIM, _abstract_variables, _images, _variables

from gans.models import (
    ConditionalCritic,
    ConditionalGenerator,
    DCGANCritic,
    DCGANGenerator,
    DCGANTrunk,
    InfoGANCritic,
    MLPCritic,
    MLPGenerator,
    MLPTrunk,
    MSGCritic,
    MSGGenerator,
    append_label,
    codes_vector,
    image_pyramid,
    mutual_information_lower_bound,
    num_scales_for,
    sample_codes,
)

NUM_CLASSES = 10
LABELS = jnp.arange(BATCH, dtype=jnp.int32) % NUM_CLASSES


def _shapes(model, *inputs, train=True):
    """Abstract variables and output of `model` on `inputs`, traced without compiling."""
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), {"params": jax.random.key(0)}, *inputs
    )
    out, _ = jax.eval_shape(
        functools.partial(model.apply, train=train, mutable=["batch_stats"]), variables, *inputs
    )
    return variables, out


def _filled(model, *inputs, seed=0):
    """Like test_models._variables, for models that take several inputs."""
    return _variables(_Bound(model, inputs[1:]), inputs[0], seed)


class _Bound:
    """Fixes every input of `model` but the first, so single-input helpers apply."""

    def __init__(self, model, rest):
        self.model, self.rest = model, rest

    def init(self, rngs, x, train):
        return self.model.init(rngs, x, *self.rest, train=train)


# --- Trunks: the refactored critics are their trunk plus one linear unit --------------------


@pytest.mark.parametrize(
    "critic, x",
    [
        (DCGANCritic(width=WIDTH, normalization="layer"), _images(jax.random.key(1), 16, 3)),
        (MLPCritic(hidden=(16, 8)), jax.random.normal(jax.random.key(1), (BATCH, 2))),
        (
            MSGCritic(width=WIDTH, combine="lin_cat"),
            image_pyramid(_images(jax.random.key(1), 8, 3), 2),
        ),
    ],
)
def test_critic_is_its_trunk_plus_a_linear_score(critic, x):
    variables = _variables(critic, x)
    params = dict(variables["params"])
    head = params.pop(max(name for name in params if name.startswith("Dense")))
    trunk = critic.trunk()
    assert isinstance(trunk, (DCGANTrunk, MLPTrunk)) and not isinstance(trunk, type(critic))
    features = trunk.apply({"params": params}, x)
    expected = (features @ head["kernel"] + head["bias"])[:, 0]
    np.testing.assert_allclose(critic.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


# --- Conditional GAN ------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_conditional_generator_shapes(image_size):
    base = DCGANGenerator(image_size=image_size, channels=1, width=WIDTH)
    variables, images = _shapes(
        ConditionalGenerator(base, NUM_CLASSES), jnp.zeros((BATCH, Z_DIM)), LABELS
    )
    chex.assert_shape(images, (BATCH, image_size, image_size, 1))
    chex.assert_type(images, jnp.float32)
    assert variables["params"]["base"]["Dense_0"]["kernel"].shape[0] == Z_DIM + NUM_CLASSES


def test_conditional_mlp_generator_shapes():
    model = ConditionalGenerator(MLPGenerator(out_dim=2, hidden=(16,)), NUM_CLASSES)
    variables, samples = _shapes(model, jnp.zeros((BATCH, Z_DIM)), LABELS)
    chex.assert_shape(samples, (BATCH, 2))
    chex.assert_shape(variables["params"]["base"]["Dense_0"]["kernel"], (Z_DIM + NUM_CLASSES, 16))


@pytest.mark.parametrize("mode", ["concat", "projection"])
@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_conditional_critic_shapes(image_size, mode):
    model = ConditionalCritic(DCGANCritic(width=WIDTH), NUM_CLASSES, mode=mode)
    _, scores = _shapes(model, jnp.zeros((BATCH, image_size, image_size, 3)), LABELS)
    chex.assert_shape(scores, (BATCH,))
    chex.assert_type(scores, jnp.float32)


def test_concat_critic_sees_eleven_channels_for_grey_digits():
    model = ConditionalCritic(DCGANCritic(width=WIDTH), NUM_CLASSES, mode="concat")
    variables = _abstract_variables(_Bound(model, (LABELS,)), jnp.zeros((BATCH, 8, 8, 1)))
    chex.assert_shape(variables["params"]["base"]["Conv_0"]["kernel"], (4, 4, 1 + 10, WIDTH))


def test_label_planes_are_constant_one_hot():
    x = _images(jax.random.key(1), 8, 1)
    out = append_label(x, LABELS, NUM_CLASSES)
    chex.assert_shape(out, (BATCH, 8, 8, 1 + NUM_CLASSES))
    np.testing.assert_array_equal(out[..., :1], x)
    one_hot = np.eye(NUM_CLASSES)[np.asarray(LABELS)]
    np.testing.assert_array_equal(
        out[..., 1:], np.broadcast_to(one_hot[:, None, None], (BATCH, 8, 8, 10))
    )

    vectors = append_label(jnp.ones((BATCH, 2)), LABELS, NUM_CLASSES)
    np.testing.assert_array_equal(vectors, np.concatenate([np.ones((BATCH, 2)), one_hot], axis=1))


@pytest.mark.parametrize(
    "base, x",
    [
        (DCGANCritic(width=WIDTH), _images(jax.random.key(1), 8, 1)),
        (MLPCritic(hidden=(16,)), jax.random.normal(jax.random.key(1), (BATCH, 2))),
    ],
)
def test_projection_critic_is_linear_score_plus_label_projection(base, x):
    model = ConditionalCritic(base, NUM_CLASSES, mode="projection")
    variables = _filled(model, x, LABELS)
    params = variables["params"]
    scores = model.apply(variables, x, LABELS)
    other = model.apply(variables, x, (LABELS + 1) % NUM_CLASSES)
    assert np.all(np.abs(np.asarray(scores - other)) > 1e-6)

    features = base.trunk().apply({"params": params["trunk"]}, x)
    expected = (features @ params["score"]["kernel"])[:, 0] + params["score"]["bias"]
    expected += jnp.sum(params["embed"]["embedding"][LABELS] * features, axis=-1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_label_changes_conditional_generator_output():
    model = ConditionalGenerator(DCGANGenerator(image_size=8, channels=1, width=WIDTH), NUM_CLASSES)
    z = jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    variables = _filled(model, z, LABELS)
    # Running averages: in train mode a label shared by the whole batch would be centred away.
    images = model.apply(variables, z, LABELS, train=False)
    other = model.apply(variables, z, (LABELS + 1) % NUM_CLASSES, train=False)
    assert np.all(np.max(np.abs(np.asarray(images - other)), axis=(1, 2, 3)) > 1e-4)


def test_conditional_critic_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'concat', 'projection'"):
        ConditionalCritic(DCGANCritic(), NUM_CLASSES, mode="auxiliary")


def test_projection_needs_a_trunk():
    with pytest.raises(ValueError, match="trunk"):
        ConditionalCritic(MLPGenerator(), NUM_CLASSES, mode="projection")


@pytest.mark.parametrize("mode", ["concat", "projection"])
def test_conditional_msg_critic_takes_multi_scale_batches(mode):
    images = image_pyramid(jnp.zeros((BATCH, 16, 16, 1)), num_scales_for(16))
    model = ConditionalCritic(MSGCritic(width=WIDTH), NUM_CLASSES, mode=mode)
    variables, scores = _shapes(model, images, LABELS)
    chex.assert_shape(scores, (BATCH,))
    if mode == "concat":  # The label planes join every scale: 1 + 10 channels each.
        params = variables["params"]["base"]
        chex.assert_shape(params["Conv_0"]["kernel"], (4, 4, 11, WIDTH))
        chex.assert_shape(params["Conv_1"]["kernel"], (4, 4, WIDTH + 11, 2 * WIDTH))


# --- InfoGAN --------------------------------------------------------------------------------


def test_sample_codes_and_codes_vector():
    categorical, continuous = sample_codes(jax.random.key(3), 256, 10, 2)
    chex.assert_shape((categorical, continuous), ((256,), (256, 2)))
    assert categorical.dtype == jnp.int32 and continuous.dtype == jnp.float32
    assert 0 <= categorical.min() and categorical.max() < 10
    assert -1.0 <= continuous.min() and continuous.max() <= 1.0
    vector = codes_vector(categorical, continuous, 10)
    chex.assert_shape(vector, (256, 12))
    np.testing.assert_array_equal(np.argmax(vector[:, :10], axis=1), categorical)
    np.testing.assert_array_equal(vector[:, :10].sum(axis=1), 1.0)
    np.testing.assert_array_equal(vector[:, 10:], continuous)


@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_infogan_shapes_and_shared_trunk(image_size):
    generator = DCGANGenerator(image_size=image_size, channels=1, width=WIDTH)
    _, images = _shapes(generator, jnp.zeros((BATCH, Z_DIM + 10 + 2)))
    critic = InfoGANCritic(DCGANCritic(width=WIDTH), num_categories=10, num_continuous=2)
    variables, (scores, q) = _shapes(critic, images)
    chex.assert_shape((scores, q["logits"], q["mean"]), ((BATCH,), (BATCH, 10), (BATCH, 2)))
    chex.assert_type((scores, q["logits"], q["mean"]), jnp.float32)
    params = variables["params"]
    # One trunk; the score and Q's first layer both read its flattened last conv map.
    assert set(params) == {"trunk", "score", "Dense_0", "q"}
    feature_dim = 4 * 4 * WIDTH * 2 ** (int(math.log2(image_size // 4)) - 1)
    chex.assert_shape(
        (params["score"]["kernel"], params["Dense_0"]["kernel"]),
        ((feature_dim, 1), (feature_dim, 128)),
    )


def test_infogan_msg_critic_shapes():
    images = image_pyramid(jnp.zeros((BATCH, 8, 8, 1)), num_scales_for(8))
    _, (scores, q) = _shapes(InfoGANCritic(MSGCritic(width=WIDTH)), images)
    chex.assert_shape((scores, q["logits"], q["mean"]), ((BATCH,), (BATCH, 10), (BATCH, 2)))


def test_infogan_mlp_critic_runs():
    critic = InfoGANCritic(MLPCritic(hidden=(16,)), num_categories=3, num_continuous=0)
    x = jax.random.normal(jax.random.key(1), (BATCH, 2))
    scores, q = critic.apply(_variables(critic, x), x)
    chex.assert_shape((scores, q["logits"], q["mean"]), ((BATCH,), (BATCH, 3), (BATCH, 0)))


def test_mutual_information_bound_matches_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 10)).astype(np.float32)
    mean = rng.normal(size=(8, 2)).astype(np.float32)
    categorical = rng.integers(0, 10, size=8)
    continuous = rng.uniform(-1, 1, size=(8, 2)).astype(np.float32)
    bound = mutual_information_lower_bound(
        {"logits": jnp.asarray(logits), "mean": jnp.asarray(mean)},
        jnp.asarray(categorical),
        jnp.asarray(continuous),
        10,
        continuous_weight=0.5,
    )
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected_categorical = log_probs[np.arange(8), categorical].mean() + np.log(10)
    log_density = -0.5 * (continuous - mean) ** 2 - 0.5 * np.log(2 * np.pi)
    expected_continuous = log_density.sum(axis=1).mean() + 2 * np.log(2)
    np.testing.assert_allclose(bound["categorical"], expected_categorical, rtol=1e-5)
    np.testing.assert_allclose(bound["continuous"], expected_continuous, rtol=1e-5)
    np.testing.assert_allclose(
        bound["total"], expected_categorical + 0.5 * expected_continuous, rtol=1e-5
    )


def test_perfect_q_reaches_the_categorical_entropy():
    categorical, continuous = sample_codes(jax.random.key(4), 64, 10, 2)
    q = {"logits": 1e4 * jax.nn.one_hot(categorical, 10), "mean": continuous}
    bound = mutual_information_lower_bound(q, categorical, continuous, 10)
    np.testing.assert_allclose(bound["categorical"], math.log(10), atol=1e-3)
    # The best a unit-variance Gaussian can do: k (log 2 - log(2 pi) / 2) < 0.
    np.testing.assert_allclose(
        bound["continuous"], 2 * (math.log(2) - 0.5 * math.log(2 * math.pi)), atol=1e-5
    )


def test_mutual_information_bound_rejects_mismatched_q():
    categorical, continuous = sample_codes(jax.random.key(4), 4, 10, 2)
    q = {"logits": jnp.zeros((4, 5)), "mean": jnp.zeros((4, 2))}
    with pytest.raises(ValueError, match="must match the codes"):
        mutual_information_lower_bound(q, categorical, continuous, 10)


# --- MSG-GAN --------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_msg_generator_and_pyramid_shapes(image_size):
    generator = MSGGenerator(image_size=image_size, channels=3, width=WIDTH)
    _, images = _shapes(generator, jnp.zeros((BATCH, Z_DIM)))
    sides = [4 * 2**i for i in range(num_scales_for(image_size))]
    assert sides[-1] == image_size
    chex.assert_shape(list(images), [(BATCH, s, s, 3) for s in sides])
    chex.assert_type(list(images), jnp.float32)
    pyramid = jax.eval_shape(
        functools.partial(image_pyramid, num_scales=len(sides)),
        jnp.zeros((BATCH, image_size, image_size, 3)),
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(pyramid, images)
    _, scores = _shapes(MSGCritic(width=WIDTH), images)
    chex.assert_shape(scores, (BATCH,))


def test_image_pyramid_averages_two_by_two_blocks():
    x = np.asarray(_images(jax.random.key(1), 8, 2))
    small, middle, large = image_pyramid(jnp.asarray(x), 3)
    np.testing.assert_array_equal(large, x)
    blocks = x.reshape(BATCH, 4, 2, 4, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(middle, blocks, rtol=1e-6)
    np.testing.assert_allclose(
        small, blocks.reshape(BATCH, 2, 2, 2, 2, 2).mean(axis=(2, 4)), rtol=1e-6
    )


def test_msg_generator_largest_image_is_the_dcgan_output():
    z = jax.random.normal(jax.random.key(1), (BATCH, Z_DIM))
    generator = MSGGenerator(image_size=8, channels=1, width=WIDTH)
    variables = _variables(generator, z)
    images = generator.apply(variables, z, train=False)
    assert all(np.all(np.abs(image) <= 1.0) for image in images)
    dcgan_params = {k: v for k, v in variables["params"].items() if not k.startswith("to_rgb")}
    expected = DCGANGenerator(image_size=8, channels=1, width=WIDTH).apply(
        {**variables, "params": dcgan_params}, z, train=False
    )
    np.testing.assert_allclose(images[-1], expected, rtol=1e-6)


@pytest.mark.parametrize("combine", ["cat", "lin_cat"])
def test_msg_critic_gradient_reaches_every_scale(combine):
    critic = MSGCritic(width=WIDTH, combine=combine)
    real = image_pyramid(_images(jax.random.key(1), 16, 3), num_scales_for(16))
    variables = _variables(critic, real)
    assert set(variables) == {"params"}  # No BatchNorm by default: safe under a penalty.
    fake = tuple(
        jnp.tanh(jax.random.normal(jax.random.key(i), x.shape)) for i, x in enumerate(real)
    )
    for images in (real, fake):
        scores = critic.apply(variables, images)
        chex.assert_shape(scores, (BATCH,))
        grads = jax.grad(lambda ims: jnp.sum(critic.apply(variables, ims)))(images)
        chex.assert_trees_all_equal_shapes(grads, images)
        for grad in grads:
            # Every example's score depends on each of its scales.
            assert np.all(np.abs(np.asarray(grad)).sum(axis=(1, 2, 3)) > 0)


def test_msg_critic_rejects_mismatched_scales():
    images = image_pyramid(jnp.zeros((BATCH, 16, 16, 3)), 3)
    with pytest.raises(ValueError, match="sides 4, 8"):
        _abstract_variables(MSGCritic(width=WIDTH), images[1:])
    with pytest.raises(ValueError, match="'cat', 'lin_cat'"):
        MSGCritic(combine="sum")
    with pytest.raises(ValueError, match="divisible"):
        image_pyramid(jnp.zeros((BATCH, 12, 12, 3)), 4)
