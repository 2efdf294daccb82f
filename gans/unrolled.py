"""Unrolled optimisation (Metz et al., 2017): the critic's parameters ``k`` updates ahead.

The unrolled GAN trains the generator on the surrogate loss

    f_K(theta_G, theta_D) = f(theta_G, theta_D^K(theta_G, theta_D)),
    theta_D^{k+1} = theta_D^k + update(grad_{theta_D} f(theta_G, theta_D^k)),

the value the critic would give after ``K`` of its own optimizer's updates, differentiated
through those updates: the generator's gradient then carries the critic's reaction to it, which
is what discourages it from hopping between modes. The critic itself still takes the ordinary
update; only the generator's loss looks ahead, and the look-ahead is thrown away.

``look_ahead`` is that recursion for any loss and any optax optimizer. It is differentiable in
whatever the loss closes over (the generator's samples), so ``jax.grad`` of a loss evaluated at
its result is the unrolled gradient. Through Adam the recursion divides by ``sqrt(nu)``, whose
derivative is infinite at ``nu = 0``: a parameter whose gradient is exactly zero (a dead ReLU
unit, a bias feeding one) turns ``0 * inf`` into NaN in the generator's gradient. The critic's
Adam is therefore built with ``sqrt(nu + EPS_ROOT)`` for unrolled runs (optax's ``eps_root``,
``make_optimizer(..., eps_root=EPS_ROOT)``, as ``--unroll_steps`` does): the derivative is then
finite, the zero passes through as zero, and the update moves by less than float32 resolves
wherever ``nu`` is above ``EPS_ROOT * 2**24``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from gans import parallel

PyTree = Any

# Adam's constant inside the root for unrolled runs (see the module's note); 1e-8 ** 2, so that
# sqrt(EPS_ROOT) is Adam's own eps.
EPS_ROOT = 1e-16


def look_ahead(
    loss_fn: Callable[[PyTree, jax.Array], jax.Array],
    tx: optax.GradientTransformation,
    params: PyTree,
    opt_state: optax.OptState,
    keys: Sequence[jax.Array],
    axis_name: str | None = None,
) -> tuple[PyTree, optax.OptState]:
    """``params`` and ``opt_state`` after ``len(keys)`` updates of ``tx`` on ``loss_fn``.

    Update ``k`` takes ``grad loss_fn(params_k, keys[k])`` (averaged over ``axis_name`` under
    ``pmap``, as the critic's own update is, so that every device looks ahead alike) and applies
    ``tx`` to it. Written as a Python loop: ``K`` is small (Metz et al. use 1 to 10) and
    XLA:CPU runs convolutions in straight-line code faster than in a loop body.

    Args:
      loss_fn: ``(params, key) -> scalar``; whatever it closes over is differentiated through.
      tx: the optimizer whose updates are unrolled (the critic's own).
      params, opt_state: where the look-ahead starts (the critic's current values).
      keys: one key per update (the penalty's and augmentation's draws).
      axis_name: the pmap axis, or None on one device.
    """
    for key in keys:
        grads = parallel.mean_tree(jax.grad(loss_fn)(params, key), axis_name)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state
