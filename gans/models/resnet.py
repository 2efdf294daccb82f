"""The residual generator and critic of WGAN-GP's and SNGAN's CIFAR-10 results.

Gulrajani et al. (2017), "Improved Training of Wasserstein GANs", released
``gan_cifar_resnet.py``, and Miyato et al. (2018), "Spectral Normalization for Generative
Adversarial Networks", released ``pfnet-research/sngan_projection``
(``gen_models/resnet_32.py`` and ``resblocks.py``, ``dis_models/snresnet_32.py`` and
``resblocks.py``): the same blocks in both, every block ``width`` channels wide.

Generator: ``z -> Dense -> [base, base, width]``, up-blocks, BatchNorm, ReLU, 3x3 conv, tanh.
An up-block (``resnet_blocks.UpBlock``) computes
``conv3(relu(BN2(conv3(up(relu(BN1(x))))))) + conv1(up(x))`` with ``up`` nearest-neighbour x2.

Critic (``resnet_blocks.CriticBlock``): an optimised first block ``pool(conv3(relu(conv3(x)))) +
conv1(pool(x))``; pre-activation down-blocks ``pool(conv3(relu(conv3(relu(x))))) +
pool(conv1(x))``; two blocks without resampling, ``conv3(relu(conv3(relu(x)))) + x``; then ReLU,
global pooling (WGAN-GP: mean; SNGAN: sum) and one linear unit. ``pool`` is 2x2 average
pooling. No BatchNorm: a gradient penalty must stay per example.

Sizes: the base side is 4 (6 for 48) and the generator has ``log2(S / base)`` up-blocks; the
critic has the optimised block, ``log2(S / base) - 2`` down-blocks and two plain blocks, so it
ends at twice the base (8x8; 12x12 for 48) and at 32x32 it is exactly the papers' critic.

Differences from the released codes:

* Initialisation is Flax's (LeCun normal kernels, zero biases). WGAN-GP's tflib draws scaled
  uniform kernels (He-style in the residual paths), SNGAN's Chainer code Glorot uniform ones
  (gain sqrt(2) in the residual paths, 1 on shortcuts and linear layers). Spectral
  normalisation rescales every critic kernel anyway, and the other models of this project use
  Flax's defaults too; no reason to differ was found.
* BatchNorm uses PyTorch's constants (momentum 0.9 in Flax's terms, epsilon 1e-5) as
  ``dcgan.py`` does; Chainer's BatchNormalization has decay 0.9 and epsilon 2e-5.
* 16, 48 and 64 extend the 32x32 models by the sizing rule above. SNGAN's own STL-10 (48x48)
  and 64x64 models are other networks, with channel multipliers and deeper critics.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models import registry
from gans.models.attention import SelfAttention
from gans.models.layers import IMPLEMENTATIONS, apply_layer, copy_as
from gans.models.resnet_blocks import (
    CriticBlock,
    UpBlock,
    batch_norm,
    block_conv,
)

IMAGE_SIZES = (16, 32, 48, 64)
CRITIC_NORMALIZATIONS = ("none", "layer")
POOLINGS = ("mean", "sum")


# --------------------------------------------------------------------------- #
# Sizes.
# --------------------------------------------------------------------------- #
def _check_image_size(owner: str, image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"{owner} supports image sizes {IMAGE_SIZES}, got {image_size}.")


def _check_implementation(owner: str, implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"{owner} conv_implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
        )


def base_side(image_size: int) -> int:
    """Side of the generator's first map: 4, or 6 for 48 (STL-10's 48 = 6 * 2^3)."""
    return 6 if image_size == 48 else 4


def num_up_blocks(image_size: int) -> int:
    """Up-blocks of the generator from the base side to ``image_size`` (16: 2 ... 64: 4)."""
    return int(math.log2(image_size // base_side(image_size)))


def generator_sides(image_size: int) -> tuple[int, ...]:
    """Output side of each up-block, in order (where generator attention may go)."""
    base = base_side(image_size)
    return tuple(base * 2 ** (k + 1) for k in range(num_up_blocks(image_size)))


def critic_blocks(image_size: int) -> tuple[str, ...]:
    """The critic's block kinds in order: 32 gives ("optimized", "down", "plain", "plain")."""
    return ("optimized", *("down",) * (num_up_blocks(image_size) - 2), "plain", "plain")


def critic_sides(image_size: int) -> tuple[int, ...]:
    """Output side of each critic block, in order (where critic attention may go)."""
    sides, side = [], image_size
    for kind in critic_blocks(image_size):
        side = side if kind == "plain" else side // 2
        sides.append(side)
    return tuple(sides)


