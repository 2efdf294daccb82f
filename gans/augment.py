"""Differentiable augmentation of critic inputs, and ADA's adaptive probability; pure functions.

DiffAugment (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN Training")
applies one family of random transforms ``T`` to real AND generated images before every critic
call, in both players' losses: the critic is trained on ``D(T(x))`` and ``D(T(G(z)))`` and the
generator on ``D(T(G(z)))``, so ``T`` must be differentiable with respect to the image. The
transforms here follow the authors' ``DiffAugment_pytorch.py`` (images in [-1, 1]):

- ``color``: brightness ``x + (u - 0.5)``, saturation ``(x - mean_c x) * 2u + mean_c x`` (the
  identity on one-channel images), contrast ``(x - mean_hwc x) * (u + 0.5) + mean_hwc x``, each
  with its own ``u ~ U[0, 1)`` per example;
- ``translation``: an integer shift of up to 1/8 of the side on each axis, zeros shifted in;
- ``cutout``: a square of half the side, centred uniformly (clipped at the border), set to 0;
- ``flip``: a horizontal mirror (not in DiffAugment's family; consistency regularisation's).

The transforms are linear in the image for a fixed draw (a shift and a mask are 0/1 matrices,
colour is affine), so their gradients are exact, and computed by ``jnp.einsum`` and products.

Each transform is applied to each example with probability ``p`` (DiffAugment: ``p = 1``); at
``p = 0`` the batch comes back unchanged. ADA (Karras et al., 2020, "Training Generative
Adversarial Networks with Limited Data", Sec. 3) keeps ``p`` in the training state and moves it
after every step by the overfitting signal ``r_t = E[sign(D(x_real))]``:
``p <- clip(p + sign(r_t - target) * N / (kimg * 1000), 0, 1)`` with ``N`` the real images the
critic saw in the step, so ``p`` can cross [0, 1] in ``kimg`` thousand images (ADA: 500). ADA's
own pipeline has 18 transforms; this is its controller over DiffAugment's family.

Per-example draws come from the step's key for the *global* batch (``gans.parallel.draw``), so
the device count does not change a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from gans import parallel

Array = jax.Array

# DiffAugment's ratios: translation by up to 1/8 of the side, cutout of half the side.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _check_images(x: Array) -> None:
    if jnp.ndim(x) != 4:
        raise ValueError(
            f"augmentation applies to image batches [B, H, W, C], got shape {jnp.shape(x)}."
        )


def _uniform(key: Array, n: int) -> Array:
    return jax.random.uniform(key, (n,))


def _column(values: Array) -> Array:
    return values[:, None, None, None]


def _color(x: Array, key: Array, axis_name: str | None) -> Array:
    draws = parallel.draw(lambda k, n: jax.random.uniform(k, (3, n)).T, key, x.shape[0], axis_name)
    brightness, saturation, contrast = (_column(draws[:, i]) for i in range(3))
    x = x + (brightness - 0.5)
    channel_mean = jnp.mean(x, axis=3, keepdims=True)
    x = (x - channel_mean) * (2.0 * saturation) + channel_mean
    image_mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - image_mean) * (contrast + 0.5) + image_mean


def _side_fraction(side: int, ratio: float) -> int:
    return int(side * ratio + 0.5)  # As the reference rounds.


def shift_matrices(shifts: Array, side: int) -> Array:
    """``[B, side, side]`` 0/1 matrices ``S`` with ``(S v)[i] = v[i + shift]`` (0 outside)."""
    rows = jnp.arange(side)
    return (rows[None, :, None] + shifts[:, None, None] == rows[None, None, :]).astype(jnp.float32)


def _integer_pairs(
    key: Array, n: int, lows: tuple[int, int], highs: tuple[int, int], axis_name: str | None
) -> Array:
    """``[n, 2]`` integers, column ``i`` uniform in ``[lows[i], highs[i])``, per example."""

    def sample(k, count):
        ky, kx = jax.random.split(k)
        rows = jax.random.randint(ky, (count,), lows[0], highs[0])
        return jnp.stack([rows, jax.random.randint(kx, (count,), lows[1], highs[1])], axis=1)

    return parallel.draw(sample, key, n, axis_name)


def _translation(x: Array, key: Array, axis_name: str | None) -> Array:
    b, h, w, _ = x.shape
    reach = (_side_fraction(h, TRANSLATION_RATIO), _side_fraction(w, TRANSLATION_RATIO))
    shifts = _integer_pairs(key, b, (-reach[0], -reach[1]), (reach[0] + 1, reach[1] + 1), axis_name)
    rows, cols = shift_matrices(shifts[:, 0], h), shift_matrices(shifts[:, 1], w)
    return jnp.einsum("bih,bhwc,bjw->bijc", rows.astype(x.dtype), x, cols.astype(x.dtype))


def _cutout(x: Array, key: Array, axis_name: str | None) -> Array:
    b, h, w, _ = x.shape
    size = (_side_fraction(h, CUTOUT_RATIO), _side_fraction(w, CUTOUT_RATIO))

    # The reference's centres: 0 .. side - 1, and side itself when the size is even.
    centres = _integer_pairs(key, b, (0, 0), (h + 1 - size[0] % 2, w + 1 - size[1] % 2), axis_name)

    def inside(centre, side, length):
        start = centre[:, None] - length // 2
        index = jnp.arange(side)[None, :]
        return (index >= start) & (index < start + length)

    hole = (
        inside(centres[:, 0], h, size[0])[:, :, None] & inside(centres[:, 1], w, size[1])[:, None]
    )
    return x * (~hole)[..., None].astype(x.dtype)


def _flip(x: Array, key: Array, axis_name: str | None) -> Array:
    del key, axis_name  # Always mirrors; whether it applies is drawn by the caller.
    return x[:, :, ::-1]


TRANSFORMS: dict[str, Callable[[Array, Array, str | None], Array]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
    "flip": _flip,
}
# DiffAugment's policy for its CIFAR-10 and few-shot results.
DIFFAUGMENT_POLICY = ("color", "translation", "cutout")


def parse_policy(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"translation,cutout"`` (or a sequence of names) as a checked tuple of transform names.

    Raises:
      ValueError: for an empty policy, an unknown name (the known ones listed) or a repeat.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not names or any(not name for name in names):
        raise ValueError(
            f"augmentation policy {spec!r} names no transform; give a comma-separated list of "
            f"{', '.join(TRANSFORMS)}."
        )
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r}; known augmentations: {', '.join(TRANSFORMS)}."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation policy {spec!r} names a transform twice.")
    return tuple(names)


def augment(
    x: Array,
    key: Array,
    policy: Sequence[str] = DIFFAUGMENT_POLICY,
    *,
    probability: Array | float = 1.0,
    axis_name: str | None = None,
) -> Array:
    """``T(x)``: each transform of ``policy``, in order, on each example with ``probability``.

    Args:
      x: images ``[B, H, W, C]`` in [-1, 1].
      key: the draw's key, shared by every device under ``pmap``.
      policy: transform names (``parse_policy``), applied in this order.
      probability: chance that a transform applies to an example, drawn per example and per
        transform; 1 is DiffAugment, 0 the identity, a traced value ADA's adaptive ``p``.
      axis_name: the pmap axis the batch is split over, or None.

    Returns:
      The augmented batch, same shape and dtype, differentiable with respect to ``x``.
    """
    _check_images(x)
    policy = parse_policy(policy)
    for name, k in zip(policy, jax.random.split(key, len(policy))):
        transform_key, coin_key = jax.random.split(k)
        applies = parallel.draw(_uniform, coin_key, x.shape[0], axis_name) < probability
        x = jnp.where(_column(applies), TRANSFORMS[name](x, transform_key, axis_name), x)
    return x


def overfitting_signal(real_scores: Array) -> Array:
    """ADA's ``r_t = E[sign(D(x))]`` over real scores ``[B]``: 0 when the critic is unsure,
    1 when it calls every real image real (logits, or scores centred at 0 such as hinge's)."""
    return jnp.mean(jnp.sign(real_scores))


def adapt_probability(
    probability: Array, signal: Array, *, target: float, images: int | Array, kimg: float
) -> Array:
    """ADA's update: ``clip(p + sign(r_t - target) * images / (kimg * 1000), 0, 1)``.

    Args:
      probability: the current ``p``.
      signal: ``r_t`` (``overfitting_signal``) over the images since the last update.
      target: the ``r_t`` aimed at (ADA: 0.6).
      images: real images the critic saw since the last update.
      kimg: thousands of images for ``p`` to move from 0 to 1 (ADA: 500).
    """
    step = jnp.sign(signal - target) * images / (kimg * 1000.0)
    return jnp.clip(probability + step, 0.0, 1.0)


def check_adaptive(target: float, kimg: float) -> None:
    """Raises ``ValueError`` unless ``0 < target < 1`` and ``kimg > 0``."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"ADA's target must be in (0, 1), got {target}; the paper uses 0.6.")
    if not kimg > 0:
        raise ValueError(f"ADA's kimg must be > 0, got {kimg}; the paper uses 500.")


def check_probability(probability: float) -> None:
    """Raises ``ValueError`` unless ``probability`` is in [0, 1]."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {probability}.")
