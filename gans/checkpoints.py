"""Checkpoints of the whole training state with Orbax, for exact resumption.

A checkpoint holds every array of the state (both players' parameters, optimizer states and
model state, the EMA weights, the swept hyper-parameters, the PRNG key, the step); the static
parts (modules, optimizers) come from the run, which rebuilds them from the same settings. The
data position needs no saving: batches are addressed by step (``Dataset.batch(index, ...)``).
So training N steps equals training k, saving, restoring and training N - k, bit for bit.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact; the last few are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization

PyTree = Any

DIRECTORY = "checkpoints"
# How Orbax words a checkpoint whose tree differs from the model's (anything else is damage).
_MISMATCH = ("Structure mismatch", "structures do not match", "not found in metadata")


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_saveable(state: PyTree) -> PyTree:
    """Plain nested dicts of arrays: typed PRNG keys as their raw uint32 data."""
    raw = jax.tree.map(lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, state)
    return serialization.to_state_dict(raw)


def _from_saved(saved: PyTree, template: PyTree) -> PyTree:
    def restore(like, leaf):
        if _is_key(like):
            return jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(like))
        return leaf

    raw = jax.tree.map(lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, template)
    restored = serialization.from_state_dict(raw, saved)
    return jax.tree.map(restore, template, restored)


@contextlib.contextmanager
def _without_closed_loop_noise():
    """Passes on what is written to stderr meanwhile, unless the restore failed.

    When a damaged checkpoint fails to restore, Orbax logs what it could not read (a metadata
    file missing or not JSON) and closes its event loop while TensorStore reads of the other
    arrays are still in flight, whose threads print "Event loop is closed" tracebacks, and
    asyncio later logs their tasks' errors as never retrieved. After a failure all of it is
    dropped: the error raised says what is wrong, in one sentence.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(0.2)  # The reads in flight finish, and print, meanwhile.
            # Their tasks' errors would also be logged as "never retrieved" when collected.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            if text and not failed:
                sys.stderr.write(text)
                sys.stderr.flush()


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint's step in ``workdir``, read without opening a manager."""
    directory = pathlib.Path(workdir) / DIRECTORY
    if not directory.is_dir():
        return None
    # Orbax renames a checkpoint to its bare step number only once it is complete.
    steps = [int(path.name) for path in directory.iterdir() if path.name.isdigit()]
    return max(steps, default=None)


class Checkpointer:
    """Saves and restores a run's state in ``workdir/checkpoints/<step>``.

    Which steps are saved is Orbax's decision (``should_save``): every ``every`` steps, and at
    a preemption that ``jax.distributed`` announces; the loop adds the last step and the step
    a signal stopped at with ``save(..., force=True)``.

    Args:
      workdir: the run's directory.
      max_to_keep: how many of the latest checkpoints survive.
      every: steps between checkpoints (0: only the forced ones).
    """

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 3, every: int = 0):
        import orbax.checkpoint as ocp  # Slow to import: only where checkpoints are used.

        self._args = ocp.args
        self.directory = pathlib.Path(workdir).absolute() / DIRECTORY
        policies = ocp.checkpoint_managers
        # Not Orbax's default policy, which also saves the first step.
        policy = policies.AnySavePolicy(
            [policies.PreemptionCheckpointingPolicy()]
            + ([policies.FixedIntervalPolicy(every)] if every else [])
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            # Saves block: a step is either fully written or absent when the process dies.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            save_decision_policy=policy,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def should_save(self, step: int) -> bool:
        """Whether ``step`` is one Orbax's policy saves."""
        return self._manager.should_save(step)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: PyTree) -> None:
        """Writes ``state`` as the checkpoint of ``step`` (host arrays, one replica), whatever
        the policy says."""
        saveable = jax.device_get(_to_saveable(state))
        self._manager.save(step, args=self._args.StandardSave(saveable), force=True)
        self._manager.wait_until_finished()

    def restore(self, template: PyTree, step: int | None = None) -> PyTree:
        """The state saved at ``step`` (default: the latest), shaped like ``template``.

        Raises:
          ValueError: no checkpoint, or one whose arrays do not match ``template`` (a run
            with other settings or another model).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}.")
        target = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.asarray(leaf).dtype),
            jax.device_get(_to_saveable(template)),
        )
        try:
            with _without_closed_loop_noise():
                saved = self._manager.restore(step, args=self._args.StandardRestore(target))
        except Exception as error:  # noqa: BLE001  (Orbax and TensorStore raise many kinds)
            reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
            if not any(marker in reason for marker in _MISMATCH):
                earlier = [s for s in self.all_steps() if s < step]
                fallback = (
                    f"delete {self.directory / str(step)} to resume from step {earlier[-1]}"
                    if earlier
                    else f"delete {self.directory / str(step)} to start again"
                )
                raise ValueError(
                    f"the checkpoint at step {step} in {self.directory} is damaged ({reason}); "
                    f"{fallback}, or use a new --workdir."
                ) from None
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} does not fit this model "
                f"and its settings ({reason}); resume with the settings it was written with, "
                "or use a new --workdir."
            ) from None
        mismatched = [
            jax.tree_util.keystr(path)
            for path, leaf, like in _zip_with_path(saved, target)
            if jnp.shape(leaf) != like.shape
        ]
        if mismatched:
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} holds arrays of other "
                f"shapes ({', '.join(mismatched[:3])}); resume with the settings it was written "
                "with, or use a new --workdir."
            )
        return _from_saved(jax.tree.map(jnp.asarray, saved), template)

    def close(self) -> None:
        self._manager.close()


def _zip_with_path(saved: PyTree, target: PyTree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(saved)
    return [(path, leaf, like) for (path, leaf), like in zip(leaves, jax.tree.leaves(target))]
