"""Samples of a generator: fixed latents for pictures, draws for metrics, InfoGAN's purity.

Every generator input is built here or in ``train._latents`` through one builder of InfoGAN's
codes (``gans.models.infogan.generator_input``).
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gans import loop, packing, step_config, visualize
from gans import state as state_lib
from gans import train as train_lib
from gans import workdir as workdir_lib
from gans.data import Dataset
from gans.metrics import mixture
from gans.models import infogan


def _inputs(
    config: step_config.StepConfig,
    z: jax.Array,
    key: jax.Array,
    categories: jax.Array | None = None,
) -> jax.Array:
    """``z`` with InfoGAN's codes appended where the generator takes them."""
    if config.info is None:
        return z
    info = config.info
    return infogan.generator_input(z, key, info.num_categories, info.num_continuous, categories)[0]


def _largest(fake: Any) -> np.ndarray:
    # Multi-scale generators return one image per scale, smallest first.
    return np.asarray(jax.tree.leaves(fake)[-1])


def draw_samples(
    config: step_config.StepConfig,
    state: state_lib.GANState,
    num: int,
    key: jax.Array,
    labels: jax.Array | None = None,
    categories: jax.Array | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``num`` samples of a trained generator (its moving average where kept).

    A conditional generator gets ``labels`` (default: uniform draws); InfoGAN's codes are drawn
    from their priors, or with the categorical code fixed to ``categories``. Multi-scale
    generators give their largest image.

    Returns:
      The samples ``[num, ...]`` and the labels they were drawn for (None if unconditional).
    """
    z_key, code_key, label_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (num, config.z_dim), jnp.float32)
    if categories is not None and config.info is None:
        raise ValueError("categories are InfoGAN's categorical code; this generator has none.")
    z = _inputs(config, z, code_key, categories)
    if config.num_classes is not None and labels is None:
        labels = jax.random.randint(label_key, (num,), 0, config.num_classes)
    if config.num_classes is None:
        labels = None
    samples = _largest(jax.jit(train_lib.generate)(state, z, labels))
    return samples, None if labels is None else np.asarray(labels)


def critic_scores(state: state_lib.GANState, x: jax.Array, pack: int = 1) -> jax.Array:
    """The critic's scores of ``x`` (BatchNorm's running averages, no auxiliary outputs).

    A critic of packs of ``pack`` examples scores each example packed with copies of itself
    (``gans.packing.diagonal``): its map over the plane on the diagonal of ``X^pack``.
    """
    x = packing.diagonal(x, pack) if pack > 1 else x
    out = state.critic.apply({"params": state.critic_params, **state.critic_state}, x, train=False)
    return out[0] if isinstance(out, tuple) else out


class Sampler:
    """Draws pictures from fixed latents so that successive ones are comparable.

    Conditional and InfoGAN generators get one grid row per class (or category of the
    categorical code), so a row should show one kind of sample. 2-D data are drawn over the
    critic's contour.
    """

    def __init__(
        self,
        config: step_config.StepConfig,
        dataset: Dataset,
        num_samples: int,
        key: jax.Array,
        real_seed: int,
    ):
        self._config, self._dataset = config, dataset
        self.is_toy = len(dataset.element_shape) == 1
        classes = config.num_classes or (config.info.num_categories if config.info else None)
        self.columns = 10 if classes else 8
        n = num_samples if self.is_toy else (self.columns * classes if classes else 64)
        z_key, code_key, label_key = jax.random.split(key, 3)
        z = jax.random.normal(z_key, (n, config.z_dim), jnp.float32)
        row_labels = jnp.arange(n) // self.columns % classes if classes else None
        if self.is_toy and classes:
            row_labels = jax.random.randint(label_key, (n,), 0, classes)
        self._labels = row_labels if config.num_classes else None
        self._z = _inputs(config, z, code_key, row_labels)
        self._real = None
        if self.is_toy:
            self._real = np.asarray(dataset.batch(0, n, real_seed)["x"][0])
        self._generate = jax.jit(train_lib.generate)
        self._critic = jax.jit(functools.partial(critic_scores, pack=config.pack))

    def samples(self, state: state_lib.GANState) -> np.ndarray:
        return _largest(self._generate(state, self._z, self._labels))

    def save(self, state: state_lib.GANState, path: pathlib.Path, step: int) -> np.ndarray:
        """Writes the picture of ``state``'s samples to ``path`` and returns the samples."""
        fake = self.samples(state)
        if self.is_toy:
            extent = float(np.max(np.abs(self._real))) * 1.4 + 0.2
            critic_fn = None
            if self._config.num_classes is None:  # A conditional critic has one map per class.
                critic_fn = lambda x: self._critic(state, jnp.asarray(x))
            visualize.save_critic_contour(
                path,
                real=self._real,
                fake=fake,
                critic_fn=critic_fn,
                extent=extent,
                title=f"{self._dataset.name}, generator step {step}",
            )
        else:
            visualize.save_image_grid(fake, path, columns=self.columns)
        return fake


