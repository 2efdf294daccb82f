"""The training loop: compile the step, feed it data, write logs, samples and parameters.

Experiments compose a ``Run`` (data, two models, two optimizers, the step's
settings) and call ``train_and_evaluate``. Everything the loop produces goes
into the run's working directory:

    config.json      the experiment's settings, as given
    metrics.jsonl    one JSON line per logging step
    samples/         pictures at every sampling step (2-D: samples over the
                     critic's contour; images: a grid at fixed latents)
    params.msgpack   final parameters and model state of both players
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gans import train as train_lib
from gans import visualize
from gans.data import Dataset
from gans.metrics import mixture

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"


class NonFiniteError(FloatingPointError):
    """A loss, penalty, gradient or parameter norm became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One experiment, fully composed.

    Attributes:
      dataset: where real batches come from.
      generator, critic: Flax modules (``gans.models`` contract).
      generator_tx, critic_tx: optax optimizers, schedules included.
      step: the train step's static settings.
      n_critic: critic updates per generator update.
      batch_size: examples per critic (and generator) update.
      steps: generator updates to run.
      seed: the single seed every random stream derives from.
      log_every: steps between metrics lines (and non-finite checks).
      sample_every: steps between sample pictures; 0 for the final one only.
      num_samples: samples drawn for pictures and mode counts.
      critic_schedule: if set, ``step -> critic updates`` for that generator step (1-based),
        overriding ``n_critic``; see ``wgan_critic_schedule``.
    """

    dataset: Dataset
    generator: nn.Module
    critic: nn.Module
    generator_tx: optax.GradientTransformation
    critic_tx: optax.GradientTransformation
    step: train_lib.StepConfig
    n_critic: int
    batch_size: int
    steps: int
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: int = 2500
    critic_schedule: Callable[[int], int] | None = None

    def critic_updates(self, step: int) -> int:
        """Critic updates before generator step ``step`` (1-based)."""
        return self.critic_schedule(step) if self.critic_schedule else self.n_critic

    def __post_init__(self):
        for name in ("n_critic", "batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be >= 0, got {self.sample_every}.")


def wgan_critic_schedule(warmup_updates: int = 100, n_critic: int = 5) -> Callable[[int], int]:
    """The original WGAN code's schedule: ``warmup_updates`` critic updates for the first
    25 generator steps and every 500th, ``n_critic`` otherwise (Arjovsky et al., 2017)."""

    def schedule(step: int) -> int:
        return warmup_updates if step <= 25 or step % 500 == 0 else n_critic

    return schedule


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the loop reports at each logging step."""

    step: int
    steps: int
    steps_per_second: float
    eta_seconds: float
    metrics: dict[str, float]


