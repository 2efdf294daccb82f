"""MSG-GAN: multi-scale gradients between the DCGAN generator and critic.

Karnewar & Wang (2020), "MSG-GAN: Multi-Scale Gradients for Generative Adversarial Networks".
The generator emits an image at every resolution of its upsampling path, from 4x4 (the paper's
first block) up to ``image_size``; the critic reads the largest and, at each lower resolution,
concatenates the matching image to its features, so its gradient reaches every generator stage
directly. Real batches take the same pytree form through ``image_pyramid``.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models import registry
from gans.models.dcgan import (
    _BASE_SIZE,
    IMAGE_SIZES,
    ConvCriticOptions,
    DCGANGenerator,
    DCGANTrunk,
    _num_stages,
)
from gans.models.layers import apply_layer, copy_as

COMBINES = ("cat", "lin_cat")


def num_scales_for(image_size: int) -> int:
    """Images per sample for a largest side `image_size`: sides 4, 8, ..., image_size."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"MSG-GAN image_size must be one of {IMAGE_SIZES}, got {image_size}.")
    return _num_stages(image_size) + 1


def image_pyramid(x: jax.Array, num_scales: int) -> tuple[jax.Array, ...]:
    """Real images [B, S, S, C] as `num_scales` images by 2x2 average pooling, smallest first.

    The result has the structure of ``MSGGenerator``'s output for ``image_size=S``.
    """
    side = x.shape[1] if x.ndim == 4 else 0
    if num_scales < 1 or side % 2 ** (num_scales - 1) or x.shape[2] != side:
        raise ValueError(
            f"image_pyramid needs square images [B, S, S, C] with S divisible by "
            f"2^(num_scales - 1), got shape {x.shape} and num_scales={num_scales}."
        )
    pyramid = [x]
    for _ in range(num_scales - 1):
        pyramid.append(nn.avg_pool(pyramid[-1], (2, 2), strides=(2, 2)))
    return tuple(reversed(pyramid))


class MSGGenerator(DCGANGenerator):
    """Maps z [B, z_dim] to images at sides 4, 8, ..., image_size in [-1, 1], smallest first.

    The DCGAN generator's stages and parameter names unchanged (with the same parameters, its
    largest image is exactly DCGANGenerator's output), plus a 1x1 convolution "toRGB" and tanh
    on each hidden stage (``to_rgb_{side}``).

    Attributes:
        image_size: Side of the largest output; one of 8, 16, 32, 64.
        channels: Channels of every output image.
        width: Channels of the last hidden stage; earlier stages double it.
        batch_norm: Whether to normalise every hidden layer (DCGAN guideline).
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How the stride-2 transposed convolutions are computed.
        spectral_norm: Spectral normalisation of every layer, the toRGB convolutions included.
    """

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> tuple[jax.Array, ...]:
        """Returns ``num_scales_for(image_size)`` images [B, s, s, channels], s = 4, 8, ..., S."""
        hidden = self._hidden(z, train)
        largest = jnp.tanh(self._upsample(self.channels)(hidden[-1], train=train))

        def to_rgb(h: jax.Array) -> jax.Array:
            layer = nn.Conv(self.channels, (1, 1), name=f"to_rgb_{h.shape[1]}")
            return jnp.tanh(apply_layer(layer, h, spectral_norm=self.spectral_norm, train=train))

        return (*[to_rgb(h) for h in hidden], largest)


class MSGTrunk(DCGANTrunk):
    """The MSG-GAN critic without its score layer: images at sides 4, ..., S to features [B, F].

    The DCGAN trunk run on the largest image; after each stride-2 stage the image of the
    stage's output side is concatenated to the features ('cat', the paper's simple combine) or
    first mapped to as many channels as the features by a 1x1 "fromRGB" convolution
    ('lin_cat', ``from_rgb_{side}``). The 4x4 image joins the last stage's 4x4 map, which is
    flattened into the features. The paper's minibatch standard deviation layer is left out (it
    couples examples), as is normalisation by default, so the critic suits gradient penalties.

    Attributes:
        width: Channels of the first convolution; each later one doubles them.
        normalization: After every convolution but the first: 'none', 'layer' or 'batch'.
        leaky_slope: Negative slope of the LeakyReLUs.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        spectral_norm: Spectral normalisation of every layer, the fromRGB combiners included.
        downsampling: 'strided' or 'avgpool', as in ``DCGANTrunk``.
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``).
        combine: 'cat' or 'lin_cat'.
    """

    combine: str = "cat"

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ValueError(
                f"{type(self).__name__} combine must be one of {COMBINES}, got {self.combine!r}."
            )
        super().__post_init__()

    def _multi_scale_features(self, images: tuple[jax.Array, ...], train: bool) -> jax.Array:
        """Features [B, F] of a multi-scale batch; called inside a compact method."""
        images = tuple(images)
        sides = tuple(image.shape[1] for image in images)
        expected = tuple(_BASE_SIZE * 2**i for i in range(len(images)))
        if not images or sides != expected or sides[-1] not in IMAGE_SIZES:
            raise ValueError(
                f"{type(self).__name__} expects images at sides 4, 8, ..., S (S in "
                f"{IMAGE_SIZES}), smallest first, got sides {sides}."
            )

        def add_image(stage: int, x: jax.Array) -> jax.Array:
            image = images[-stage - 2]  # Stage `stage` halves the side stage + 1 times.
            if self.combine == "lin_cat":
                layer = nn.Conv(x.shape[-1], (1, 1), name=f"from_rgb_{image.shape[1]}")
                image = apply_layer(layer, image, spectral_norm=self.spectral_norm, train=train)
            return jnp.concatenate([x, image], axis=-1)

        return self._features(images[-1], train, after_stage=add_image)

    @nn.compact
    def __call__(self, images: tuple[jax.Array, ...], train: bool = True) -> jax.Array:
        """Returns features [B, F] for images as ``MSGGenerator`` or ``image_pyramid`` give them."""
        return self._multi_scale_features(images, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "MSGTrunk":
        """A new trunk with these hyper-parameters, for heads built around it.

        Called inside a parent's compact method, the trunk becomes that parent's submodule.
        """
        return copy_as(self, MSGTrunk, name)


class MSGCritic(MSGTrunk):
    """Maps a multi-scale batch (images at sides 4, ..., S, smallest first) to scores [B].

    The multi-scale trunk followed by one linear unit, all in one flat scope.

    Attributes:
        width: Channels of the first convolution; each later one doubles them.
        normalization: After every convolution but the first: 'none', 'layer' or 'batch'.
        leaky_slope: Negative slope of the LeakyReLUs.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        spectral_norm: Spectral normalisation of every layer, the fromRGB combiners included.
        downsampling: 'strided' or 'avgpool', as in ``DCGANTrunk``.
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``).
        combine: 'cat' or 'lin_cat'.
    """

    @nn.compact
    def __call__(self, images: tuple[jax.Array, ...], train: bool = True) -> jax.Array:
        """Returns scores [B] for images as ``MSGGenerator`` or ``image_pyramid`` give them."""
        features = self._multi_scale_features(images, train)
        score = apply_layer(nn.Dense(1), features, spectral_norm=self.spectral_norm, train=train)
        return jnp.squeeze(score, axis=-1)


def build_msg(spec: registry.Spec, options: ConvCriticOptions) -> registry.Models:
    """MSG-GAN on the DCGAN at ``spec``'s image size and widths."""
    generator = MSGGenerator(**spec.image_generator("msg"))
    critic = MSGCritic(
        width=spec.critic_width,
        normalization=options.normalization(spec),
        spectral_norm=spec.spectral_norm,
        downsampling=options.downsampling,
        axis_name=spec.axis_name,
    )
    return generator, critic


def real_pyramid(spec: registry.Spec):
    """Real images as the critic reads them: the pyramid of ``spec``'s image size."""
    size, _ = spec.image("msg")
    return functools.partial(image_pyramid, num_scales=num_scales_for(size))


registry.register("msg", build_msg, ConvCriticOptions, real_transform=real_pyramid)
