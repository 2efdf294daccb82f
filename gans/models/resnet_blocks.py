"""The residual blocks of the WGAN-GP and SNGAN ResNets (``gans.models.resnet``).

An up-block computes ``conv3(relu(BN2(conv3(up(relu(BN1(x))))))) + conv1(up(x))``; the critic's
blocks are the optimised first block, pre-activation down-blocks and plain blocks. ``up`` is
nearest-neighbour x2 and ``pool`` 2x2 average pooling, as in both released codes.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models.layers import apply_layer, conv

# The critic's block kinds, in the order they come (``resnet.critic_blocks``).
BLOCK_KINDS = ("optimized", "down", "plain")


def upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 of ``[B, H, W, C]``, as tflib's UpsampleConv and Chainer's unpooling."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample(x: jax.Array) -> jax.Array:
    """2x2 average pooling (never max pooling: every input pixel gets a quarter of the gradient)."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def batch_norm(
    train: bool, axis_name: str | None, affine: bool = True, name: str | None = None
) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here), so runs compare."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        use_scale=affine,
        use_bias=affine,
        name=name,
    )


def block_conv(module: nn.Module, x: jax.Array, features: int, size: int, name: str, train: bool):
    """A ``size x size`` 'SAME' convolution of ``module``'s kind, spectrally normalised if it is.

    Called inside ``module``'s compact method, so the layer is its child ``name``.
    """
    layer = conv(features, (size, size), implementation=module.conv_implementation, name=name)
    return apply_layer(layer, x, spectral_norm=module.spectral_norm, train=train)


def _residual_path(
    module: nn.Module,
    x: jax.Array,
    features: int,
    before_conv1: Callable[[jax.Array], jax.Array],
    before_conv2: Callable[[jax.Array], jax.Array],
    train: bool,
) -> jax.Array:
    """``conv2(before_conv2(conv1(before_conv1(x))))``, both 3x3: every block's residual path."""
    h = block_conv(module, before_conv1(x), features, 3, "conv1", train)
    return block_conv(module, before_conv2(h), features, 3, "conv2", train)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are those of each example's class.

    ``y_b = gamma[c_b] * (x_b - mu) / sqrt(var + eps) + beta[c_b]``, with ``mu`` and ``var``
    the statistics of the whole batch (every class together; running averages when not
    training) per channel, and ``gamma``, ``beta`` rows of ``nn.Embed(K, C)`` tables started at
    1 and 0, so at initialisation it is BatchNorm without scale or offset. De Vries et al.
    (2017), "Modulating early visual processing by language"; Miyato & Koyama (2018), "cGANs
    with Projection Discriminator" (``CategoricalConditionalBatchNormalization`` in their code).

    Attributes:
        num_classes: Number of classes K.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
    """

    num_classes: int
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
        """Normalises ``x [B, ..., C]`` and applies the gain and bias of ``labels [B]``."""
        if labels.shape != x.shape[:1]:
            raise ValueError(
                f"ConditionalBatchNorm needs one integer label per example, shape {x.shape[:1]}, "
                f"got {labels.shape}."
            )
        features = x.shape[-1]
        normalized = batch_norm(train, self.axis_name, affine=False)(x)
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        gain = nn.Embed(self.num_classes, features, embedding_init=ones, name="gain")
        bias = nn.Embed(self.num_classes, features, embedding_init=zeros, name="bias")
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (features,)
        return normalized * gain(labels).reshape(shape) + bias(labels).reshape(shape)


def _normalization(
    num_classes: int | None, axis_name: str | None, name: str
) -> Callable[[jax.Array, jax.Array | None, bool], jax.Array]:
    """The generator's BatchNorm ``name``: ``norm(x, labels, train)``, conditional with classes."""

    def norm(x, labels, train):
        if num_classes is None:
            return batch_norm(train, axis_name, name=name)(x)
        return ConditionalBatchNorm(num_classes, axis_name, name=name)(x, labels, train)

    return norm


