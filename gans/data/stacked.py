"""Stacked digits: three digits drawn independently, one per colour channel, so 1,000 modes.

The offline stand-in for Stacked MNIST (Metz et al., 2017, unrolled GAN; Srivastava et al.,
2017, VEEGAN, Table 2; Lin et al., 2018, PacGAN, Tables 2-3): an example stacks digits
``i0, i1, i2`` of sklearn's 1,797 as the channels of one ``[S, S, 3]`` image, and its mode is
``100 * label(i0) + 10 * label(i1) + label(i2)`` in [0, 1000).

Which digits item ``index`` of the stream ``seed`` holds is a pure function of ``(seed,
index)``: ``default_rng([seed, index, STREAM_TAG]).integers(0, N, (n, 3))``, one counter-based
draw per item, uniform with replacement and independent across channels, as PacGAN's released
code draws its stacks (``np.random.randint(0, 70000, size=(n, 3))``). The tag keeps the stream
apart from the digits' epoch permutations, ``default_rng([seed, epoch])``.
"""

from __future__ import annotations

import numpy as np

NUM_CHANNELS = 3
NUM_MODES = 10**NUM_CHANNELS
# A third entropy word: the digits' epochs draw from default_rng([seed, epoch]), so without it
# item k of a stacked stream would reuse the generator of epoch k of the digits stream.
STREAM_TAG = 3


def stack_indices(seed: int, index: int, count: int, num_digits: int) -> np.ndarray:
    """The digits item ``index`` of stream ``seed`` stacks: int64 ``[count, 3]`` in [0, N)."""
    if num_digits < 1 or count < 1:
        raise ValueError(f"count and num_digits must be >= 1, got {count} and {num_digits}.")
    rng = np.random.default_rng([seed, index, STREAM_TAG])
    return rng.integers(0, num_digits, size=(count, NUM_CHANNELS))


def modes_of(digits: np.ndarray) -> np.ndarray:
    """``[..., 3]`` digits in 0..9 (channel 0 first) to modes ``d0 * 100 + d1 * 10 + d2``."""
    digits = np.asarray(digits)
    if digits.shape[-1:] != (NUM_CHANNELS,):
        raise ValueError(f"digits must be [..., {NUM_CHANNELS}], got shape {digits.shape}.")
    return (digits @ (10 ** np.arange(NUM_CHANNELS - 1, -1, -1))).astype(np.int32)


def stack(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks ``images[indices[:, c]]`` as channel ``c``.

    Args:
      images: One-channel digits, ``[N, S, S, 1]``.
      labels: Their labels, ``[N]`` in 0..9.
      indices: ``[n, 3]`` rows of ``images``, one per channel.

    Returns:
      Images ``[n, S, S, 3]`` (same dtype and range as ``images``) and modes int32 ``[n]``.
    """
    x = np.concatenate([images[indices[:, c]] for c in range(NUM_CHANNELS)], axis=-1)
    return x, modes_of(labels[indices])
