"""The sub-pixel and space-to-depth convolutions equal Flax's, in value and in gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import penalties
from gans.models import DCGANCritic, DCGANGenerator, layers

FAST = ("sub_pixel", "sub_pixel_matmul")
TOLERANCE = {"rtol": 2e-5, "atol": 2e-5}


def _normal(seed, shape):
    # NumPy draws: jax.random would compile one sampler per shape, seconds each on CPU.
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _init(init, x):
    """The variables ``init(key, x)`` would give, traced only, every leaf drawn from N(0, 0.1^2).

    Biases are then non-zero, so they are checked too.
    """
    shapes = jax.eval_shape(init, jax.random.key(0), x)
    leaves, treedef = jax.tree.flatten(shapes)
    return treedef.unflatten([0.1 * _normal(i, leaf.shape) for i, leaf in enumerate(leaves)])


def _assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), actual, expected)


def _value_and_grads(module, variables, x, cotangent):
    """``<module(x), cotangent>`` and its gradients w.r.t. the parameters and the input."""

    def loss(params, x):
        return jnp.sum(module.apply({"params": params}, x) * cotangent)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables["params"], x)


# --- Stride-2 transposed convolution --------------------------------------------------------


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize(
    "shape, features",
    [((2, 4, 4, 16), 8), ((3, 5, 7, 3), 5), ((1, 8, 8, 6), 3), ((2, 1, 1, 4), 2)],
)
def test_sub_pixel_conv_transpose_equals_conv_transpose(implementation, shape, features):
    x = _normal(0, shape)
    reference = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")
    fast = layers.SubPixelConvTranspose(
        features, (4, 4), strides=(2, 2), padding="SAME", implementation=implementation
    )
    variables = _init(reference.init, x)
    cotangent = _normal(3, (shape[0], 2 * shape[1], 2 * shape[2], features))

    expected = _value_and_grads(reference, variables, x, cotangent)
    actual = _value_and_grads(fast, variables, x, cotangent)
    np.testing.assert_allclose(fast.apply(variables, x), reference.apply(variables, x), **TOLERANCE)
    _assert_trees_close(actual, expected)


def test_sub_pixel_conv_transpose_has_conv_transpose_parameters():
    x = jnp.zeros((1, 4, 4, 6))
    reference = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME")
    fast = layers.SubPixelConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME")
    # Same initialisers drawing from the same key: the same values, not only the same shapes.
    _assert_trees_close(fast.init(jax.random.key(0), x), reference.init(jax.random.key(0), x))
    assert isinstance(fast, nn.ConvTranspose)  # Diagnostics count it as a layer.


@pytest.mark.parametrize(
    "kernel_size, strides, padding",
    [((3, 3), (2, 2), "SAME"), ((4, 4), (2, 2), "VALID"), ((4, 4), (1, 1), "SAME")],
)
def test_other_transposed_convolutions_fall_back_to_flax(kernel_size, strides, padding):
    x = _normal(0, (2, 5, 5, 3))
    reference = nn.ConvTranspose(4, kernel_size, strides=strides, padding=padding)
    fast = layers.SubPixelConvTranspose(
        4, kernel_size, strides=strides, padding=padding, implementation="sub_pixel_matmul"
    )
    variables = _init(reference.init, x)
    np.testing.assert_array_equal(fast.apply(variables, x), reference.apply(variables, x))


# --- Strided convolution ----------------------------------------------------------------------


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize(
    "shape, kernel_size, strides, padding",
    [
        ((2, 8, 8, 3), (4, 4), (2, 2), ((1, 1), (1, 1))),  # The DCGAN critic's.
        ((2, 9, 6, 4), (4, 4), (2, 2), ((1, 1), (1, 1))),  # Odd side: the last row is unread.
        ((2, 8, 8, 3), (3, 3), (1, 1), "SAME"),  # The avgpool critic's.
        ((1, 7, 7, 2), (2, 2), (2, 2), "VALID"),
    ],
)
def test_conv_equals_flax_conv(implementation, shape, kernel_size, strides, padding):
    x = _normal(0, shape)
    reference = nn.Conv(6, kernel_size, strides=strides, padding=padding)
    fast = layers.conv(
        6, kernel_size, strides=strides, padding=padding, implementation=implementation
    )
    variables = _init(reference.init, x)
    y = reference.apply(variables, x)
    cotangent = _normal(3, y.shape)
    np.testing.assert_allclose(fast.apply(variables, x), y, **TOLERANCE)
    _assert_trees_close(
        _value_and_grads(fast, variables, x, cotangent),
        _value_and_grads(reference, variables, x, cotangent),
    )


# --- The DCGAN models -------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", FAST)
def test_dcgan_generator_output_does_not_depend_on_implementation(implementation):
    z = _normal(0, (3, 16))
    native = DCGANGenerator(image_size=16, width=8, conv_implementation="native")
    fast = DCGANGenerator(image_size=16, width=8, conv_implementation=implementation)
    init = lambda m: jax.eval_shape(functools.partial(m.init, train=False), jax.random.key(0), z)
    # The same parameter tree (names and shapes), so checkpoints load either way.
    assert init(fast) == init(native)
    variables = _init(functools.partial(native.init, train=False), z)
    # Training mode: BatchNorm normalises with the batch's statistics, whatever the running ones.
    apply = lambda m: jax.jit(functools.partial(m.apply, train=True, mutable=["batch_stats"]))
    np.testing.assert_allclose(
        apply(fast)(variables, z)[0], apply(native)(variables, z)[0], **TOLERANCE
    )


@pytest.mark.parametrize("implementation", FAST)
def test_dcgan_critic_penalty_gradient_does_not_depend_on_implementation(implementation):
    """The gradient penalty's double backpropagation, the critic update's costliest part."""
    real, fake = _normal(0, (3, 16, 16, 3)), _normal(1, (3, 16, 16, 3))
    native = DCGANCritic(width=8, conv_implementation="native")
    fast = DCGANCritic(width=8, conv_implementation=implementation)
    params = _init(functools.partial(native.init, train=False), real)["params"]

    def penalty(module, params):
        critic_fn = lambda x: module.apply({"params": params}, x)
        return penalties.gradient_penalty(critic_fn, real, fake, jax.random.key(3))[0]

    _assert_trees_close(
        jax.jit(jax.value_and_grad(functools.partial(penalty, fast)))(params),
        jax.jit(jax.value_and_grad(functools.partial(penalty, native)))(params),
    )


def test_auto_is_sub_pixel_matmul_on_cpu_and_unknown_names_fail():
    expected = "sub_pixel_matmul" if jax.default_backend() == "cpu" else "native"
    assert layers.resolve_implementation("auto") == expected
    with pytest.raises(ValueError, match="sub_pixel_matmul"):
        layers.resolve_implementation("winograd")
    for model in (DCGANCritic, DCGANGenerator):
        with pytest.raises(ValueError, match="conv_implementation must be one of"):
            model(conv_implementation="winograd")


@pytest.mark.parametrize("implementation", ("native", *FAST))
def test_each_layer_call_is_intercepted_once(implementation):
    """Per-layer diagnostics probe every ``__call__`` of a layer: one call, one probe."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            calls.append(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    x = jnp.zeros((1, 4, 4, 3))
    module = layers.SubPixelConvTranspose(
        2, (4, 4), strides=(2, 2), padding="SAME", implementation=implementation
    )
    variables = _init(module.init, x)
    with nn.intercept_methods(interceptor):
        module.apply(variables, x)
    assert calls == ["SubPixelConvTranspose"]
