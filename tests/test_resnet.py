"""ResNet generator and critic (WGAN-GP, SNGAN), conditional BatchNorm and self-attention.

Kept fast on a shared 2-core CPU: full-width models are only traced (``jax.eval_shape``),
variables for the tiny ones that run are drawn with numpy in the shapes ``init`` gives (Flax's
truncated-normal initialisers take seconds to compile on XLA:CPU), and what runs is compiled at
XLA's lowest optimisation level.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import models
from gans.models import attention, layers, resnet

NATIVE = {"conv_implementation": "native"}  # Same parameters and outputs; compiles faster.


def _key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # Compiles far faster than threefry on XLA:CPU.


def _compile(fn, *args):
    """``jax.jit(fn)`` for these ``args``, compiled without XLA:CPU's slow optimisation passes."""
    lowered = jax.jit(fn).lower(*args)
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


def _abstract(model, *inputs, **kwargs):
    """The variables ``model.init`` would make, as shapes only."""
    init = functools.partial(model.init, train=False, **kwargs)
    return jax.eval_shape(init, _key(), *inputs)


def _count(variables) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _variables(model, *inputs, seed: int = 0, **kwargs):
    """Variables shaped as ``init`` makes them, drawn with numpy as Flax's defaults would be.

    Kernels ``N(0, 1 / fan_in)``, gains and variances 1, biases, means and SAGAN's ``gamma`` 0,
    power-iteration vectors ``N(0, 1)``.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, parent = path[-1].key, path[-2].key if len(path) > 1 else ""
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / np.sqrt(math.prod(leaf.shape[:-1]))
        elif name.endswith("/u"):
            value = rng.normal(size=leaf.shape)
        elif name in ("scale", "var") or name.endswith("/sigma") or parent == "gain":
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, _abstract(model, *inputs, **kwargs))


def _normal(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# --------------------------------------------------------------------------- #
# Parameter counts: the references'.
# --------------------------------------------------------------------------- #
def test_wgan_gp_resnet_has_the_pytorch_references_parameter_counts():
    generator, critic = models.wgan_gp_cifar_resnet()
    assert (generator.width, critic.width, critic.pooling) == (128, 128, "mean")
    assert _count(_abstract(generator, jnp.zeros((1, 128)))) == 1_204_483
    assert _count(_abstract(critic, jnp.zeros((1, 32, 32, 3)))) == 1_053_825


def test_sngan_resnet_has_the_released_codes_parameter_counts():
    # pfnet-research/sngan_projection, configs/sn_cifar10_unconditional.yml. Chainer's
    # BatchNormalization holds gamma and beta (its running statistics and SN's u are
    # persistents, not parameters); Convolution2D and Linear have biases unless nobias.
    #
    # gen_models/resnet_32.py, ResNetGenerator(ch=256, dim_z=128, bottom_width=4):
    #   l1 Linear(128, 4 * 4 * 256):             128 * 4,096 + 4,096            =   528,384
    #   block2..4, resblocks.Block(256, 256, upsample=True), each:
    #     b1, b2 BatchNormalization(256):        2 * (256 + 256)                =     1,024
    #     c1, c2 Convolution2D(256, 256, 3):     2 * (256 * 256 * 9 + 256)      = 1,180,160
    #     c_sc 1x1 (learnable_sc: upsample):     256 * 256 + 256                =    65,792
    #                                                                    block  = 1,246,976
    #   three blocks                                                            = 3,740,928
    #   b5 BatchNormalization(256)                                              =       512
    #   c5 Convolution2D(256, 3, 3):             256 * 3 * 9 + 3                =     6,915
    #                                                                    total  = 4,276,739
    g_total = 528_384 + 3 * (1_024 + 1_180_160 + 65_792) + 512 + 6_915
    assert g_total == 4_276_739
    # dis_models/snresnet_32.py, SNResNetProjectionDiscriminator(ch=128, n_classes=0):
    #   block1 OptimizedBlock(3, 128): c1 3 * 128 * 9 + 128 = 3,584; c2 128 * 128 * 9 + 128
    #     = 147,584; c_sc 1x1 3 * 128 + 128 = 512                               =   151,680
    #   block2 Block(128, 128, downsample=True): c1, c2 2 * 147,584; c_sc 1x1 128 * 128 + 128
    #     = 16,512 (learnable_sc: downsample)                                   =   311,680
    #   block3, block4 Block(downsample=False): c1, c2 only (identity shortcut)
    #     2 * 2 * 147,584                                                       =   590,336
    #   l5 SNLinear(128, 1, nobias=True)                                        =       128
    #                                                                    total  = 1,053,824
    c_total = (3_584 + 147_584 + 512) + (2 * 147_584 + 16_512) + 2 * 2 * 147_584 + 128
    assert c_total == 1_053_824
    generator, critic = models.sngan_cifar_resnet()
    assert (generator.width, generator.spectral_norm) == (256, False)
    assert (critic.width, critic.spectral_norm, critic.pooling) == (128, True, "sum")
    assert _count(_abstract(generator, jnp.zeros((1, 128)))) == g_total
    assert _count(_abstract(critic, jnp.zeros((1, 32, 32, 3)))) == c_total


# --------------------------------------------------------------------------- #
# Shapes and structure.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("size", resnet.IMAGE_SIZES)
def test_shapes_and_dtypes_at_every_size(size):
    z = jnp.zeros((2, 16))
    for channels in (1, 3):
        generator = models.ResNetGenerator(image_size=size, channels=channels, width=8, **NATIVE)
        init = functools.partial(generator.init_with_output, train=False)
        images, _ = jax.eval_shape(init, _key(), z)
        assert images.shape == (2, size, size, channels) and images.dtype == jnp.float32
        critic = models.ResNetCritic(width=8, **NATIVE)
        scores, _ = jax.eval_shape(critic.init_with_output, _key(), images)
        assert scores.shape == (2,) and scores.dtype == jnp.float32


def test_the_critic_is_optimised_block_down_blocks_then_two_plain_blocks():
    critic = models.ResNetCritic(width=4, **NATIVE)
    params = _abstract(critic, jnp.zeros((1, 32, 32, 3)))["params"]
    assert set(params) == {"optimized_0", "down_1", "plain_2", "plain_3", "score"}
    kernels = {
        block: {layer: leaves["kernel"].shape for layer, leaves in params[block].items()}
        for block in params
        if block != "score"
    }
    assert params["score"]["kernel"].shape == (4, 1)
    assert kernels == {
        "optimized_0": {"conv1": (3, 3, 3, 4), "conv2": (3, 3, 4, 4), "shortcut": (1, 1, 3, 4)},
        "down_1": {"conv1": (3, 3, 4, 4), "conv2": (3, 3, 4, 4), "shortcut": (1, 1, 4, 4)},
        "plain_2": {"conv1": (3, 3, 4, 4), "conv2": (3, 3, 4, 4)},  # Identity shortcuts.
        "plain_3": {"conv1": (3, 3, 4, 4), "conv2": (3, 3, 4, 4)},
    }
    # LayerNorm (per example over H, W, C; a scale and offset per channel) before each ReLU of
    # the down and plain blocks' residual paths; none in the optimised block, as in WGAN-GP.
    normed = models.ResNetCritic(width=4, normalization="layer", **NATIVE)
    params = _abstract(normed, jnp.zeros((1, 32, 32, 3)))["params"]
    norms = {
        block: sorted(k for k in params[block] if k.startswith("LayerNorm"))
        for block in params
        if block != "score"
    }
    assert norms == {
        "optimized_0": [],
        **{b: ["LayerNorm_0", "LayerNorm_1"] for b in ("down_1", "plain_2", "plain_3")},
    }
    assert params["down_1"]["LayerNorm_0"]["scale"].shape == (4,)
    trunk = critic.trunk()
    # Each block's output side, read off the trunk's traced intermediates.
    for size, sides in [
        (16, (8, 8, 8)),
        (32, (16, 8, 8, 8)),
        (48, (24, 12, 12, 12)),
        (64, (32, 16, 8, 8, 8)),
    ]:
        x = jnp.zeros((1, size, size, 3))
        variables = _abstract(trunk, x)
        apply = functools.partial(trunk.apply, capture_intermediates=True, mutable=True)
        features, state = jax.eval_shape(apply, variables, x)
        assert features.shape == (1, 4)
        kinds = resnet.critic_blocks(size)
        names = [f"{kind}_{i}" for i, kind in enumerate(kinds)]  # Named by position and kind.
        outputs = state["intermediates"]
        assert set(outputs) == {*names, "__call__"}
        assert tuple(outputs[name]["__call__"][0].shape[1] for name in names) == sides
        assert sides == resnet.critic_sides(size)
    assert resnet.generator_sides(32) == (8, 16, 32) and resnet.generator_sides(48) == (12, 24, 48)
    assert [resnet.num_up_blocks(s) for s in resnet.IMAGE_SIZES] == [2, 3, 3, 4]


def test_generator_output_is_in_tanh_range_and_the_critic_scores_each_example_alone():
    generator = models.ResNetGenerator(image_size=16, channels=1, width=4, **NATIVE)
    z = _normal(0, (4, 8)) * 10
    g_vars = _variables(generator, z)
    critic = models.ResNetCritic(width=4, **NATIVE)
    c_vars = _variables(critic, jnp.zeros((1, 16, 16, 1)), seed=1)

    def run(g_vars, c_vars, z):
        images, _ = generator.apply(g_vars, z, mutable=["batch_stats"])
        alone = jax.vmap(lambda x: critic.apply(c_vars, x[None])[0])(images)
        return images, critic.apply(c_vars, images), alone

    images, scores, alone = _compile(run, g_vars, c_vars, z)(g_vars, c_vars, z)
    assert images.shape == (4, 16, 16, 1) and bool(jnp.all(jnp.isfinite(images)))
    assert float(jnp.max(jnp.abs(images))) <= 1.0 and float(jnp.std(images)) > 0.0
    # No cross-example term (no BatchNorm): the batch's scores are each example's alone, the
    # precondition of penalties that differentiate the sum of scores.
    np.testing.assert_allclose(scores, alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Self-attention.
# --------------------------------------------------------------------------- #
def test_self_attention_starts_as_the_identity_and_its_weights_sum_to_one():
    block = models.SelfAttention(**NATIVE)
    x = _normal(0, (2, 4, 4, 16))

    def run(key, x):
        variables = block.init(key, x)  # The real initialisers.
        moved = {"params": {**variables["params"], "gamma": jnp.float32(0.5)}}
        return variables["params"]["gamma"], block.apply(variables, x), block.apply(moved, x)

    gamma, at_init, moved = _compile(run, _key(1), x)(_key(1), x)
    assert float(gamma) == 0.0
    np.testing.assert_array_equal(at_init, x)
    assert not np.allclose(moved, x, atol=1e-3)
    weights = attention.attention_weights(_normal(1, (2, 16, 2)), _normal(2, (2, 16, 2)))
    assert weights.shape == (2, 16, 16)
    np.testing.assert_allclose(jnp.sum(weights, axis=-1), 1.0, rtol=1e-6)
    assert bool(jnp.all(weights > 0))


def test_a_network_with_attention_at_init_computes_what_it_computes_without():
    x = _normal(0, (2, 16, 16, 1))
    plain = models.ResNetCritic(width=8, **NATIVE)
    attended = models.ResNetCritic(width=8, attention_resolution=8, **NATIVE)
    variables = _variables(attended, x)
    # After the first block with an 8x8 output, the optimised one.
    assert set(variables["params"]) == {"optimized_0", "attention", "plain_1", "plain_2", "score"}
    variables["params"]["score"]["bias"] = jnp.ones((1,))
    shared = {"params": {k: v for k, v in variables["params"].items() if k != "attention"}}
    moved = {
        "params": {
            **variables["params"],
            "attention": {**variables["params"]["attention"], "gamma": jnp.float32(1.0)},
        }
    }

    def run(variables, shared, moved):
        return attended.apply(variables, x), plain.apply(shared, x), attended.apply(moved, x)

    with_block, without, with_gamma = _compile(run, variables, shared, moved)(
        variables, shared, moved
    )
    np.testing.assert_array_equal(with_block, without)
    assert not np.allclose(with_gamma, without, atol=1e-4)


# --------------------------------------------------------------------------- #
# Conditional BatchNorm and the conditional models.
# --------------------------------------------------------------------------- #
def test_conditional_batchnorm_scales_each_example_by_its_class():
    norm = models.ConditionalBatchNorm(num_classes=3)
    x = _normal(0, (6, 2, 2, 4)) * 3 + 1
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    gains = np.arange(1.0, 13.0, dtype=np.float32).reshape(3, 4)
    biases = -np.arange(12.0, dtype=np.float32).reshape(3, 4) / 3

    def run(key, x, labels):
        variables = norm.init(key, x, labels)  # The real initialisers: ones and zeros.
        at_init, _ = norm.apply(variables, x, labels, mutable=["batch_stats"])
        params = {"gain": {"embedding": gains}, "bias": {"embedding": biases}}
        moved = {**variables, "params": params}
        return at_init, *norm.apply(moved, x, labels, mutable=["batch_stats"])

    at_init, out, updates = _compile(run, _key(1), x, labels)(_key(1), x, labels)
    flat = np.asarray(x).reshape(-1, 4)
    normalized = (np.asarray(x) - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    # At init: plain BatchNorm without scale or offset.
    np.testing.assert_allclose(at_init, normalized, rtol=1e-4, atol=1e-5)
    # Normalised with the whole batch's statistics, then its own class's gain and bias.
    expected = normalized * gains[labels][:, None, None] + biases[labels][:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # Running statistics move toward the whole batch's (momentum 0.9, as PyTorch's 0.1).
    stats = updates["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * flat.mean(0), rtol=1e-4, atol=1e-6)


def test_conditional_generator_and_projection_critic():
    generator = models.ResNetGenerator(image_size=16, channels=1, width=4, num_classes=10, **NATIVE)
    z, labels = _normal(0, (3, 8)), jnp.array([0, 4, 9])
    params = _abstract(generator, z, labels)["params"]
    # The blocks' normalisations are conditional; the output one is not, as in both papers' code.
    for block in ("up_0", "up_1"):
        for name in ("norm1", "norm2"):
            tables = params[block][name]
            assert {k: v["embedding"].shape for k, v in tables.items()} == {
                "gain": (10, 4),
                "bias": (10, 4),
            }
    assert set(params["norm"]) == {"scale", "bias"}
    images, _ = jax.eval_shape(
        functools.partial(generator.init_with_output, train=False), _key(), z, labels
    )
    assert images.shape == (3, 16, 16, 1)
    critic = models.ConditionalCritic(
        models.ResNetCritic(width=4, **NATIVE), num_classes=10, mode="projection"
    )
    x = _normal(1, (3, 16, 16, 1))
    c_vars = _variables(critic, x, labels)
    assert set(c_vars["params"]) == {"trunk", "embed", "score"}
    assert c_vars["params"]["embed"]["embedding"].shape == (10, 4)
    scores = _compile(critic.apply, c_vars, x, labels)(c_vars, x, labels)
    assert scores.shape == (3,) and scores.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(scores)))


# --------------------------------------------------------------------------- #
# Spectral normalisation.
# --------------------------------------------------------------------------- #
def _kernels_and_sigmas(variables):
    """``{(path..., layer): (kernel, stored sigma)}`` for every spectrally normalised layer."""
    stats = jax.tree_util.tree_flatten_with_path(variables[layers.SPECTRAL_COLLECTION])[0]
    pairs = {}
    for path, sigma in stats:
        name = path[-1].key
        if name.endswith("/sigma"):
            where = tuple(p.key for p in path[:-2]) + (name.split("/")[0],)
            kernel = functools.reduce(lambda tree, key: tree[key], where, variables["params"])
            pairs[where] = (kernel["kernel"], sigma)
    return pairs


def test_spectral_norm_reaches_every_layer_and_stores_the_top_singular_value():
    x = _normal(0, (2, 16, 16, 1))
    critic = models.ResNetCritic(width=8, spectral_norm=True, attention_resolution=8, **NATIVE)
    variables = _variables(critic, x)
    kernels = [
        p
        for p, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
        if p[-1].key == "kernel"
    ]
    # 3 + 2 + 2 block convolutions, 4 in attention, the score: one entry each.
    assert len(kernels) == len(_kernels_and_sigmas(variables)) == 12
    step = lambda v, x: critic.apply(v, x, train=True, mutable=[layers.SPECTRAL_COLLECTION])[1]
    step = _compile(step, variables, x)
    for _ in range(50):  # One power iteration per training call converges on sigma_max.
        variables = {**variables, **step(variables, x)}
    for where, (kernel, sigma) in _kernels_and_sigmas(variables).items():
        matrix = np.asarray(kernel).reshape(-1, kernel.shape[-1])
        np.testing.assert_allclose(sigma, np.linalg.norm(matrix, 2), rtol=1e-2, err_msg=str(where))
    generator = models.ResNetGenerator(
        image_size=16, channels=1, width=8, spectral_norm=True, attention_resolution=16
    )
    g_vars = _abstract(generator, jnp.zeros((1, 8)))
    g_kernels = [
        p
        for p, _ in jax.tree_util.tree_flatten_with_path(g_vars["params"])[0]
        if p[-1].key == "kernel"
    ]
    # Dense, 3 per up-block, 4 in attention, the output convolution.
    assert len(g_kernels) == len(_kernels_and_sigmas(g_vars)) == 1 + 2 * 3 + 4 + 1


# --------------------------------------------------------------------------- #
# Validation.
# --------------------------------------------------------------------------- #
def test_bad_settings_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match=r"supports image sizes \(16, 32, 48, 64\), got 8"):
        models.ResNetGenerator(image_size=8)
    with pytest.raises(ValueError, match=r"supports image sizes \(16, 32, 48, 64\), got 8"):
        _abstract(models.ResNetCritic(width=4), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"no block with a 5x5 output.*one of \(8, 16\)"):
        models.ResNetGenerator(image_size=16, attention_resolution=5)
    with pytest.raises(ValueError, match=r"no block with a 32x32 output.*one of \(8, 16\)"):
        _abstract(models.ResNetCritic(width=8, attention_resolution=32), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="pooling must be one of"):
        models.ResNetCritic(pooling="max")
    with pytest.raises(ValueError, match="normalization must be one of.*no BatchNorm"):
        models.ResNetCritic(normalization="batch")
    with pytest.raises(ValueError, match="conv_implementation must be one of"):
        models.ResNetGenerator(conv_implementation="fast")
    conditional = models.ResNetGenerator(image_size=16, width=4, num_classes=10)
    with pytest.raises(ValueError, match="num_classes=10 is class-conditional and needs labels"):
        _abstract(conditional, jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match="unconditional and takes no labels"):
        _abstract(models.ResNetGenerator(image_size=16, width=4), jnp.zeros((1, 8)), jnp.zeros(1))
