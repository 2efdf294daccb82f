"""Training a composed experiment into its working directory.

Experiments compose a ``gans.run.Run`` (data, two models, two optimizers, the step's settings)
and call ``train_and_evaluate``; the VAE baseline composes a ``VAERun`` and calls
``train_vae``. Both train through one loop (``gans.loop``) with the same periodic actions, and
write:

    config.json      the record of the run: its whole resolved configuration
    metrics.jsonl    one JSON line per logging step (also in tensorboard/)
    samples/         pictures at every sampling step (2-D: samples over the
                     critic's contour; images: a grid at fixed latents)
    checkpoints/     the whole state every --checkpoint_every steps (Orbax)
    params.msgpack   final parameters and model state of both players

Several runs trained together (seeds or a sweep, one vmapped program) write those files,
``config.json`` aside, into ``run_0/``, ``run_1/``, ... and list each run's seed and setting in
``runs.json``. A data-parallel run writes from process 0 only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gans import checkpoints, loop, sampling, tensorboard_log, visualize
from gans import run as run_lib
from gans import state as state_lib
from gans import workdir as workdir_lib
from gans.data import Dataset


def _resume(
    workdir: pathlib.Path,
    workdirs: Sequence[pathlib.Path],
    config: dict[str, Any] | None,
    template: Any,
    checkpoint_every: int,
    runs: list[dict[str, Any]] | None,
    resumable: frozenset[str] = frozenset(),
) -> tuple[checkpoints.Checkpointer, Any, int]:
    """Checks the run folder whole, then opens its checkpoints; returns them, the state to
    start from and its step. Nothing is written before the folder has been checked."""
    workdir_lib.check_run_folder(workdir, list(workdirs), config, runs, resumable)
    checkpointer = checkpoints.Checkpointer(workdir, every=checkpoint_every)
    try:
        start = checkpointer.latest_step() or 0
        state = checkpointer.restore(template, start) if start else template
    except ValueError as error:
        # Closed before exiting: Orbax's background threads must not outlive the error.
        checkpointer.close()
        raise workdir_lib.ResumeError(str(error)) from None
    if jax.process_index() == 0:
        for w in workdirs:
            workdir_lib.truncate_log(w / workdir_lib.METRICS_FILE, start)
    return checkpointer, state, start


def _train_into(
    workdir: pathlib.Path,
    workdirs: Sequence[pathlib.Path],
    *,
    config: dict[str, Any] | None,
    state: Any,
    step_fn: Callable[[Any, Any], tuple[Any, dict]],
    next_batch: Callable[[int], Any],
    steps: int,
    log_every: int,
    sample_every: int,
    checkpoint_every: int,
    pictures: Sequence[Callable[[Any, pathlib.Path, int], np.ndarray]],
    on_progress: Callable[[loop.Progress], None] | None,
    measures: Sequence[tuple[int, bool, Callable[..., dict[str, float]]]] = (),
    replicate: Callable[[Any], Any] = lambda state: state,
    one_replica: Callable[[Any], Any] = lambda state: state,
    run_states: Callable[[Any], list[Any]] = lambda state: [state],
    save_final: Callable[[Any, pathlib.Path], None] | None = None,
    runs: list[dict[str, Any]] | None = None,
    extra: Sequence[loop.Action] = (),
) -> tuple[Any, list[dict[str, Any]], list[np.ndarray]]:
    """Resumes (or starts) the runs in ``workdirs`` and trains them to ``steps``; process 0
    then calls ``save_final(run_state, workdir)`` for each run, still holding the lock.

    ``runs`` (several runs) is written into ``runs.json`` beside the record.
    ``measures`` are ``(every, at_last, measure(run_state, k, step, workdir))``: values added
    to the log lines at the logging steps that are multiples of ``every``. ``extra`` actions
    act on process 0 after the measures and before the log; the settings they own
    (``loop.resumable_settings``) may differ from the record on resume.

    Returns the final state, each run's last log line and its final samples (process 0).
    """
    writer = jax.process_index() == 0
    with workdir_lib.one_writer(workdir, writer):
        checkpointer, state, start = _resume(
            workdir, workdirs, config, state, checkpoint_every, runs, loop.resumable_settings(extra)
        )
        try:
            state = replicate(state)

            def write_record():
                workdir_lib.write_config(workdir, config)
                if runs is not None:
                    workdir_lib.write_runs(workdir, runs)

            # In the order they act after a step: a diverged step is neither recorded, logged
            # nor saved.
            log = loop.MetricsLog(workdirs, log_every, write=writer)
            actions: list[loop.Action] = [loop.CheckFinite(log_every)]
            if writer:
                actions += [loop.FirstStep(write_record)]
                actions += [
                    loop.LineAction(every, log_every, measure, run_states, workdirs, at_last)
                    for every, at_last, measure in measures
                ]
                actions += extra
            actions.append(log)
            pictured = None
            if writer:
                pictured = sampling.Pictures(
                    pictures, run_states, workdirs, sample_every, steps, state
                )
                # After the pictures and the diagnostics, in steps and at the end: TensorBoard
                # shows the files they wrote.
                board = tensorboard_log.TensorBoard(
                    workdirs, log_every, start, sample_every=sample_every, config=config
                )
                actions += [pictured, board]
                if on_progress is not None:
                    actions.append(loop.ReportProgress(on_progress, log_every, start))
            actions.append(loop.Checkpoint(checkpointer, one_replica))
            state = loop.train(
                state,
                step_fn,
                next_batch,
                steps=steps,
                actions=actions,
                start_step=start,
                num_runs=len(workdirs),
            )
        finally:
            checkpointer.close()
        if writer and save_final is not None:
            for run_state, w in zip(run_states(state), workdirs):
                save_final(run_state, w)
    return state, log.last, pictured.final if writer else []


def _evaluator(run: run_lib.Run, seeds: list[int]) -> Callable[..., dict[str, float]] | None:
    """``gans.evaluation.sample_quality`` of run ``k`` as ``eval/NAME``, or None where the data
    set has no metric."""
    from gans import evaluation  # scipy and the digits classifier: only when asked for.

    if not evaluation.supported(run.dataset):
        return None

    def measure(state, k, step, workdir):
        del step, workdir
        quality = evaluation.sample_quality(run, state, seed=seeds[k])
        return {f"eval/{name}": float(value) for name, value in quality.items()}

    return measure


def _diagnostics(run: run_lib.Run) -> Callable[..., dict[str, float]]:
    """``gans.diagnostics`` on a fresh real batch; histograms go to ``diagnostics/step_N.npz``."""
    from gans import diagnostics

    diagnose = jax.jit(functools.partial(diagnostics.diagnose, config=run.step, clip=run.clip))
    key = jax.random.key(run.seed + 5)

    def measure(state, k, step, workdir):
        del k  # Diagnostics run on one run only.
        item = run.dataset.batch(step - 1, run.batch_size, run.seed + 5)
        batch = jax.tree.map(lambda a: jnp.asarray(a[0]), item)
        scalars, histograms = diagnostics.to_host(
            diagnose(state, batch=batch, key=jax.random.fold_in(key, step))
        )
        path = workdir_lib.diagnostics_file(workdir, step)
        path.parent.mkdir(exist_ok=True)
        np.savez(path, **{workdir_lib.histogram_key(n): v for n, v in histograms.items()})
        return scalars

    return measure


def _save_params(path: pathlib.Path, state: state_lib.GANState) -> None:
    saved = {
        "generator_params": state.generator_params,
        "generator_ema_params": state.generator_ema_params,
        "generator_state": state.generator_state,
        "critic_params": state.critic_params,
        "critic_state": state.critic_state,
        "step": state.step,
    }
    workdir_lib.write_atomically(path, serialization.to_bytes(saved))


def restore(run: run_lib.Run, workdir: str | os.PathLike) -> tuple[list[state_lib.GANState], int]:
    """Every run's state from the latest checkpoint in ``workdir``, and its step.

    Raises:
      gans.workdir.ResumeError: no checkpoint, or one that does not fit ``run``.
    """
    checkpointer = checkpoints.Checkpointer(workdir)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise ValueError(
                f"--workdir {str(workdir)!r} has no checkpoint yet; train first (or wait for "
                "the first --checkpoint_every steps)."
            )
        state = checkpointer.restore(run_lib.initial_state(run), step)
    except ValueError as error:
        raise workdir_lib.ResumeError(str(error)) from None
    finally:
        checkpointer.close()
    return run_lib.split_runs(run, state), step


def train_and_evaluate(
    run: run_lib.Run,
    workdir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    on_progress: Callable[[loop.Progress], None] | None = None,
    actions: Sequence[loop.Action] = (),
) -> dict[str, Any]:
    """Trains ``run`` and writes everything into ``workdir``.

    Several runs (``num_runs`` or ``sweep``) train as one vmapped program; run ``k`` writes
    into ``workdir/run_k`` and ``workdir/runs.json`` lists each run's seed and setting.

    Args:
      run: the composed experiment.
      workdir: output directory; must not hold a previous run.
      config: settings to record in ``config.json`` (e.g. the flag values).
      on_progress: called at every logging step (the experiment prints it).
      actions: periodic actions of the caller's own (``gans.loop.Action``: called with each
        step's ``Moment``, then ``end`` and ``close``), run on process 0 after the evaluation
        and diagnostics and before the metrics log, so that what one adds to
        ``moment.lines`` is logged; ``moment.state`` is the state as the step keeps it
        (stacked over runs, replicated over devices). Each owns its interval and its files,
        and names in ``resumable_settings`` the recorded settings a resume may change.

    Returns:
      The last logged metrics, plus mode coverage for Gaussian mixtures; with several runs,
      ``{"runs": [one such dict per run]}``.

    Raises:
      gans.loop.NonFiniteError: a logged metric became NaN or infinite; the parameters
        are not saved, the metrics log keeps every line written before.
    """
    workdir = workdir_lib.check_workdir(workdir)
    run_lib.check_memory(run)
    start = time.perf_counter()
    seeds = run.seeds()
    num_runs = len(seeds)
    sharded = run.num_devices > 1 or jax.process_count() > 1
    # Each run draws its pictures from its own fixed latents, as it would alone.
    samplers = [
        sampling.Sampler(
            run.step,
            run.dataset,
            run.num_samples,
            jax.random.split(jax.random.key(seed))[1],
            real_seed=run.seed + 1,
        )
        for seed in seeds
    ]
    layout = run_lib.layout(run, num_runs) if sharded else None

    def next_batch(step):
        items = [run_lib.process_item(run, step, seed) for seed in seeds]
        item = items[0] if num_runs == 1 else jax.tree.map(lambda *a: np.stack(a), *items)
        return layout.shard(item) if sharded else item

    def run_states(state):
        return run_lib.split_runs(run, layout.one_copy(state) if sharded else state)

    measures = []
    evaluate = _evaluator(run, seeds) if run.eval_every else None
    if evaluate is not None:
        measures.append((run.eval_every, True, evaluate))
    if run.diagnose_every:
        measures.append((run.diagnose_every, False, _diagnostics(run)))
    workdirs = run_lib.run_directories(run, workdir)
    entries = [
        {"run": k, "directory": w.name, "seed": s} for k, (w, s) in enumerate(zip(workdirs, seeds))
    ]
    if run.sweep is not None:
        for entry, value in zip(entries, run.sweep.values):
            entry[run.sweep.name] = value
    state, lasts, fakes = _train_into(
        workdir,
        workdirs,
        config=config,
        state=run_lib.initial_state(run),
        step_fn=run_lib.compile_step(run, num_runs, sharded),
        next_batch=next_batch,
        steps=run.steps,
        log_every=run.log_every,
        sample_every=run.sample_every,
        checkpoint_every=run.checkpoint_every,
        pictures=[sampler.save for sampler in samplers],
        on_progress=on_progress,
        measures=measures,
        replicate=layout.replicate if sharded else _same,
        one_replica=layout.one_copy if sharded else _same,
        run_states=run_states,
        save_final=lambda state, w: _save_params(w / workdir_lib.PARAMS_FILE, state),
        runs=entries if num_runs > 1 else None,
        extra=actions,
    )
    if jax.process_index() != 0:
        return {**lasts[0], "wall_seconds": time.perf_counter() - start}
    summaries = []
    for run_state, last, fake, seed in zip(run_states(state), lasts, fakes, seeds):
        last = {**last, **sampling.mode_summary(run.dataset, fake)}
        if run.step.info is not None and hasattr(run.dataset, "labels"):
            sample_key = jax.random.split(jax.random.key(seed))[1]
            last.update(sampling.code_purity(run.step, run.dataset, run_state, sample_key))
        summaries.append(last)
    wall = time.perf_counter() - start
    if num_runs == 1:
        return {**summaries[0], "wall_seconds": wall}
    return {"runs": summaries, "wall_seconds": wall}


def _same(state: Any) -> Any:
    return state


@dataclasses.dataclass(frozen=True)
class VAERun:
    """A VAE baseline, trained on the same data and logged like the GANs.

    Attributes:
      dataset: where batches come from.
      model: a ``gans.models.VAE``.
      tx: its optax optimizer.
      config: the ELBO's settings.
      latent_dim: size of the prior ``N(0, I)`` samples are decoded from.
      batch_size, steps, seed, log_every, sample_every, num_samples: as for ``gans.run.Run``.
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
    checkpoint_every: int = 1000


