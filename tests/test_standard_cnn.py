"""SNGAN's standard CNN: the released code's parameter counts, its layout, per-example scores.

Full-size models are only traced (``jax.eval_shape``); what runs is tiny and compiled at XLA's
lowest optimisation level, as in test_resnet.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import models
from gans.models import layers

NATIVE = {"conv_implementation": "native"}


def _key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def _abstract(model, *inputs):
    return jax.eval_shape(functools.partial(model.init, train=False), _key(), *inputs)


def _count(variables) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _compile(fn, *args):
    lowered = jax.jit(fn).lower(*args)
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


def test_the_standard_cnn_has_the_released_codes_parameter_counts():
    # pfnet-research/chainer-gan-lib, common/net.py. Chainer's BatchNormalization holds gamma
    # and beta; Linear, Convolution2D and Deconvolution2D have biases.
    #
    # DCGANGenerator(n_hidden=128, bottom_width=4, ch=512):
    #   l0 Linear(128, 4 * 4 * 512)            128 * 8,192 + 8,192        = 1,056,768
    #   bn0 BatchNormalization(8,192)          2 * 8,192                  =    16,384
    #   dc1 Deconvolution2D(512, 256, 4, 2, 1) 512 * 256 * 16 + 256       = 2,097,408
    #   dc2 Deconvolution2D(256, 128, 4, 2, 1) 256 * 128 * 16 + 128       =   524,416
    #   dc3 Deconvolution2D(128, 64, 4, 2, 1)  128 * 64 * 16 + 64         =   131,136
    #   bn1..bn3                               2 * (256 + 128 + 64)       =       896
    #   dc4 Deconvolution2D(64, 3, 3, 1, 1)    64 * 3 * 9 + 3             =     1,731
    g_total = 1_056_768 + 16_384 + 2_097_408 + 524_416 + 131_136 + 896 + 1_731
    assert g_total == 3_828_739
    # SNDCGANDiscriminator(bottom_width=4, ch=512): c0_0 3 -> 64 (3x3), c0_1 64 -> 128 (4x4),
    # c1_0 128 -> 128 (3x3), c1_1 128 -> 256 (4x4), c2_0 256 -> 256 (3x3), c2_1 256 -> 512
    # (4x4), c3_0 512 -> 512 (3x3), l4 SNLinear(4 * 4 * 512, 1).
    convs = [(3, 64, 9), (64, 128, 16), (128, 128, 9), (128, 256, 16), (256, 256, 9)]
    convs += [(256, 512, 16), (512, 512, 9)]
    c_total = sum(i * o * k + o for i, o, k in convs) + 8_192 + 1
    assert c_total == 5_860_865
    generator, critic = models.sngan_standard_cnn()
    assert (generator.width, generator.spectral_norm) == (64, False)
    assert (critic.width, critic.spectral_norm, critic.leaky_slope) == (64, True, 0.1)
    assert _count(_abstract(generator, jnp.zeros((1, 128)))) == g_total
    assert _count(_abstract(critic, jnp.zeros((1, 32, 32, 3)))) == c_total


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_the_layout_at_every_size(size):
    generator = models.StandardGenerator(image_size=size, channels=1, width=4, **NATIVE)
    images, variables = jax.eval_shape(
        functools.partial(generator.init_with_output, train=False), _key(), jnp.zeros((2, 8))
    )
    assert images.shape == (2, size, size, 1) and images.dtype == jnp.float32
    stages = int(math.log2(size // 4))
    params = variables["params"]
    # Dense to 4x4 x (4 * 2^stages); transposed convolutions halving down to 4; a 3x3 output.
    assert params["Dense_0"]["kernel"].shape == (8, 16 * 4 * 2**stages)
    ups = [params[f"Upsample2x_{i}"]["ConvTranspose_0"]["kernel"].shape for i in range(stages)]
    assert [shape[-1] for shape in ups] == [4 * 2 ** (stages - 1 - i) for i in range(stages)]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 4, 1)
    critic = models.StandardCritic(width=4, **NATIVE)
    kernels = _abstract(critic, images)["params"]
    shapes = [kernels[f"Conv_{i}"]["kernel"].shape for i in range(1 + 2 * stages)]
    # A 3x3 to the width, then per stage a 4x4 stride-2 doubling and a 3x3 keeping it.
    expected = [(3, 3, 1, 4)]
    for stage in range(stages):
        c = 4 * 2**stage
        expected += [(4, 4, c, 2 * c), (3, 3, 2 * c, 2 * c)]
    assert shapes == expected
    assert kernels["Dense_0"]["kernel"].shape == (16 * 4 * 2**stages, 1)
    features = jax.eval_shape(critic.trunk().apply, {"params": kernels}, images)
    assert features.shape == (2, 16 * 4 * 2**stages)


def test_outputs_are_in_tanh_range_and_each_example_is_scored_alone():
    generator = models.StandardGenerator(image_size=16, channels=1, width=4, **NATIVE)
    critic = models.StandardCritic(width=4, **NATIVE)
    z = jax.random.normal(_key(1), (4, 8)) * 10
    g_vars = generator.init(_key(2), z, train=False)
    c_vars = critic.init(_key(3), jnp.zeros((1, 16, 16, 1)), train=False)

    def run(g_vars, c_vars, z):
        images, _ = generator.apply(g_vars, z, mutable=["batch_stats"])
        alone = jax.vmap(lambda x: critic.apply(c_vars, x[None])[0])(images)
        return images, critic.apply(c_vars, images), alone

    images, scores, alone = _compile(run, g_vars, c_vars, z)(g_vars, c_vars, z)
    assert float(jnp.max(jnp.abs(images))) <= 1.0 and float(jnp.std(images)) > 0.0
    # No normalisation in the critic: the precondition of a per-example gradient penalty.
    np.testing.assert_allclose(scores, alone, rtol=1e-5, atol=1e-6)


def test_spectral_norm_reaches_every_critic_layer():
    x = jax.random.normal(_key(4), (2, 16, 16, 1))
    critic = models.StandardCritic(width=4, spectral_norm=True, **NATIVE)
    variables = critic.init(_key(5), x, train=False)
    sigmas = [
        name.split("/")[0]
        for entry in variables[layers.SPECTRAL_COLLECTION].values()
        for name in entry
        if name.endswith("kernel/sigma")
    ]
    # 1 + 2 * 2 convolutions and the score, each normalised once.
    assert sorted(sigmas) == [*(f"Conv_{i}" for i in range(5)), "Dense_0"]


def test_bad_settings_are_one_sentence():
    with pytest.raises(ValueError, match=r"image_size must be one of \(8, 16, 32, 64\), got 28"):
        models.StandardGenerator(image_size=28)
    with pytest.raises(ValueError, match=r"expects square images .* got shape \(1, 28, 28, 1\)"):
        _abstract(models.StandardCritic(width=4), jnp.zeros((1, 28, 28, 1)))
