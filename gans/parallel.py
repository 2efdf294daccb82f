"""Data parallelism: one train step on many devices, equal to the step on one.

The step runs under ``jax.pmap(..., axis_name=AXIS)`` or ``jax.shard_map`` over a mesh axis of
that name (``data_parallel``): each device holds a replica of the state and a slice of the global
batch, and gradients are averaged with ``lax.pmean``. Two things make
the result independent of the device count, up to float reduction order:

- every random number is drawn for the *global* batch from a key all devices share, and each
  device keeps its own slice (``draw``); device ``i`` thus sees different noise from device
  ``j`` (the slice is picked by ``axis_index``), and the union is what one device would draw;
- statistics that span the batch (BatchNorm, DRAGAN's batch std) are averaged over the axis.

Drawing the global batch on every device costs ``num_devices`` times the random bits of the
local batch; for latents, interpolation factors and label flips that is negligible, for
image-sized instance noise it is one extra fused elementwise op per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

AXIS = "batch"

Array = jax.Array
PyTree = Any


def draw(
    sample: Callable[[Array, int], PyTree], key: Array, batch_size: int, axis_name: str | None
) -> PyTree:
    """``sample(key, batch_size)``, or this device's slice of the global batch's draw.

    Args:
      sample: draws ``n`` examples: ``(key, n) -> pytree of [n, ...] arrays``.
      key: a PRNG key shared by every device on the axis.
      batch_size: the per-device batch ``b``.
      axis_name: the pmap axis, or None outside one.

    Returns:
      ``sample(key, b)`` without an axis; with one, rows ``[i * b, (i + 1) * b)`` of
      ``sample(key, num_devices * b)`` on device ``i``.
    """
    if axis_name is None:
        return sample(key, batch_size)
    everything = sample(key, batch_size * jax.lax.axis_size(axis_name))
    start = jax.lax.axis_index(axis_name) * batch_size
    return jax.tree.map(
        lambda leaf: jax.lax.dynamic_slice_in_dim(leaf, start, batch_size), everything
    )


def draw_like(
    sample: Callable[..., Array], key: Array, shape: Sequence[int], axis_name: str | None
) -> Array:
    """``draw`` for a plain sampler ``sample(key, shape)`` such as ``jax.random.normal``."""
    shape = tuple(shape)
    return draw(lambda k, n: sample(k, (n,) + shape[1:]), key, shape[0], axis_name)


def mean(x: Array, axis_name: str | None = None) -> Array:
    """The mean of ``x`` over every element of the global batch (all devices on the axis)."""
    local = jnp.mean(x)
    return local if axis_name is None else jax.lax.pmean(local, axis_name)


def mean_tree(tree: Any, axis_name: str | None = None) -> Any:
    """Every leaf of ``tree`` averaged over the devices on ``axis_name`` (unchanged without)."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def std(x: Array, axis_name: str | None = None) -> Array:
    """The standard deviation of every element of ``x`` across the global batch."""
    centre = mean(x, axis_name)
    return jnp.sqrt(mean(jnp.square(x - centre), axis_name))


def devices(num_devices: int | None = None, batch_size: int | None = None) -> list[Any]:
    """The first ``num_devices`` local devices (all by default), checked against the batch.

    With several processes every process trains on all of its local devices (a pmap spans
    every device of the run), and ``batch_size`` is split over all of them.

    Raises:
      ValueError: more devices than this host has, fewer than all of them on several hosts,
        or a batch that does not split evenly.
    """
    available = jax.local_devices()
    if num_devices is None:
        num_devices = len(available)
    if not 1 <= num_devices <= len(available):
        raise ValueError(
            f"--num_devices={num_devices} but this host has {len(available)} "
            f"{available[0].platform.upper()} device(s); use a number from 1 to {len(available)}."
        )
    if jax.process_count() > 1 and num_devices != len(available):
        raise ValueError(
            f"--num_devices={num_devices} but a run of {jax.process_count()} processes trains "
            f"on every local device ({len(available)} here); drop --num_devices."
        )
    total = num_devices * jax.process_count()
    if batch_size is not None and batch_size % total:
        raise ValueError(
            f"batch size {batch_size} does not divide evenly over {total} devices; use a "
            f"multiple of {total}."
        )
    return available[:num_devices]


def shard(item: PyTree, num_devices: int, batch_axis: int = 1) -> PyTree:
    """Splits every leaf's ``batch_axis`` (size ``B``) into ``num_devices`` blocks of
    ``B / num_devices`` and stacks them on a new leading device axis: ``[group, B, ...]`` becomes
    ``[num_devices, group, B / num_devices, ...]`` (``batch_axis`` 1), ``[runs, group, B, ...]``
    becomes ``[num_devices, runs, group, B / num_devices, ...]`` (``batch_axis`` 2).

    Device ``i`` gets examples ``[i * b, (i + 1) * b)`` of every batch, the rows ``draw`` gives it.
    """

    def split(leaf):
        size = leaf.shape[batch_axis]
        shape = leaf.shape[:batch_axis] + (num_devices, size // num_devices)
        leaf = leaf.reshape(shape + leaf.shape[batch_axis + 1 :])
        move = np.moveaxis if isinstance(leaf, np.ndarray) else jnp.moveaxis
        return move(leaf, batch_axis, 0)

    return jax.tree.map(split, item)


TRANSFORMS = ("pmap", "shard_map")


def _check_transform(transform: str) -> None:
    if transform not in TRANSFORMS:
        raise ValueError(f"--parallel must be one of {', '.join(TRANSFORMS)}, got {transform!r}.")


def mesh(devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
    """The one-axis (``AXIS``) mesh of ``devices``, by default every device of every process
    (process by process, so that each process's devices hold a contiguous part of the batch)."""
    return jax.sharding.Mesh(np.array(list(devices or jax.devices())), (AXIS,))


def data_parallel(
    fn: Callable,
    devices: Sequence[Any] | None,
    transform: str = "pmap",
    batch_axis: int = 1,
) -> Callable:
    """``fn(state, batch)`` run on every device over the axis ``AXIS``, ``state`` donated.

    ``pmap``: ``jax.pmap(fn, axis_name=AXIS)`` on ``devices`` (default: every device of every
    process), the state and batches carrying a leading device axis (``replicate``, ``shard``).
    ``shard_map``: ``jax.jit`` of ``jax.shard_map`` over ``mesh(devices)``, which JAX recommends
    since ``pmap`` became a wrapper over it: the state one global array replicated on the mesh
    (``P()``), the batch one global array split along ``batch_axis`` (its examples), and the
    outputs replicated; ``Layout`` puts both there, across processes too. Inside, ``fn`` sees
    the same per-device values under either, so the same collectives (``lax.pmean``,
    ``axis_index``, ``axis_size`` over ``AXIS``) serve both, and the two train alike
    (``tests/test_parallel.py``, ``tests/test_experiments.py`` across two processes).

    Raises:
      ValueError: an unknown ``transform``.
    """
    _check_transform(transform)
    if transform == "pmap":
        return jax.pmap(fn, axis_name=AXIS, devices=devices, donate_argnums=0)
    batch = jax.P(*([None] * batch_axis), AXIS)
    # Every output is the same on every device (averaged over AXIS), as the state and metrics
    # of a step whose updates are averaged are: claimed replicated, not checked (check_vma off,
    # since random draws sliced by axis_index would fail the checker's conservative test).
    mapped = jax.shard_map(
        fn, mesh=mesh(devices), in_specs=(jax.P(), batch), out_specs=jax.P(), check_vma=False
    )
    return jax.jit(mapped, donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a data-parallel step's state and batches live, for ``transform``'s step
    (``data_parallel``): ``replicate`` puts a state there, ``shard`` a batch (this process's
    part of it: ``[group, B_local, ...]``, or ``[runs, group, B_local, ...]`` with
    ``batch_axis`` 2), and ``one_copy`` gives one copy of a state or the step's metrics on one
    local device.

    Attributes:
      transform: "pmap" or "shard_map".
      devices: this process's devices that train (``devices()``).
      batch_axis: the examples' axis of every batch leaf.
    """

    transform: str
    devices: tuple[Any, ...]
    batch_axis: int = 1

    def __post_init__(self):
        _check_transform(self.transform)

    @property
    def step_devices(self) -> list[Any] | None:
        """The devices to give ``data_parallel``: these, or every process's (None)."""
        return list(self.devices) if jax.process_count() == 1 else None

    def replicate(self, tree: PyTree) -> PyTree:
        if self.transform == "pmap":
            return replicate(tree, self.devices)
        replicated = jax.sharding.NamedSharding(mesh(self.step_devices), jax.P())
        local = [d for d in replicated.mesh.devices.flat if d.process_index == jax.process_index()]

        # A copy on each of this process's devices, assembled into the global array (which
        # device_put cannot make when the mesh spans other processes' devices).
        def put(leaf):
            copies = [jax.device_put(leaf, device) for device in local]
            return jax.make_array_from_single_device_arrays(jnp.shape(leaf), replicated, copies)

        return jax.tree.map(put, tree)

    def one_copy(self, tree: PyTree) -> PyTree:
        if self.transform == "pmap":
            return unreplicate(tree)
        return jax.tree.map(lambda leaf: leaf.addressable_data(0), tree)

    def shard(self, item: PyTree) -> PyTree:
        if self.transform == "pmap":
            return shard(item, len(self.devices), self.batch_axis)
        spec = jax.P(*([None] * self.batch_axis), AXIS)
        sharding = jax.sharding.NamedSharding(mesh(self.step_devices), spec)
        return jax.tree.map(
            lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), item
        )


def replicate(tree: PyTree, devices: Sequence[Any]) -> PyTree:
    """One copy of ``tree`` per device, stacked along a new leading axis."""
    # Named like the step's axis, so the step's outputs match its inputs and it compiles once.
    return jax_utils.replicate(tree, list(devices), axis_name=AXIS)


def unreplicate(tree: PyTree) -> PyTree:
    """The first replica (replicas are equal: every update is averaged over the axis)."""
    return jax_utils.unreplicate(tree)
