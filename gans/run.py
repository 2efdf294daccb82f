"""A composed experiment (``Run``) and what follows from it alone: its runs' seeds, its first
state, its compiled step and the batch each process feeds it.

``gans.runner`` trains a ``Run`` into a working directory.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gans import packing, parallel, step_config
from gans import state as state_lib
from gans import sweep as sweep_lib
from gans import train as train_lib
from gans.data import Dataset


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
      num_devices: local devices to train on with ``pmap`` (1: ``jit`` on one device);
        ``batch_size`` is the global batch, split over every device of every process. Models
        with BatchNorm must then be built with ``axis_name=gans.parallel.AXIS``.
      num_runs: independent runs with seeds ``seed, seed + 1, ...``, trained as one vmapped
        program (``gans.sweep``); each writes into its own ``run_K`` directory.
      sweep: runs (all with ``seed``) that differ in one hyper-parameter, trained likewise.
        The optimizers must be built with ``make_optimizer(..., sweepable=True)`` to sweep a
        learning rate or the clip bound.
      checkpoint_every: steps between checkpoints (0: only the last step's); re-running on
        the same workdir resumes from the latest one.
      eval_every: score samples (``gans.evaluation``) at the logging steps that are multiples
        of this, and at the last; logged as ``eval/...``. 0: never.
      diagnose_every: log ``gans.diagnostics`` (input- and activation-gradient norms, the
        generator's gradient norm, weight histograms into ``diagnostics/step_N.npz``) at the
        logging steps that are multiples of this; one run on one device only. 0: never.
      clip: the critic's weight-clipping bound, for the diagnostics' weight histograms.
      run_axis: how several runs share the program: "vmap", "map" (one after another inside
        it) or "auto", chosen per backend (``gans.sweep.resolve_run_axis``).
      parallel: how a run over several devices is compiled, "pmap" or "shard_map"
        (``gans.parallel.data_parallel``).
    """

    dataset: Dataset
    generator: nn.Module
    critic: nn.Module
    generator_tx: optax.GradientTransformation
    critic_tx: optax.GradientTransformation
    step: step_config.StepConfig
    n_critic: int
    batch_size: int
    steps: int
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: int = 2500
    critic_schedule: Callable[[int], int] | None = None
    num_devices: int = 1
    num_runs: int = 1
    sweep: sweep_lib.Sweep | None = None
    checkpoint_every: int = 1000
    eval_every: int = 0
    diagnose_every: int = 0
    clip: float | None = None
    run_axis: str = "auto"
    parallel: str = "pmap"

    def seeds(self) -> list[int]:
        """The seed of every run trained together."""
        if self.sweep is not None:
            return [self.seed] * len(self.sweep.values)
        return [self.seed + k for k in range(self.num_runs)]

    def critic_updates(self, step: int) -> int:
        """Critic updates before generator step ``step`` (1-based)."""
        return self.critic_schedule(step) if self.critic_schedule else self.n_critic

    def __post_init__(self):
        for name in ("n_critic", "batch_size", "steps", "log_every", "num_devices", "num_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be >= 0, got {self.sample_every}.")
        sweep_lib.resolve_run_axis(self.run_axis)  # Checks the name.
        if self.parallel not in parallel.TRANSFORMS:
            raise ValueError(
                f"parallel must be one of {', '.join(parallel.TRANSFORMS)}, got {self.parallel!r}."
            )
        if self.sweep is not None and self.num_runs > 1:
            raise ValueError("give either several seeds (num_runs) or a sweep, not both.")
        for name in ("checkpoint_every", "eval_every", "diagnose_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.batch_size % self.num_devices == 0:  # Else gans.parallel.devices says so.
            # Packs never straddle devices: each device's batch splits into whole packs.
            packing.check_pack(self.step.pack, self.batch_size // self.num_devices)
        if self.diagnose_every and self.step.pack > 1:
            raise ValueError(
                "the diagnostics measure a critic of single examples; drop --diagnose_every or "
                "--pack."
            )
        if self.diagnose_every and (self.num_devices > 1 or len(self.seeds()) > 1):
            raise ValueError(
                "diagnostics run on one device and one run; drop --diagnose_every or train "
                "with --num_devices=1 and without --num_runs / --sweep."
            )


def wgan_critic_schedule(warmup_updates: int = 100, n_critic: int = 5) -> Callable[[int], int]:
    """The original WGAN code's schedule: ``warmup_updates`` critic updates for the first
    25 generator steps and every 500th, ``n_critic`` otherwise (Arjovsky et al., 2017)."""

    def schedule(step: int) -> int:
        return warmup_updates if step <= 25 or step % 500 == 0 else n_critic

    return schedule


def per_critic_update(
    schedule: optax.Schedule, steps: int, updates: Callable[[int], int]
) -> optax.Schedule:
    """``schedule``, a function of the generator step, as a function of the critic's update count.

    An optimizer's schedule is called with the number of updates it has made, and the critic
    makes several per generator step (``updates(step)`` before 1-based generator step ``step``:
    ``Run.critic_updates``). Called with that count, a schedule laid out over ``steps``
    generator steps would run ``n_critic`` times too fast: a linear decay would reach 0 a fifth
    of the way in at n_critic 5 and leave the critic frozen from there. Here every critic
    update of 0-based generator step ``s`` gets ``schedule(s)``, as in the released WGAN-GP and
    SNGAN codes, whose rates decay per generator iteration for both players.
    """
    counts = [updates(step) for step in range(1, steps + 1)]
    if len(set(counts)) == 1:
        n = counts[0]
        return lambda count: schedule(count // n)
    # Critic updates made by the end of each generator step; update `count` (0-based) belongs
    # to the step of the first end above it.
    ends = jnp.asarray(list(itertools.accumulate(counts)))
    return lambda count: schedule(jnp.searchsorted(ends, count, side="right"))


def make_pmapped_train_step(
    config: step_config.StepConfig,
    devices: Sequence[Any] | None = None,
    *,
    vmapped: bool = False,
    run_axis: str = "vmap",
    transform: str = "pmap",
) -> Callable[[state_lib.GANState, Any], tuple[state_lib.GANState, dict]]:
    """The train step data-parallel over ``devices`` (by default every device of every process),
    by ``jax.pmap`` or ``jax.shard_map`` (``transform``: ``gans.parallel.data_parallel``).

    Takes a state and batches placed by ``gans.parallel.Layout`` for ``transform`` (under
    ``pmap`` a replica per device and ``[devices, n_critic, B / devices, ...]`` batches) and
    returns the new state (donated) and the global metrics, laid out alike. Models with
    BatchNorm must be built with ``axis_name=gans.parallel.AXIS`` so their statistics are
    those of the global batch. With these, training equals the single-device step on the
    global batch up to float reduction order. ``vmapped`` trains K stacked runs on every
    device (``gans.sweep``): state ``[devices, K, ...]``, batches ``[devices, K, n_critic, ...]``,
    their run axis laid out as ``run_axis`` says (``gans.sweep.over_runs``).
    """
    config = dataclasses.replace(config, axis_name=parallel.AXIS)
    step = train_lib.make_train_step(config)
    step = sweep_lib.over_runs(step, run_axis) if vmapped else step
    return parallel.data_parallel(step, devices, transform, batch_axis=2 if vmapped else 1)


def layout(run: Run, num_runs: int) -> parallel.Layout:
    """Where ``num_runs`` runs' state and batches live on several devices (``run.parallel``)."""
    devices = parallel.devices(run.num_devices, run.batch_size)
    return parallel.Layout(run.parallel, tuple(devices), batch_axis=2 if num_runs > 1 else 1)


def compile_step(run: Run, num_runs: int, sharded: bool):
    """The train step for ``num_runs`` runs, jitted on one device or data-parallel over many
    (its state and batches placed by ``layout``)."""
    if not sharded:
        if num_runs == 1:
            return jax.jit(train_lib.make_train_step(run.step), donate_argnums=0)
        step = sweep_lib.make_vmapped_train_step(run.step, run.run_axis)
        return jax.jit(step, donate_argnums=0)
    placed = layout(run, num_runs)
    # Several processes: one program over every device of the run, each process feeding its own.
    pstep = make_pmapped_train_step(
        run.step,
        placed.step_devices,
        vmapped=num_runs > 1,
        run_axis=run.run_axis,
        transform=run.parallel,
    )

    def step_fn(state, batches):
        state, metrics = pstep(state, batches)
        return state, placed.one_copy(metrics)  # Every device holds the global means.

    return step_fn


def process_item(run: Run, step: int, seed: int) -> dict:
    """This process's contiguous part of the global item for generator step ``step``.

    With several processes, process ``p`` takes examples ``[p * B / P, (p + 1) * B / P)`` of
    every batch, so that, split over its devices in turn, the device with global index ``i``
    gets examples ``[i * b, (i + 1) * b)``, as ``gans.parallel.draw`` assumes. Datasets that
    read per process (TFDS) return that part themselves; the others are sliced here.
    """
    group = run.critic_updates(step)
    process, processes = jax.process_index(), jax.process_count()
    if processes > 1 and getattr(run.dataset, "process_count", 1) == processes:
        return run.dataset.batch(step - 1, run.batch_size // processes, seed, group=group)
    item = run.dataset.batch(step - 1, run.batch_size, seed, group=group)
    if processes > 1:
        part = run.batch_size // processes
        item = jax.tree.map(lambda a: a[:, process * part : (process + 1) * part], item)
    return item


def _create_state(run: Run, example: jax.Array, seed: int) -> state_lib.GANState:
    return state_lib.create_state(
        generator=run.generator,
        critic=run.critic,
        generator_tx=run.generator_tx,
        critic_tx=run.critic_tx,
        config=run.step,
        example=example,
        key=jax.random.split(jax.random.key(seed))[0],
    )


def state_bytes(run: Run) -> int:
    """Bytes of one run's training state (parameters, optimiser slots, statistics), from its
    shapes alone (``jax.eval_shape``: nothing is allocated)."""
    example = jnp.asarray(run.dataset.batch(0, run.batch_size, run.seed)["x"][0])
    abstract = jax.eval_shape(lambda: _create_state(run, example, run.seed))
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))


def machine_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name() -> str:
    """What the runs compute on: the CPU's model on a CPU backend, else the accelerator's kind
    and count (``"1 x NVIDIA H100 80GB HBM3"``)."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return cpu_model()
    return f"{len(devices)} x {devices[0].device_kind}"


def check_memory(run: Run, available: int | None = None) -> None:
    """Refuses, before anything is allocated, runs whose states alone would not fit memory.

    The states of ``num_runs`` runs (or a sweep's values) are held twice while a step updates
    them; the estimate counts that and nothing else (activations, data), so a refusal is
    certain and a pass is not a promise.

    Raises:
      ValueError: naming the estimate, one run's share and the machine's memory.
    """
    num_runs = len(run.seeds())
    if num_runs == 1:
        return
    available = machine_bytes() if available is None else available
    one = state_bytes(run)
    needed = 2 * num_runs * one
    if needed > available:
        gib = 2**30
        raise ValueError(
            f"{num_runs:,} runs need about {needed / gib:,.1f} GiB for their training states "
            f"alone ({2 * one / 2**20:,.1f} MiB each, held twice while a step updates them), "
            f"more than this machine's {available / gib:,.1f} GiB; train fewer runs at once "
            "(--num_runs, --sweep) or a smaller model."
        )


def initial_state(run: Run) -> state_lib.GANState:
    """The state training starts from: one run's, or the runs' stacked (``gans.sweep``)."""
    example = jnp.asarray(run.dataset.batch(0, run.batch_size, run.seed)["x"][0])
    states = [_create_state(run, example, seed) for seed in run.seeds()]
    if len(states) == 1:
        return states[0]
    state = sweep_lib.stack(states)
    if run.sweep is not None:
        sweep = run.sweep
        state = sweep_lib.set_hyperparameter(state, sweep.name, sweep.values, sweep.base)
    return state


def run_directories(run: Run, workdir: pathlib.Path) -> list[pathlib.Path]:
    """Where each run writes: the workdir itself, or ``run_K`` for several runs."""
    num_runs = len(run.seeds())
    return [workdir] if num_runs == 1 else [workdir / f"run_{k}" for k in range(num_runs)]


def split_runs(run: Run, state: state_lib.GANState) -> list[state_lib.GANState]:
    """Each run's state out of ``initial_state``'s layout."""
    num_runs = len(run.seeds())
    return [state] if num_runs == 1 else [sweep_lib.unstack(state, k) for k in range(num_runs)]
