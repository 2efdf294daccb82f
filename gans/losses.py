"""Adversarial losses, one discriminator part and one generator part per family.

Every function takes the critic's raw outputs (logits for the cross-entropy
families, unbounded scores for the others) on a real and/or a generated batch,
shape ``[B]``, and returns a scalar to be *minimised* by that player. None is
jitted: the trainer decides what to compile.

Notation: ``D(x) = sigmoid(logit(x))`` for the cross-entropy families, ``f(x)``
for a critic score, ``x ~ P_r`` real, ``x~ = G(z) ~ P_g`` generated.

References:
    [GAN]    Goodfellow et al., Generative Adversarial Nets, 2014.
    [WGAN]   Arjovsky, Chintala, Bottou, Wasserstein GAN, 2017.
    [LSGAN]  Mao et al., Least Squares Generative Adversarial Networks, 2017.
    [Hinge]  Lim & Ye, Geometric GAN, 2017; Miyato et al., Spectral Normalization, 2018.
    [Hacks]  Salimans et al., Improved Techniques for Training GANs, 2016 (one-sided
                      label smoothing); Chintala et al., "How to train a GAN", 2016 (noisy labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gans import parallel

Array = jax.Array


# --------------------------------------------------------------------------- #
# Label tricks for the cross-entropy families.
# --------------------------------------------------------------------------- #
def check_label_options(label_smoothing: float = 0.0, flip_probability: float = 0.0) -> None:
    """Raises ``ValueError`` unless the label tricks' settings are in range."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"label_smoothing must be in [0, 1), got {label_smoothing}; 0.1 makes the real "
            "target 0.9."
        )
    if not 0.0 <= flip_probability <= 0.5:
        raise ValueError(
            f"flip_probability must be in [0, 0.5], got {flip_probability}; it is the chance "
            "of swapping a real/fake label."
        )


def discriminator_targets(
    batch_size: int,
    *,
    real: bool,
    label_smoothing: float = 0.0,
    flip_probability: float = 0.0,
    key: Array | None = None,
    axis_name: str | None = None,
) -> Array:
    """Binary targets for the discriminator, with the two label tricks.

    One-sided label smoothing [Hacks] replaces the real target 1 by
    ``1 - label_smoothing`` (e.g. 0.1 -> 0.9) and leaves fake targets at 0.
    Noisy labels flip each target (``t -> 1 - t``) with probability
    ``flip_probability``, drawn per example from ``key`` (under ``pmap`` with ``axis_name``,
    this device's slice of the global batch's draw; see ``gans.parallel``).

    Returns:
        Float32 targets of shape ``[batch_size]``.
    """
    # The flip probability may be a traced, annealed value: check it only when static.
    static_flip = isinstance(flip_probability, (int, float))
    check_label_options(label_smoothing, flip_probability if static_flip else 0.0)
    target = (1.0 - label_smoothing) if real else 0.0
    targets = jnp.full((batch_size,), target, jnp.float32)
    if static_flip and flip_probability == 0.0:
        return targets
    if key is None:
        raise ValueError("noisy labels (flip_probability > 0) need a PRNG key.")
    bernoulli = lambda k, shape: jax.random.bernoulli(k, flip_probability, shape)
    flip = parallel.draw_like(bernoulli, key, (batch_size,), axis_name)
    targets = jnp.where(flip, 1.0 - targets, targets)
    return targets