def _check_attention(owner: str, resolution: int | None, sides: tuple[int, ...]) -> None:
    if resolution is not None and resolution not in sides:
        raise ValueError(
            f"{owner} has no block with a {resolution}x{resolution} output for self-attention; "
            f"attention_resolution must be one of {tuple(sorted(set(sides)))} or None."
        )


# --------------------------------------------------------------------------- #
# Generator.
# --------------------------------------------------------------------------- #
class ResNetGenerator(nn.Module):
    """Maps ``z [B, z_dim]`` (and ``labels [B]``) to images ``[B, S, S, channels]`` in [-1, 1].

    ``Dense(z)`` reshaped to ``[B, base, base, width]``, ``log2(S / base)`` ``UpBlock``s (an
    optional ``SelfAttention`` after one of them), BatchNorm, ReLU, a 3x3 convolution to
    ``channels``, tanh. At ``image_size=32, channels=3, width=128`` and ``z_dim=128`` it is
    WGAN-GP's CIFAR-10 generator (1,204,483 parameters, as ``torch_resnet.py`` in the shared
    references); at ``width=256``, SNGAN's (4,276,739, as its Chainer code).

    Parameters: ``dense``, ``up_0`` ... ``up_{n-1}``, ``attention``, ``norm``, ``out``.

    Attributes:
        image_size: Side of the output, one of ``IMAGE_SIZES``.
        channels: Channels of the output image.
        width: Channels of the base map and of every block.
        num_classes: If set, the blocks' BatchNorms are ``ConditionalBatchNorm``s of these K
            classes and ``labels`` are required; the output BatchNorm stays unconditional, as
            in both released codes.
        spectral_norm: Spectral normalisation of the Dense and every convolution (the SAGAN and
            BigGAN generators); SNGAN's generator has none.
        attention_resolution: If set, a ``SelfAttention`` after the up-block whose output has
            this side (one of ``generator_sides(image_size)``; SAGAN: 32 of 128).
        axis_name: Device axis over which batch statistics are averaged (under pmap).
        conv_implementation: How convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    image_size: int = 32
    channels: int = 3
    width: int = 128
    num_classes: int | None = None
    spectral_norm: bool = False
    attention_resolution: int | None = None
    axis_name: str | None = None
    conv_implementation: str = "auto"

    def __post_init__(self):
        owner = type(self).__name__
        _check_image_size(owner, self.image_size)
        _check_attention(owner, self.attention_resolution, generator_sides(self.image_size))
        _check_implementation(owner, self.conv_implementation)
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(
                f"{owner} num_classes must be positive or None, got {self.num_classes}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, train: bool = True
    ) -> jax.Array:
        """Returns images ``[B, image_size, image_size, channels]``; labels are class ids [B]."""
        if self.num_classes is not None and labels is None:
            raise ValueError(
                f"ResNetGenerator with num_classes={self.num_classes} is class-conditional and "
                "needs labels [B]."
            )
        if self.num_classes is None and labels is not None:
            raise ValueError(
                "ResNetGenerator without num_classes is unconditional and takes no labels; set "
                "num_classes to condition its BatchNorms on them."
            )
        base = base_side(self.image_size)
        dense = nn.Dense(base * base * self.width, name="dense")
        x = apply_layer(dense, z, spectral_norm=self.spectral_norm, train=train)
        x = x.reshape(z.shape[0], base, base, self.width)
        for index, side in enumerate(generator_sides(self.image_size)):
            block = UpBlock(
                self.width,
                self.num_classes,
                self.spectral_norm,
                self.axis_name,
                self.conv_implementation,
                name=f"up_{index}",
            )
            x = block(x, labels, train)
            if side == self.attention_resolution:
                attention = SelfAttention(
                    self.spectral_norm, self.conv_implementation, name="attention"
                )
                x = attention(x, train)
        # Unconditional even in a class-conditional generator, as in both released codes
        # (SNGAN's b5, WGAN-GP's Generator.OutputN).
        x = nn.relu(batch_norm(train, self.axis_name, name="norm")(x))
        return jnp.tanh(block_conv(self, x, self.channels, 3, "out", train))


# --------------------------------------------------------------------------- #
# Critic.
# --------------------------------------------------------------------------- #
class ResNetTrunk(nn.Module):
    """The ResNet critic without its linear unit: images ``[B, S, S, C]`` to ``[B, width]``.

    The blocks of ``critic_blocks(S)``, then ReLU and global mean or sum pooling over positions:
    ``phi(x)`` of the projection critic (``ConditionalCritic(mode="projection")``), as in
    Miyato & Koyama's ``SNResNetProjectionDiscriminator``.

    Parameters: one ``CriticBlock`` per block, named by its index and kind (at 32:
    ``optimized_0``, ``down_1``, ``plain_2``, ``plain_3``), and ``attention``.

    Attributes:
        width: Channels of every block.
        normalization: "none" (both papers) or "layer" (LayerNorm in the residual paths,
            WGAN-GP's option for critics; see ``CriticBlock``). Never BatchNorm: it would tie
            the examples of a batch together and make a gradient penalty batch-wide.
        spectral_norm: Spectral normalisation of every convolution and the score (SNGAN).
        pooling: "mean" (WGAN-GP) or "sum" (SNGAN) over the final map's positions.
        attention_resolution: If set, a ``SelfAttention`` after the first block whose output has
            this side (one of ``critic_sides(S)``; at the final side, after the first block to
            reach it, so later blocks can use what it gathers).
        axis_name: Unused (the critic has no batch statistics); taken so every critic takes it.
        conv_implementation: How convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    width: int = 128
    normalization: str = "none"
    spectral_norm: bool = False
    pooling: str = "mean"
    attention_resolution: int | None = None
    axis_name: str | None = None
    conv_implementation: str = "auto"

    def __post_init__(self):
        owner = type(self).__name__
        if self.normalization not in CRITIC_NORMALIZATIONS:
            raise ValueError(
                f"{owner} normalization must be one of {CRITIC_NORMALIZATIONS} (no BatchNorm: "
                f"it would make a gradient penalty batch-wide), got {self.normalization!r}."
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"{owner} pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        _check_implementation(owner, self.conv_implementation)
        super().__post_init__()

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """Blocks, ReLU and global pooling; called inside a compact method."""
        owner = type(self).__name__
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"{owner} expects square images [B, S, S, C], got shape {x.shape}.")
        _check_image_size(owner, x.shape[1])
        sides = critic_sides(x.shape[1])
        _check_attention(owner, self.attention_resolution, sides)
        attention_index = None
        if self.attention_resolution is not None:
            attention_index = sides.index(self.attention_resolution)
        for index, kind in enumerate(critic_blocks(x.shape[1])):
            block = CriticBlock(
                self.width,
                kind,
                self.normalization,
                self.spectral_norm,
                self.conv_implementation,
                name=f"{kind}_{index}",
            )
            x = block(x, train)
            if index == attention_index:
                x = SelfAttention(self.spectral_norm, self.conv_implementation, name="attention")(
                    x, train
                )
        pool = jnp.mean if self.pooling == "mean" else jnp.sum
        return pool(nn.relu(x), axis=(1, 2))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns features ``[B, width]``."""
        return self._features(x, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "ResNetTrunk":
        """A new trunk with these hyper-parameters, for heads built around it.

        Called inside a parent's compact method, the trunk becomes that parent's submodule.
        """
        return copy_as(self, ResNetTrunk, name)


class ResNetCritic(ResNetTrunk):
    """Maps images ``[B, S, S, C]`` (S in ``IMAGE_SIZES``) to one score per example, ``[B]``.

    The trunk's pooled features, then one linear unit ``score``. At ``width=128`` on 32x32x3
    images it is WGAN-GP's CIFAR-10 critic (1,053,825 parameters, as ``torch_resnet.py``);
    with ``spectral_norm=True, pooling="sum", score_bias=False`` SNGAN's (1,053,824: its
    ``l5`` is ``SNLinear(ch, 1, nobias=True)``).

    Attributes:
        width: Channels of every block.
        normalization: "none" or "layer" (see ``ResNetTrunk``).
        spectral_norm: Spectral normalisation of every convolution and the score (SNGAN).
        pooling: "mean" (WGAN-GP) or "sum" (SNGAN).
        attention_resolution: A ``SelfAttention`` after the first block of this output side.
        axis_name: Unused (no batch statistics).
        conv_implementation: How convolutions are computed (``layers.IMPLEMENTATIONS``).
        score_bias: Whether the linear unit has a bias (WGAN-GP: yes; SNGAN: no).
    """

    score_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores ``[B]``."""
        features = self._features(x, train)
        score = nn.Dense(1, use_bias=self.score_bias, name="score")
        return jnp.squeeze(
            apply_layer(score, features, spectral_norm=self.spectral_norm, train=train), axis=-1
        )


