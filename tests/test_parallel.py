"""Data parallelism: the pmapped step on 8 simulated devices equals the step on one device."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import models, parallel, step_config, train
from gans import run as run_lib
from gans import state as state_lib

NUM_DEVICES = 8


@pytest.fixture(autouse=True)
def _eight_devices():
    if jax.local_device_count() < NUM_DEVICES:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/conftest.py)")


def test_draw_gives_each_device_its_slice_of_the_global_draw():
    key = jax.random.key(3)

    def on_device(key):
        return parallel.draw_like(jax.random.normal, key, (2, 3), parallel.AXIS)

    keys = parallel.replicate(key, jax.local_devices())
    pieces = jax.pmap(on_device, axis_name=parallel.AXIS)(keys)
    chex.assert_trees_all_equal(pieces.reshape(16, 3), jax.random.normal(key, (16, 3)))
    # Devices get different numbers: the slices differ.
    assert not np.allclose(pieces[0], pieces[1])


def test_batch_std_over_devices_is_the_global_std():
    x = (
        jax.random.normal(jax.random.key(0), (NUM_DEVICES, 4, 3))
        * jnp.arange(1.0, 9.0)[:, None, None]
    )
    stds = jax.pmap(lambda x: parallel.std(x, parallel.AXIS), axis_name=parallel.AXIS)(x)
    np.testing.assert_allclose(stds, np.full(NUM_DEVICES, np.std(np.asarray(x))), rtol=1e-5)


def test_shard_gives_device_i_the_ith_slice_of_every_batch():
    x = np.arange(3 * 16).reshape(3, 16)  # [n_critic, B]
    shards = parallel.shard({"x": x}, NUM_DEVICES)["x"]
    assert shards.shape == (NUM_DEVICES, 3, 2)
    np.testing.assert_array_equal(shards[5], x[:, 10:12])
    runs = np.stack([x, -x])  # [runs, n_critic, B]: the examples on axis 2.
    shards = parallel.shard({"x": runs}, NUM_DEVICES, batch_axis=2)["x"]
    assert shards.shape == (NUM_DEVICES, 2, 3, 2)
    np.testing.assert_array_equal(shards[5], runs[:, :, 10:12])


@pytest.mark.parametrize("batch_axis", [1, 2])
def test_both_layouts_give_device_i_the_ith_slice_and_a_whole_replica(batch_axis):
    x = np.arange(2 * 3 * 16).reshape(2, 3, 16)[0 if batch_axis == 1 else slice(None)]
    state = {"w": np.arange(5.0)}
    devices = tuple(parallel.devices(NUM_DEVICES))
    for transform in parallel.TRANSFORMS:
        layout = parallel.Layout(transform, devices, batch_axis=batch_axis)
        placed = layout.shard({"x": x})["x"]
        for i, device in enumerate(devices):
            # pmap takes host blocks on a leading axis; shard_map one array laid on the mesh.
            if transform == "pmap":
                block = placed[i]
            else:
                block = next(s.data for s in placed.addressable_shards if s.device == device)
            want = x[..., 2 * i : 2 * i + 2]
            np.testing.assert_array_equal(np.asarray(block).reshape(want.shape), want)
        replicated = layout.replicate(state)["w"]
        assert {s.device for s in replicated.addressable_shards} == set(devices)
        for shard in replicated.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data).reshape(5), state["w"])
        copy = layout.one_copy(layout.replicate(state))["w"]
        assert copy.devices() == {devices[0]} and copy.shape == (5,)


def test_devices_refuse_a_batch_that_does_not_split_and_too_many_devices():
    with pytest.raises(ValueError, match="batch size 12 does not divide evenly over 8 devices"):
        parallel.devices(8, batch_size=12)
    with pytest.raises(ValueError, match="--num_devices=9 but this host has 8"):
        parallel.devices(9)
    assert len(parallel.devices(4, batch_size=12)) == 4


def train_both_ways(
    config, generator, critic, batches, example, *, parallel_models=None, transform="pmap"
):
    """Trains on one device with jit and on 8 with ``transform`` (pmap or shard_map) from the
    same state and global batches."""
    # SGD with momentum, not Adam: Adam's first steps are about lr * sign(g), so a gradient
    # that is zero up to rounding (a dead unit) moves by lr on one side and not the other.
    make = lambda g, c: state_lib.create_state(
        generator=g,
        critic=c,
        generator_tx=optax.sgd(0.05, momentum=0.5),
        critic_tx=optax.sgd(0.05, momentum=0.5),
        config=config,
        example=example,
        key=jax.random.key(0),
    )
    single = make(generator, critic)
    step = jax.jit(train.make_train_step(config))
    for item in batches:
        single, single_metrics = step(single, item)
    g, c = parallel_models or (generator, critic)
    devices = parallel.devices(NUM_DEVICES)
    layout = parallel.Layout(transform, tuple(devices))
    replicated = layout.replicate(make(g, c))
    pstep = run_lib.make_pmapped_train_step(config, devices, transform=transform)
    for item in batches:
        replicated, metrics = pstep(replicated, layout.shard(item))
    # Every device holds the same state.
    for leaf in jax.tree.leaves(replicated):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            copies = [shard.data for shard in leaf.addressable_shards]
            assert len(copies) == NUM_DEVICES
            chex.assert_trees_all_close(copies, [copies[0]] * NUM_DEVICES)
    return single, single_metrics, layout.one_copy(replicated), layout.one_copy(metrics)


def assert_same_training(single, single_metrics, pmapped, pmapped_metrics):
    # Equal up to float reduction order: a global mean vs a mean of per-device means.
    tolerance = dict(rtol=1e-4, atol=2e-5)
    for name in ("generator_params", "critic_params", "generator_state", "critic_state"):
        chex.assert_trees_all_close(getattr(pmapped, name), getattr(single, name), **tolerance)
    chex.assert_trees_all_close(pmapped_metrics, single_metrics, rtol=1e-3, atol=1e-4)


def toy_batches(steps, n_critic, batch, seed=1, with_labels=False):
    key = jax.random.key(seed)
    items = []
    for i in range(steps):
        x_key, y_key = jax.random.split(jax.random.fold_in(key, i))
        item = {"x": jax.random.normal(x_key, (n_critic, batch, 2))}
        if with_labels:
            item["y"] = jax.random.randint(y_key, (n_critic, batch), 0, 4)
        items.append(item)
    return items


@pytest.mark.parametrize("transform", parallel.TRANSFORMS)
def test_pmapped_wgan_gp_equals_single_device_training(transform):
    config = step_config.StepConfig(
        loss="wasserstein",
        z_dim=4,
        penalty="gradient_penalty",
        penalty_options=(("weight", 10.0),),
    )
    result = train_both_ways(
        config,
        models.MLPGenerator(out_dim=2, hidden=(32, 32)),
        models.MLPCritic(hidden=(32, 32)),
        toy_batches(steps=3, n_critic=3, batch=32),
        jnp.zeros((32, 2)),
        transform=transform,
    )
    assert_same_training(*result)
    assert np.isfinite(result[1]["penalty"]) and result[1]["penalty"] > 0


@pytest.mark.parametrize("transform", parallel.TRANSFORMS)
@pytest.mark.parametrize("trick", ["labels_noise_dragan", "infogan"])
def test_every_random_trick_is_device_count_invariant(trick, transform):
    # Noisy labels, instance noise, DRAGAN's perturbation and batch std, conditional labels and
    # InfoGAN codes all draw randomness: each device must take its slice of global draws.
    mlp_generator = models.MLPGenerator(out_dim=2, hidden=(32,))
    if trick == "infogan":
        config = step_config.StepConfig(
            loss="non_saturating",
            z_dim=4,
            info=step_config.InfoCodes(num_categories=3, num_continuous=1),
        )
        generator = mlp_generator
        critic = models.InfoGANCritic(
            models.MLPCritic(hidden=(32,)), num_categories=3, num_continuous=1
        )
    else:
        config = step_config.StepConfig(
            loss="non_saturating",
            z_dim=4,
            penalty="dragan",
            penalty_options=(("weight", 10.0),),
            flip_probability=0.2,
            instance_noise=0.1,
            num_classes=4,
        )
        generator = models.ConditionalGenerator(mlp_generator, 4)
        critic = models.ConditionalCritic(models.MLPCritic(hidden=(32,)), 4)
    result = train_both_ways(
        config,
        generator,
        critic,
        toy_batches(steps=2, n_critic=2, batch=16, with_labels=trick != "infogan"),
        jnp.zeros((16, 2)),
        transform=transform,
    )
    assert_same_training(*result)


@pytest.mark.slow
@pytest.mark.parametrize("transform", parallel.TRANSFORMS)
def test_pmapped_batchnorm_dcgan_equals_single_device_training(transform):
    # BatchNorm in both players (no penalty, as the DCGAN guideline allows): statistics are
    # averaged over the device axis, so they are the global batch's.
    config = step_config.StepConfig(loss="non_saturating", z_dim=8)
    generator = models.DCGANGenerator(image_size=16, channels=1, width=8)
    critic = models.DCGANCritic(width=8, normalization="batch")
    synced = (
        generator.clone(axis_name=parallel.AXIS),
        critic.clone(axis_name=parallel.AXIS),
    )
    key = jax.random.key(2)
    batches = [
        {"x": jnp.tanh(jax.random.normal(jax.random.fold_in(key, i), (1, 16, 16, 16, 1)))}
        for i in range(2)
    ]
    single, single_metrics, pmapped, pmapped_metrics = train_both_ways(
        config,
        generator,
        critic,
        batches,
        jnp.zeros((16, 16, 16, 1)),
        parallel_models=synced,
        transform=transform,
    )
    assert jax.tree.leaves(single.critic_state) and jax.tree.leaves(single.generator_state)
    assert_same_training(single, single_metrics, pmapped, pmapped_metrics)


@pytest.mark.slow
@pytest.mark.parametrize("transform", parallel.TRANSFORMS)
def test_runs_on_eight_devices_are_the_same_mapped_or_vmapped(transform):
    from gans import sweep

    config = step_config.StepConfig(loss="wasserstein", z_dim=4, penalty="gradient_penalty")
    tx = optax.sgd(0.05)  # One optimizer (static in the state), so the states stack.
    states = [
        state_lib.create_state(
            generator=models.MLPGenerator(out_dim=2, hidden=(16,)),
            critic=models.MLPCritic(hidden=(16,)),
            generator_tx=tx,
            critic_tx=tx,
            config=config,
            example=jnp.zeros((16, 2)),
            key=jax.random.key(k),
        )
        for k in range(2)
    ]
    devices = parallel.devices(NUM_DEVICES)
    layout = parallel.Layout(transform, tuple(devices), batch_axis=2)
    items = [toy_batches(steps=1, n_critic=2, batch=16, seed=k)[0] for k in range(2)]
    # [runs, n_critic, B, 2] split on B, as gans.runner feeds several runs.
    batch = layout.shard(jax.tree.map(lambda *a: np.stack(a), *items))
    results = {}
    for run_axis in ("vmap", "map"):
        pstep = run_lib.make_pmapped_train_step(
            config, devices, vmapped=True, run_axis=run_axis, transform=transform
        )
        state, metrics = pstep(layout.replicate(sweep.stack(states)), batch)
        results[run_axis] = layout.one_copy(state), layout.one_copy(metrics)
    (by_vmap, vmap_metrics), (by_map, map_metrics) = results["vmap"], results["map"]
    chex.assert_trees_all_close(by_map.critic_params, by_vmap.critic_params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(map_metrics, vmap_metrics, rtol=1e-5, atol=1e-6)
    assert vmap_metrics["critic_loss"].shape == (2,)


def test_pmap_and_shard_map_train_alike_and_unknown_transforms_are_named():
    config = step_config.StepConfig(loss="wasserstein", z_dim=4, penalty="gradient_penalty")
    args = (
        config,
        models.MLPGenerator(out_dim=2, hidden=(16,)),
        models.MLPCritic(hidden=(16,)),
        toy_batches(steps=2, n_critic=2, batch=16),
        jnp.zeros((16, 2)),
    )
    _, _, by_pmap, pmap_metrics = train_both_ways(*args, transform="pmap")
    _, _, by_shard_map, shard_map_metrics = train_both_ways(*args, transform="shard_map")
    # The same per-device programs and collectives: equal up to how XLA fuses each.
    chex.assert_trees_all_close(by_shard_map.critic_params, by_pmap.critic_params, rtol=1e-6)
    chex.assert_trees_all_close(shard_map_metrics, pmap_metrics, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="--parallel must be one of pmap, shard_map"):
        parallel.data_parallel(lambda x: x, None, "xmap")
