"""Fully connected generator and critic for the 2-D toy problems.

The defaults follow the WGAN-GP toy code (Gulrajani et al., 2017): three hidden layers of 512
ReLU units and a linear output. The unrolled-GAN protocol (Metz et al., 2017) is the same family
with ``hidden=(128, 128)``, ``activation=nn.tanh`` and an orthogonal ``kernel_init``. PacGAN's
toy networks (Lin et al., 2018, its released ``synthetic_data_experiments``) are a generator of
four 400-unit layers with BatchNorm (``batch_norm``) and a critic of three 200-unit maxout layers
of 5 pieces (``maxout_pieces``).
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models import registry
from gans.models.layers import (
    apply_layer,
    copy_as,
    minibatch_std,
    minibatch_std_options,
    statistics_axis,
)


def _hidden_layers(
    x: jax.Array,
    hidden: Sequence[int],
    activation: Callable[[jax.Array], jax.Array],
    kernel_init: nn.initializers.Initializer,
    spectral_norm: bool = False,
    train: bool = True,
    maxout_pieces: int = 1,
) -> jax.Array:
    """Dense + activation for each width in `hidden`; called inside a compact method.

    With ``maxout_pieces`` = k > 1 each layer is a maxout layer instead (Goodfellow et al.,
    2013): a Dense of ``k * width`` units whose unit ``i`` is the largest of its pieces
    ``[i k, (i + 1) k)``, with no other activation (Blocks' ``LinearMaxout``, PacGAN's critic).
    """
    for width in hidden:
        dense = nn.Dense(width * maxout_pieces, kernel_init=kernel_init)
        x = apply_layer(dense, x, spectral_norm=spectral_norm, train=train)
        if maxout_pieces > 1:
            x = jnp.max(x.reshape(x.shape[:-1] + (width, maxout_pieces)), axis=-1)
        else:
            x = activation(x)
    return x


def _check_pieces(pieces: int) -> None:
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ValueError(f"maxout_pieces must be an integer >= 1, got {pieces!r}.")


class MLPGenerator(nn.Module):
    """Maps latent codes `z` [B, z_dim] to samples [B, out_dim] with a linear output layer.

    Attributes:
        out_dim: Dimension of a sample (2 for the toy sets).
        hidden: Widths of the hidden layers.
        activation: Non-linearity after every hidden layer.
        kernel_init: Initializer of every Dense kernel (Flax's LeCun normal by default).
        spectral_norm: Spectral normalisation of every layer (SAGAN, BigGAN).
        batch_norm: A BatchNorm constructor, such as
            ``functools.partial(nn.BatchNorm, momentum=0.95, epsilon=1e-4)``; then every hidden
            layer is Dense without bias, BatchNorm, activation (PacGAN's toy generator). It is
            called with ``use_running_average=not train`` and ``axis_name``.
        axis_name: Device axis BatchNorm's statistics are taken over (under pmap).
    """

    out_dim: int = 2
    hidden: Sequence[int] = (512, 512, 512)
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    spectral_norm: bool = False
    batch_norm: Callable[..., nn.Module] | None = None
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """Returns samples [B, out_dim]; `train` drives BatchNorm and spectral normalisation."""
        if self.batch_norm is None:
            x = _hidden_layers(
                z, self.hidden, self.activation, self.kernel_init, self.spectral_norm, train
            )
        else:
            x = z
            for width in self.hidden:
                dense = nn.Dense(width, use_bias=False, kernel_init=self.kernel_init)
                x = apply_layer(dense, x, spectral_norm=self.spectral_norm, train=train)
                norm = self.batch_norm(use_running_average=not train, axis_name=self.axis_name)
                x = self.activation(norm(x))
        dense = nn.Dense(self.out_dim, kernel_init=self.kernel_init)
        return apply_layer(dense, x, spectral_norm=self.spectral_norm, train=train)


class MLPTrunk(nn.Module):
    """The MLP critic without its score layer: inputs [B, ...] to features [B, hidden[-1]].

    Inputs are flattened per example; with ``hidden=()`` the features are the flat inputs.

    Attributes:
        hidden: Widths of the hidden layers.
        activation: Non-linearity after every hidden layer.
        kernel_init: Initializer of every Dense kernel (Flax's LeCun normal by default).
        spectral_norm: Spectral normalisation of every layer (Miyato et al., 2018).
        minibatch_std: Append the minibatch standard deviation (``layers.minibatch_std``) to
            the input of the last hidden layer, so that layer sees the batch's diversity.
        minibatch_std_group: Examples per group of that statistic (None: the whole batch).
        axis_name: Device axis the whole-batch statistic is taken over (under pmap).
        maxout_pieces: With k > 1, every hidden layer is a maxout layer of k linear pieces
            per unit and ``activation`` is not used (PacGAN's toy critic: 5 pieces).
    """

    hidden: Sequence[int] = (512, 512, 512)
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    spectral_norm: bool = False
    minibatch_std: bool = False
    minibatch_std_group: int | None = None
    axis_name: str | None = None
    maxout_pieces: int = 1

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """Flatten, then the hidden layers; called inside a compact method."""
        _check_pieces(self.maxout_pieces)
        x = jnp.reshape(x, (x.shape[0], -1))
        layers = lambda x, widths: _hidden_layers(
            x,
            widths,
            self.activation,
            self.kernel_init,
            self.spectral_norm,
            train,
            self.maxout_pieces,
        )
        if not self.minibatch_std:
            return layers(x, self.hidden)
        x = layers(x, tuple(self.hidden)[:-1])
        x = minibatch_std(x, self.minibatch_std_group, statistics_axis(self))
        return layers(x, tuple(self.hidden)[-1:])

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns features [B, F]; `train` only drives spectral normalisation's estimate."""
        return self._features(x, train)

    @nn.nowrap
    def trunk(self, name: str | None = None) -> "MLPTrunk":
        """A new trunk with these hyper-parameters, for heads built around it.

        Called inside a parent's compact method, the trunk becomes that parent's submodule.
        """
        return copy_as(self, MLPTrunk, name)


class MLPCritic(MLPTrunk):
    """Maps inputs [B, ...] (flattened per example) to one real score per example, [B].

    The trunk's features followed by one linear unit, all in one flat scope (``Dense_i``).

    Attributes:
        hidden: Widths of the hidden layers.
        activation: Non-linearity after every hidden layer.
        kernel_init: Initializer of every Dense kernel (Flax's LeCun normal by default).
        spectral_norm: Spectral normalisation of every layer (Miyato et al., 2018).
        minibatch_std, minibatch_std_group, axis_name: The minibatch standard deviation at the
            last hidden layer's input (see ``MLPTrunk``).
        maxout_pieces: Maxout hidden layers of that many pieces (see ``MLPTrunk``).
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]; `train` only drives spectral normalisation's estimate."""
        x = self._features(x, train)
        dense = nn.Dense(1, kernel_init=self.kernel_init)
        return jnp.squeeze(apply_layer(dense, x, spectral_norm=self.spectral_norm, train=train), -1)


@dataclasses.dataclass(frozen=True)
class MLPOptions:
    """``--model=mlp``: ``depth`` hidden layers in each player, a minibatch-std critic optional.

    Attributes:
      depth: hidden layers of ``Spec.width`` units in the generator and of ``Spec.critic_width``
        in the critic.
      minibatch_std: the critic's last hidden layer also reads the minibatch standard deviation.
      minibatch_std_group: examples per group of that statistic; 0: the whole batch.
    """

    depth: int = 3
    minibatch_std: bool = False
    minibatch_std_group: int = 0

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}.")
        minibatch_std_options(self.minibatch_std, self.minibatch_std_group)


def build_mlp(spec: registry.Spec, options: MLPOptions) -> registry.Models:
    """The WGAN-GP toy networks at ``spec``'s widths."""
    generator = MLPGenerator(
        out_dim=math.prod(spec.element_shape),
        hidden=(spec.width,) * options.depth,
        spectral_norm=spec.generator_spectral_norm,
    )
    critic = MLPCritic(
        hidden=(spec.critic_width,) * options.depth,
        spectral_norm=spec.spectral_norm,
        axis_name=spec.axis_name,
        **minibatch_std_options(options.minibatch_std, options.minibatch_std_group),
    )
    return generator, critic


registry.register("mlp", build_mlp, MLPOptions)
