"""The training loop: compile the step, feed it data, write logs, samples and parameters.

Experiments compose a ``Run`` (data, two models, two optimizers, the step's
settings) and call ``train_and_evaluate``. Everything the loop produces goes
into the run's working directory:

    config.json      the experiment's settings, as given
    metrics.jsonl    one JSON line per logging step
    samples/         pictures at every sampling step (2-D: samples over the
                     critic's contour; images: a grid at fixed latents)
    params.msgpack   final parameters and model state of both players

Several runs trained together (seeds or a sweep, one vmapped program) write those files,
``config.json`` aside, into ``run_0/``, ``run_1/``, ... and list each run's seed and setting in
``runs.json``. A data-parallel run writes from process 0 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gans import checkpoints, parallel, visualize
from gans import sweep as sweep_lib
from gans import train as train_lib
from gans.data import Dataset
from gans.metrics import mixture
from gans.models import infogan

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
RUNS_FILE = "runs.json"
LOCK_FILE = ".lock"


class NonFiniteError(FloatingPointError):
    """A loss, penalty, gradient or parameter norm became NaN or infinite."""


class ResumeError(ValueError):
    """A workdir's run cannot be resumed with these settings."""


class WorkdirInUseError(ValueError):
    """Another process is training into the same workdir."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint of the current step was written.

    Attributes:
      step: the last step trained (and checkpointed).
      signal_number: the signal received.
    """

    def __init__(self, step: int, signal_number: int):
        self.step, self.signal_number = step, signal_number
        name = signal.Signals(signal_number).name
        super().__init__(
            f"stopped by {name} after step {step}, whose checkpoint is saved; run the same "
            "command again to resume."
        )


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
    num_devices: int = 1
    num_runs: int = 1
    sweep: sweep_lib.Sweep | None = None
    checkpoint_every: int = 1000
    eval_every: int = 0
    diagnose_every: int = 0
    clip: float | None = None

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
        if self.sweep is not None and self.num_runs > 1:
            raise ValueError("give either several seeds (num_runs) or a sweep, not both.")
        for name in ("checkpoint_every", "eval_every", "diagnose_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
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


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the loop reports at each logging step."""

    step: int
    steps: int
    steps_per_second: float
    eta_seconds: float
    metrics: dict[str, float]
    runs: list[dict[str, float]] = dataclasses.field(default_factory=list)


# Settings that may change when a run resumes: they do not change what is trained. (Not
# --steps: learning-rate schedules are laid out over it.)
RESUMABLE_CHANGES = frozenset(
    {
        "workdir",  # A run directory may be moved or copied and resumed from there.
        "log_every",
        "sample_every",
        "checkpoint_every",
        "eval_every",
        "diagnose_every",
        "num_devices",
        "distributed",
        "coordinator_address",
        "num_processes",
        "process_id",
        "data_dir",
    }
)


def check_workdir(workdir: str | os.PathLike) -> pathlib.Path:
    """Creates the workdir, refusing one that is a file, cannot be written, or holds a run
    that cannot be resumed.

    A workdir holding a run of this framework (``config.json``) is resumed from its latest
    checkpoint; one holding final parameters but no checkpoint (a finished run from before
    checkpoints), or run files without a ``config.json``, is refused untouched.
    """
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir {str(path)!r} is a file; give a directory path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--workdir {str(path)!r} cannot be written ({error.strerror.lower()}); choose a "
            "directory you can write to."
        ) from None
    has_run_files = any((path / name).exists() for name in (METRICS_FILE, PARAMS_FILE, RUNS_FILE))
    if has_run_files and not (path / CONFIG_FILE).exists():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a run without its {CONFIG_FILE}, which "
            "cannot be resumed; choose a new directory."
        )
    finished = (path / PARAMS_FILE).exists() or any(path.glob(f"run_*/{PARAMS_FILE}"))
    if finished and not (path / checkpoints.DIRECTORY).is_dir():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a finished run without checkpoints, which "
            "cannot be resumed; choose a new directory."
        )
    return path


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
    """Writes ``path`` whole or not at all: a kill leaves the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    os.replace(temporary, path)


@contextlib.contextmanager
def one_writer(workdir: pathlib.Path):
    """Holds ``workdir/.lock`` while a run trains into ``workdir``; a second run is refused.

    The lock is an advisory ``flock``, which the operating system drops when the process
    ends in any way (SIGKILL included), so a dead run never leaves a workdir locked. Only the
    writing process (process 0) takes it.

    Raises:
      WorkdirInUseError: another live process holds the lock.
    """
    if jax.process_index() != 0:
        yield
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            raise WorkdirInUseError(
                f"--workdir {str(workdir)!r} is in use by another run (process {owner}); wait "
                "for it to finish or stop it, or choose another directory."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _deferred_signals():
    """SIGINT and SIGTERM are noted, not acted on, so the loop can stop at a step's end.

    Yields the list the received signal numbers are appended to. Outside the main thread
    (where Python cannot install handlers) nothing changes.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        number: signal.signal(number, lambda number, frame: received.append(number))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _check_same_settings(workdir: pathlib.Path, config: dict[str, Any] | None) -> None:
    """Refuses to resume a run with settings that would change what it trains."""
    if config is None or not (workdir / CONFIG_FILE).exists():
        return
    try:
        saved = json.loads((workdir / CONFIG_FILE).read_text())
    except ValueError:
        raise ValueError(
            f"{str(workdir / CONFIG_FILE)!r} is not valid JSON, so the run cannot be resumed; "
            "restore the file or choose a new directory."
        ) from None
    given = json.loads(json.dumps(config, default=str))
    changed = sorted(
        name
        for name in set(saved) | set(given)
        if name not in RESUMABLE_CHANGES and saved.get(name) != given.get(name)
    )
    if changed:
        shown = ", ".join(
            f"--{name} was {saved.get(name)!r}, now {given.get(name)!r}" for name in changed[:3]
        )
        raise ValueError(
            f"--workdir {str(workdir)!r} holds a run with other settings ({shown}); resume it "
            "with its own settings or choose a new directory."
        )


def _truncate_log(path: pathlib.Path, step: int) -> None:
    """Drops metrics lines after ``step`` (written after the checkpoint being resumed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            break  # A line cut short by a kill: it and anything after it are redone.
    write_atomically(path, "".join(line + "\n" for line in kept))


def _resume(
    workdir: pathlib.Path,
    workdirs: list[pathlib.Path],
    config: dict[str, Any] | None,
    template: Any,
) -> tuple[checkpoints.Checkpointer, Any, int]:
    """Opens the run's checkpoints; returns them, the state to start from and its step."""
    try:
        _check_same_settings(workdir, config)
    except ValueError as error:
        raise ResumeError(str(error)) from None
    checkpointer = checkpoints.Checkpointer(workdir)
    try:
        start = checkpointer.latest_step() or 0
        state = checkpointer.restore(template, start) if start else template
    except ValueError as error:
        # Closed before exiting: Orbax's background threads must not outlive the error.
        checkpointer.close()
        raise ResumeError(str(error)) from None
    if jax.process_index() == 0:
        for w in workdirs:
            _truncate_log(w / METRICS_FILE, start)
    return checkpointer, state, start


def _check_finite(step: int, metrics: dict[str, float], where: str = "") -> None:
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(
            f"training diverged: {', '.join(bad)} became non-finite at step {step}{where}; "
            "lower the learning rates or raise the penalty weight."
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
    workdir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config or {}, indent=2, sort_keys=True, default=str)
    write_atomically(workdir / CONFIG_FILE, text)


def _train_loop(
    *,
    workdirs: list[pathlib.Path],
    state: Any,
    step_fn: Callable[[Any, dict], tuple[Any, dict]],
    next_batch: Callable[[int], dict],
    steps: int,
    log_every: int,
    sample_every: int,
    save_samples: list[Callable[[Any, pathlib.Path, int], np.ndarray]],
    run_states: Callable[[Any], list[Any]],
    on_progress: Callable[[Progress], None] | None,
    start_step: int = 0,
    checkpoint_every: int = 0,
    save_checkpoint: Callable[[Any, int], None] | None = None,
    eval_every: int = 0,
    evaluate: Callable[[Any, int], dict[str, float]] | None = None,
    diagnose_every: int = 0,
    diagnose: Callable[[Any, int, pathlib.Path], dict[str, float]] | None = None,
) -> tuple[Any, list[dict[str, Any]], list[np.ndarray]]:
    """The loop every model shares: step, log, check for NaN, draw pictures.

    Trains K runs at once when the step is vmapped: run ``k`` logs into ``workdirs[k]`` and
    ``run_states(state)[k]`` is its state; step metrics are then ``[K]`` arrays.

    Starts after ``start_step`` (a resumed run) and calls ``save_checkpoint(state, step)``
    every ``checkpoint_every`` steps and after the last. With ``evaluate(run_state, k)``, the
    logging steps that are multiples of ``eval_every`` (and the last) also log its metrics as
    ``eval/NAME``. Every line also goes to TensorBoard (``tensorboard/``), and ``curves.png``
    plots the log when the loop ends.

    Returns the final state, each run's last metrics line and final samples.
    """
    import tensorboardX  # Only where a loop runs: it is slow to import.

    num_runs = len(workdirs)
    last: list[dict[str, Any]] = [_last_line(w / METRICS_FILE) for w in workdirs]
    timed_from, timed_steps = time.perf_counter(), 0
    # On several hosts every process trains; only the first writes.
    writer = jax.process_index() == 0

    def checked(step, metrics):
        """Each run's metrics on the host, refused if anything became NaN or infinite."""
        host = {k: np.asarray(v).reshape(num_runs) for k, v in jax.device_get(metrics).items()}
        values = [{k: float(v[run]) for k, v in host.items()} for run in range(num_runs)]
        for run, run_values in enumerate(values):
            _check_finite(step, run_values, f" in run {run}" if num_runs > 1 else "")
        return values

    with contextlib.ExitStack() as files:
        logs = [files.enter_context(open(w / METRICS_FILE, "a")) for w in workdirs if writer]
        # Events past the checkpoint resumed from (written before a kill) are hidden.
        purge = start_step + 1 if start_step else None
        boards = [
            files.enter_context(
                tensorboardX.SummaryWriter(str(w / "tensorboard"), purge_step=purge)
            )
            for w in workdirs
            if writer
        ]
        signals = files.enter_context(_deferred_signals())
        for step in range(start_step + 1, steps + 1):
            state, metrics = step_fn(state, next_batch(step))
            if step == start_step + 1:
                # The first step includes compilation; time the rest.
                jax.block_until_ready(metrics)
                timed_from = time.perf_counter()
            else:
                timed_steps += 1
            if step % log_every == 0 or step == steps:
                values = checked(step, metrics)
                rate = math.nan
                if timed_steps:
                    rate = timed_steps / (time.perf_counter() - timed_from)
                last = [{"step": step, **run_values} for run_values in values]
                if evaluate and writer and eval_every and (step == steps or step % eval_every == 0):
                    for k, (line, run_state) in enumerate(zip(last, run_states(state))):
                        line.update(
                            {f"eval/{n}": float(v) for n, v in evaluate(run_state, k).items()}
                        )
                if diagnose and writer and diagnose_every and step % diagnose_every == 0:
                    for line, run_state, w in zip(last, run_states(state), workdirs):
                        line.update(diagnose(run_state, step, w))
                for log, board, line in zip(logs, boards, last):
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                    for name, value in line.items():
                        if name != "step":
                            board.add_scalar(name, value, step)
                    board.flush()
                if on_progress is not None:
                    eta = (steps - step) / rate
                    on_progress(Progress(step, steps, rate, eta, values[0], values))
            if writer and sample_every and step % sample_every == 0 and step != steps:
                for save, run_state, w in zip(save_samples, run_states(state), workdirs):
                    save(run_state, w / "samples" / f"step_{step:07d}.png", step)
            stopping = bool(signals) and step != steps
            if save_checkpoint and (
                (checkpoint_every and step % checkpoint_every == 0) or step == steps or stopping
            ):
                checked(step, metrics)  # A checkpoint is never written from a diverged state.
                save_checkpoint(state, step)
            if stopping:
                raise Interrupted(step, signals[0])
    if not writer:
        return state, last, []
    samples = []
    for save, run_state, w in zip(save_samples, run_states(state), workdirs):
        final_picture = w / "samples" / f"step_{steps:07d}.png"
        samples.append(save(run_state, final_picture, steps))
        write_atomically(w / "samples.png", final_picture.read_bytes())
        records = [json.loads(line) for line in (w / METRICS_FILE).read_text().splitlines()]
        visualize.save_curves(records, w / "curves.png", title=w.name)
    return state, last, samples


def _evaluator(run: Run, seeds: list[int]) -> Callable[[Any, int], dict[str, float]] | None:
    """``gans.evaluation.sample_quality`` for run ``k``, or None where it has no metric."""
    from gans import evaluation  # scipy and the digits classifier: only when asked for.

    if not evaluation.supported(run.dataset):
        return None
    return lambda state, k: evaluation.sample_quality(run, state, seed=seeds[k])


def _diagnostics(run: Run) -> Callable[[Any, int, pathlib.Path], dict[str, float]]:
    """``gans.diagnostics`` on a fresh real batch; histograms go to ``diagnostics/step_N.npz``."""
    from gans import diagnostics

    diagnose = jax.jit(functools.partial(diagnostics.diagnose, config=run.step, clip=run.clip))
    key = jax.random.key(run.seed + 5)

    def measure(state, step, workdir):
        item = run.dataset.batch(step - 1, run.batch_size, run.seed + 5)
        batch = jax.tree.map(lambda a: jnp.asarray(a[0]), item)
        scalars, histograms = diagnostics.to_host(
            diagnose(state, batch=batch, key=jax.random.fold_in(key, step))
        )
        (workdir / "diagnostics").mkdir(exist_ok=True)
        arrays = {name.replace("/", "__"): value for name, value in histograms.items()}
        np.savez(workdir / "diagnostics" / f"step_{step:07d}.npz", **arrays)
        return scalars

    return measure


def _last_line(path: pathlib.Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def _compile_step(run: Run, num_runs: int, sharded: bool):
    """The train step for ``num_runs`` runs, jitted on one device or pmapped over many."""
    if not sharded:
        make = train_lib.make_train_step if num_runs == 1 else sweep_lib.make_vmapped_train_step
        return jax.jit(make(run.step), donate_argnums=0)
    devices = parallel.devices(run.num_devices, run.batch_size)
    # Several processes: one pmap over every device of the run, each process feeding its own.
    pstep = train_lib.make_pmapped_train_step(
        run.step, devices if jax.process_count() == 1 else None, vmapped=num_runs > 1
    )

    def step_fn(state, batches):
        state, metrics = pstep(state, batches)
        return state, parallel.unreplicate(metrics)  # Every device holds the global means.

    return step_fn


def _process_item(run: Run, step: int, seed: int) -> dict:
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


def _save_params(path: pathlib.Path, state: train_lib.GANState) -> None:
    saved = {
        "generator_params": state.generator_params,
        "generator_ema_params": state.generator_ema_params,
        "generator_state": state.generator_state,
        "critic_params": state.critic_params,
        "critic_state": state.critic_state,
        "step": state.step,
    }
    write_atomically(path, serialization.to_bytes(saved))


def initial_state(run: Run) -> train_lib.GANState:
    """The state training starts from: one run's, or the runs' stacked (``gans.sweep``)."""
    first = run.dataset.batch(0, run.batch_size, run.seed)
    states = [
        train_lib.create_state(
            generator=run.generator,
            critic=run.critic,
            generator_tx=run.generator_tx,
            critic_tx=run.critic_tx,
            config=run.step,
            example=jnp.asarray(first["x"][0]),
            key=jax.random.split(jax.random.key(seed))[0],
        )
        for seed in run.seeds()
    ]
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


def split_runs(run: Run, state: train_lib.GANState) -> list[train_lib.GANState]:
    """Each run's state out of ``initial_state``'s layout."""
    num_runs = len(run.seeds())
    return [state] if num_runs == 1 else [sweep_lib.unstack(state, k) for k in range(num_runs)]


def restore(run: Run, workdir: str | os.PathLike) -> tuple[list[train_lib.GANState], int]:
    """Every run's state from the latest checkpoint in ``workdir``, and its step.

    Raises:
      ResumeError: no checkpoint, or one that does not fit ``run``.
    """
    checkpointer = checkpoints.Checkpointer(workdir)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise ValueError(
                f"--workdir {str(workdir)!r} has no checkpoint yet; train first (or wait for "
                "the first --checkpoint_every steps)."
            )
        state = checkpointer.restore(initial_state(run), step)
    except ValueError as error:
        raise ResumeError(str(error)) from None
    finally:
        checkpointer.close()
    return split_runs(run, state), step


def draw_samples(
    run: Run, state: train_lib.GANState, num: int, key: jax.Array, labels: jax.Array | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``num`` samples of a trained generator (its moving average where kept).

    A conditional generator gets ``labels`` (default: uniform draws); InfoGAN's codes are drawn
    from their priors. Multi-scale generators give their largest image.

    Returns:
      The samples ``[num, ...]`` and the labels they were drawn for (None if unconditional).
    """
    config = run.step
    z_key, code_key, label_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (num, config.z_dim), jnp.float32)
    if config.info is not None:
        info = config.info
        codes = infogan.sample_codes(code_key, num, info.num_categories, info.num_continuous)
        z = jnp.concatenate([z, infogan.codes_vector(*codes, info.num_categories)], axis=1)
    if config.num_classes is not None and labels is None:
        labels = jax.random.randint(label_key, (num,), 0, config.num_classes)
    if config.num_classes is None:
        labels = None
    fake = jax.jit(train_lib.generate)(state, z, labels)
    samples = np.asarray(jax.tree.leaves(fake)[-1])
    return samples, None if labels is None else np.asarray(labels)


def train_and_evaluate(
    run: Run,
    workdir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Trains ``run`` and writes everything into ``workdir``.

    Several runs (``num_runs`` or ``sweep``) train as one vmapped program; run ``k`` writes
    into ``workdir/run_k`` and ``workdir/runs.json`` lists each run's seed and setting.

    Args:
      run: the composed experiment.
      workdir: output directory; must not hold a previous run.
      config: settings to record in ``config.json`` (e.g. the flag values).
      on_progress: called at every logging step (the experiment prints it).

    Returns:
      The last logged metrics, plus mode coverage for Gaussian mixtures; with several runs,
      ``{"runs": [one such dict per run]}``.

    Raises:
      NonFiniteError: a logged metric became NaN or infinite; the parameters
        are not saved, the metrics log keeps every line written before.
    """
    workdir = check_workdir(workdir)
    start = time.perf_counter()
    seeds = run.seeds()
    num_runs = len(seeds)
    sharded = run.num_devices > 1 or jax.process_count() > 1
    state = initial_state(run)
    # Each run draws its pictures from its own fixed latents, as it would alone.
    samplers = [_Sampler(run, jax.random.split(jax.random.key(seed))[1]) for seed in seeds]
    step_fn = _compile_step(run, num_runs, sharded)
    num_devices = len(parallel.devices(run.num_devices)) if sharded else 1

    def next_batch(step):
        items = [_process_item(run, step, seed) for seed in seeds]
        if sharded:
            items = [parallel.shard(item, num_devices) for item in items]
        if num_runs == 1:
            return items[0]
        # The run axis comes after the device axis: [devices, runs, ...] under pmap.
        return jax.tree.map(lambda *a: np.stack(a, axis=1 if sharded else 0), *items)

    workdirs = run_directories(run, workdir)

    def run_states(state):
        return split_runs(run, parallel.unreplicate(state) if sharded else state)

    with one_writer(workdir):
        checkpointer, state, start_step = _resume(workdir, workdirs, config, state)
        if sharded:
            state = parallel.replicate(state, parallel.devices(run.num_devices))
        if jax.process_index() == 0:
            _write_config(workdir, config)
            if num_runs > 1:
                _write_runs(workdir, run, seeds)
            for w in workdirs:
                (w / "samples").mkdir(parents=True, exist_ok=True)
        one_replica = parallel.unreplicate if sharded else (lambda state: state)
        state, lasts, fakes = _train_loop(
            workdirs=workdirs,
            state=state,
            step_fn=step_fn,
            next_batch=next_batch,
            steps=run.steps,
            log_every=run.log_every,
            sample_every=run.sample_every,
            save_samples=[sampler.save for sampler in samplers],
            run_states=run_states,
            on_progress=on_progress,
            start_step=start_step,
            checkpoint_every=run.checkpoint_every,
            save_checkpoint=lambda state, step: checkpointer.save(step, one_replica(state)),
            diagnose_every=run.diagnose_every,
            diagnose=_diagnostics(run) if run.diagnose_every else None,
            eval_every=run.eval_every,
            evaluate=_evaluator(run, seeds) if run.eval_every else None,
        )
        checkpointer.close()
        if jax.process_index() != 0:
            return {**lasts[0], "wall_seconds": time.perf_counter() - start}
        summaries = []
        for w, run_state, last, fake, seed in zip(workdirs, run_states(state), lasts, fakes, seeds):
            _save_params(w / PARAMS_FILE, run_state)
            last.update(_summary(run.dataset, fake))
            if run.step.info is not None and hasattr(run.dataset, "labels"):
                sample_key = jax.random.split(jax.random.key(seed))[1]
                last.update(_code_purity(run, run_state, sample_key))
            summaries.append(last)
        wall = time.perf_counter() - start
        if num_runs == 1:
            return {**summaries[0], "wall_seconds": wall}
        return {"runs": summaries, "wall_seconds": wall}


def _write_runs(workdir: pathlib.Path, run: Run, seeds: list[int]) -> None:
    runs = [{"run": k, "directory": f"run_{k}", "seed": seed} for k, seed in enumerate(seeds)]
    if run.sweep is not None:
        for entry, value in zip(runs, run.sweep.values):
            entry[run.sweep.name] = value
    write_atomically(workdir / RUNS_FILE, json.dumps(runs, indent=2))


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
    checkpoint_every: int = 1000


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

    with one_writer(workdir):
        checkpointer, state, start_step = _resume(workdir, [workdir], config, state)
        _write_config(workdir, config)
        (workdir / "samples").mkdir(exist_ok=True)
        state, (last,), (samples,) = _train_loop(
            workdirs=[workdir],
            state=state,
            step_fn=jax.jit(vae_lib.make_vae_train_step(run.config), donate_argnums=0),
            next_batch=lambda step: run.dataset.batch(step - 1, run.batch_size, run.seed),
            steps=run.steps,
            log_every=run.log_every,
            sample_every=run.sample_every,
            save_samples=[save_samples],
            run_states=lambda state: [state],
            on_progress=on_progress,
            start_step=start_step,
            checkpoint_every=run.checkpoint_every,
            save_checkpoint=lambda state, step: checkpointer.save(step, state),
        )
        checkpointer.close()
        saved = {"params": state.params, "ema_params": state.ema_params, "step": state.step}
        write_atomically(workdir / PARAMS_FILE, serialization.to_bytes(saved))
    last.update(_summary(run.dataset, samples))
    last["wall_seconds"] = time.perf_counter() - start
    return last
