"""The training loop as a step function and periodic actions.

The loop only steps: after every step it hands a ``Moment`` (the step, the state, the step's
metrics) to each action in turn, and at the end calls each action's ``end``. Everything else
a run does on the way (the metrics log, TensorBoard, progress, evaluation, diagnostics,
pictures, checkpoints, the finiteness check) is one action, like clu's ``PeriodicAction``:

    actions = [loop.CheckFinite(every=100), loop.MetricsLog(workdirs, every=100), ...]
    state = loop.train(state, step_fn, next_batch, steps=1000, actions=actions)

Several runs trained as one vmapped program are ``num_runs`` runs of one loop: step metrics are
``[num_runs]`` arrays and ``Moment.lines`` has one line per run.

SIGINT and SIGTERM are deferred to the end of the step: the actions still see it (with
``Moment.stopping`` set, so the checkpoint is written), then ``Interrupted`` is raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from gans import workdir as workdir_lib


class NonFiniteError(FloatingPointError):
    """A loss, penalty, gradient or parameter norm became NaN or infinite."""


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
class Progress:
    """What the loop reports at each logging step."""

    step: int
    steps: int
    steps_per_second: float
    eta_seconds: float
    metrics: dict[str, float]
    runs: list[dict[str, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Moment:
    """The loop just after a step: what every action sees.

    Attributes:
      step: the generator step just trained (1-based).
      steps: the last step of the run.
      state: the training state after it (replicated or stacked as the step keeps it).
      metrics: the step's metrics, on the device.
      num_runs: runs trained together.
      stopping: a signal arrived; the loop raises ``Interrupted`` after the actions.
    """

    step: int
    steps: int
    state: Any
    metrics: dict[str, Any]
    num_runs: int = 1
    stopping: bool = False

    @property
    def last(self) -> bool:
        return self.step == self.steps

    @functools.cached_property
    def values(self) -> list[dict[str, float]]:
        """Each run's step metrics on the host, ``{name: value}``."""
        host = jax.device_get(self.metrics)
        arrays = {name: np.asarray(v).reshape(self.num_runs) for name, v in host.items()}
        return [{name: float(v[k]) for name, v in arrays.items()} for k in range(self.num_runs)]

    @functools.cached_property
    def lines(self) -> list[dict[str, Any]]:
        """Each run's log line, ``{"step": step, **values}``; actions that measure more
        (evaluation, diagnostics) add to it before the log writes it."""
        return [{"step": self.step, **values} for values in self.values]


class Action(Protocol):
    """What the loop calls after every step, and once when it ends."""

    def __call__(self, moment: Moment) -> None: ...

    def end(self, moment: Moment | None) -> None:
        """After the last step (``moment`` is None when no step was left to train)."""

    def close(self) -> None:
        """Always, when the loop stops for any reason: release files and threads."""


def resumable_settings(actions: Sequence[Action]) -> frozenset[str]:
    """The recorded settings that ``actions`` allow a resumed run to change: each action's
    ``resumable_settings`` (such as the flag of its interval), if it has any."""
    return frozenset(name for a in actions for name in getattr(a, "resumable_settings", ()))


class PeriodicAction:
    """An action that applies every ``every`` steps (0: never), and at the last if ``at_last``.

    ``resumable_settings`` names the recorded settings (flags) that only change what this action
    does, such as its interval: a run may resume with them changed.
    """

    at_last = True
    resumable_settings: tuple[str, ...] = ()

    def __init__(self, every: int):
        self.every = every

    def due(self, moment: Moment) -> bool:
        return bool(self.every and moment.step % self.every == 0) or (self.at_last and moment.last)

    def __call__(self, moment: Moment) -> None:
        if self.due(moment):
            self.apply(moment)

    def apply(self, moment: Moment) -> None:
        raise NotImplementedError

    def end(self, moment: Moment | None) -> None:
        del moment

    def close(self) -> None:
        pass


def check_finite(moment: Moment) -> None:
    """Raises ``NonFiniteError`` naming the metrics of any run that became NaN or infinite."""
    for k, values in enumerate(moment.values):
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            where = f" in run {k}" if moment.num_runs > 1 else ""
            raise NonFiniteError(
                f"training diverged: {', '.join(bad)} became non-finite at step "
                f"{moment.step}{where}; lower the learning rates or raise the penalty weight."
            )


class CheckFinite(PeriodicAction):
    """Stops the run when a metric becomes NaN or infinite (big_vision's NaN check)."""

    def apply(self, moment: Moment) -> None:
        check_finite(moment)


