"""Weight clipping keeps every parameter in [-c, c] after every update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans.constraints import clip_weights


def test_every_parameter_stays_in_the_box_over_many_updates():
    c = 0.01
    tx = optax.chain(optax.rmsprop(5e-2), clip_weights(c))  # a large rate, to clip often
    key = jax.random.key(0)
    # Start well outside the box and at many magnitudes, where p + (clip - p)
    # would round past c.
    params = {"w": jax.random.normal(key, (64, 64)) * 10.0, "b": jnp.linspace(-3, 3, 64)}
    state = tx.init(params)

    @jax.jit
    def step(params, state, key):
        grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape) * 100.0, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(300):
        params, state = step(params, state, jax.random.fold_in(key, i))
        for leaf in jax.tree.leaves(params):
            assert float(jnp.max(jnp.abs(leaf))) <= c
    # Clipping actually binds: many weights sit on the boundary.
    assert float(jnp.mean(jnp.abs(params["w"]) == c)) > 0.5


def test_updates_inside_the_box_are_untouched():
    params = {"w": jnp.array([0.001, -0.002])}
    updates = {"w": jnp.array([0.003, 0.001])}
    new, _ = clip_weights(0.01).update(updates, optax.EmptyState(), params)
    np.testing.assert_array_equal(new["w"], updates["w"])


def test_clip_needs_params_and_a_positive_bound():
    with pytest.raises(ValueError, match="needs the parameters"):
        clip_weights(0.01).update({"w": jnp.ones(2)}, optax.EmptyState())
    with pytest.raises(ValueError, match="clip bound must be > 0"):
        clip_weights(0.0)