def train_vae(
    run: VAERun,
    workdir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    on_progress: Callable[[loop.Progress], None] | None = None,
) -> dict[str, Any]:
    """Trains a VAE with the GANs' loop, logs and pictures (samples decoded from the prior)."""
    from gans import vae as vae_lib

    workdir = workdir_lib.check_workdir(workdir)
    start = time.perf_counter()
    init_key, sample_key = jax.random.split(jax.random.key(run.seed))
    first = run.dataset.batch(0, run.batch_size, run.seed)
    state = vae_lib.create_vae_state(
        model=run.model,
        tx=run.tx,
        example=jnp.asarray(first["x"][0]),
        key=init_key,
        config=run.config,
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

    def save_final(state, w):
        saved = {"params": state.params, "ema_params": state.ema_params, "step": state.step}
        workdir_lib.write_atomically(w / workdir_lib.PARAMS_FILE, serialization.to_bytes(saved))

    _, (last,), (samples,) = _train_into(
        workdir,
        [workdir],
        config=config,
        state=state,
        step_fn=jax.jit(vae_lib.make_vae_train_step(run.config), donate_argnums=0),
        next_batch=lambda step: run.dataset.batch(step - 1, run.batch_size, run.seed),
        steps=run.steps,
        log_every=run.log_every,
        sample_every=run.sample_every,
        checkpoint_every=run.checkpoint_every,
        pictures=[save_samples],
        on_progress=on_progress,
        save_final=save_final,
    )
    return {
        **last,
        **sampling.mode_summary(run.dataset, samples),
        "wall_seconds": time.perf_counter() - start,
    }