def check_workdir(workdir: str | os.PathLike) -> pathlib.Path:
    """Refuses a workdir that is a file or already holds a run, before anything is written."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir {str(path)!r} is a file; give a directory path.")
    if (path / METRICS_FILE).exists() or (path / PARAMS_FILE).exists():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a run; choose a new directory or delete it."
        )
    return path


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(
            f"training diverged: {', '.join(bad)} became non-finite at step {step}; lower the "
            "learning rates or raise the penalty weight."
        )


class _Sampler:
    """Draws pictures from fixed latents so that successive ones are comparable.

    Conditional and InfoGAN generators get one grid row per class (or category of
    the categorical code), so a row should show one kind of sample.
    """

    def __init__(self, run: Run, key: jax.Array):
        self._run = run
        config = run.step
        self.is_toy = len(run.dataset.element_shape) == 1
        classes = config.num_classes or (config.info.num_categories if config.info else None)
        self.columns = 10 if classes else 8
        n = run.num_samples if self.is_toy else (self.columns * classes if classes else 64)
        z_key, code_key, label_key = jax.random.split(key, 3)
        z = jax.random.normal(z_key, (n, config.z_dim), jnp.float32)
        row_labels = jnp.arange(n) // self.columns % classes if classes else None
        if self.is_toy and classes:
            row_labels = jax.random.randint(label_key, (n,), 0, classes)
        self._labels = row_labels if config.num_classes else None
        if config.info is not None:
            continuous = jax.random.uniform(
                code_key, (n, config.info.num_continuous), minval=-1.0, maxval=1.0
            )
            z = jnp.concatenate(
                [z, jax.nn.one_hot(row_labels, config.info.num_categories), continuous], axis=1
            )
        self._z = z
        self._real = run.dataset.batch(0, n, run.seed + 1)["x"][0] if self.is_toy else None
        self._generate = jax.jit(train_lib.generate)
        self._critic = jax.jit(_critic_scores)

    def samples(self, state: train_lib.GANState) -> np.ndarray:
        fake = self._generate(state, self._z, self._labels)
        # Multi-scale generators return one image per scale, smallest first.
        return np.asarray(jax.tree.leaves(fake)[-1])

    def save(self, state: train_lib.GANState, path: pathlib.Path, step: int) -> np.ndarray:
        fake = self.samples(state)
        if self.is_toy:
            extent = float(np.max(np.abs(self._real))) * 1.4 + 0.2
            critic_fn = None
            if self._run.step.num_classes is None:  # A conditional critic has one map per class.
                critic_fn = lambda x: self._critic(state, jnp.asarray(x))
            visualize.save_critic_contour(
                path,
                real=np.asarray(self._real),
                fake=fake,
                critic_fn=critic_fn,
                extent=extent,
                title=f"{self._run.dataset.name}, generator step {step}",
            )
        else:
            visualize.save_image_grid(fake, path, columns=self.columns)
        return fake


def _critic_scores(state: train_lib.GANState, x: jax.Array) -> jax.Array:
    out = state.critic.apply({"params": state.critic_params, **state.critic_state}, x, train=False)
    return out[0] if isinstance(out, tuple) else out


def _summary(dataset: Dataset, fake: np.ndarray) -> dict[str, Any]:
    found = getattr(dataset, "mixture", None)
    if found is None:
        return {}
    return mixture.mode_coverage(fake, found.centres, found.sigma)


def _write_config(workdir: pathlib.Path, config: dict[str, Any] | None) -> None:
    (workdir / "samples").mkdir(parents=True, exist_ok=True)
    with open(workdir / CONFIG_FILE, "w") as f:
        json.dump(config or {}, f, indent=2, sort_keys=True, default=str)


def _train_loop(
    *,
    workdir: pathlib.Path,
    state: Any,
    step_fn: Callable[[Any, dict], tuple[Any, dict]],
    next_batch: Callable[[int], dict],
    steps: int,
    log_every: int,
    sample_every: int,
    save_samples: Callable[[Any, pathlib.Path, int], np.ndarray],
    on_progress: Callable[[Progress], None] | None,
) -> tuple[Any, dict[str, Any], np.ndarray]:
    """The loop every model shares: step, log, check for NaN, draw pictures.

    Returns the final state, the last metrics line and the final samples.
    """
    last: dict[str, Any] = {}
    timed_from, timed_steps = time.perf_counter(), 0
    with open(workdir / METRICS_FILE, "a") as log:
        for step in range(1, steps + 1):
            state, metrics = step_fn(state, next_batch(step))
            if step == 1:
                # The first step includes compilation; time the rest.
                jax.block_until_ready(metrics)
                timed_from = time.perf_counter()
            else:
                timed_steps += 1
            if step % log_every == 0 or step == steps:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(step, values)
                rate = math.nan
                if timed_steps:
                    rate = timed_steps / (time.perf_counter() - timed_from)
                last = {"step": step, **values}
                log.write(json.dumps(last) + "\n")
                log.flush()
                if on_progress is not None:
                    on_progress(Progress(step, steps, rate, (steps - step) / rate, values))
            if sample_every and step % sample_every == 0 and step != steps:
                save_samples(state, workdir / "samples" / f"step_{step:07d}.png", step)
    final_picture = workdir / "samples" / f"step_{steps:07d}.png"
    samples = save_samples(state, final_picture, steps)
    shutil.copyfile(final_picture, workdir / "samples.png")
    return state, last, samples


def train_and_evaluate(
    run: Run,
    workdir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Trains ``run`` and writes everything into ``workdir``.

    Args:
      run: the composed experiment.
      workdir: output directory; must not hold a previous run.
      config: settings to record in ``config.json`` (e.g. the flag values).
      on_progress: called at every logging step (the experiment prints it).

    Returns:
      The last logged metrics, plus mode coverage for Gaussian mixtures.

    Raises:
      NonFiniteError: a logged metric became NaN or infinite; the parameters
        are not saved, the metrics log keeps every line written before.
    """
    workdir = check_workdir(workdir)
    start = time.perf_counter()
    init_key, sample_key = jax.random.split(jax.random.key(run.seed))
    first = run.dataset.batch(0, run.batch_size, run.seed)
    state = train_lib.create_state(
        generator=run.generator,
        critic=run.critic,
        generator_tx=run.generator_tx,
        critic_tx=run.critic_tx,
        config=run.step,
        example=jnp.asarray(first["x"][0]),
        key=init_key,
    )
    sampler = _Sampler(run, sample_key)
    _write_config(workdir, config)
    state, last, fake = _train_loop(
        workdir=workdir,
        state=state,
        step_fn=jax.jit(train_lib.make_train_step(run.step), donate_argnums=0),
        next_batch=lambda step: run.dataset.batch(
            step - 1, run.batch_size, run.seed, group=run.critic_updates(step)
        ),
        steps=run.steps,
        log_every=run.log_every,
        sample_every=run.sample_every,
        save_samples=sampler.save,
        on_progress=on_progress,
    )
    with open(workdir / PARAMS_FILE, "wb") as f:
        f.write(
            serialization.to_bytes(
                {
                    "generator_params": state.generator_params,
                    "generator_ema_params": state.generator_ema_params,
                    "generator_state": state.generator_state,
                    "critic_params": state.critic_params,
                    "critic_state": state.critic_state,
                    "step": state.step,
                }
            )
        )
    last.update(_summary(run.dataset, fake))
    if run.step.info is not None and hasattr(run.dataset, "labels"):
        last.update(_code_purity(run, state, sample_key))
    last["wall_seconds"] = time.perf_counter() - start
    return last


