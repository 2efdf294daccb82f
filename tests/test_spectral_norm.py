"""Spectral normalisation (Miyato et al., 2018): the estimate, its updates, every layer, devices.

``layers.apply_layer`` wraps a layer in ``flax.linen.SpectralNorm``: one power iteration per
call on the kernel reshaped to ``[kh * kw * C_in, C_out]``, stored only in training mode.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Pytest puts tests/ on sys.path: the suite's helpers, not copies of them.
from test_model_zoo import _Bound
from test_models import _abstract_variables, _images, _variables
from test_parallel import NUM_DEVICES, assert_same_training, train_both_ways
from test_sweep import batches as toy_batches
from test_sweep import optimizer, train_separately, train_together

from gans import models, step_config, sweep, train
from gans import state as state_lib
from gans.models.layers import SPECTRAL_COLLECTION

SN = SPECTRAL_COLLECTION


def _spectral_entries(variables):
    """``{path of the normalised kernel in params: {"u": ..., "sigma": ...}}``.

    Flax keeps ``{"<layer>/kernel/u", "<layer>/kernel/sigma"}`` in a ``SpectralNorm_i`` entry
    beside the layer, so ``("trunk", "SpectralNorm_0", "Conv_0/kernel/u")`` belongs to
    ``params["trunk"]["Conv_0"]["kernel"]``.
    """
    entries = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get(SN, {}))[0]:
        keys = [k.key for k in path]
        assert keys[-2].startswith("SpectralNorm_"), keys
        *layer, what = keys[-1].split("/")
        entries.setdefault((*keys[:-2], *layer), {})[what] = leaf
    return entries


def _kernels(params):
    """Every weight matrix: kernels, and the projection critic's class embedding."""
    return {
        tuple(k.key for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        if path[-1].key in ("kernel", "embedding")
    }


def _as_matrix(kernel):
    """The matrix whose top singular value is normalised: ``[kh * kw * C_in, C_out]``."""
    kernel = np.asarray(kernel, np.float64)
    return kernel.reshape(-1, kernel.shape[-1])


def _top_singular_value(kernel):
    return np.linalg.svd(_as_matrix(kernel), compute_uv=False)[0]


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _apply(model, variables, x, train):
    """Applies in the trainer's way: every non-params collection mutable in training mode."""
    mutable = [name for name in variables if name != "params"]
    return model.apply(variables, x, train=train, mutable=mutable)


def assert_every_kernel_normalised(variables):
    kernels = _kernels(variables["params"])
    entries = _spectral_entries(variables)
    assert kernels, "no kernels"
    assert set(entries) == set(kernels)
    for path, entry in entries.items():
        assert set(entry) == {"u", "sigma"}, path
        chex.assert_shape(entry["u"], (1, kernels[path].shape[-1]))


IMAGES_16 = _images(jax.random.key(1), 16, 1)
PYRAMID_16 = models.image_pyramid(IMAGES_16, 3)
POINTS = jax.random.normal(jax.random.key(1), (4, 2))
Z = jax.random.normal(jax.random.key(2), (4, 8))


# --- The estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, x",
    [
        # 4x4 stride-2 convolutions and the [F, 1] score.
        (models.DCGANCritic(width=4, spectral_norm=True), IMAGES_16),
        # 3x3 stride-1 convolutions.
        (models.DCGANCritic(width=4, spectral_norm=True, downsampling="avgpool"), IMAGES_16),
        # Dense layers [2, 8], [8, 8], [8, 1].
        (models.MLPCritic(hidden=(8, 8), spectral_norm=True), POINTS),
        # A Dense and 4x4 stride-2 transposed convolutions.
        (
            models.DCGANGenerator(
                image_size=16, channels=1, width=4, batch_norm=False, spectral_norm=True
            ),
            Z,
        ),
    ],
    ids=["strided_conv", "conv3x3", "dense", "generator_conv_transpose"],
)
def test_sigma_converges_to_the_reshaped_kernels_top_singular_value(model, x):
    variables = _variables(model, x)

    @jax.jit  # One program: op-by-op dispatch compiles every primitive on its own.
    def run(variables):
        def body(_, variables):
            return {**variables, **_apply(model, variables, x, True)[1]}

        variables = jax.lax.fori_loop(0, 200, body, variables)
        # One more training call: the sigma it stores is the one it divided by.
        out, updates = _apply(model, variables, x, True)
        entries = _spectral_entries(updates)
        divided = jax.tree_util.tree_map_with_path(
            lambda p, leaf: (
                leaf / entries[tuple(k.key for k in p)]["sigma"] if p[-1].key == "kernel" else leaf
            ),
            variables["params"],
        )
        plain = model.clone(spectral_norm=False).apply({"params": divided}, x)
        return variables["params"], entries, out, plain

    params, entries, out, plain = run(variables)
    assert set(entries) == set(_kernels(params))  # Every layer.
    for path, entry in entries.items():
        kernel = _get(params, path)
        np.testing.assert_allclose(entry["sigma"], _top_singular_value(kernel), rtol=1e-4)
        np.testing.assert_allclose(_top_singular_value(kernel / entry["sigma"]), 1.0, rtol=1e-4)
    # The layers compute with W / sigma: the unnormalised model on those kernels agrees.
    np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model, x",
    [
        (models.DCGANCritic(width=4, spectral_norm=True), IMAGES_16),
        (
            models.DCGANGenerator(
                image_size=8, channels=1, width=4, batch_norm=False, spectral_norm=True
            ),
            Z,
        ),
    ],
    ids=["critic", "generator"],
)
def test_one_power_iteration_per_training_call_and_none_stored_in_eval(model, x):
    variables = _variables(model, x)
    calls = jax.jit(
        lambda v: (
            _apply(model, v, x, False),
            _apply(model, v, x, True),
            model.apply(v, x, train=False),  # As train.generate calls it: nothing mutable.
        )
    )
    (eval_out, eval_updates), (train_out, updates), immutable_out = calls(variables)
    chex.assert_trees_all_equal(eval_updates[SN], variables[SN])  # train=False stores nothing.
    np.testing.assert_array_equal(immutable_out, eval_out)
    entries, before = _spectral_entries(updates), _spectral_entries(variables)
    assert set(entries) == set(before)
    for path, entry in entries.items():
        # One step of power iteration from the stored u, as flax's n_steps=1 does.
        w = _as_matrix(_get(variables["params"], path))
        u = np.asarray(before[path]["u"], np.float64)
        v = u @ w.T
        v /= np.sqrt(np.sum(v**2) + 1e-12)
        u = v @ w
        u /= np.sqrt(np.sum(u**2) + 1e-12)
        np.testing.assert_allclose(entry["u"], u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(entry["sigma"], (v @ w @ u.T)[0, 0], rtol=1e-5)
        assert not np.allclose(entry["u"], before[path]["u"])
    # Evaluation divides by the same one-step estimate, without storing it.
    np.testing.assert_allclose(eval_out, train_out, rtol=1e-5, atol=1e-6)


# --- Every layer of every critic, and the generator option ----------------------------------

LABELS = jnp.arange(4, dtype=jnp.int32) % 3
SN_DCGAN = models.DCGANCritic(width=4, spectral_norm=True)
SN_MSG = models.MSGCritic(width=4, combine="lin_cat", spectral_norm=True)
SN_MLP = models.MLPCritic(hidden=(8,), spectral_norm=True)


@pytest.mark.parametrize(
    "critic, x",
    [
        (SN_MLP, POINTS),
        (SN_DCGAN, IMAGES_16),
        (models.DCGANCritic(width=4, spectral_norm=True, downsampling="avgpool"), IMAGES_16),
        (SN_MSG, PYRAMID_16),
        (models.MSGCritic(width=4, spectral_norm=True), PYRAMID_16),
        # The Q head's layers and the score, beside the shared trunk.
        (models.InfoGANCritic(SN_DCGAN, 3, 1, q_hidden=(8,)), IMAGES_16),
        (models.InfoGANCritic(SN_MLP, 3, 1, q_hidden=(8,)), POINTS),
        (models.InfoGANCritic(SN_MSG, 3, 1, q_hidden=(8,)), PYRAMID_16),
        (_Bound(models.ConditionalCritic(SN_DCGAN, 3, mode="concat"), (LABELS,)), IMAGES_16),
        (_Bound(models.ConditionalCritic(SN_DCGAN, 3, mode="projection"), (LABELS,)), IMAGES_16),
    ],
    ids=[
        "mlp",
        "dcgan",
        "dcgan_avgpool",
        "msg_lin_cat",
        "msg_cat",
        "infogan_dcgan",
        "infogan_mlp",
        "infogan_msg",
        "conditional_concat",
        "conditional_projection",
    ],
)
def test_every_critic_normalises_every_layer(critic, x):
    variables = _abstract_variables(critic, x)
    assert "batch_stats" not in variables  # The trainer may then score real and fake jointly.
    assert_every_kernel_normalised(variables)


@pytest.mark.parametrize("critic", [SN_MLP, SN_DCGAN, SN_MSG], ids=["mlp", "dcgan", "msg"])
def test_trunks_keep_the_flag(critic):
    trunk = critic.trunk()
    assert trunk.spectral_norm and not critic.clone(spectral_norm=False).trunk().spectral_norm
    for field in dataclasses.fields(trunk):  # Every hyper-parameter, MSG's combine included.
        if field.init and field.name not in ("parent", "name"):
            assert getattr(trunk, field.name) == getattr(critic, field.name), field.name


@pytest.mark.parametrize(
    "generator",
    [
        models.DCGANGenerator(image_size=16, channels=1, width=4, spectral_norm=True),
        models.MSGGenerator(image_size=16, channels=1, width=4, spectral_norm=True),
        models.MLPGenerator(out_dim=2, hidden=(8, 8), spectral_norm=True),
    ],
    ids=["dcgan", "msg", "mlp"],
)
def test_generator_option_normalises_every_layer_and_keeps_parameter_names(generator):
    variables = _abstract_variables(generator, Z)
    assert_every_kernel_normalised(variables)
    plain = _abstract_variables(generator.clone(spectral_norm=False), Z)
    assert SN not in plain
    # The flag adds its collection only: the same parameters and BatchNorm statistics.
    chex.assert_trees_all_equal_shapes_and_dtypes(
        {k: v for k, v in variables.items() if k != SN}, plain
    )


def _shapes_by_path(variables):
    return {
        "/".join(k.key for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]
    }


def test_generators_without_the_flag_keep_their_old_parameter_trees():
    # Written out from the models before the flag existed: checkpoints rely on these names.
    shared = {
        "params/Dense_0/kernel": (8, 128),
        "params/Dense_0/bias": (128,),
        "params/BatchNorm_0/scale": (128,),
        "params/BatchNorm_0/bias": (128,),
        "params/BatchNorm_1/scale": (4,),
        "params/BatchNorm_1/bias": (4,),
        "batch_stats/BatchNorm_0/mean": (128,),
        "batch_stats/BatchNorm_0/var": (128,),
        "batch_stats/BatchNorm_1/mean": (4,),
        "batch_stats/BatchNorm_1/var": (4,),
    }
    dcgan = {
        **shared,
        "params/Upsample2x_0/ConvTranspose_0/kernel": (4, 4, 4, 1),  # The output layer.
        "params/Upsample2x_0/ConvTranspose_0/bias": (1,),
        "params/Upsample2x_1/ConvTranspose_0/kernel": (4, 4, 8, 4),
        "params/Upsample2x_1/ConvTranspose_0/bias": (4,),
    }
    msg = {
        **shared,
        "params/Upsample2x_0/ConvTranspose_0/kernel": (4, 4, 8, 4),
        "params/Upsample2x_0/ConvTranspose_0/bias": (4,),
        "params/Upsample2x_1/ConvTranspose_0/kernel": (4, 4, 4, 1),
        "params/Upsample2x_1/ConvTranspose_0/bias": (1,),
        "params/to_rgb_4/kernel": (1, 1, 8, 1),
        "params/to_rgb_4/bias": (1,),
        "params/to_rgb_8/kernel": (1, 1, 4, 1),
        "params/to_rgb_8/bias": (1,),
    }
    mlp = {
        "params/Dense_0/kernel": (8, 8),
        "params/Dense_0/bias": (8,),
        "params/Dense_1/kernel": (8, 8),
        "params/Dense_1/bias": (8,),
        "params/Dense_2/kernel": (8, 2),
        "params/Dense_2/bias": (2,),
    }
    for generator, expected in [
        (models.DCGANGenerator(image_size=16, channels=1, width=4), dcgan),
        (models.MSGGenerator(image_size=16, channels=1, width=4), msg),
        (models.MLPGenerator(out_dim=2, hidden=(8, 8)), mlp),
    ]:
        assert _shapes_by_path(_abstract_variables(generator, Z)) == expected


# --- Training: devices and vmapped runs -----------------------------------------------------


def _sigmas(model_state):
    return [entry["sigma"] for entry in _spectral_entries(model_state).values()]


@pytest.mark.slow
def test_pmapped_spectral_norm_dcgan_equals_single_device_training():
    if jax.local_device_count() < NUM_DEVICES:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/conftest.py)")
    config = step_config.StepConfig(loss="hinge", z_dim=8)
    generator = models.DCGANGenerator(
        image_size=8, channels=1, width=4, batch_norm=False, spectral_norm=True
    )
    critic = models.DCGANCritic(width=4, spectral_norm=True)
    key = jax.random.key(2)
    batches = [  # [n_critic, global batch, 8, 8, 1]: 2 examples per device.
        {"x": jnp.tanh(jax.random.normal(jax.random.fold_in(key, i), (1, 16, 8, 8, 1)))}
        for i in range(3)
    ]
    # Also checks that every device holds the same state, spectral vectors included.
    single, single_metrics, pmapped, pmapped_metrics = train_both_ways(
        config, generator, critic, batches, jnp.zeros((16, 8, 8, 1))
    )
    assert set(single.critic_state) == {SN} and set(single.generator_state) == {SN}
    assert len(_sigmas(single.critic_state)) == 2 and len(_sigmas(single.generator_state)) == 2
    # The estimates moved off their initial 1 during training.
    assert all(float(s) != 1.0 for s in _sigmas(single.critic_state))
    assert_same_training(single, single_metrics, pmapped, pmapped_metrics)