class Pictures(loop.PeriodicAction):
    """Each run's samples every ``every`` steps into ``samples/step_N.png``; at the end the
    final picture (also as ``samples.png``) and ``curves.png`` of the metrics log.

    Attributes:
      final: each run's final samples, once the loop has ended.
    """

    at_last = False  # The last step's picture is drawn by ``end``, also for a finished run.

    def __init__(
        self,
        save: Sequence[Callable[[Any, pathlib.Path, int], np.ndarray]],
        run_states: Callable[[Any], list[Any]],
        workdirs: Sequence[pathlib.Path],
        every: int,
        steps: int,
        state: Any,
    ):
        super().__init__(every)
        self.save, self.run_states, self.workdirs = list(save), run_states, list(workdirs)
        self.steps, self.state, self.final = steps, state, []
        for w in self.workdirs:
            (w / "samples").mkdir(parents=True, exist_ok=True)

    def apply(self, moment: loop.Moment) -> None:
        if moment.last:
            return
        for save, state, w in zip(self.save, self.run_states(moment.state), self.workdirs):
            save(state, workdir_lib.sample_picture(w, moment.step), moment.step)

    def end(self, moment: loop.Moment | None) -> None:
        state = self.state if moment is None else moment.state
        for save, run_state, w in zip(self.save, self.run_states(state), self.workdirs):
            picture = workdir_lib.sample_picture(w, self.steps)
            self.final.append(save(run_state, picture, self.steps))
            workdir_lib.write_atomically(w / "samples.png", picture.read_bytes())
            records = workdir_lib.read_log(w / workdir_lib.METRICS_FILE)
            visualize.save_curves(records, w / "curves.png", title=w.name)


def mode_summary(dataset: Dataset, fake: np.ndarray) -> dict[str, Any]:
    """Modes captured and high-quality samples, for data sets that are Gaussian mixtures."""
    found = getattr(dataset, "mixture", None)
    if found is None:
        return {}
    return mixture.mode_coverage(fake, found.centres, found.sigma)


def code_purity(
    config: step_config.StepConfig,
    dataset: Dataset,
    state: state_lib.GANState,
    key: jax.Array,
    per_category: int = 100,
) -> dict[str, Any]:
    """InfoGAN: how well the categorical code picks out classes.

    Each sample's class is read by the data set's own classifier where its ``scoring`` names
    one for its image size (sklearn's digits, MNIST), else taken from its nearest real image
    (pixel distance).
    """
    from gans.metrics import classes, digits_classifier

    info = config.info
    categories = jnp.repeat(jnp.arange(info.num_categories), per_category)
    z_key, code_key = jax.random.split(jax.random.fold_in(key, 1))
    z = jax.random.normal(z_key, (len(categories), config.z_dim))
    samples = _largest(train_lib.generate(state, _inputs(config, z, code_key, categories)))
    scoring = dataset.scoring
    classifier = None
    if scoring is not None and not scoring.stacked:
        classifier = digits_classifier.classifier_for(scoring, dataset.element_shape[0])
    if classifier is not None:
        labels = classifier.predict(samples)
    else:
        labels = classes.nearest_neighbour_labels(samples, dataset.images, dataset.labels)
    result = classes.category_purity(np.asarray(categories), labels, dataset.num_classes)
    return {"code_purity": result["purity"], "code_distinct_classes": result["distinct"]}
