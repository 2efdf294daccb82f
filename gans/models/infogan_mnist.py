"""InfoGAN's own MNIST networks (Chen et al., 2016, appendix C.1, Table 1), as released.

Written from openai/InfoGAN (``infogan/models/regularized_gan.py``, ``network_type="mnist"``,
the code of the paper's MNIST results). For images of side ``S`` (28 for MNIST; any multiple
of 4) and ``width = w`` (64 released):

- generator: ``[z, codes]`` (74 inputs released: 62 noise, 10 categorical, 2 continuous) ->
  Dense ``16 w`` (1,024), BatchNorm, ReLU -> Dense to ``S/4 x S/4 x 2 w``, BatchNorm, ReLU ->
  4x4 stride-2 transposed convolution to ``w``, BatchNorm, ReLU -> 4x4 stride-2 transposed
  convolution to the image's channels; tanh.
- critic trunk (shared by the score and Q): 4x4 stride-2 convolution to ``w``, LeakyReLU;
  4x4 stride-2 convolution to ``2 w``, BatchNorm, LeakyReLU; Dense ``16 w``, BatchNorm,
  LeakyReLU. The score is one linear unit on it; Q (``q_head``, read by ``InfoGANCritic``) is
  Dense 128, BatchNorm, LeakyReLU, then its output layer.

Kernels are drawn from N(0, 0.02^2) and biases start at 0, as there. Departures kept: the
LeakyReLU slope is the paper's 0.1 (the released ``leaky_rectify`` defaults to 0.01); the
output is ``tanh`` on [-1, 1] where the released code reads its last layer as the means of
Bernoulli pixels through a sigmoid on [0, 1] (``tanh(a / 2) = 2 sigmoid(a) - 1``: the same
family of images, scaled as every data set here is).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gans.models import registry
from gans.models.dcgan import _batch_norm
from gans.models.infogan import QHead
from gans.models.layers import SubPixelConvTranspose, conv, copy_as

# Table 1 of the paper's appendix; see the module docstring for the released code's 0.01.
LEAKY_SLOPE = 0.1
_INIT = nn.initializers.normal(0.02)


def _check_size(module: nn.Module, image_size: int) -> None:
    if image_size < 4 or image_size % 4:
        raise ValueError(
            f"{type(module).__name__} needs an image side divisible by 4 (28 for MNIST), "
            f"got {image_size}."
        )


class InfoGANMNISTGenerator(nn.Module):
    """Maps ``[z, codes]`` [B, D] to images [B, S, S, channels] in [-1, 1].

    Attributes:
        image_size: Side S of the square output, a multiple of 4.
        channels: Channels of the output image.
        width: Channels after the first transposed convolution (64 released); the second
            Dense has ``2 width`` channels per position and the first ``16 width`` units.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How the transposed convolutions are computed
            (``layers.IMPLEMENTATIONS``); parameters and outputs do not depend on it.
    """

    image_size: int = 28
    channels: int = 1
    width: int = 64
    axis_name: str | None = None
    conv_implementation: str = "auto"

    def __post_init__(self):
        _check_size(self, self.image_size)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """Returns images [B, S, S, channels]."""
        side = self.image_size // 4

        def normalize_and_activate(x):
            return nn.relu(_batch_norm(train, self.axis_name)(x))

        x = normalize_and_activate(nn.Dense(16 * self.width, kernel_init=_INIT)(z))
        x = normalize_and_activate(nn.Dense(side * side * 2 * self.width, kernel_init=_INIT)(x))
        x = jnp.reshape(x, (z.shape[0], side, side, 2 * self.width))
        for features in (self.width, self.channels):
            x = SubPixelConvTranspose(
                features,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                kernel_init=_INIT,
                implementation=self.conv_implementation,
            )(x)
            if features != self.channels:
                x = normalize_and_activate(x)
        return jnp.tanh(x)


class InfoGANMNISTTrunk(nn.Module):
    """The critic's shared layers: images [B, S, S, C] to features [B, 16 width].

    Attributes:
        width: Channels of the first convolution (64 released).
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    width: int = 64
    axis_name: str | None = None
    conv_implementation: str = "auto"

    # Q's hidden layer as the released code has it, with BatchNorm (read by InfoGANCritic).
    q_head = QHead(hidden=(128,), leaky_slope=LEAKY_SLOPE, batch_norm=True, kernel_init=_INIT)

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(
                f"{type(self).__name__} expects square images [B, S, S, C], got shape {x.shape}."
            )
        _check_size(self, x.shape[1])
        for stage, features in enumerate((self.width, 2 * self.width)):
            x = conv(
                features,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                kernel_init=_INIT,
                implementation=self.conv_implementation,
            )(x)
            if stage:
                x = _batch_norm(train, self.axis_name)(x)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
        x = nn.Dense(16 * self.width, kernel_init=_INIT)(jnp.reshape(x, (x.shape[0], -1)))
        return nn.leaky_relu(_batch_norm(train, self.axis_name)(x), LEAKY_SLOPE)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns features [B, 16 width]."""
        return self._features(x, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "InfoGANMNISTTrunk":
        """A new trunk with these hyper-parameters, for heads built around it (InfoGAN's Q)."""
        return copy_as(self, InfoGANMNISTTrunk, name)


class InfoGANMNISTCritic(InfoGANMNISTTrunk):
    """Maps images [B, S, S, C] to one real score per example, [B]: the trunk and one linear
    unit, in one flat scope. BatchNorm makes a score depend on its batch, so the step scores
    real and fake batches in separate passes, as the released code does."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]."""
        features = self._features(x, train)  # First, so that its Dense is Dense_0 as in a trunk.
        return jnp.squeeze(nn.Dense(1, kernel_init=_INIT)(features), axis=-1)


def build_infogan_mnist(spec: registry.Spec, options: registry.NoOptions) -> registry.Models:
    """InfoGAN's MNIST pair at ``spec``'s image size and widths; no options of its own."""
    size, channels = spec.image("infogan_mnist")
    if spec.spectral_norm or spec.generator_spectral_norm:
        raise ValueError(
            "--model=infogan_mnist has no spectral normalisation (its critic uses BatchNorm, as "
            "released); drop --spectral_norm and --generator_spectral_norm."
        )
    if spec.penalty:
        raise ValueError(
            "--model=infogan_mnist's critic uses BatchNorm, which makes a gradient penalty "
            "batch-wide instead of per example; use --penalty=none, as InfoGAN does."
        )
    generator = InfoGANMNISTGenerator(size, channels, spec.width, axis_name=spec.axis_name)
    critic = InfoGANMNISTCritic(spec.critic_width, axis_name=spec.axis_name)
    return generator, critic


registry.register("infogan_mnist", build_infogan_mnist)

__all__ = [
    "LEAKY_SLOPE",
    "InfoGANMNISTCritic",
    "InfoGANMNISTGenerator",
    "InfoGANMNISTTrunk",
    "build_infogan_mnist",
]
