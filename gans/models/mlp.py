"""Fully connected generator and critic for the 2-D toy problems.

The defaults follow the WGAN-GP toy code (Gulrajani et al., 2017): three hidden layers of 512
ReLU units and a linear output. The unrolled-GAN protocol (Metz et al., 2017) is the same family
with ``hidden=(128, 128)``, ``activation=nn.tanh`` and an orthogonal ``kernel_init``.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models.layers import apply_layer, copy_as, minibatch_std, statistics_axis


def _hidden_layers(
    x: jax.Array,
    hidden: Sequence[int],
    activation: Callable[[jax.Array], jax.Array],
    kernel_init: nn.initializers.Initializer,
    spectral_norm: bool = False,
    train: bool = True,
) -> jax.Array:
    """Dense + activation for each width in `hidden`; called inside a compact method."""
    for width in hidden:
        dense = nn.Dense(width, kernel_init=kernel_init)
        x = activation(apply_layer(dense, x, spectral_norm=spectral_norm, train=train))
    return x


class MLPGenerator(nn.Module):
    """Maps latent codes `z` [B, z_dim] to samples [B, out_dim] with a linear output layer.

    Attributes:
        out_dim: Dimension of a sample (2 for the toy sets).
        hidden: Widths of the hidden layers.
        activation: Non-linearity after every hidden layer.
        kernel_init: Initializer of every Dense kernel (Flax's LeCun normal by default).
        spectral_norm: Spectral normalisation of every layer (SAGAN, BigGAN).
    """

    out_dim: int = 2
    hidden: Sequence[int] = (512, 512, 512)
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        """Returns samples [B, out_dim]; `train` only drives spectral normalisation's estimate."""
        x = _hidden_layers(
            z, self.hidden, self.activation, self.kernel_init, self.spectral_norm, train
        )
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
    """

    hidden: Sequence[int] = (512, 512, 512)
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    spectral_norm: bool = False
    minibatch_std: bool = False
    minibatch_std_group: int | None = None
    axis_name: str | None = None

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """Flatten, then the hidden layers; called inside a compact method."""
        x = jnp.reshape(x, (x.shape[0], -1))
        layers = lambda x, widths: _hidden_layers(
            x, widths, self.activation, self.kernel_init, self.spectral_norm, train
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
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]; `train` only drives spectral normalisation's estimate."""
        x = self._features(x, train)
        dense = nn.Dense(1, kernel_init=self.kernel_init)
        return jnp.squeeze(apply_layer(dense, x, spectral_norm=self.spectral_norm, train=train), -1)
