"""K independent runs trained as one compiled program, over a leading run axis of the state.

The run axis is either vmapped (one batched program) or mapped (``jax.lax.map``: the runs in
turn, inside the one program); ``run_axis="auto"`` picks per backend (``resolve_run_axis``).

The runs differ by seed (each its own initialisation, data and noise) or by the value of one
hyper-parameter. Every quantity that differs between runs lives in the state, so the same
vmapped step serves both: the seed through the state's key and parameters, the penalty weight
through ``GANState.hparams`` (each run's step puts its traced weight into the config's typed
penalty, ``config.penalty.with_weight(w)``, before anything reads it), learning rates and the
clip bound through the optimizer states (``state_lib.make_optimizer(..., sweepable=True)``). Run
``k`` of the vmapped program computes what a separate run with its settings computes, up to
float reduction order.

    config = step_config.StepConfig(loss="wasserstein", z_dim=128, penalty=penalties.GradientPenalty())
    states = [state_lib.create_state(..., key=jax.random.key(seed + k)) for k in range(K)]
    step = jax.jit(sweep.make_vmapped_train_step(config))
    stacked, metrics = step(sweep.stack(states), batches)  # batches: [K, n_critic, B, ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gans import state as state_lib
from gans import step_config, train

SWEEPABLE = ("penalty_weight", "critic_lr", "generator_lr", "clip")
RUN_AXES = ("auto", "vmap", "map")

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Runs that differ only in one hyper-parameter: run ``k`` trains with ``values[k]``.

    Attributes:
      name: one of ``SWEEPABLE``.
      values: one value per run.
      base: for a learning rate, the rate the optimizer was built with (see
        ``set_hyperparameter``); unused otherwise.
    """

    name: str
    values: tuple[float, ...]
    base: float | None = None

    def __post_init__(self):
        check_sweep(self.name, self.values)
        if self.name.endswith("_lr") and not (self.base and self.base > 0):
            raise ValueError(f"a sweep over {self.name} needs the optimizer's base rate.")


def stack(trees: Sequence[PyTree]) -> PyTree:
    """Stacks K pytrees of one structure leaf by leaf along a new leading run axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: PyTree, run: int) -> PyTree:
    """Run ``run``'s slice of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[run], tree)


def check_sweep(name: str, values: Sequence[float]) -> None:
    """Raises ValueError unless ``name`` can be swept over ``values``."""
    if name not in SWEEPABLE:
        raise ValueError(f"cannot sweep {name!r}; sweepable: {', '.join(SWEEPABLE)}.")
    if len(values) < 2:
        raise ValueError(f"a sweep over {name} needs at least 2 values, got {list(values)}.")
    low = 0.0 if name == "penalty_weight" else None
    for value in values:
        if (low is not None and value < low) or (low is None and not value > 0):
            bound = ">= 0" if low is not None else "> 0"
            raise ValueError(f"every {name} in a sweep must be {bound}, got {value}.")


def set_hyperparameter(
    state: state_lib.GANState, name: str, values: Sequence[float], base: float | None = None
) -> state_lib.GANState:
    """Gives run ``k`` of a stacked ``state`` the value ``values[k]`` of ``name``.

    Args:
      state: K stacked states (``stack``), built with sweepable optimizers for the learning
        rates and the clip bound.
      name: one of ``SWEEPABLE``.
      values: one value per run.
      base: for a learning rate, the rate the optimizer was built with; run ``k`` scales its
        updates by ``values[k] / base``.
    """
    check_sweep(name, values)
    values = jnp.asarray(values, jnp.float32)
    if name == "penalty_weight":
        return state.replace(hparams={**state.hparams, "penalty_weight": values})
    player = "critic" if name in ("critic_lr", "clip") else "generator"
    opt_state = getattr(state, f"{player}_opt_state")
    if name == "clip":
        found = optax.tree.get_all_with_path(opt_state, "clip")
        if not found:
            raise ValueError("the critic's optimizer has no sweepable clip; build it with clip=.")
        opt_state = optax.tree.set(opt_state, clip=values)
    else:
        if not optax.tree.get_all_with_path(opt_state, "learning_rate_scale"):
            raise ValueError(
                f"the {player}'s optimizer keeps no learning rate to sweep; build it with "
                "make_optimizer(..., sweepable=True)."
            )
        opt_state = optax.tree.set(opt_state, learning_rate_scale=values / base)
    return state.replace(**{f"{player}_opt_state": opt_state})


def resolve_run_axis(run_axis: str, backend: str | None = None) -> str:
    """How K runs of one program are laid out: ``"vmap"`` (batched) or ``"map"`` (in turn).

    ``"auto"`` is ``"map"`` on CPU and ``"vmap"`` elsewhere. XLA:CPU runs a vmapped program's
    batched matrix products slower than the same products one run at a time (on a 2-core Xeon,
    5 runs of the toy step cost 1.10x five separate runs vmapped and 1.02x mapped, DCGAN-32
    1.19x and 0.95x; small MLPs are the exception, 0.91x vmapped), while a GPU or TPU fills
    its cores with the K runs at once.
    """
    if run_axis not in RUN_AXES:
        raise ValueError(f"run_axis must be one of {', '.join(RUN_AXES)}, got {run_axis!r}.")
    if run_axis != "auto":
        return run_axis
    return "map" if (backend or jax.default_backend()) == "cpu" else "vmap"


def over_runs(step: Callable[..., Any], run_axis: str = "vmap") -> Callable[..., Any]:
    """``step(state, batch)`` over K stacked states and batches, laid out as ``run_axis`` says.

    ``"vmap"`` batches the K runs into one program; ``"map"`` is ``jax.lax.map``, a loop that
    runs the unbatched step on run 0, 1, ... inside the same compiled program. Both return the
    stacked new states and ``[K]`` metrics, and compute the same values up to float reduction
    order (``tests/test_sweep.py``).
    """
    run_axis = resolve_run_axis(run_axis)
    if run_axis == "vmap":
        return jax.vmap(step)
    return lambda states, batches: jax.lax.map(lambda args: step(*args), (states, batches))


def make_vmapped_train_step(
    config: step_config.StepConfig, run_axis: str = "vmap"
) -> Callable[[state_lib.GANState, Mapping[str, jax.Array]], tuple[state_lib.GANState, dict]]:
    """The train step over K stacked states and ``[K, n_critic, B, ...]`` batches.

    Returns per-run metrics (``[K]`` arrays). Compose with ``jax.jit`` or put it inside
    ``jax.pmap`` (with ``config.axis_name`` set) for K runs on many devices. ``run_axis``:
    see ``over_runs`` and ``resolve_run_axis``.
    """
    return over_runs(train.make_train_step(config), run_axis)
