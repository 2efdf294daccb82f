"""Image preprocessing shared by the data sets read from files: range, crop and resize.

Done in NumPy on the host, so reading a data set compiles nothing per image shape.
"""

import functools

import numpy as np


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in [-1, 1], a generator's tanh range."""
    return images.astype(np.float32) / 127.5 - 1.0


def centre_crop(images: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` square of ``[..., H, W, C]`` images (the top-left one of
    the central squares when a margin is odd)."""
    height, width = images.shape[-3:-1]
    if side > min(height, width):
        raise ValueError(f"a crop of {side} exceeds a {height}x{width} image.")
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side, :]


def resize(images: np.ndarray, size: int | None) -> np.ndarray:
    """Resizes square-or-not images to size x size, antialiased when shrinking.

    The filter is jax.image.resize's "linear" with antialias=True: a triangle kernel,
    widened by the shrink factor so that downscaling averages every input pixel instead of
    aliasing. Done in NumPy, on the host, with nothing to compile per image shape.

    Args:
      images: float32 [n, H, W, C].
      size: Output side; None returns the images unchanged.

    Returns:
      float32 [n, size, size, C], clipped to the input's [-1, 1] range.
    """
    if size is None or images.shape[1:3] == (size, size):
        return images
    rows, columns = _resize_weights(images.shape[1], size), _resize_weights(images.shape[2], size)
    resized = np.einsum("ih,nhwc,jw->nijc", rows, images, columns, optimize=True)
    # The weights are non-negative and sum to 1, so only rounding can leave [-1, 1].
    return np.clip(resized, -1.0, 1.0, out=resized)


@functools.lru_cache(maxsize=64)
def _resize_weights(input_size: int, output_size: int) -> np.ndarray:
    """Row j holds the weights of the input pixels in output pixel j: float32 [out, in]."""
    scale = output_size / input_size
    kernel_width = max(1.0 / scale, 1.0)
    centres = (np.arange(output_size) + 0.5) / scale - 0.5  # In input pixel coordinates.
    distances = np.abs(centres[:, None] - np.arange(input_size)[None, :]) / kernel_width
    weights = np.maximum(0.0, 1.0 - distances)
    weights /= weights.sum(axis=1, keepdims=True)
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights
