"""Data parallelism: one train step on many devices, equal to the step on one.

The step runs under ``jax.pmap(..., axis_name=AXIS)``: each device holds a replica of the state
and a slice of the global batch, and gradients are averaged with ``lax.pmean``. Two things make
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


def shard(item: PyTree, num_devices: int) -> PyTree:
    """Splits every ``[group, B, ...]`` leaf into ``[num_devices, group, B / num_devices, ...]``.

    Device ``i`` gets examples ``[i * b, (i + 1) * b)`` of every batch, the rows ``draw`` gives it.
    """

    def split(leaf):
        group, batch = leaf.shape[:2]
        leaf = leaf.reshape((group, num_devices, batch // num_devices) + leaf.shape[2:])
        return np.swapaxes(leaf, 0, 1) if isinstance(leaf, np.ndarray) else jnp.swapaxes(leaf, 0, 1)

    return jax.tree.map(split, item)


TRANSFORMS = ("pmap", "shard_map")


def data_parallel(fn: Callable, devices: Sequence[Any] | None, transform: str = "pmap") -> Callable:
    """``fn`` run on every device over the axis ``AXIS``, its first argument donated.

    ``pmap``: ``jax.pmap(fn, axis_name=AXIS)``. ``shard_map``: ``jax.jit`` of ``jax.shard_map``
    over a one-axis ``Mesh`` of ``devices``, which JAX recommends since ``pmap`` became a
    wrapper over it; in the same layout (every argument and result carries the leading device
    axis that ``replicate`` and ``shard`` give, each device's block of it squeezed inside), so
    the same state, batches and collectives (``lax.pmean``, ``axis_index``, ``axis_size`` over
    ``AXIS``) serve both, and the two train alike (``tests/test_parallel.py``). One host only:
    a batch spread over several processes' devices would have to be assembled into one global
    array first.

    Raises:
      ValueError: an unknown ``transform``, or ``shard_map`` over several processes.
    """
    if transform == "pmap":
        return jax.pmap(fn, axis_name=AXIS, devices=devices, donate_argnums=0)
    if transform != "shard_map":
        raise ValueError(f"--parallel must be one of {', '.join(TRANSFORMS)}, got {transform!r}.")
    if jax.process_count() > 1:
        raise ValueError(
            "--parallel=shard_map runs on one host's devices; use --parallel=pmap for a run of "
            "several processes."
        )
    mesh = jax.sharding.Mesh(np.array(list(devices or jax.local_devices())), (AXIS,))

    def on_one_device(*args):
        outputs = fn(*jax.tree.map(lambda block: block[0], args))
        return jax.tree.map(lambda leaf: leaf[None], outputs)

    # The outputs are the same on every device (averaged over AXIS) or the device's own, as
    # under pmap: no replication is claimed for the checker to verify.
    mapped = jax.shard_map(
        on_one_device, mesh=mesh, in_specs=jax.P(AXIS), out_specs=jax.P(AXIS), check_vma=False
    )
    return jax.jit(mapped, donate_argnums=0)


def replicate(tree: PyTree, devices: Sequence[Any]) -> PyTree:
    """One copy of ``tree`` per device, stacked along a new leading axis."""
    # Named like the step's axis, so the step's outputs match its inputs and it compiles once.
    return jax_utils.replicate(tree, list(devices), axis_name=AXIS)


def unreplicate(tree: PyTree) -> PyTree:
    """The first replica (replicas are equal: every update is averaged over the axis)."""
    return jax_utils.unreplicate(tree)
