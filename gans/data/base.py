"""The interface every data set implements and what they share: stateless, random-access items
(``Dataset``), the epoch scheme of finite sets (``item_indices``), read-ahead (``prefetch``),
the checks of a request and of a factory's options, and the prefixes of the open families.

The package ``gans.data`` is the registry and the public face; its loaders import from here.
"""

import abc
import collections
import concurrent.futures
import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable, Iterator

import numpy as np

from gans.data.toy import GaussianMixture

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
        check_request(start, batch_size, seed, group)
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
    check_request(start, batch_size, seed, group)
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


def check_request(index: int, batch_size: int, seed: int, group: int) -> None:
    if not 0 <= index < _INT32_LIMIT:
        raise ValueError(f"batch index must be in [0, 2**31), got {index}.")
    if not 0 <= seed < _INT32_LIMIT:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}.")
    if batch_size < 1 or group < 1:
        raise ValueError(f"batch_size and group must be >= 1, got {batch_size} and {group}.")


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


TFDS_PREFIX = "tfds:"  # "tfds:svhn_cropped" names any TFDS image dataset.
FOLDER_PREFIX = "folder:"  # "folder:PATH": a folder of PNG or JPEG images (gans.data.files).
NPZ_PREFIX = "npz:"  # "npz:PATH": images (and labels) as arrays in an .npz file.


def check_options(name: str, target: Callable, options: dict, *args) -> None:
    """Refuses ``options`` that ``target`` (a data set's factory or class) does not take, as
    a ``ValueError`` naming the data set; a ``TypeError`` of the factory's own work is a bug,
    and is not dressed up as the user's."""
    try:
        inspect.signature(target).bind(*args, **options)
    except TypeError as error:
        raise ValueError(f"dataset {name!r} rejected options {options}: {error}.") from None
