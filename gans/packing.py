"""PacGAN's packing (Lin et al., 2018): the critic scores ``m`` samples at once.

A packed critic ``D: X^m -> R`` sees ``m`` examples of one kind concatenated along the feature
(channel) axis, real with real and fake with fake, so that a generator whose samples lack
diversity is seen to lack it: ``m`` samples of one mode look unlike ``m`` draws of the data.
Examples ``[i m, (i + 1) m)`` of a batch form pack ``i``; a batch of ``B`` examples gives
``B / m`` packs, so the losses average over packs.

Packing happens after augmentation and instance noise, which stay per example, and before the
penalty, so that the Lipschitz constraint and its interpolates are those of the packed critic:
one interpolation factor per pack, and one gradient norm per pack over its ``m`` examples'
features together (the Lipschitz constant of ``D`` on ``X^m``). Under ``pmap`` every pack lies
on one device: the per-device batch must be divisible by ``m``, and then the packs of the global
batch are those of a single device's, so training equals the single-device step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def check_pack(pack: int, batch_size: int | None = None) -> None:
    """Raises ValueError unless ``pack >= 1`` divides ``batch_size`` (when given)."""
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ValueError(f"pack must be an integer >= 1, got {pack!r}; PacGAN uses 2 to 4.")
    if batch_size is not None and batch_size % pack:
        raise ValueError(
            f"a batch of {batch_size} examples does not split into packs of {pack}; "
            "give a batch size divisible by --pack."
        )


def pack(x: jax.Array, m: int) -> jax.Array:
    """``[B, ..., C] -> [B / m, ..., m C]``: examples ``i m .. i m + m - 1`` side by side.

    Pack ``i``'s features are example ``i m``'s ``C`` channels, then example ``i m + 1``'s, and
    so on (PacGAN's concatenation along the channel axis; for vectors, along the features).
    """
    if m == 1:
        return x
    check_pack(m, x.shape[0])
    grouped = x.reshape((x.shape[0] // m, m) + x.shape[1:])
    grouped = jnp.moveaxis(grouped, 1, -2)  # [B / m, ..., m, C]
    return grouped.reshape(grouped.shape[:-2] + (m * x.shape[-1],))


def pack_tree(x: PyTree, m: int) -> PyTree:
    """``pack`` applied to every leaf (the real and fake batches of the step)."""
    return jax.tree.map(lambda leaf: pack(leaf, m), x)


def unpack(x: jax.Array, m: int) -> jax.Array:
    """The inverse of ``pack``: ``[B / m, ..., m C] -> [B, ..., C]``."""
    if m == 1:
        return x
    channels = x.shape[-1] // m
    grouped = x.reshape(x.shape[:-1] + (m, channels))
    grouped = jnp.moveaxis(grouped, -2, 1)
    return grouped.reshape((x.shape[0] * m,) + grouped.shape[2:])


def diagonal(x: jax.Array, m: int) -> jax.Array:
    """Each example packed with ``m - 1`` copies of itself: ``[B, ..., C] -> [B, ..., m C]``.

    How a packed critic is drawn over the plane (``gans.sampling``): its score of a point is
    its score of ``m`` copies of that point.
    """
    return pack(jnp.repeat(x, m, axis=0), m)
