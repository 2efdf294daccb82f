"""Parameter constraints as optax transformations.

WGAN's weight clipping [Arjovsky et al. 2017, Alg. 1, line 7] is a projection of
the critic's parameters onto the box ``[-c, c]`` after every update. Expressed as
the last link of an optax chain,

    optax.chain(optax.rmsprop(5e-5), clip_weights(0.01))

it rewrites each update ``u`` into ``clip(p + u, -c, c) - p``, so that
``optax.apply_updates`` lands every parameter inside the box by construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _inside_box(param: jax.Array, update: jax.Array, bound: float) -> jax.Array:
    target = jnp.clip(param + update, -bound, bound)
    update = target - param
    # ``param + (target - param)`` can round one ulp past the bound when |param|
    # is much larger than the target; step the update towards the box until the
    # sum optax will compute lands inside. Two steps always suffice.
    for _ in range(2):
        landed = param + update
        update = jnp.where(landed > bound, jnp.nextafter(update, -jnp.inf), update)
        update = jnp.where(landed < -bound, jnp.nextafter(update, jnp.inf), update)
    return update


def clip_weights(bound: float) -> optax.GradientTransformation:
    """Keeps every parameter in ``[-bound, bound]`` after each update (WGAN).

    Place it last in an ``optax.chain``: it needs the parameters and must see
    the final update.

    Args:
      bound: the clipping value c (0.01 in WGAN).

    Returns:
      An ``optax.GradientTransformation`` that requires ``params`` in ``update``.
    """
    # A traced bound (a swept hyper-parameter, gans.sweep) is checked where it is set.
    if not isinstance(bound, jax.core.Tracer) and not bound > 0:
        raise ValueError(f"clip bound must be > 0, got {bound}; WGAN uses 0.01.")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "clip_weights needs the parameters: call update(grads, state, params)."
            )
        updates = jax.tree.map(lambda p, u: _inside_box(p, u, bound), params, updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)
