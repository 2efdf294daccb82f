"""InfoGAN's latent codes, critic with a Q head, and mutual-information bound.

Chen et al. (2016), "InfoGAN: Interpretable Representation Learning by Information Maximizing
Generative Adversarial Nets". The generator is a plain one fed ``[z, one_hot(c_cat), c_cont]``
(``z_dim + num_categories + num_continuous`` inputs, see ``codes_vector``); the Q head shares the
discriminator's trunk up to its last conv layer and predicts the codes from a sample. Both players
maximise the variational bound ``L_I`` (Eq. 4-5) on top of their adversarial losses.

Q's continuous part is a factored Gaussian with a fixed unit standard deviation, as in the
authors' MNIST experiments and most reimplementations: learning the variance is known to be
unstable, and with it fixed ``log Q`` is a squared error on the mean plus a constant.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans import parallel
from gans.models.dcgan import _batch_norm
from gans.models.layers import apply_layer
from gans.models.mlp import _hidden_layers

_LOG_2PI = math.log(2.0 * math.pi)


def _check_code_sizes(num_categories: int, num_continuous: int) -> None:
    if num_categories < 1 or num_continuous < 0:
        raise ValueError(
            f"InfoGAN needs num_categories >= 1 and num_continuous >= 0, got {num_categories} "
            f"and {num_continuous}."
        )


def sample_codes(
    key: jax.Array, batch: int, num_categories: int = 10, num_continuous: int = 2
) -> tuple[jax.Array, jax.Array]:
    """Draws the latent codes from their priors: ``c_cat ~ Cat(K)``, ``c_cont ~ U[-1, 1]^k``.

    Args:
        key: PRNG key.
        batch: Number of examples B.
        num_categories: Classes K of the categorical code (10 for digits).
        num_continuous: Number k of continuous codes (2 for digits: angle and width).

    Returns:
        ``(categorical, continuous)``: int32 class ids [B] and float32 codes [B, k].
    """
    _check_code_sizes(num_categories, num_continuous)
    categorical_key, continuous_key = jax.random.split(key)
    categorical = jax.random.randint(categorical_key, (batch,), 0, num_categories, jnp.int32)
    continuous = jax.random.uniform(
        continuous_key, (batch, num_continuous), jnp.float32, minval=-1.0, maxval=1.0
    )
    return categorical, continuous


def codes_vector(
    categorical: jax.Array, continuous: jax.Array, num_categories: int = 10
) -> jax.Array:
    """``[one_hot(categorical), continuous]`` [B, K + k], to append to z for the generator."""
    one_hot = jax.nn.one_hot(categorical, num_categories, dtype=continuous.dtype)
    return jnp.concatenate([one_hot, continuous], axis=-1)


def generator_input(
    z: jax.Array,
    key: jax.Array,
    num_categories: int,
    num_continuous: int,
    categories: jax.Array | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """InfoGAN's generator input ``[z, one_hot(c_cat), c_cont]`` and the codes in it.

    Args:
        z: Noise [B, z_dim].
        key: PRNG key of the codes.
        num_categories: Classes K of the categorical code.
        num_continuous: Number k of continuous codes.
        categories: Fixed class ids [B] (a picture's rows, a chosen category); default: drawn
            from the prior with the continuous codes (``sample_codes``).
        axis_name: Under ``pmap``, the batch axis: ``z`` is this device's slice and the codes
            are its slice of one global draw (``gans.parallel.draw``).

    Returns:
        ``(inputs [B, z_dim + K + k], (categorical [B], continuous [B, k]))``.
    """
    if categories is None:
        codes = parallel.draw(
            lambda k, n: sample_codes(k, n, num_categories, num_continuous),
            key,
            z.shape[0],
            axis_name,
        )
    else:
        _check_code_sizes(num_categories, num_continuous)
        continuous = jax.random.uniform(
            key, (z.shape[0], num_continuous), jnp.float32, minval=-1.0, maxval=1.0
        )
        codes = (jnp.asarray(categories, jnp.int32), continuous)
    return jnp.concatenate([z, codes_vector(*codes, num_categories)], axis=-1), codes


@dataclasses.dataclass(frozen=True)
class QHead:
    """Q's hidden layers as a base critic may prescribe them (its ``q_head`` attribute).

    Attributes:
        hidden: Widths of the hidden layers.
        leaky_slope: Negative slope of their LeakyReLUs.
        batch_norm: BatchNorm before each LeakyReLU (InfoGAN's released MNIST networks); only
            for critics that score by batch already, never under a gradient penalty.
        kernel_init: Initializer of the heads' Dense kernels: Q's layers and the score.
    """

    hidden: tuple[int, ...] = (128,)
    leaky_slope: float = 0.2
    batch_norm: bool = False
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init


class InfoGANCritic(nn.Module):
    """Maps samples [B, ...] to ``(scores [B], q)``, with score and Q head on one shared trunk.

    ``q = {"logits": [B, K], "mean": [B, k]}``: the categorical code's logits and the mean of
    the continuous codes' unit-variance Gaussian. Parameters: ``trunk`` (the base critic's
    trunk), ``score`` (one linear unit, the base critic's final layer), ``Dense_i`` (Q's hidden
    layers) and ``q`` (Q's output layer). Q has no BatchNorm, unlike the paper's, so the critic
    stays free of cross-example terms under a gradient penalty, unless the base prescribes its
    own Q (a ``q_head`` attribute, a ``QHead``, which then replaces ``q_hidden`` and
    ``leaky_slope``: InfoGAN's MNIST networks, ``gans.models.infogan_mnist``). A base with
    ``spectral_norm`` normalises every layer: its trunk's, the score and Q's.

    Attributes:
        base: A critic with a ``trunk()`` method (``DCGANCritic``, ``MLPCritic``, ``MSGCritic``).
        num_categories: Classes K of the categorical code.
        num_continuous: Number k of continuous codes.
        q_hidden: Widths of Q's hidden layers (the paper: one of 128).
        leaky_slope: Negative slope of the LeakyReLUs in Q's hidden layers.
    """

    base: nn.Module
    num_categories: int = 10
    num_continuous: int = 2
    q_hidden: Sequence[int] = (128,)
    leaky_slope: float = 0.2

    def __post_init__(self):
        _check_code_sizes(self.num_categories, self.num_continuous)
        if not hasattr(self.base, "trunk"):
            raise ValueError(
                f"InfoGANCritic needs a base critic with a trunk() method (DCGANCritic, "
                f"MLPCritic, MSGCritic), got {type(self.base).__name__}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns ``(scores [B], {"logits": [B, K], "mean": [B, k]})``."""
        spectral_norm = getattr(self.base, "spectral_norm", False)
        layer = functools.partial(apply_layer, spectral_norm=spectral_norm, train=train)
        features = self.base.trunk(name="trunk")(x, train=train)
        head = getattr(self.base, "q_head", None) or QHead(tuple(self.q_hidden), self.leaky_slope)
        score = nn.Dense(1, kernel_init=head.kernel_init, name="score")
        scores = jnp.squeeze(layer(score, features), axis=-1)

        def activation(h):
            if head.batch_norm:
                h = _batch_norm(train, getattr(self.base, "axis_name", None))(h)
            return nn.leaky_relu(h, negative_slope=head.leaky_slope)

        hidden = _hidden_layers(
            features,
            head.hidden,
            activation,
            head.kernel_init,
            spectral_norm,
            train,
        )
        outputs = self.num_categories + self.num_continuous
        q = layer(nn.Dense(outputs, kernel_init=head.kernel_init, name="q"), hidden)
        return scores, {"logits": q[:, : self.num_categories], "mean": q[:, self.num_categories :]}


def mutual_information_lower_bound(
    q: dict[str, jax.Array],
    categorical: jax.Array,
    continuous: jax.Array,
    num_categories: int = 10,
    *,
    categorical_weight: float = 1.0,
    continuous_weight: float = 1.0,
) -> dict[str, jax.Array]:
    """Variational lower bound ``L_I(G, Q) <= I(c; G(z, c))`` [InfoGAN, Eq. 4-5], per code type.

    ``categorical = E[log Q(c_cat | x)] + H(c_cat)`` with ``H = log K`` for the uniform prior;
    it is at most ``log K``, reached by a Q that recovers the class exactly.
    ``continuous = E[sum_j log N(c_j; mean_j, 1)] + k log 2``, ``k log 2`` being the differential
    entropy of ``U[-1, 1]^k``, so that it bounds ``I(c_cont; x)`` too (it can be negative, and
    is at most ``k (log 2 - log(2 pi) / 2)`` with the variance fixed at 1).
    Both players maximise ``total = categorical_weight * categorical + continuous_weight *
    continuous`` (the paper: lambda 1 for discrete codes, smaller for continuous ones), i.e.
    add ``-total`` to their losses.

    Args:
        q: The critic's Q output, ``{"logits": [B, K], "mean": [B, k]}``.
        categorical: Class ids [B] the samples were generated from.
        continuous: Continuous codes [B, k] the samples were generated from.
        num_categories: K; must equal ``q["logits"].shape[-1]``.
        categorical_weight: lambda of the categorical term in ``total``.
        continuous_weight: lambda of the continuous term in ``total``.

    Returns:
        ``{"categorical", "continuous", "total"}``, scalars (nats).
    """
    logits, mean = q["logits"], q["mean"]
    if logits.shape[-1] != num_categories or mean.shape != continuous.shape:
        raise ValueError(
            f"Q's outputs must match the codes: logits [B, {num_categories}] and mean "
            f"{continuous.shape}, got {logits.shape} and {mean.shape}."
        )
    log_q_categorical = jnp.take_along_axis(
        jax.nn.log_softmax(logits, axis=-1), categorical[:, None], axis=-1
    )[:, 0]
    categorical_bound = jnp.mean(log_q_categorical) + math.log(num_categories)
    log_q_continuous = jnp.sum(-0.5 * (continuous - mean) ** 2 - 0.5 * _LOG_2PI, axis=-1)
    continuous_bound = jnp.mean(log_q_continuous) + continuous.shape[-1] * math.log(2.0)
    return {
        "categorical": categorical_bound,
        "continuous": continuous_bound,
        "total": categorical_weight * categorical_bound + continuous_weight * continuous_bound,
    }