@pytest.mark.slow
def test_vmapped_runs_keep_their_own_spectral_vectors():
    config = step_config.StepConfig(loss="wasserstein", z_dim=4)
    make = lambda seed: state_lib.create_state(
        generator=models.MLPGenerator(out_dim=2, hidden=(8,), spectral_norm=True),
        critic=models.MLPCritic(hidden=(8, 8), spectral_norm=True),
        generator_tx=optimizer("sgd", 1e-2),
        critic_tx=optimizer("sgd", 1e-2),
        config=config,
        example=jnp.zeros((8, 2)),
        key=jax.random.key(seed),
    )
    states = [make(k) for k in range(2)]
    data = [toy_batches(k, steps=3, n_critic=1) for k in range(2)]
    stacked = train_together(sweep.stack(states), data, config)
    separate = train_separately(states, data, [config] * 2)
    for k, alone in enumerate(separate):
        together = sweep.unstack(stacked, k)
        for name in ("critic_params", "generator_params", "critic_state", "generator_state"):
            chex.assert_trees_all_close(
                getattr(together, name), getattr(alone, name), rtol=1e-5, atol=1e-6
            )
    runs = [sweep.unstack(stacked, k) for k in range(2)]
    for name in ("critic_state", "generator_state"):
        first, second = (_spectral_entries(getattr(run, name)) for run in runs)
        assert first.keys() == second.keys() and first
        for path in first:
            assert not np.allclose(first[path]["u"], second[path]["u"]), (name, path)