def sigmoid_cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-example ``-[t log D + (1 - t) log(1 - D)]`` with ``D = sigmoid(logits)``.

    Uses ``log sigmoid(x)`` and ``log(1 - sigmoid(x)) = log sigmoid(-x)`` so that it
    is finite for any logit.
    """
    return -(targets * jax.nn.log_sigmoid(logits) + (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def _label_keys(key: Array | None) -> tuple[Array | None, Array | None]:
    if key is None:
        return None, None
    real_key, fake_key = jax.random.split(key)
    return real_key, fake_key


# --------------------------------------------------------------------------- #
# Minimax GAN (MM-GAN) and non-saturating GAN (NS-GAN) [GAN].
# --------------------------------------------------------------------------- #
def cross_entropy_discriminator_loss(
    real_logits: Array,
    fake_logits: Array,
    *,
    label_smoothing: float = 0.0,
    flip_probability: float = 0.0,
    key: Array | None = None,
    axis_name: str | None = None,
) -> Array:
    """Discriminator loss of the minimax and non-saturating GANs.

    ``L_D = -E_{P_r}[log D(x)] - E_{P_g}[log(1 - D(x~))]``, the negated value
    function ``V(D, G)`` of [GAN] Eq. 1: at the optimum ``D*(x) = p_r / (p_r + p_g)``
    and ``-L_D = -log 4 + 2 JSD(P_r || P_g)``. With logits 0 everywhere it is
    ``2 log 2``.

    Args:
        real_logits: ``[B]`` logits of real examples.
        fake_logits: ``[B']`` logits of generated examples.
        label_smoothing: one-sided smoothing of the real target (``1 -> 1 - s``).
        flip_probability: chance of flipping each target (noisy labels).
        key: PRNG key, needed only when ``flip_probability > 0``.
        axis_name: the pmap axis the batch is split over, or None.

    Returns:
        Scalar loss.
    """
    real_key, fake_key = _label_keys(key)
    real_targets = discriminator_targets(
        real_logits.shape[0],
        real=True,
        label_smoothing=label_smoothing,
        flip_probability=flip_probability,
        key=real_key,
        axis_name=axis_name,
    )
    fake_targets = discriminator_targets(
        fake_logits.shape[0],
        real=False,
        flip_probability=flip_probability,
        key=fake_key,
        axis_name=axis_name,
    )
    return jnp.mean(sigmoid_cross_entropy(real_logits, real_targets)) + jnp.mean(
        sigmoid_cross_entropy(fake_logits, fake_targets)
    )


def minimax_generator_loss(fake_logits: Array) -> Array:
    """Saturating generator loss of the minimax GAN: ``E_{P_g}[log(1 - D(x~))]``.

    The generator minimises the same value function the discriminator maximises.
    Its gradient ``-D(x~) * dlogit`` vanishes as ``D(x~) -> 0``, i.e. exactly when
    the discriminator wins early in training (Arjovsky & Bottou, 2017).
    """
    return jnp.mean(jax.nn.log_sigmoid(-fake_logits))


def non_saturating_generator_loss(fake_logits: Array) -> Array:
    """Non-saturating ("-log D") generator loss: ``-E_{P_g}[log D(x~)]``.

    Same fixed point as the minimax loss but a gradient ``-(1 - D(x~)) * dlogit``
    that is largest when the discriminator rejects the samples [GAN, Sec. 3].
    """
    return -jnp.mean(jax.nn.log_sigmoid(fake_logits))


# --------------------------------------------------------------------------- #
# Wasserstein GAN [WGAN].
# --------------------------------------------------------------------------- #
def wasserstein_critic_loss(real_scores: Array, fake_scores: Array) -> Array:
    """Critic loss of WGAN: ``E_{P_g}[f(x~)] - E_{P_r}[f(x)]``.

    Minimising it maximises ``E_{P_r}[f] - E_{P_g}[f]``, which for a 1-Lipschitz
    ``f`` is the Kantorovich-Rubinstein dual of the earth mover's distance
    ``W(P_r, P_g)``; its negation is the Wasserstein estimate.
    """
    return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wasserstein_generator_loss(fake_scores: Array) -> Array:
    """Generator loss of WGAN: ``-E_{P_g}[f(G(z))]`` (the real term has no theta)."""
    return -jnp.mean(fake_scores)


# --------------------------------------------------------------------------- #
# Least squares GAN [LSGAN], with the 0-1 coding (a=0, b=1, c=1).
# --------------------------------------------------------------------------- #
def least_squares_discriminator_loss(real_scores: Array, fake_scores: Array) -> Array:
    """``1/2 E_{P_r}[(D(x) - 1)^2] + 1/2 E_{P_g}[D(x~)^2]`` ([LSGAN] Eq. 9, b=1, a=0)."""
    return 0.5 * jnp.mean((real_scores - 1.0) ** 2) + 0.5 * jnp.mean(fake_scores**2)


def least_squares_generator_loss(fake_scores: Array) -> Array:
    """``1/2 E_{P_g}[(D(x~) - 1)^2]`` ([LSGAN] Eq. 9, c=1)."""
    return 0.5 * jnp.mean((fake_scores - 1.0) ** 2)


# --------------------------------------------------------------------------- #
# Hinge loss [Hinge].
# --------------------------------------------------------------------------- #
def hinge_discriminator_loss(real_scores: Array, fake_scores: Array) -> Array:
    """``E_{P_r}[max(0, 1 - D(x))] + E_{P_g}[max(0, 1 + D(x~))]``."""
    return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


def hinge_generator_loss(fake_scores: Array) -> Array:
    """``-E_{P_g}[D(x~)]``."""
    return -jnp.mean(fake_scores)


# --------------------------------------------------------------------------- #
# Registry.
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class LossFamily:
    """A pair of losses that define one GAN game.

    Attributes:
        discriminator: ``(real, fake, **label_options) -> scalar``.
        generator: ``(fake) -> scalar``.
        uses_labels: whether the discriminator loss is a binary cross-entropy, so
            that label smoothing and noisy labels make sense.
        estimates_wasserstein: whether ``mean f(real) - mean f(fake)`` estimates
            the earth mover's distance (only for a Lipschitz-constrained critic).
    """

    discriminator: Callable[..., Array]
    generator: Callable[[Array], Array]
    uses_labels: bool = False
    estimates_wasserstein: bool = False


LOSSES: dict[str, LossFamily] = {
    "minimax": LossFamily(
        cross_entropy_discriminator_loss, minimax_generator_loss, uses_labels=True
    ),
    "non_saturating": LossFamily(
        cross_entropy_discriminator_loss, non_saturating_generator_loss, uses_labels=True
    ),
    "wasserstein": LossFamily(
        wasserstein_critic_loss, wasserstein_generator_loss, estimates_wasserstein=True
    ),
    "least_squares": LossFamily(least_squares_discriminator_loss, least_squares_generator_loss),
    "hinge": LossFamily(hinge_discriminator_loss, hinge_generator_loss),
}


def get_loss(name: str) -> LossFamily:
    """Returns the loss family registered under ``name``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}."
        ) from None