def _code_purity(
    run: Run, state: train_lib.GANState, key: jax.Array, per_category: int = 100
) -> dict[str, Any]:
    """InfoGAN: how well the categorical code picks out classes, judged by nearest real images."""
    from gans.metrics import classes

    info = run.step.info
    categories = jnp.repeat(jnp.arange(info.num_categories), per_category)
    z_key, code_key = jax.random.split(jax.random.fold_in(key, 1))
    z = jax.random.normal(z_key, (len(categories), run.step.z_dim))
    continuous = jax.random.uniform(
        code_key, (len(categories), info.num_continuous), minval=-1.0, maxval=1.0
    )
    z = jnp.concatenate([z, jax.nn.one_hot(categories, info.num_categories), continuous], 1)
    samples = jax.tree.leaves(train_lib.generate(state, z))[-1]
    labels = classes.nearest_neighbour_labels(
        np.asarray(samples), run.dataset.images, run.dataset.labels
    )
    result = classes.category_purity(np.asarray(categories), labels, run.dataset.num_classes)
    return {"code_purity": result["purity"], "code_distinct_classes": result["distinct"]}


@dataclasses.dataclass(frozen=True)
class VAERun:
    """A VAE baseline, trained on the same data and logged like the GANs.

    Attributes:
      dataset: where batches come from.
      model: a ``gans.models.VAE``.
      tx: its optax optimizer.
      config: the ELBO's settings.
      latent_dim: size of the prior ``N(0, I)`` samples are decoded from.
      batch_size, steps, seed, log_every, sample_every, num_samples: as for ``Run``.
    """

    dataset: Dataset
    model: nn.Module
    tx: optax.GradientTransformation
    config: Any
    latent_dim: int
    batch_size: int
    steps: int
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: int = 2500


def train_vae(
    run: VAERun,
    workdir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Trains a VAE with the GANs' loop, logs and pictures (samples decoded from the prior)."""
    from gans import vae as vae_lib

    workdir = check_workdir(workdir)
    start = time.perf_counter()
    init_key, sample_key = jax.random.split(jax.random.key(run.seed))
    first = run.dataset.batch(0, run.batch_size, run.seed)
    state = vae_lib.create_vae_state(
        model=run.model, tx=run.tx, example=jnp.asarray(first["x"][0]), key=init_key
    )
    is_toy = len(run.dataset.element_shape) == 1
    n = run.num_samples if is_toy else 64
    z = jax.random.normal(sample_key, (n, run.latent_dim), jnp.float32)
    real = np.asarray(run.dataset.batch(0, n, run.seed + 1)["x"][0]) if is_toy else None
    generate = jax.jit(vae_lib.vae_generate)

    def save_samples(state, path, step):
        samples = np.asarray(generate(state, z))
        if is_toy:
            extent = float(np.max(np.abs(real))) * 1.4 + 0.2
            visualize.save_critic_contour(
                path,
                real=real,
                fake=samples,
                extent=extent,
                title=f"VAE on {run.dataset.name}, step {step}",
            )
        else:
            visualize.save_image_grid(samples, path, columns=8)
        return samples

    _write_config(workdir, config)
    state, last, samples = _train_loop(
        workdir=workdir,
        state=state,
        step_fn=jax.jit(vae_lib.make_vae_train_step(run.config), donate_argnums=0),
        next_batch=lambda step: run.dataset.batch(step - 1, run.batch_size, run.seed),
        steps=run.steps,
        log_every=run.log_every,
        sample_every=run.sample_every,
        save_samples=save_samples,
        on_progress=on_progress,
    )
    with open(workdir / PARAMS_FILE, "wb") as f:
        f.write(serialization.to_bytes({"params": state.params, "step": state.step}))
    last.update(_summary(run.dataset, samples))
    last["wall_seconds"] = time.perf_counter() - start
    return last