class UpBlock(nn.Module):
    """``conv2(relu(BN2(conv1(up(relu(BN1(x))))))) + shortcut(up(x))``: side x2, ``features`` out.

    WGAN-GP's ``ResidualBlock(resample='up')`` and SNGAN's generator ``Block(upsample=True)``;
    the 1x1 shortcut is learnt because the block resamples. Parameters: ``norm1``, ``conv1``,
    ``norm2``, ``conv2``, ``shortcut``.

    Attributes:
        features: Output channels.
        num_classes: If set, both BatchNorms are ``ConditionalBatchNorm`` and labels are needed.
        spectral_norm: Spectral normalisation of the three convolutions.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    features: int
    num_classes: int | None = None
    spectral_norm: bool = False
    axis_name: str | None = None
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(
        self, x: jax.Array, labels: jax.Array | None = None, train: bool = True
    ) -> jax.Array:
        """Maps ``[B, H, W, C]`` to ``[B, 2 H, 2 W, features]``."""
        norm1 = _normalization(self.num_classes, self.axis_name, "norm1")
        norm2 = _normalization(self.num_classes, self.axis_name, "norm2")
        h = _residual_path(
            self,
            x,
            self.features,
            lambda t: upsample(nn.relu(norm1(t, labels, train))),
            lambda t: nn.relu(norm2(t, labels, train)),
            train,
        )
        return block_conv(self, upsample(x), self.features, 1, "shortcut", train) + h


class CriticBlock(nn.Module):
    """One residual block of the critic, ``kind`` one of ``BLOCK_KINDS``.

    * ``"optimized"`` (the input block; WGAN-GP's ``OptimizedResBlockDisc1``, SNGAN's
      ``OptimizedBlock``): ``pool(conv2(relu(conv1(x)))) + shortcut(pool(x))``. No ReLU on the
      input image, and pooling before the 1x1 shortcut is 4x cheaper and equal (both linear).
    * ``"down"`` (``ResidualBlock(resample='down')``, ``Block(downsample=True)``):
      ``pool(conv2(relu(conv1(relu(x))))) + pool(shortcut(x))``.
    * ``"plain"`` (``resample=None``, ``downsample=False``): ``conv2(relu(conv1(relu(x)))) +
      x``; a 1x1 ``shortcut`` only if the channels change, as in both codes.

    With ``normalization="layer"`` a LayerNorm over H, W, C (per-channel scale and offset,
    tflib's Layernorm) precedes each ReLU of the down and plain blocks' residual paths, where
    WGAN-GP's ``Normalize`` calls sit; its optimised block has none, so neither does ours.

    Attributes:
        features: Output channels.
        kind: "optimized", "down" or "plain".
        normalization: "none" or "layer".
        spectral_norm: Spectral normalisation of every convolution.
        conv_implementation: How convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    features: int
    kind: str = "plain"
    normalization: str = "none"
    spectral_norm: bool = False
    conv_implementation: str = "auto"

    def __post_init__(self):
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"CriticBlock kind must be one of {BLOCK_KINDS}, got {self.kind!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Maps ``[B, H, W, C]`` to ``[B, H / 2, W / 2, features]`` (plain: ``[B, H, W, .]``)."""

        def activate(h):
            if self.normalization == "layer":
                h = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)(h)
            return nn.relu(h)

        if self.kind == "optimized":
            h = _residual_path(self, x, self.features, lambda t: t, nn.relu, train)
            return downsample(h) + block_conv(
                self, downsample(x), self.features, 1, "shortcut", train
            )
        h = _residual_path(self, x, self.features, activate, activate, train)
        if self.kind == "down":
            shortcut = block_conv(self, x, self.features, 1, "shortcut", train)
            return downsample(h) + downsample(shortcut)
        if x.shape[-1] != self.features:
            return h + block_conv(self, x, self.features, 1, "shortcut", train)
        return h + x
