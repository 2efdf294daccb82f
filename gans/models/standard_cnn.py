"""SNGAN's "standard CNN" (Miyato et al., 2018, appendix Table 3), as its authors released it.

The networks Miyato et al. compare every normalisation on, where a ResNet is not the point:
a DCGAN-like generator that ends in a stride-1 convolution, and a critic that alternates a 3x3
stride-1 convolution with a 4x4 stride-2 one. Written from pfnet-research/chainer-gan-lib
(``common/net.py``: ``DCGANGenerator`` and ``SNDCGANDiscriminator``, the code the paper's CIFAR-10
and STL-10 CNN results came from); ``sngan_standard_cnn()`` gives them at the released size, where
the parameter counts equal that code's (tested).

For ``image_size = 4 * 2^n`` and ``width = w`` (64 released, for 32x32):

- generator: ``z`` -> Dense to 4x4x(w 2^n), BatchNorm, ReLU; n times a 4x4 stride-2 transposed
  convolution halving the channels, BatchNorm, ReLU (down to ``w`` at full size); a 3x3
  stride-1 convolution to the image's channels; tanh.
- critic: a 3x3 convolution to ``w``; then per stage a 4x4 stride-2 convolution doubling the
  channels and a 3x3 one keeping them (released channels 64, 128, 128, 256, 256, 512, 512); a
  LeakyReLU after each; the flattened 4x4 map to one linear score. No normalisation but spectral
  normalisation, which the SNGAN experiments turn on (``spectral_norm``).

Departures kept from the released code: the LeakyReLU slope is the paper's 0.1 (Table 3; the
Chainer code calls ``F.leaky_relu`` with its default 0.2), and the last generator layer is a 3x3
convolution where Chainer has a stride-1 3x3 transposed convolution: the same map up to a flip
of the kernel, with the same parameters.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gans.models import registry
from gans.models.dcgan import _BASE_SIZE, IMAGE_SIZES, Upsample2x, _batch_norm, _num_stages
from gans.models.layers import apply_layer, conv, copy_as

# Table 3 of the paper; see the module docstring for the released code's 0.2.
LEAKY_SLOPE = 0.1


def _check_size(module: nn.Module, image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(
            f"{type(module).__name__} image_size must be one of {IMAGE_SIZES}, got {image_size}."
        )


class StandardGenerator(nn.Module):
    """Maps latent codes ``z`` [B, z_dim] to images [B, S, S, channels] in [-1, 1].

    Attributes:
        image_size: Side S of the square output; one of 8, 16, 32, 64.
        channels: Channels of the output image.
        width: Channels of the last hidden stage, at full size; earlier stages double them.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How the transposed convolutions are computed
            (``layers.IMPLEMENTATIONS``); parameters and outputs do not depend on it.
        spectral_norm: Spectral normalisation of every layer (SAGAN's generator).
    """

    image_size: int = 32
    channels: int = 3
    width: int = 64
    axis_name: str | None = None
    conv_implementation: str = "auto"
    spectral_norm: bool = False

    def __post_init__(self):
        _check_size(self, self.image_size)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """Returns images [B, image_size, image_size, channels]."""
        num_stages = _num_stages(self.image_size)
        channels = self.width * 2**num_stages

        def normalize_and_activate(x):
            return nn.relu(_batch_norm(train, self.axis_name)(x))

        dense = nn.Dense(_BASE_SIZE * _BASE_SIZE * channels)
        x = apply_layer(dense, z, spectral_norm=self.spectral_norm, train=train)
        # BatchNorm on the flat features, per pixel and channel, as the released bn0 is.
        x = normalize_and_activate(x)
        x = jnp.reshape(x, (z.shape[0], _BASE_SIZE, _BASE_SIZE, channels))
        for _ in range(num_stages):
            channels //= 2
            up = Upsample2x(
                channels,
                implementation=self.conv_implementation,
                spectral_norm=self.spectral_norm,
            )
            x = normalize_and_activate(up(x, train=train))
        output = conv(self.channels, (3, 3), implementation=self.conv_implementation)
        return jnp.tanh(apply_layer(output, x, spectral_norm=self.spectral_norm, train=train))


class StandardTrunk(nn.Module):
    """The standard critic without its score: images [B, S, S, C] to features [B, F].

    ``F = 4 * 4 * width * 2^n`` for ``n = log2(S / 4)`` stride-2 stages. Conditional
    (projection) and InfoGAN critics put their own heads on it.

    Attributes:
        width: Channels of the first convolution; each stride-2 stage doubles them.
        leaky_slope: Negative slope of the LeakyReLUs.
        spectral_norm: Spectral normalisation of every layer (Miyato et al., 2018).
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    width: int = 64
    leaky_slope: float = LEAKY_SLOPE
    spectral_norm: bool = False
    conv_implementation: str = "auto"

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] not in IMAGE_SIZES:
            raise ValueError(
                f"{type(self).__name__} expects square images [B, S, S, C] with S in "
                f"{IMAGE_SIZES}, got shape {x.shape}."
            )

        def layer(x, features, kernel, strides=(1, 1), padding="SAME"):
            module = conv(
                features,
                kernel,
                strides=strides,
                padding=padding,
                implementation=self.conv_implementation,
            )
            x = apply_layer(module, x, spectral_norm=self.spectral_norm, train=train)
            return nn.leaky_relu(x, self.leaky_slope)

        features = self.width
        x = layer(x, features, (3, 3))
        for _ in range(_num_stages(x.shape[1])):
            features *= 2
            x = layer(x, features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
            x = layer(x, features, (3, 3))
        return jnp.reshape(x, (x.shape[0], -1))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns features [B, F]."""
        return self._features(x, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "StandardTrunk":
        """A new trunk with these hyper-parameters, for heads built around it."""
        return copy_as(self, StandardTrunk, name)


class StandardCritic(StandardTrunk):
    """Maps images [B, S, S, C] (S in 8, 16, 32, 64) to one real score per example, [B].

    The trunk's features followed by one linear unit, in one flat scope (``Conv_i``,
    ``Dense_0``). Each example's score depends on that example alone (no normalisation).

    Attributes:
        width, leaky_slope, spectral_norm, conv_implementation: As ``StandardTrunk``'s.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]."""
        features = self._features(x, train)
        score = apply_layer(nn.Dense(1), features, spectral_norm=self.spectral_norm, train=train)
        return jnp.squeeze(score, axis=-1)


