"""The 1,797 real 8x8 handwritten digits that ship inside scikit-learn.

A small image set that needs no download, so image GANs can be trained and tested
offline, on a CPU, in minutes.
"""

import functools

import jax
import numpy as np

IMAGE_SIZES = (8, 16, 32)


def load_digits(image_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits as images in [-1, 1] (a generator's tanh range) and their labels.

    Sizes above 8 are bilinear upsamplings, clipped back into [-1, 1]; they let the
    stride-2 DCGAN models, which need 16 or 32 pixels, train on real data. The result is
    cached and read-only, because every dataset and metric shares it.

    Args:
      image_size: Side of the returned images, one of `IMAGE_SIZES`.

    Returns:
      Images, float32 [1797, image_size, image_size, 1], and labels, int32 [1797] in 0..9.
    """
    if not isinstance(image_size, int) or image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}.")
    return _load_digits(image_size)


@functools.cache
def _load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets  # A second at import: only where the digits are used.

    bunch = sklearn.datasets.load_digits()
    images = (bunch.images[..., None] / 8.0 - 1.0).astype(np.float32)  # Pixels are 0..16.
    if image_size != 8:
        shape = (images.shape[0], image_size, image_size, 1)
        images = np.asarray(jax.image.resize(images, shape, method="linear"))
        images = np.clip(images, -1.0, 1.0)
    labels = bunch.target.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
