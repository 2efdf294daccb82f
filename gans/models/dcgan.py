"""DCGAN generator and critic (Radford et al., 2016), sized as in WGAN-GP's DCGAN variant.

Guidelines kept from the DCGAN paper: strided (transposed) convolutions instead of pooling,
BatchNorm in the generator, ReLU in the generator with a tanh output, LeakyReLU in the critic,
and no normalisation on the critic's input layer. With ``image_size=32, channels=3, width=64``
the parameter counts equal those of the PyTorch reference of Gulrajani et al. (2017).
"""

import dataclasses
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models import registry
from gans.models.layers import (
    IMPLEMENTATIONS,
    SubPixelConvTranspose,
    apply_layer,
    conv,
    copy_as,
    minibatch_std,
    minibatch_std_options,
    statistics_axis,
)

IMAGE_SIZES = (8, 16, 32, 64)
NORMALIZATIONS = ("none", "layer", "batch")
DOWNSAMPLINGS = ("strided", "avgpool")

# Every spatial stage halves or doubles the side, down to or up from this one.
_BASE_SIZE = 4


def _num_stages(image_size: int) -> int:
    """Number of stride-2 stages between `image_size` and the 4x4 base."""
    return int(math.log2(image_size // _BASE_SIZE))


def _check_implementation(module: nn.Module) -> None:
    if module.conv_implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"{type(module).__name__} conv_implementation must be one of {IMPLEMENTATIONS}, "
            f"got {module.conv_implementation!r}."
        )


def _batch_norm(train: bool, axis_name: str | None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here), so runs compare."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name
    )


