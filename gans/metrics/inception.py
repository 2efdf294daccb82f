"""The FID Inception-v3 in Flax: pool3 features (2048-d) and logits (1008) for FID, KID and IS.

FID numbers are comparable across papers only when computed with one particular network: the
TensorFlow Inception-v3 graph of 2015-12-05 used by Heusel et al. (2017). pytorch-fid ported
its weights to PyTorch, patching torchvision's blocks where the graph differs (average pools
that do not count padding, a max pool in the last block); this module is the same network,
block for block, with the same parameter names, so that port's weights load directly.

Nothing is downloaded. To get the weights (once, on a machine with PyTorch):

1. Download pytorch-fid's release file ``pt_inception-2015-12-05-6726825d.pth`` from
   https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
   (the 8 hex digits in its name begin its SHA-256: check with ``sha256sum``).
2. Convert the PyTorch state dict to a numpy ``.npz`` of the same names, either with
   `convert_pytorch_checkpoint` (``pip install torch`` first) or with the one-liner::

       python -c "import numpy as np, torch; sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); np.savez('pt_inception-2015-12-05.npz', **{k: v.numpy() for k, v in sd.items()})"

3. ``extractor = InceptionExtractor.from_file("pt_inception-2015-12-05.npz")``, then
   ``extractor.features(images)`` for ``[N, H, W, 3]`` (or 1-channel) images in [-1, 1].

`load_inception_variables` checks every name and shape against this network and reports any
missing, unexpected or mis-shaped array.

Preprocessing follows pytorch-fid: images are resized to 299x299 bilinearly without
antialiasing (``F.interpolate(..., align_corners=False)``), and the network takes values in
[-1, 1] (pytorch-fid maps [0, 1] there; the generators here already produce [-1, 1]).
pytorch-fid's FIDs are close to, not exactly, those of the TensorFlow code, whose graph resizes
differently; the same holds here. The smallest input the network takes unresized is 75x75.

What is tested (tests/test_inception.py, with random weights, as the real ones cannot be
fetched offline): the parameter count (23,850,960, torchvision's Inception-v3 without its
auxiliary head, with 1,008 classes), the loader, and equality with a PyTorch rendering of
pytorch-fid's forward pass and resize. Throughput: about 5 images a second on a 2-core CPU, so
FID over 10,000 or 50,000 samples wants an accelerator.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75
NUM_FEATURES = 2048
NUM_CLASSES = 1008  # The 2015 graph's 1,001 ImageNet classes padded to 1,008.
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
)

_BATCH_NORM_EPSILON = 1e-3


class BasicConv(nn.Module):
    """Convolution without bias, BatchNorm in inference mode, ReLU: torchvision's BasicConv2d.

    Attributes:
      features: Output channels.
      kernel_size: (height, width) of the kernel.
      strides: (height, width) strides.
      padding: Symmetric zero padding (height, width), as PyTorch's ``padding``.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (ph, pw) = self.padding
        x = nn.Conv(
            self.features,
            self.kernel_size,
            self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=_BATCH_NORM_EPSILON, name="bn")(x)
        return nn.relu(x)


def _conv(features: int, kernel: int | tuple[int, int], name: str, **options) -> BasicConv:
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return BasicConv(features, kernel, name=name, **options)


