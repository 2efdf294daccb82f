"""Variational autoencoder (Kingma & Welling, 2014): an encoder plus one of the GAN generators.

The decoder is not a new network: for images it is ``DCGANGenerator(..., batch_norm=False)``,
whose tanh output is the mean of a Gaussian likelihood on data in [-1, 1], and for 2-D data it
is ``MLPGenerator``. The VAE and the GANs therefore compare on the same generator family. Only
the encoder ``q(z | x) = N(mean(x), diag exp(log_variance(x)))`` is specific to the VAE; its
conv form mirrors ``DCGANCritic`` (stride-2 4x4 convolutions, LeakyReLU 0.2, no normalisation).

Contracts: encoders map ``(x, train)`` to ``(mean, log_variance)``, each [B, latent_dim];
decoders map ``(z, train)`` to [B, ...] like every generator in ``gans.models``.

Reference:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models.dcgan import IMAGE_SIZES, _num_stages
from gans.models.mlp import _hidden_layers

ENCODER_KINDS = ("conv", "mlp")


def reparameterize(key: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Draws ``z = mean + exp(log_variance / 2) * eps`` with ``eps ~ N(0, I)`` from `key`.

    The reparameterisation trick (Kingma & Welling, 2014, Sec. 2.4): the sample is a
    differentiable function of ``(mean, log_variance)``, so gradients of a Monte-Carlo
    estimate of the ELBO reach the encoder.

    Args:
        key: PRNG key for ``eps``.
        mean: [..., latent_dim] means of ``q(z | x)``.
        log_variance: Log variances, same shape as `mean`.

    Returns:
        One sample ``z`` per row, same shape as `mean`.
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_variance) * eps


class VAEEncoder(nn.Module):
    """Maps inputs [B, ...] to the parameters ``(mean, log_variance)`` of ``q(z | x)``, each [B, D].

    Attributes:
        latent_dim: Dimension D of ``z``.
        width: 'conv' only: channels of the first convolution; each later one doubles them.
        kind: 'conv' for square images [B, S, S, C] with S in 8, 16, 32, 64 (stride-2 4x4
            convolutions down to 4x4, as in ``DCGANCritic``); 'mlp' for 2-D or flat data
            (flattened per example).
        hidden: 'mlp' only: widths of the ReLU hidden layers.
        leaky_slope: 'conv' only: negative slope of the LeakyReLUs.
    """

    latent_dim: int
    width: int = 32
    kind: str = "conv"
    hidden: Sequence[int] = (256, 256)
    leaky_slope: float = 0.2

    def __post_init__(self):
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"VAEEncoder kind must be one of {ENCODER_KINDS}, got {self.kind!r}.")
        if self.latent_dim < 1:
            raise ValueError(f"VAEEncoder latent_dim must be >= 1, got {self.latent_dim}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
        """Returns ``(mean, log_variance)``; `train` is accepted for the contract and unused."""
        del train  # No batch-dependent layers.
        if self.kind == "conv":
            if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] not in IMAGE_SIZES:
                raise ValueError(
                    f"VAEEncoder(kind='conv') expects square images [B, S, S, C] with S in "
                    f"{IMAGE_SIZES}, got shape {x.shape}; use kind='mlp' for flat data."
                )
            for stage in range(_num_stages(x.shape[1])):
                x = nn.Conv(
                    self.width * 2**stage, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))
                )(x)
                x = nn.leaky_relu(x, self.leaky_slope)
            x = jnp.reshape(x, (x.shape[0], -1))
        else:
            x = jnp.reshape(x, (x.shape[0], -1))
            x = _hidden_layers(x, self.hidden, nn.relu, nn.linear.default_kernel_init)
        mean, log_variance = jnp.split(nn.Dense(2 * self.latent_dim)(x), 2, axis=-1)
        return mean, log_variance


class VAE(nn.Module):
    """Encoder, reparameterised sample and decoder: ``x -> (x', mean, log_variance)``.

    The randomness of ``z`` comes from an explicit `key` argument rather than a Flax RNG
    stream, so the train step draws it like every other random number in the project.

    Attributes:
        encoder: A module ``(x, train) -> (mean, log_variance)``, e.g. ``VAEEncoder``.
        decoder: A module ``(z, train) -> x'``: ``DCGANGenerator(..., batch_norm=False)`` for
            images, ``MLPGenerator`` for 2-D data. Its output is the mean of ``p(x | z)``.
    """

    encoder: nn.Module
    decoder: nn.Module

    def __call__(
        self, x: jax.Array, key: jax.Array, train: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns ``(reconstruction, mean, log_variance)`` for one sample ``z ~ q(z | x)``."""
        mean, log_variance = self.encoder(x, train=train)
        z = reparameterize(key, mean, log_variance)
        return self.decoder(z, train=train), mean, log_variance

    def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Returns ``(mean, log_variance)`` of ``q(z | x)``."""
        return self.encoder(x, train=train)

    def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
        """Returns the decoder's mean ``x'(z)``; with ``z ~ N(0, I)`` it samples the model."""
        return self.decoder(z, train=train)

    def generate(self, z: jax.Array, train: bool = False) -> jax.Array:
        """Alias of `decode`, named like the GAN side: samples for prior draws ``z ~ N(0, I)``."""
        return self.decode(z, train=train)