class LineAction(PeriodicAction):
    """Adds measurements to the log lines, at logging steps that are multiples of ``every``.

    ``measure(run_state, k, step, workdir)`` gives run ``k``'s extra values.
    """

    def __init__(
        self,
        every: int,
        log_every: int,
        measure: Callable[[Any, int, int, pathlib.Path], dict[str, float]],
        run_states: Callable[[Any], list[Any]],
        workdirs: Sequence[pathlib.Path],
        at_last: bool = True,
    ):
        super().__init__(every)
        self.log_every, self.measure, self.run_states = log_every, measure, run_states
        self.workdirs, self.at_last = list(workdirs), at_last

    def due(self, moment: Moment) -> bool:
        logged = moment.step % self.log_every == 0 or moment.last
        return bool(self.every) and logged and super().due(moment)

    def apply(self, moment: Moment) -> None:
        states = self.run_states(moment.state)
        for k, (line, state, w) in enumerate(zip(moment.lines, states, self.workdirs)):
            line.update(self.measure(state, k, moment.step, w))


class FirstStep(PeriodicAction):
    """Calls ``write()`` once, after the first step this process trains: a run's record is
    written there, so a run that fails or is stopped before one step binds no folder."""

    def __init__(self, write: Callable[[], None]):
        super().__init__(0)
        self.write, self.done = write, False

    def due(self, moment: Moment) -> bool:
        return not self.done

    def apply(self, moment: Moment) -> None:
        self.write()
        self.done = True


class MetricsLog(PeriodicAction):
    """Appends each run's line to its ``metrics.jsonl`` (with ``write``) and keeps the last.

    Attributes:
      last: each run's latest line.
    """

    def __init__(self, workdirs: Sequence[pathlib.Path], every: int, write: bool = True):
        super().__init__(every)
        self.paths, self.write = [w / workdir_lib.METRICS_FILE for w in workdirs], write
        # A resumed run that has nothing left to train reports the lines it ended with.
        self.last = [(workdir_lib.read_log(p) or [{}])[-1] for p in self.paths]
        self.started = False

    def __call__(self, moment: Moment) -> None:
        # A run stopped after a step but before its first line still has a log; one stopped
        # before its first step has none, and binds no folder.
        if self.write and not self.started:
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        self.started = True
        super().__call__(moment)

    def apply(self, moment: Moment) -> None:
        if self.write:
            for path, line in zip(self.paths, moment.lines):
                with open(path, "a") as f:
                    f.write(json.dumps(line) + "\n")
        self.last = moment.lines


class ReportProgress(PeriodicAction):
    """Calls ``report(Progress)`` at logging steps, timing steps after the first (which
    includes compilation)."""

    def __init__(self, report: Callable[[Progress], None], every: int, start_step: int):
        super().__init__(every)
        self.report, self.first = report, start_step + 1
        self.timed_from, self.timed_steps = time.perf_counter(), 0

    def __call__(self, moment: Moment) -> None:
        if moment.step == self.first:
            jax.block_until_ready(moment.metrics)
            self.timed_from = time.perf_counter()
        else:
            self.timed_steps += 1
        super().__call__(moment)

    def apply(self, moment: Moment) -> None:
        rate = math.nan
        if self.timed_steps:
            rate = self.timed_steps / (time.perf_counter() - self.timed_from)
        eta = (moment.steps - moment.step) / rate
        values = moment.values
        self.report(Progress(moment.step, moment.steps, rate, eta, values[0], values))


class Checkpoint(PeriodicAction):
    """Saves the state when Orbax's interval policy says so, at the last step, and when a
    signal stops the run; never from a diverged state.

    Args:
      checkpointer: a ``gans.checkpoints.Checkpointer`` built with the run's interval.
      one_replica: the state as saved (one device's replica).
    """

    def __init__(self, checkpointer: Any, one_replica: Callable[[Any], Any]):
        super().__init__(0)
        self.checkpointer, self.one_replica = checkpointer, one_replica

    def due(self, moment: Moment) -> bool:
        return moment.last or moment.stopping or self.checkpointer.should_save(moment.step)

    def apply(self, moment: Moment) -> None:
        check_finite(moment)
        self.checkpointer.save(moment.step, self.one_replica(moment.state))


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


def train(
    state: Any,
    step_fn: Callable[[Any, Any], tuple[Any, dict[str, Any]]],
    next_batch: Callable[[int], Any],
    *,
    steps: int,
    actions: Sequence[Action],
    start_step: int = 0,
    num_runs: int = 1,
) -> Any:
    """Trains steps ``start_step + 1 .. steps``, calling every action after each.

    Returns:
      The final state.

    Raises:
      Interrupted: a signal arrived; the step it arrived in was completed and checkpointed.
      NonFiniteError: from ``CheckFinite`` or ``Checkpoint``.
    """
    moment, in_flight = None, None
    try:
        with _deferred_signals() as signals:
            for step in range(start_step + 1, steps + 1):
                state, metrics = step_fn(state, next_batch(step))
                # At most two steps queued on the device: a signal stops the run within a step
                # or two of compute, not after every step the host had dispatched ahead.
                if in_flight is not None:
                    jax.block_until_ready(in_flight)
                in_flight = metrics
                stopping = bool(signals) and step != steps
                moment = Moment(step, steps, state, metrics, num_runs, stopping)
                for action in actions:
                    action(moment)
                if stopping:
                    raise Interrupted(step, signals[0])
        for action in actions:
            action.end(moment)
    finally:
        for action in actions:
            action.close()
    return state