def sngan_standard_cnn(
    image_size: int = 32,
    channels: int = 3,
    *,
    axis_name: str | None = None,
    conv_implementation: str = "auto",
) -> tuple[StandardGenerator, StandardCritic]:
    """``(generator, critic)`` of SNGAN's standard CNN at the released width, 64 for both.

    chainer-gan-lib's ``DCGANGenerator(ch=512)`` and ``SNDCGANDiscriminator(ch=512)``: the
    critic spectrally normalised, the generator not. Trained there with the hinge loss or the
    non-saturating one, Adam (Table 1 of the paper: 1e-4 to 2e-4, beta1 0.5 or 0, n_critic 1 or
    5) and batch 64.
    """
    generator = StandardGenerator(
        image_size,
        channels,
        width=64,
        axis_name=axis_name,
        conv_implementation=conv_implementation,
    )
    critic = StandardCritic(width=64, spectral_norm=True, conv_implementation=conv_implementation)
    return generator, critic


def build_standard_cnn(spec: registry.Spec, options: registry.NoOptions) -> registry.Models:
    """SNGAN's standard CNN at ``spec``'s image size and widths; no options of its own (spectral
    normalisation is ``Spec.spectral_norm``, and the critic has no other normalisation)."""
    generator = StandardGenerator(**spec.image_generator("standard_cnn"))
    critic = StandardCritic(width=spec.critic_width, spectral_norm=spec.spectral_norm)
    return generator, critic


registry.register("standard_cnn", build_standard_cnn)