# --------------------------------------------------------------------------- #
# Presets.
# --------------------------------------------------------------------------- #
def wgan_gp_cifar_resnet(
    image_size: int = 32,
    channels: int = 3,
    *,
    axis_name: str | None = None,
    conv_implementation: str = "auto",
) -> tuple[ResNetGenerator, ResNetCritic]:
    """``(generator, critic)`` of Gulrajani et al. (2017)'s CIFAR-10 ResNet (gan_cifar_resnet.py).

    Width 128 in both players, BatchNorm in the generator, no normalisation in the critic,
    global mean pooling, a score with bias. The paper trains it with ``z ~ N(0, I_128)``, the
    Wasserstein loss with a two-sided gradient penalty (lambda 10), n_critic = 5, Adam(2e-4,
    beta1 0, beta2 0.9) decayed linearly to 0 over 100,000 generator updates, batch 64 for
    the critic and 128 for the generator.
    """
    generator = ResNetGenerator(
        image_size,
        channels,
        width=128,
        axis_name=axis_name,
        conv_implementation=conv_implementation,
    )
    critic = ResNetCritic(
        width=128, pooling="mean", axis_name=axis_name, conv_implementation=conv_implementation
    )
    return generator, critic


def sngan_cifar_resnet(
    image_size: int = 32,
    channels: int = 3,
    *,
    axis_name: str | None = None,
    conv_implementation: str = "auto",
) -> tuple[ResNetGenerator, ResNetCritic]:
    """``(generator, critic)`` of Miyato et al. (2018)'s CIFAR-10 ResNet (sngan_projection).

    ``configs/sn_cifar10_unconditional.yml``: generator width 256 (no spectral norm), critic
    width 128 with spectral normalisation of every layer, global sum pooling and a score
    without bias. Trained there with ``z ~ N(0, I_128)``, the hinge loss, n_critic = 5,
    Adam(2e-4, beta1 0, beta2 0.9) decayed linearly to 0 over 50,000 generator updates, batch
    64 for the critic and 128 for the generator.
    """
    generator = ResNetGenerator(
        image_size,
        channels,
        width=256,
        axis_name=axis_name,
        conv_implementation=conv_implementation,
    )
    critic = ResNetCritic(
        width=128,
        spectral_norm=True,
        pooling="sum",
        score_bias=False,
        axis_name=axis_name,
        conv_implementation=conv_implementation,
    )
    return generator, critic


