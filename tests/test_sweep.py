"""K runs as one vmapped program equal K separate runs, for seeds and for each sweepable."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import constraints, models, penalties, step_config, sweep, train
from gans import state as state_lib

CONFIG = step_config.StepConfig(
    loss="wasserstein", z_dim=4, penalty=penalties.GradientPenalty(weight=1.0)
)
GENERATOR = models.MLPGenerator(out_dim=2, hidden=(16, 16))
CRITIC = models.MLPCritic(hidden=(16, 16))


@functools.cache
def optimizer(name, lr, clip=None, sweepable=True):
    # Cached: states stack only when their static parts (the optimizers) are the same objects.
    return state_lib.make_optimizer(name, lr, b1=0.5, b2=0.9, clip=clip, sweepable=sweepable)


def make_state(
    config=CONFIG,
    seed=0,
    critic_lr=1e-3,
    generator_lr=1e-3,
    clip=None,
    sweepable=True,
    name="adam",
):
    return state_lib.create_state(
        generator=GENERATOR,
        critic=CRITIC,
        generator_tx=optimizer(name, generator_lr, None, sweepable),
        critic_tx=optimizer(name, critic_lr, clip, sweepable),
        config=config,
        example=jnp.zeros((8, 2)),
        key=jax.random.key(seed),
    )


def batches(seed, steps=2, n_critic=2):
    key = jax.random.key(100 + seed)
    return [
        {"x": jax.random.normal(jax.random.fold_in(key, i), (n_critic, 8, 2))} for i in range(steps)
    ]


@functools.cache
def step(config=CONFIG):
    return jax.jit(train.make_train_step(config))


@functools.cache
def vmapped_step(config=CONFIG, run_axis="vmap"):
    return jax.jit(sweep.make_vmapped_train_step(config, run_axis))


def train_separately(states, data, configs):
    results = []
    for state, items, config in zip(states, data, configs):
        for item in items:
            state, _ = step(config)(state, item)
        results.append(state)
    return results


def train_together(stacked, data, config=CONFIG, run_axis="vmap"):
    for items in zip(*data):
        stacked, metrics = vmapped_step(config, run_axis)(stacked, sweep.stack(list(items)))
    assert all(value.shape == (len(data),) for value in metrics.values())
    return stacked


def assert_runs_equal(stacked, separate):
    for k, state in enumerate(separate):
        together = sweep.unstack(stacked, k)
        for name in ("generator_params", "critic_params"):
            chex.assert_trees_all_close(
                getattr(together, name), getattr(state, name), rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize("run_axis", ["vmap", "map"])
def test_seeds_trained_together_equal_separate_runs(run_axis):
    states = [make_state(seed=k) for k in range(3)]
    data = [batches(k) for k in range(3)]
    stacked = train_together(sweep.stack(states), data, run_axis=run_axis)
    assert_runs_equal(stacked, train_separately(states, data, [CONFIG] * 3))
    # The runs really differ.
    first, second = (sweep.unstack(stacked, k).critic_params for k in (0, 1))
    assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(second)[0])


@pytest.mark.parametrize("run_axis", ["vmap", "map"])
def test_swept_penalty_weights_equal_runs_with_those_weights(run_axis):
    # SGD, as for the learning rates below: under Adam a gradient entry that is zero up to
    # rounding (the batched program sums in another order) moves its weight by a whole step.
    weights = (0.1, 10.0)
    state = make_state(name="sgd", critic_lr=1e-2, generator_lr=1e-2)
    stacked = sweep.set_hyperparameter(sweep.stack([state, state]), "penalty_weight", weights)
    data = [batches(0)] * 2
    configs = [
        step_config.StepConfig(
            loss="wasserstein", z_dim=4, penalty=penalties.GradientPenalty(weight=w)
        )
        for w in weights
    ]
    separate = train_separately([state, state], data, configs)
    assert_runs_equal(train_together(stacked, data, run_axis=run_axis), separate)


@pytest.mark.slow
def test_the_mapped_run_axis_computes_what_the_vmapped_one_does():
    states = sweep.stack([make_state(seed=k) for k in range(4)])
    item = sweep.stack([batches(k)[0] for k in range(4)])
    (by_vmap, vmap_metrics), (by_map, map_metrics) = (
        vmapped_step(CONFIG, axis)(states, item) for axis in ("vmap", "map")
    )
    for name in ("generator_params", "critic_params", "critic_opt_state", "generator_opt_state"):
        chex.assert_trees_all_close(
            getattr(by_map, name), getattr(by_vmap, name), rtol=1e-5, atol=1e-6
        )
    chex.assert_trees_all_close(map_metrics, vmap_metrics, rtol=1e-5, atol=1e-6)
    # The mapped form runs the unbatched step on each run (to float rounding: XLA fuses the
    # loop's body on its own terms).
    alone, _ = step()(make_state(seed=2), batches(2)[0])
    chex.assert_trees_all_close(
        sweep.unstack(by_map, 2).critic_params, alone.critic_params, rtol=1e-6, atol=1e-7
    )


def test_auto_maps_the_runs_on_cpu_and_vmaps_them_on_accelerators():
    assert sweep.resolve_run_axis("auto", "cpu") == "map"
    assert sweep.resolve_run_axis("auto", "gpu") == sweep.resolve_run_axis("auto", "tpu") == "vmap"
    assert sweep.resolve_run_axis("map", "gpu") == "map"
    with pytest.raises(ValueError, match="run_axis must be one of auto, vmap, map"):
        sweep.resolve_run_axis("scan")


def test_a_swept_weight_is_the_one_the_runs_penalty_is_computed_with():
    # Each run's penalty metric is its weight times the same unweighted penalty: the weight
    # reaches the typed penalty as a traced value, not the config's 1.0.
    weights = (0.0, 0.5, 4.0)
    state = make_state(name="sgd", critic_lr=1e-2, generator_lr=1e-2)
    stacked = sweep.set_hyperparameter(sweep.stack([state] * 3), "penalty_weight", weights)
    # One critic update, so every run's penalty is taken at the same critic parameters.
    item = batches(0, n_critic=1)[0]
    _, metrics = vmapped_step()(stacked, sweep.stack([item] * 3))
    _, alone = step()(state, item)
    np.testing.assert_allclose(
        metrics["penalty"], [w * float(alone["penalty"]) for w in weights], rtol=1e-5
    )
    assert float(metrics["penalty"][0]) == 0.0


def test_a_swept_weight_needs_a_penalty():
    config = step_config.StepConfig(loss="wasserstein", z_dim=4)
    stacked = sweep.set_hyperparameter(
        sweep.stack([make_state(config)] * 2), "penalty_weight", (1.0, 10.0)
    )
    with pytest.raises(
        ValueError, match=r"sweeps the penalty weight .* but the step has no penalty"
    ):
        vmapped_step(config)(stacked, sweep.stack([batches(0)[0]] * 2))


@pytest.mark.parametrize("name", ["critic_lr", "generator_lr"])
def test_swept_learning_rates_equal_runs_at_those_rates(name):
    # SGD: Adam's first steps are about lr * sign(g), so a one-ulp difference in a gradient
    # that is zero up to rounding moves a weight by a whole step (see test_parallel.py).
    rates = (1e-2, 3e-2)
    base = make_state(name="sgd", critic_lr=1e-2, generator_lr=1e-2)
    stacked = sweep.set_hyperparameter(sweep.stack([base, base]), name, rates, base=1e-2)
    other = "generator_lr" if name == "critic_lr" else "critic_lr"
    separate = [
        make_state(name="sgd", sweepable=False, **{name: rate, other: 1e-2}) for rate in rates
    ]
    data = [batches(0)] * 2
    assert_runs_equal(train_together(stacked, data), train_separately(separate, data, [CONFIG] * 2))


@pytest.mark.slow
def test_swept_clip_bounds_hold_per_run_and_equal_separate_runs():
    bounds = (0.01, 0.05)
    config = step_config.StepConfig(loss="wasserstein", z_dim=4)
    states = [make_state(config, clip=c, sweepable=False) for c in bounds]
    stacked = sweep.set_hyperparameter(
        sweep.stack([make_state(config, clip=bounds[0])] * 2), "clip", bounds
    )
    data = [batches(0, steps=3)] * 2
    together = train_together(stacked, data, config)
    assert_runs_equal(together, train_separately(states, data, [config] * 2))
    for k, bound in enumerate(bounds):
        leaves = jax.tree.leaves(sweep.unstack(together, k).critic_params)
        largest = max(float(jnp.max(jnp.abs(leaf))) for leaf in leaves)
        # Clipping binds: the largest weight sits on the run's own bound.
        assert largest == pytest.approx(bound, rel=1e-6)


def test_a_sweep_is_checked():
    with pytest.raises(ValueError, match="cannot sweep 'beta1'; sweepable: penalty_weight"):
        sweep.Sweep("beta1", (0.0, 0.5))
    with pytest.raises(ValueError, match="at least 2 values"):
        sweep.Sweep("penalty_weight", (1.0,))
    with pytest.raises(ValueError, match="every critic_lr in a sweep must be > 0"):
        sweep.Sweep("critic_lr", (1e-4, 0.0), base=1e-4)
    state = sweep.stack([make_state(sweepable=False)] * 2)
    with pytest.raises(ValueError, match="sweepable=True"):
        sweep.set_hyperparameter(state, "critic_lr", (1e-4, 1e-3), base=1e-4)
    with pytest.raises(ValueError, match="no sweepable clip"):
        sweep.set_hyperparameter(state, "clip", (0.01, 0.1))


def test_the_clip_transform_takes_a_traced_bound():
    params = {"w": jnp.array([0.5, -0.5, 0.01])}
    clip = lambda bound: constraints.clip_weights(bound).update(
        jax.tree.map(jnp.zeros_like, params), None, params
    )[0]
    updates = jax.jit(clip)(jnp.float32(0.1))
    np.testing.assert_allclose(params["w"] + updates["w"], [0.1, -0.1, 0.01], rtol=1e-6)
