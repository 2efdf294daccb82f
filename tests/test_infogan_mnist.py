"""InfoGAN's own MNIST networks: the released code's parameter counts and layout, its Q head
with BatchNorm, its initialisation, and the settings it refuses.

Full-size models are traced (``jax.eval_shape``) where only shapes are read; what runs is small.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import models
from gans.models import registry
from gans.models.infogan_mnist import InfoGANMNISTCritic, InfoGANMNISTGenerator

NOISE, CATEGORIES, CONTINUOUS = 62, 10, 2


def _key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed)


def _abstract(model, *inputs):
    return jax.eval_shape(functools.partial(model.init, train=False), _key(), *inputs)


def _init(model, *inputs):
    return jax.jit(model.init)(_key(), *inputs)


def _trainer(model):
    """The model in training mode (batch statistics), compiled: ``(variables, x) -> outputs``."""
    apply = jax.jit(functools.partial(model.apply, mutable=["batch_stats"]))
    return lambda variables, *inputs: apply(variables, *inputs)[0]


def _count(variables) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _info_critic(base=None) -> models.InfoGANCritic:
    base = InfoGANMNISTCritic() if base is None else base
    return models.InfoGANCritic(base, num_categories=CATEGORIES, num_continuous=CONTINUOUS)


def test_the_networks_have_the_released_codes_parameter_counts():
    # openai/InfoGAN, infogan/models/regularized_gan.py, network_type "mnist", image 28x28,
    # latent 62 + 10 + 2 = 74. prettytensor's fully connected and (de)conv layers have biases;
    # its batch norm holds gamma and beta.
    #   generator: fc 74 -> 1,024 (+ bn), fc 1,024 -> 7 * 7 * 128 (+ bn),
    #              deconv 4x4 128 -> 64 (+ bn), deconv 4x4 64 -> 1
    g_total = (74 * 1024 + 1024) + 2 * 1024 + (1024 * 6272 + 6272) + 2 * 6272
    g_total += (16 * 128 * 64 + 64) + 2 * 64 + (16 * 64 * 1 + 1)
    assert g_total == 6_652_481
    #   shared trunk: conv 4x4 1 -> 64, conv 4x4 64 -> 128 (+ bn), fc 7 * 7 * 128 -> 1,024 (+ bn)
    #   discriminator: fc 1,024 -> 1; Q: fc 1,024 -> 128 (+ bn), fc 128 -> 12 (10 logits and the
    #   two continuous codes' means, their standard deviations fixed)
    trunk = (16 * 1 * 64 + 64) + (16 * 64 * 128 + 128) + 2 * 128 + (6272 * 1024 + 1024) + 2 * 1024
    c_total = trunk + (1024 + 1) + (1024 * 128 + 128) + 2 * 128 + (128 * 12 + 12)
    assert c_total == 6_692_173
    z = jnp.zeros((2, NOISE + CATEGORIES + CONTINUOUS))
    assert _count(_abstract(InfoGANMNISTGenerator(), z)) == g_total
    assert _count(_abstract(_info_critic(), jnp.zeros((2, 28, 28, 1)))) == c_total


@pytest.mark.parametrize("size", [16, 28, 32])
def test_the_layout_at_every_side_divisible_by_four(size):
    generator = InfoGANMNISTGenerator(image_size=size, channels=1, width=8)
    z = jnp.zeros((3, 12))
    variables = _init(generator, z)
    images = _trainer(generator)(variables, z)
    assert images.shape == (3, size, size, 1)
    params = variables["params"]
    assert params["Dense_1"]["kernel"].shape == (16 * 8, (size // 4) ** 2 * 16)
    assert params["SubPixelConvTranspose_0"]["kernel"].shape == (4, 4, 16, 8)
    assert params["SubPixelConvTranspose_1"]["kernel"].shape == (4, 4, 8, 1)
    critic_vars = _abstract(InfoGANMNISTCritic(width=8), images)
    assert critic_vars["params"]["Dense_0"]["kernel"].shape == ((size // 4) ** 2 * 16, 16 * 8)
    # Generator: BatchNorm after both Dense layers and the first transposed convolution;
    # critic: after its second convolution and its Dense, not after the first convolution.
    assert sorted(variables["batch_stats"]) == ["BatchNorm_0", "BatchNorm_1", "BatchNorm_2"]
    assert critic_vars["batch_stats"]["BatchNorm_0"]["mean"].shape == (16,)


def test_outputs_are_in_tanh_range_and_the_kernels_start_at_the_released_scale():
    generator = InfoGANMNISTGenerator(width=8)
    z = jax.random.normal(_key(1), (8, NOISE + CATEGORIES + CONTINUOUS))
    variables = _init(generator, z)
    images = _trainer(generator)(variables, z)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    # N(0, 0.02^2) for every kernel (the released truncated normal for the convolutions is
    # within 1 % of this); Flax's default would be 1 / sqrt(fan_in), 0.088 for Dense_1's 128
    # inputs. Dense_1's kernel has 128 x 784 entries.
    kernel = np.asarray(variables["params"]["Dense_1"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.0005 and abs(kernel.mean()) < 0.0005
    critic = _info_critic(InfoGANMNISTCritic(width=8))
    critic_vars = _init(critic, images)
    # Every large kernel of the critic, Q's hidden layer (128 x 128) and the trunk's Dense
    # (784 x 128) included: the score and Q's output are too small to read a scale from.
    large = [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(critic_vars["params"])
        if jax.tree_util.keystr(path).endswith("['kernel']") and leaf.size >= 10_000
    ]
    assert len(large) == 2, [name for name, _ in large]
    for name, leaf in large:
        assert abs(float(jnp.std(leaf)) - 0.02) < 0.002, name


def test_q_head_is_the_released_one_only_for_a_base_that_prescribes_it():
    images = jnp.zeros((4, 16, 16, 1))
    released = _abstract(_info_critic(InfoGANMNISTCritic(width=8)), images)
    assert released["batch_stats"]["BatchNorm_0"]["mean"].shape == (128,)  # Q's hidden layer
    assert released["params"]["Dense_0"]["kernel"].shape == (128, 128)
    dcgan = _abstract(_info_critic(models.DCGANCritic(width=8)), images)
    assert "batch_stats" not in dcgan or "BatchNorm_0" not in dcgan["batch_stats"]
    assert "BatchNorm_0" not in dcgan["params"]


def test_q_reads_each_example_by_its_batch_and_the_score_too():
    # BatchNorm in training mode: changing one example moves the others' outputs, which is why
    # the step scores real and fake batches in separate passes for such a critic.
    critic = _info_critic(InfoGANMNISTCritic(width=8))
    x = jax.random.normal(_key(4), (6, 16, 16, 1))
    variables = _init(critic, x)
    apply = _trainer(critic)
    scores, q = apply(variables, x)
    scores2, q2 = apply(variables, x.at[0].add(1.0))
    assert not np.allclose(scores[1:], scores2[1:])
    assert not np.allclose(q["logits"][1:], q2["logits"][1:])
    assert q["logits"].shape == (6, CATEGORIES) and q["mean"].shape == (6, CONTINUOUS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (registry.Spec((28, 28, 1), penalty=True), "makes a gradient penalty batch-wide"),
        (registry.Spec((28, 28, 1), spectral_norm=True), "has no spectral normalisation"),
        (registry.Spec((2,), data_name="8gaussians"), "needs image data; 8gaussians is 2-D"),
    ],
)
def test_the_builder_refuses_what_the_networks_are_not(spec, message):
    with pytest.raises(ValueError, match=message):
        registry.get("infogan_mnist").build(spec, registry.NoOptions())


def test_a_side_not_divisible_by_four_is_one_sentence():
    with pytest.raises(ValueError, match="divisible by 4 .28 for MNIST., got 30"):
        InfoGANMNISTGenerator(image_size=30)
    critic = InfoGANMNISTCritic(width=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        critic.init(_key(), jnp.zeros((1, 30, 30, 1)))