@dataclasses.dataclass(frozen=True)
class ResNetOptions:
    """``--model=resnet``: the WGAN-GP and SNGAN CIFAR ResNets' choices, and self-attention.

    Attributes:
      critic_norm: the critic's normalisation, ``none`` (None: the same) or ``layer``; never
        BatchNorm, which would make the penalty batch-wide.
      critic_pooling: global ``mean`` pooling and a score with bias (WGAN-GP), or ``sum`` pooling
        and a score without (SNGAN's released code).
      attention_resolution: a self-attention block (SAGAN) after the blocks of this side in both
        players; 0: none.
    """

    critic_norm: str | None = None
    critic_pooling: str = "mean"
    attention_resolution: int = 0

    def __post_init__(self):
        if self.critic_norm == "batch":
            raise ValueError(
                "the ResNet critic has no BatchNorm (it would make the penalty batch-wide); use "
                "--critic_norm=layer or none."
            )
        if self.critic_norm not in (None, *CRITIC_NORMALIZATIONS):
            raise ValueError(
                f"critic_norm must be one of {CRITIC_NORMALIZATIONS}, got {self.critic_norm!r}."
            )
        if self.critic_pooling not in POOLINGS:
            raise ValueError(
                f"critic_pooling must be one of {POOLINGS}, got {self.critic_pooling!r}."
            )
        if self.attention_resolution < 0:
            raise ValueError(
                f"attention_resolution must be >= 0 (0: none), got {self.attention_resolution}."
            )


def build_resnet(spec: registry.Spec, options: ResNetOptions) -> registry.Models:
    """The CIFAR ResNet at ``spec``'s image size and widths; its generator takes the labels
    itself (conditional BatchNorm) when ``spec.num_classes`` is set."""
    attention = options.attention_resolution or None
    generator = ResNetGenerator(
        **spec.image_generator("resnet"),
        num_classes=spec.num_classes,
        attention_resolution=attention,
    )
    critic = ResNetCritic(
        width=spec.critic_width,
        normalization=options.critic_norm or "none",
        spectral_norm=spec.spectral_norm,
        pooling=options.critic_pooling,
        score_bias=options.critic_pooling == "mean",
        attention_resolution=attention,
        axis_name=spec.axis_name,
    )
    return generator, critic


registry.register("resnet", build_resnet, ResNetOptions, conditions_itself=True)