class Upsample2x(nn.Module):
    """Doubles height and width: the generator's only up-sampling op, so it can be swapped here.

    Attributes:
        features: Output channels.
        implementation: How the transposed convolution is computed (``layers.IMPLEMENTATIONS``;
            all give the same outputs from the same parameters).
        spectral_norm: Spectral normalisation of the transposed convolution (SAGAN, BigGAN).
    """

    features: int
    implementation: str = "auto"
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Maps [B, H, W, C] to [B, 2H, 2W, features]; `train` only drives spectral norm."""
        # Kernel 4, stride 2 matches PyTorch's ConvTranspose2d(k=4, s=2, p=1), bias included.
        # Named as nn.ConvTranspose would be, so parameter trees and checkpoints are unchanged
        # (with spectral norm too: the wrapper adds only its own "spectral_stats" entry).
        layer = SubPixelConvTranspose(
            self.features,
            (4, 4),
            strides=(2, 2),
            padding="SAME",
            implementation=self.implementation,
            name="ConvTranspose_0",
        )
        return apply_layer(layer, x, spectral_norm=self.spectral_norm, train=train)


class DCGANGenerator(nn.Module):
    """Maps latent codes `z` [B, z_dim] to images [B, image_size, image_size, channels] in [-1, 1].

    Attributes:
        image_size: Side of the square output; one of 8, 16, 32, 64.
        channels: Channels of the output image.
        width: Channels of the last hidden stage; earlier stages double it.
        batch_norm: Whether to normalise every hidden layer (DCGAN guideline).
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How the stride-2 transposed convolutions are computed
            (``layers.IMPLEMENTATIONS``); ``"auto"`` is the fastest on the backend.
        spectral_norm: Spectral normalisation of every layer, the Dense and each transposed
            convolution (SAGAN, Zhang et al., 2019; BigGAN). Off, the parameters are as before.
    """

    image_size: int = 32
    channels: int = 3
    width: int = 64
    batch_norm: bool = True
    axis_name: str | None = None
    conv_implementation: str = "auto"
    spectral_norm: bool = False

    def __post_init__(self):
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(
                f"{type(self).__name__} image_size must be one of {IMAGE_SIZES}, "
                f"got {self.image_size}."
            )
        _check_implementation(self)
        super().__post_init__()

    def _hidden(self, z: jax.Array, train: bool) -> list[jax.Array]:
        """Hidden activations at sides 4, 8, ..., image_size / 2; called inside a compact method.

        Shared with the multi-scale generator, which reads an image off every one of them.
        """
        num_stages = _num_stages(self.image_size)
        base_channels = self.width * 2 ** (num_stages - 1)

        def normalize_and_activate(x):
            if self.batch_norm:
                x = _batch_norm(train, self.axis_name)(x)
            return nn.relu(x)

        # The PyTorch reference keeps biases before BatchNorm (its defaults); kept for equal counts.
        # BatchNorm acts on the flat features (BatchNorm1d there), i.e. per pixel and channel.
        dense = nn.Dense(_BASE_SIZE * _BASE_SIZE * base_channels)
        x = apply_layer(dense, z, spectral_norm=self.spectral_norm, train=train)
        x = normalize_and_activate(x)
        hidden = [jnp.reshape(x, (z.shape[0], _BASE_SIZE, _BASE_SIZE, base_channels))]
        for stage in range(num_stages - 1):
            x = self._upsample(base_channels // 2 ** (stage + 1))(hidden[-1], train=train)
            hidden.append(normalize_and_activate(x))
        return hidden

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """Returns images [B, image_size, image_size, channels]."""
        # The output layer is built first: it is Upsample2x_0, as checkpoints name it.
        output_layer = self._upsample(self.channels)
        return jnp.tanh(output_layer(self._hidden(z, train)[-1], train=train))

    @nn.nowrap
    def _upsample(self, features: int) -> Upsample2x:
        return Upsample2x(
            features, implementation=self.conv_implementation, spectral_norm=self.spectral_norm
        )


class DCGANTrunk(nn.Module):
    """The DCGAN critic without its score layer: images [B, S, S, C] to features [B, F].

    ``F = 4 * 4 * width * 2^(n - 1)`` for ``n = log2(S / 4)`` stride-2 stages (one channel
    more with ``minibatch_std``): the flattened 4x4 map that the critic's final Dense reads. Conditional (projection) and InfoGAN critics
    put their own heads on it.

    Attributes:
        width: Channels of the first convolution; each later one doubles them.
        normalization: After every convolution but the first: 'none', 'layer' (per example over
            H, W, C; WGAN-GP's choice since it adds no cross-example dependence) or 'batch'.
        leaky_slope: Negative slope of the LeakyReLUs.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        spectral_norm: Spectral normalisation of every layer (Miyato et al., 2018).
        downsampling: 'strided' (4x4 stride-2 convolutions, DCGAN) or 'avgpool' (3x3
            convolution then 2x2 average pooling); never max pooling.
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``;
            ``"auto"`` is the fastest on the backend). Parameters and outputs do not depend on it.
        minibatch_std: Append the minibatch standard deviation (``layers.minibatch_std``) to
            the last 4x4 map, as ProGAN does before its last block.
        minibatch_std_group: Examples per group of that statistic (None: the whole batch, over
            ``axis_name`` under pmap).
    """

    width: int = 64
    normalization: str = "none"
    leaky_slope: float = 0.2
    axis_name: str | None = None
    spectral_norm: bool = False
    downsampling: str = "strided"
    conv_implementation: str = "auto"
    minibatch_std: bool = False
    minibatch_std_group: int | None = None

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"{type(self).__name__} normalization must be one of {NORMALIZATIONS}, "
                f"got {self.normalization!r}."
            )
        if self.downsampling not in DOWNSAMPLINGS:
            raise ValueError(
                f"{type(self).__name__} downsampling must be one of {DOWNSAMPLINGS} (never max "
                f"pooling, whose sparse gradients the notes warn against), got "
                f"{self.downsampling!r}."
            )
        _check_implementation(self)
        super().__post_init__()

    def _normalize(self, x: jax.Array, train: bool) -> jax.Array:
        if self.normalization == "layer":
            # Per-channel scale and offset, as in WGAN-GP's tflib Layernorm.
            return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)(x)
        if self.normalization == "batch":
            return _batch_norm(train, self.axis_name)(x)
        return x

    def _features(
        self,
        x: jax.Array,
        train: bool,
        after_stage: Callable[[int, jax.Array], jax.Array] | None = None,
    ) -> jax.Array:
        """Conv stages down to 4x4, flattened; called inside a compact method.

        `after_stage(stage, x)`, if given, rewrites each stage's activations before the next
        stage reads them (the multi-scale critic concatenates its smaller images there).
        """
        if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] not in IMAGE_SIZES:
            raise ValueError(
                f"{type(self).__name__} expects square images [B, S, S, C] with S in "
                f"{IMAGE_SIZES}, got shape {x.shape}."
            )
        for stage in range(_num_stages(x.shape[1])):
            features = self.width * 2**stage
            if self.downsampling == "strided":
                layer = conv(
                    features,
                    (4, 4),
                    strides=(2, 2),
                    padding=((1, 1), (1, 1)),
                    implementation=self.conv_implementation,
                )
                x = apply_layer(layer, x, spectral_norm=self.spectral_norm, train=train)
            else:  # A stride-1 conv, then 2x2 average pooling: every input gets gradient 1/4.
                layer = conv(features, (3, 3), implementation=self.conv_implementation)
                x = apply_layer(layer, x, spectral_norm=self.spectral_norm, train=train)
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            if stage > 0:  # DCGAN: no normalisation on the input layer.
                x = self._normalize(x, train)
            x = nn.leaky_relu(x, self.leaky_slope)
            if after_stage is not None:
                x = after_stage(stage, x)
        if self.minibatch_std:
            x = minibatch_std(x, self.minibatch_std_group, statistics_axis(self))
        return jnp.reshape(x, (x.shape[0], -1))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns features [B, F]."""
        return self._features(x, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "DCGANTrunk":
        """A new trunk with these hyper-parameters, for heads built around it.

        Called inside a parent's compact method, the trunk becomes that parent's submodule.
        """
        return copy_as(self, DCGANTrunk, name)


class DCGANCritic(DCGANTrunk):
    """Maps images [B, S, S, C] (S in 8, 16, 32, 64) to one real score per example, [B].

    The trunk's features followed by one linear unit; parameters live in one flat scope
    (``Conv_i``, norms, ``Dense_0``), as before the trunk was factored out.

    Attributes:
        width: Channels of the first convolution; each later one doubles them.
        normalization: After every convolution but the first: 'none', 'layer' (per example over
            H, W, C; WGAN-GP's choice since it adds no cross-example dependence) or 'batch'.
        leaky_slope: Negative slope of the LeakyReLUs.
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        spectral_norm: Spectral normalisation of every layer (Miyato et al., 2018).
        downsampling: 'strided' (4x4 stride-2 convolutions, DCGAN) or 'avgpool' (3x3
            convolution then 2x2 average pooling); never max pooling.
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``;
            ``"auto"`` is the fastest on the backend). Parameters and outputs do not depend on it.
        minibatch_std, minibatch_std_group: The minibatch standard deviation on the last map.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]."""
        features = self._features(x, train)
        score = apply_layer(nn.Dense(1), features, spectral_norm=self.spectral_norm, train=train)
        return jnp.squeeze(score, axis=-1)


@dataclasses.dataclass(frozen=True)
class ConvCriticOptions:
    """The DCGAN critic's options, shared by MSG-GAN's.

    Attributes:
      critic_norm: the critic's normalisation, one of ``NORMALIZATIONS``; None: none under a
        gradient penalty (whose per-example norms BatchNorm would mix), batch otherwise.
      downsampling: one of ``DOWNSAMPLINGS``.
    """

    critic_norm: str | None = None
    downsampling: str = "strided"

    def __post_init__(self):
        if self.critic_norm not in (None, *NORMALIZATIONS):
            raise ValueError(
                f"critic_norm must be one of {NORMALIZATIONS}, got {self.critic_norm!r}."
            )
        if self.downsampling not in DOWNSAMPLINGS:
            raise ValueError(
                f"downsampling must be one of {DOWNSAMPLINGS}, got {self.downsampling!r}."
            )

    def normalization(self, spec: registry.Spec) -> str:
        """The critic's normalisation under ``spec``; raises ``ValueError`` for BatchNorm under a
        penalty."""
        norm = self.critic_norm or ("none" if spec.penalty else "batch")
        if spec.penalty and norm == "batch":
            raise ValueError(
                "--critic_norm=batch makes the gradient penalty batch-wide instead of per "
                "example; use --critic_norm=layer (the WGAN-GP paper's drop-in) or none."
            )
        return norm


@dataclasses.dataclass(frozen=True)
class DCGANOptions(ConvCriticOptions):
    """``--model=dcgan``: the critic's normalisation and down-sampling, and minibatch std.

    Attributes:
      minibatch_std: the critic's last features also read the minibatch standard deviation.
      minibatch_std_group: examples per group of that statistic; 0: the whole batch.
    """

    minibatch_std: bool = False
    minibatch_std_group: int = 0

    def __post_init__(self):
        super().__post_init__()
        minibatch_std_options(self.minibatch_std, self.minibatch_std_group)


def build_dcgan(spec: registry.Spec, options: DCGANOptions) -> registry.Models:
    """WGAN-GP's DCGAN at ``spec``'s image size and widths."""
    norm = options.normalization(spec)
    if options.minibatch_std and norm == "batch":
        raise ValueError(
            "--minibatch_std with --critic_norm=batch: both make a score depend on the batch; "
            "give --critic_norm=layer or none."
        )
    generator = DCGANGenerator(**spec.image_generator("dcgan"))
    critic = DCGANCritic(
        width=spec.critic_width,
        normalization=norm,
        spectral_norm=spec.spectral_norm,
        downsampling=options.downsampling,
        axis_name=spec.axis_name,
        **minibatch_std_options(options.minibatch_std, options.minibatch_std_group),
    )
    return generator, critic


registry.register("dcgan", build_dcgan, DCGANOptions)