def _same(kernel: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Padding that keeps the size for an odd kernel."""
    return {"padding": (kernel[0] // 2, kernel[1] // 2)}


def _average_pool(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool, patched in by pytorch-fid: the padding is not averaged in.
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, strides: int = 2, padding: int = 0) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), (strides, strides), pad)


class InceptionA(nn.Module):
    """Mixed_5b..5d: 1x1, 5x5, double 3x3 and average-pool branches (pytorch-fid FIDInceptionA)."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch1x1 = _conv(64, 1, "branch1x1")(x)
        branch5x5 = _conv(48, 1, "branch5x5_1")(x)
        branch5x5 = _conv(64, 5, "branch5x5_2", padding=(2, 2))(branch5x5)
        branch3x3dbl = _conv(64, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = _conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(branch3x3dbl)
        branch3x3dbl = _conv(96, 3, "branch3x3dbl_3", padding=(1, 1))(branch3x3dbl)
        branch_pool = _conv(self.pool_features, 1, "branch_pool")(_average_pool(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a, a reduction to half the size: strided 3x3, double 3x3 and max-pool branches."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = _conv(384, 3, "branch3x3", strides=(2, 2))(x)
        branch3x3dbl = _conv(64, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = _conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(branch3x3dbl)
        branch3x3dbl = _conv(96, 3, "branch3x3dbl_3", strides=(2, 2))(branch3x3dbl)
        return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches (1x7 then 7x1) (pytorch-fid FIDInceptionC)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        row, column = (1, 7), (7, 1)
        branch1x1 = _conv(192, 1, "branch1x1")(x)
        branch7x7 = _conv(c7, 1, "branch7x7_1")(x)
        branch7x7 = _conv(c7, row, "branch7x7_2", **_same(row))(branch7x7)
        branch7x7 = _conv(192, column, "branch7x7_3", **_same(column))(branch7x7)
        branch7x7dbl = _conv(c7, 1, "branch7x7dbl_1")(x)
        branch7x7dbl = _conv(c7, column, "branch7x7dbl_2", **_same(column))(branch7x7dbl)
        branch7x7dbl = _conv(c7, row, "branch7x7dbl_3", **_same(row))(branch7x7dbl)
        branch7x7dbl = _conv(c7, column, "branch7x7dbl_4", **_same(column))(branch7x7dbl)
        branch7x7dbl = _conv(192, row, "branch7x7dbl_5", **_same(row))(branch7x7dbl)
        branch_pool = _conv(192, 1, "branch_pool")(_average_pool(x))
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a, a reduction to half the size: 3x3 and 7x7-then-3x3 branches, and a max pool."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        row, column = (1, 7), (7, 1)
        branch3x3 = _conv(192, 1, "branch3x3_1")(x)
        branch3x3 = _conv(320, 3, "branch3x3_2", strides=(2, 2))(branch3x3)
        branch7x7x3 = _conv(192, 1, "branch7x7x3_1")(x)
        branch7x7x3 = _conv(192, row, "branch7x7x3_2", **_same(row))(branch7x7x3)
        branch7x7x3 = _conv(192, column, "branch7x7x3_3", **_same(column))(branch7x7x3)
        branch7x7x3 = _conv(192, 3, "branch7x7x3_4", strides=(2, 2))(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool) and Mixed_7c (max pool): pytorch-fid FIDInceptionE_1 and _2.

    Attributes:
      pool: "avg" or "max", the pooling of the pool branch; the 2015 graph uses a max pool in
        the last block, where torchvision has an average pool.
    """

    pool: str = "avg"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        row, column = (1, 3), (3, 1)
        branch1x1 = _conv(320, 1, "branch1x1")(x)
        branch3x3 = _conv(384, 1, "branch3x3_1")(x)
        branch3x3 = jnp.concatenate(
            [
                _conv(384, row, "branch3x3_2a", **_same(row))(branch3x3),
                _conv(384, column, "branch3x3_2b", **_same(column))(branch3x3),
            ],
            axis=-1,
        )
        branch3x3dbl = _conv(448, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = _conv(384, 3, "branch3x3dbl_2", padding=(1, 1))(branch3x3dbl)
        branch3x3dbl = jnp.concatenate(
            [
                _conv(384, row, "branch3x3dbl_3a", **_same(row))(branch3x3dbl),
                _conv(384, column, "branch3x3dbl_3b", **_same(column))(branch3x3dbl),
            ],
            axis=-1,
        )
        pooled = _average_pool(x) if self.pool == "avg" else _max_pool(x, strides=1, padding=1)
        branch_pool = _conv(192, 1, "branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in pytorch-fid's ``fid_inception_v3``, without the auxiliary head.

    Submodule names are the PyTorch ones (``Conv2d_1a_3x3``, ``Mixed_5b``, ..., ``fc``), so the
    converted state dict maps onto the parameters name for name.
    """

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps ``[B, H, W, 3]`` images in [-1, 1], H, W >= 75, to (pool3 ``[B, 2048]``, logits
        ``[B, 1008]``)."""
        x = _conv(32, 3, "Conv2d_1a_3x3", strides=(2, 2))(images)
        x = _conv(32, 3, "Conv2d_2a_3x3")(x)
        x = _conv(64, 3, "Conv2d_2b_3x3", padding=(1, 1))(x)
        x = _max_pool(x)
        x = _conv(80, 1, "Conv2d_3b_1x1")(x)
        x = _conv(192, 3, "Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool3 = x.mean(axis=(1, 2))
        return pool3, nn.Dense(NUM_CLASSES, name="fc")(pool3)


def preprocess(images: jax.Array, size: int | None = INPUT_SIZE) -> jax.Array:
    """Grey to RGB, then a bilinear resize to ``size`` without antialiasing, as pytorch-fid.

    Args:
      images: ``[B, H, W, C]`` with C = 1 or 3, values in [-1, 1].
      size: Output side; None keeps the input size (which must then be at least 75).

    Returns:
      float32 ``[B, size, size, 3]``.
    """
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [B, H, W, 1 or 3], got shape {images.shape}.")
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    if size is not None and images.shape[1:3] != (size, size):
        shape = (images.shape[0], size, size, 3)
        images = jax.image.resize(images, shape, method="linear", antialias=False)
    if min(images.shape[1:3]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"Inception-v3 needs images of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got "
            f"{images.shape[1]}x{images.shape[2]}."
        )
    return images


@functools.cache
def expected_shapes(image_size: int = INPUT_SIZE) -> dict[str, Any]:
    """The variables' shapes (``params`` and ``batch_stats``), computed without allocating them.

    Cached, as tracing the network takes a second; do not modify the returned tree.
    """
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), images)


# (last part of a PyTorch name) -> (Flax collection, Flax leaf name).
_LEAVES = {
    ("conv", "weight"): ("params", "kernel"),
    ("bn", "weight"): ("params", "scale"),
    ("bn", "bias"): ("params", "bias"),
    ("bn", "running_mean"): ("batch_stats", "mean"),
    ("bn", "running_var"): ("batch_stats", "var"),
    ("fc", "weight"): ("params", "kernel"),
    ("fc", "bias"): ("params", "bias"),
}


def variables_from_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
    """Maps pytorch-fid's state dict (numpy arrays) onto `FIDInceptionV3`'s Flax variables.

    Convolution kernels go from PyTorch's [out, in, h, w] to Flax's [h, w, in, out], the dense
    kernel from [out, in] to [in, out]; BatchNorm's weight, bias and running statistics become
    scale, bias, mean and var. ``num_batches_tracked`` counters are dropped.

    Raises:
      ValueError: listing the names that are missing, unexpected or of the wrong shape.
    """
    variables, unexpected = _nest(state_dict)
    expected, given = dict(_flatten(expected_shapes())), dict(_flatten(variables))
    missing = sorted(set(expected) - set(given))
    unexpected += sorted(set(given) - set(expected))
    wrong = [
        f"{key} {given[key].shape} (expected {expected[key].shape})"
        for key in sorted(set(given) & set(expected))
        if given[key].shape != expected[key].shape
    ]
    problems = [
        f"{len(names)} {label}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", wrong),
        )
        if names
    ]
    if problems:
        raise ValueError(
            "the weights do not fit the FID Inception-v3 (are they pytorch-fid's "
            f"{WEIGHTS_FILE}, converted to .npz?): " + "; ".join(problems) + "."
        )
    return variables


def _nest(state_dict: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """PyTorch names and layouts to nested Flax variables, and the names it cannot place."""
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    unplaced = []
    for name, value in state_dict.items():
        parts = name.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if tuple(parts[-2:]) not in _LEAVES:
            unplaced.append(name)
            continue
        collection, leaf = _LEAVES[tuple(parts[-2:])]
        value = np.asarray(value, np.float32)
        if leaf == "kernel":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
        node = variables[collection]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = value
    return variables, unplaced


def load_inception_variables(path: str | os.PathLike) -> dict[str, Any]:
    """Reads the ``.npz`` made from pytorch-fid's weights (see the module docstring)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no Inception weights at {path!r}; download {WEIGHTS_URL} and convert it to .npz "
            "as the gans.metrics.inception docstring describes."
        )
    with np.load(path) as arrays:
        return variables_from_state_dict(dict(arrays))


def convert_pytorch_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Writes pytorch-fid's ``.pth`` state dict as a ``.npz`` of the same names; needs torch."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "converting the .pth needs PyTorch (pip install torch), once; the .npz it writes "
            "does not."
        ) from error
    state_dict = torch.load(source, map_location="cpu", weights_only=True)
    np.savez(destination, **{name: tensor.numpy() for name, tensor in state_dict.items()})


@functools.partial(jax.jit, static_argnums=2)
def _forward(variables: Any, images: jax.Array, size: int | None) -> tuple[jax.Array, jax.Array]:
    return FIDInceptionV3().apply(variables, preprocess(images, size))


@dataclasses.dataclass(frozen=True)
class InceptionExtractor:
    """Batched, jitted `FIDInceptionV3` with its weights: the interface of `DigitsClassifier`.

    Attributes:
      variables: ``{"params": ..., "batch_stats": ...}``, e.g. from `load_inception_variables`.
      image_size: The side images are resized to; None feeds them as they are (tests only: FID
        needs 299).
      batch_size: Images per forward call; the last batch is padded, so one compile suffices.
    """

    variables: Any
    image_size: int | None = INPUT_SIZE
    batch_size: int = 50

    @classmethod
    def from_file(cls, path: str | os.PathLike, **options) -> InceptionExtractor:
        """An extractor with the weights of the ``.npz`` at ``path``, put on the default device."""
        return cls(jax.device_put(load_inception_variables(path)), **options)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pool3 features float32 ``[N, 2048]``, logits ``[N, 1008]``) of images in [-1, 1]."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty [N, H, W, C] array, got {images.shape}.")
        features, logits = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            chunk_features, chunk_logits = _forward(self.variables, padded, self.image_size)
            features.append(np.asarray(chunk_features)[: len(chunk)])
            logits.append(np.asarray(chunk_logits)[: len(chunk)])
        return np.concatenate(features), np.concatenate(logits)

    def features(self, images: np.ndarray) -> np.ndarray:
        """pool3 features, float32 ``[N, 2048]``: what FID and KID compare."""
        return self.outputs(images)[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits over the graph's 1,008 classes, float32 ``[N, 1008]``: the Inception Score's."""
        return self.outputs(images)[1]


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        items += _flatten(value, name) if isinstance(value, dict) else [(name, value)]
    return items