# --- How often the power iteration advances in a train step ---------------------------------


def _iterated(u, w, times):
    """``times`` power iterations from ``u`` on ``w``, as flax's SpectralNorm runs one."""
    for _ in range(times):
        v = u @ w.T
        v /= np.sqrt(np.sum(v**2) + 1e-12)
        u = v @ w
        u /= np.sqrt(np.sum(u**2) + 1e-12)
    return u


@pytest.mark.parametrize(
    "power_iterations, per_step", [("per_update", lambda n: n), ("per_call", lambda n: 2 * n + 1)]
)
def test_a_train_step_advances_the_power_iteration_once_per_update_or_per_call(
    power_iterations, per_step
):
    # The critic's weights are frozen (SGD at rate 0), so the stored u after one step is u0
    # iterated a known number of times: n_critic once per update; 2 n_critic + 1 as the
    # released SNGAN code counts (real, fake, and the generator's pass).
    n_critic = 3
    config = step_config.StepConfig(loss="hinge", z_dim=4, power_iterations=power_iterations)
    state = state_lib.create_state(
        generator=models.MLPGenerator(out_dim=6, hidden=(8,)),
        critic=models.MLPCritic(hidden=(6,), spectral_norm=True),  # A 6 x 6 and a 6 x 1 kernel.
        generator_tx=optimizer("adam", 1e-3),
        critic_tx=state_lib.make_optimizer("sgd", 0.0),
        config=config,
        example=jnp.zeros((1, 6)),
        key=jax.random.key(0),
    )
    batches = {"x": jax.random.normal(jax.random.key(1), (n_critic, 8, 6))}
    new_state, _ = jax.jit(train.make_train_step(config))(state, batches)
    chex.assert_trees_all_equal(new_state.critic_params, state.critic_params)
    before, after = _spectral_entries(state.critic_state), _spectral_entries(new_state.critic_state)
    for path in before:
        w = _as_matrix(_get(state.critic_params, path))
        u = np.asarray(before[path]["u"], np.float64)
        np.testing.assert_allclose(after[path]["u"], _iterated(u, w, per_step(n_critic)), atol=1e-5)
    # On the square kernel one iteration fewer is told apart (on 6 x 1, u is one number).
    square = ("Dense_0", "kernel")
    w, u = _as_matrix(_get(state.critic_params, square)), np.asarray(before[square]["u"])
    assert not np.allclose(after[square]["u"], _iterated(u, w, per_step(n_critic) - 1), atol=1e-4)


def test_power_iterations_is_checked():
    with pytest.raises(ValueError, match="unknown power_iterations 'twice'; known: per_update"):
        step_config.StepConfig(loss="hinge", z_dim=4, power_iterations="twice")
    with pytest.raises(ValueError, match="use --power_iterations=per_update"):
        step_config.StepConfig(loss="hinge", z_dim=4, power_iterations="per_call", unroll_steps=5)
