"""The two-player train step: one pure function ``(state, batches) -> (state, metrics)``.

One call performs ``n_critic`` critic updates, each on its own real batch
(compiled as a ``lax.scan``), then one generator update, as in WGAN Alg. 1 and
WGAN-GP Alg. 1. ``n_critic = 1`` gives the alternating updates of the original
GAN. The same function runs under ``jax.jit`` on one device and under
``jax.pmap(..., axis_name='batch')`` on many: gradients and metrics are averaged
with ``lax.pmean`` only when ``StepConfig.axis_name`` is set.

This module owns the step itself: sampling (``generate``), the step's keys and latents, the
augmentation and noise of critic inputs, both players' updates and ADA's adaptation. The
state and optimizers live in ``gans.state``, the step's settings in ``gans.step_config``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gans import augment as augment_lib
from gans import losses as losses_lib
from gans import packing, parallel, unrolled
from gans import penalties as penalties_lib
from gans.models import infogan
from gans.state import GANState
from gans.step_config import StepConfig

Array = jax.Array
PyTree = Any
Metrics = dict[str, Array]


def _apply(
    module: nn.Module, params: PyTree, model_state: PyTree, inputs: tuple, train: bool
) -> tuple[Any, PyTree]:
    """Applies a module to ``inputs``, returning its output and its updated model state."""
    variables = {"params": params, **model_state}
    if train and model_state:
        return module.apply(variables, *inputs, train=True, mutable=list(model_state))
    return module.apply(variables, *inputs, train=train), model_state


def generate(
    state: GANState,
    z: Array,
    labels: Array | None = None,
    *,
    train: bool = False,
    use_ema: bool = True,
) -> PyTree:
    """Samples ``G(z)`` (or ``G(z, labels)``); ``train=False`` uses BatchNorm's running averages.

    ``z`` must already hold any InfoGAN codes. With ``use_ema`` the moving average
    of the generator's weights is used when the state keeps one.
    """
    params = state.generator_params
    if use_ema and state.generator_ema_params is not None:
        params = state.generator_ema_params
    inputs = (z,) if labels is None else (z, labels)
    return _apply(state.generator, params, state.generator_state, inputs, train)[0]


def _step_key(state: GANState) -> Array:
    # Shared by every device: each takes its slice of global draws (gans.parallel.draw).
    return jax.random.fold_in(state.key, state.step)


def _annealed(value: float, anneal_steps: int, step: Array) -> Array | float:
    """``value`` decaying linearly to 0 over ``anneal_steps`` (constant if 0)."""
    if not anneal_steps:
        return value
    return value * jnp.clip(1.0 - step / anneal_steps, 0.0, 1.0)


def _latents(config: StepConfig, key: Array, batch_size: int) -> tuple[Array, tuple | None]:
    """``z`` with any InfoGAN codes appended, and the codes themselves."""
    z_key, code_key = jax.random.split(key)
    z = parallel.draw_like(jax.random.normal, z_key, (batch_size, config.z_dim), config.axis_name)
    if config.info is None:
        return z, None
    info = config.info
    return infogan.generator_input(
        z, code_key, info.num_categories, info.num_continuous, axis_name=config.axis_name
    )


def _information(config: StepConfig, q: dict, codes: tuple) -> dict[str, Array]:
    """InfoGAN's lower bound ``L_I`` on the mutual information between codes and samples."""
    return infogan.mutual_information_lower_bound(
        q,
        *codes,
        config.info.num_categories,
        categorical_weight=config.info.categorical_weight,
        continuous_weight=config.info.continuous_weight,
    )


def _with_instance_noise(
    x: PyTree, std: Array | float, key: Array, axis_name: str | None
) -> PyTree:
    leaves, treedef = jax.tree.flatten(x)
    keys = jax.random.split(key, len(leaves))
    noise = lambda leaf, k: parallel.draw_like(
        functools.partial(jax.random.normal, dtype=leaf.dtype), k, leaf.shape, axis_name
    )
    return treedef.unflatten([leaf + std * noise(leaf, k) for leaf, k in zip(leaves, keys)])


# Augmentation draws from its own stream of the update's key (a fold-in, not a wider split), so
# runs without it keep every random number they drew before it existed.
_AUGMENT_STREAM = 0x617567


def _augment_key(key: Array) -> Array:
    return jax.random.fold_in(key, _AUGMENT_STREAM)


def _augmented(config: StepConfig, state: GANState, x: Array, key: Array) -> Array:
    """``x`` through the step's augmentation (``config.augment``), or ``x`` without one."""
    if not config.augment:
        return x
    return augment_lib.augment(
        x,
        key,
        config.augment,
        probability=state.augment_probability,
        axis_name=config.axis_name,
    )


def critic_inputs(
    config: StepConfig,
    state: GANState,
    real: PyTree,
    fake: PyTree,
    augment_key: Array,
    noise_key: Array,
) -> tuple[PyTree, PyTree]:
    """What the critic update scores, its penalty included: augmented, noised, then packed.

    ``real`` is already through ``config.real_transform``.
    """
    real_key, fake_key = jax.random.split(augment_key)
    real = _augmented(config, state, real, real_key)
    fake = _augmented(config, state, fake, fake_key)
    if config.instance_noise:
        std = _annealed(config.instance_noise, config.noise_anneal_steps, state.step)
        real_key, fake_key = jax.random.split(noise_key)
        real = _with_instance_noise(real, std, real_key, config.axis_name)
        fake = _with_instance_noise(fake, std, fake_key, config.axis_name)
    return packing.pack_tree(real, config.pack), packing.pack_tree(fake, config.pack)


def _concat(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda u, v: jnp.concatenate([u, v]), a, b)


def scores_mix_examples(state: GANState) -> bool:
    """Whether the critic scores an example by its batch (BatchNorm, minibatch std).

    Such a critic scores real and fake batches in separate passes, as in the DCGAN reference:
    a joint batch would mix real and fake examples in its statistics.
    """
    return "batch_stats" in state.critic_state or bool(getattr(state.critic, "minibatch_std", 0))


class CriticBatch(NamedTuple):
    """What one critic objective is evaluated on.

    Attributes:
      real, fake: the critic's inputs (``critic_inputs``: augmented, noised, packed).
      clean_real, clean_fake: the same before augmentation (consistency regularisation's).
      labels: ``(y,)`` for a conditional GAN, else ``()``.
      codes: the InfoGAN codes inside the fakes' latents, or None.
    """

    real: PyTree
    fake: PyTree
    clean_real: PyTree
    clean_fake: PyTree
    labels: tuple
    codes: tuple | None


def critic_objective(
    config: StepConfig,
    state: GANState,
    c_params: PyTree,
    batch: CriticBatch,
    keys: tuple[Array, Array, Array, Array],
    *,
    probe: bool = True,
) -> tuple[Array, dict[str, Any]]:
    """The critic's loss at ``c_params``: adversarial + penalty (+ consistency, - L_I).

    Args:
      keys: the penalty's, the noisy labels', the slope probe's and consistency's draws.
      probe: measure the slope on interpolates even without a penalty (a diagnostic).

    Returns:
      The loss and its parts (``aux``), the critic's updated model state among them.
    """
    family = losses_lib.get_loss(config.loss)
    penalty_key, label_key, probe_key, consistency_key = keys
    real, fake, labels = batch.real, batch.fake, batch.labels

    def critic(x, labels, model_state):
        out, model_state = _apply(state.critic, c_params, model_state, (x, *labels), True)
        return (out if config.info else (out, None)), model_state

    if scores_mix_examples(state) or config.power_iterations == "per_call":
        (real_scores, _), c_state = critic(real, labels, state.critic_state)
        (fake_scores, q), c_state = critic(fake, labels, c_state)
    else:
        joint_labels = tuple(jnp.concatenate([y, y]) for y in labels)
        (scores, q), c_state = critic(_concat(real, fake), joint_labels, state.critic_state)
        real_scores, fake_scores = jnp.split(scores, 2)
        q = None if q is None else jax.tree.map(lambda a: jnp.split(a, 2)[1], q)
    label_options = {}
    if family.uses_labels:
        label_options = {
            "label_smoothing": config.label_smoothing,
            "flip_probability": _annealed(
                config.flip_probability, config.flip_anneal_steps, state.step
            ),
            "key": label_key,
        }
        if config.axis_name is not None:
            label_options["axis_name"] = config.axis_name
    adversarial = family.discriminator(real_scores, fake_scores, **label_options)
    critic_fn = lambda x: critic(x, labels, state.critic_state)[0][0]
    if config.penalty is not None:
        with jax.named_scope("penalty"):
            penalty, norms = config.penalty(
                critic_fn, real, fake, penalty_key, axis_name=config.axis_name
            )
    else:
        penalty, norms = jnp.zeros((), jnp.float32), None
        if probe:
            # Diagnostic only: the critic's slope on interpolates, as WGAN-GP plots it. Its
            # own backward pass, so the step asks for it once, not in every critic update.
            _, norms = penalties_lib.gradient_penalty(
                critic_fn, real, fake, probe_key, weight=0.0, axis_name=config.axis_name
            )
            norms = jax.lax.stop_gradient(norms)
    aux = {
        "c_state": c_state,
        "real_score": jnp.mean(real_scores),
        "fake_score": jnp.mean(fake_scores),
        "real_sign": augment_lib.overfitting_signal(real_scores),
        "adversarial": adversarial,
        "penalty": penalty,
    }
    if norms is not None:
        aux["grad_norm"] = jnp.mean(norms)
    loss = adversarial + penalty
    if config.consistency:
        aux["consistency"], _ = penalties_lib.consistency_regularization(
            critic_fn,
            batch.clean_real,
            batch.clean_fake,
            consistency_key,
            weight=config.consistency_weight,
            fake_weight=config.consistency_fake_weight,
            policy=config.consistency_policy,
            axis_name=config.axis_name,
        )
        loss = loss + aux["consistency"]
    if config.info is not None:
        information = _information(config, q, batch.codes)
        aux["information"] = information
        loss = loss - information["total"]
    return loss, aux


def _objective_keys(key: Array) -> tuple[tuple[Array, Array, Array, Array], Array, Array]:
    """An update's key split as it always was: objective keys, latents' key, noise key."""
    z_key, penalty_key, label_key, probe_key, noise_key = jax.random.split(key, 5)
    consistency_key = jax.random.fold_in(_augment_key(key), 1)
    return (penalty_key, label_key, probe_key, consistency_key), z_key, noise_key


def _critic_batch(
    config: StepConfig,
    state: GANState,
    real: PyTree,
    fake: PyTree,
    labels: tuple,
    codes: tuple | None,
    key: Array,
    noise_key: Array,
) -> CriticBatch:
    """``real`` (through ``real_transform``) and ``fake`` as the critic objective takes them."""
    inputs = critic_inputs(config, state, real, fake, _augment_key(key), noise_key)
    return CriticBatch(*inputs, real, fake, labels, codes)


def _real_input(config: StepConfig, batch: Mapping[str, Array]) -> PyTree:
    return batch["x"] if config.real_transform is None else config.real_transform(batch["x"])


def _critic_update(
    config: StepConfig,
    state: GANState,
    batch: Mapping[str, Array],
    key: Array,
    *,
    probe: bool = True,
) -> tuple[GANState, Metrics]:
    """One critic update; ``probe``: measure the slope on interpolates even without a penalty."""
    family = losses_lib.get_loss(config.loss)
    keys, z_key, noise_key = _objective_keys(key)
    real = _real_input(config, batch)
    labels = () if config.num_classes is None else (batch["y"],)
    batch_size = jax.tree.leaves(real)[0].shape[0]
    # Fakes share the real batch's labels, so interpolates between them have one label.
    z, codes = _latents(config, z_key, batch_size)
    with jax.named_scope("generate"):
        fake, g_state = _apply(
            state.generator, state.generator_params, state.generator_state, (z, *labels), True
        )
    fake = jax.lax.stop_gradient(fake)
    inputs = _critic_batch(config, state, real, fake, labels, codes, key, noise_key)
    loss_fn = lambda c_params: critic_objective(config, state, c_params, inputs, keys, probe=probe)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
    grads = parallel.mean_tree(grads, config.axis_name)
    updates, opt_state = state.critic_tx.update(grads, state.critic_opt_state, state.critic_params)
    params = optax.apply_updates(state.critic_params, updates)
    c_state = parallel.mean_tree(aux.pop("c_state"), config.axis_name)
    metrics = {
        "critic_loss": loss,
        "critic_adversarial_loss": aux["adversarial"],
        "penalty": aux["penalty"],
        "critic_grad_norm_interpolates": aux.get("grad_norm"),
        "critic_real_score": aux["real_score"],
        "critic_fake_score": aux["fake_score"],
        "critic_param_grad_norm": optax.tree.norm(grads),
    }
    metrics = {name: value for name, value in metrics.items() if value is not None}
    if family.estimates_wasserstein:
        metrics["wasserstein_estimate"] = aux["real_score"] - aux["fake_score"]
    if config.consistency:
        metrics["consistency"] = aux["consistency"]
    if config.ada_target is not None:
        metrics["augment_signal"] = aux["real_sign"]
    if config.info is not None:
        metrics["information_categorical"] = aux["information"]["categorical"]
        metrics["information_continuous"] = aux["information"]["continuous"]
    state = state.replace(
        critic_params=params,
        critic_opt_state=opt_state,
        critic_state=c_state,
        generator_state=g_state,
    )
    return state, metrics


# The look-ahead draws from its own stream of the generator update's key, so runs without it
# keep every random number they drew before it existed.
_UNROLL_STREAM = 0x756E72


def look_ahead_params(
    config: StepConfig, state: GANState, real: PyTree, fake: PyTree, key: Array
) -> PyTree:
    """The critic's parameters ``config.unroll_steps`` of its updates ahead (Metz et al., 2017).

    Each look-ahead update is the critic's own (``critic_objective`` on ``real`` and ``fake``,
    then its optimizer), without the slope probe; ``fake`` is not stopped, so the result is
    differentiable in the generator's parameters. The critic's model state is not advanced.

    Args:
      real: the real batch, through ``config.real_transform``.
      fake: the generator's samples for this update.
      key: the look-ahead's key; update ``k`` draws from ``fold_in(key, k)``.
    """

    def loss_fn(c_params, k):
        keys, _, noise_key = _objective_keys(k)
        inputs = _critic_batch(config, state, real, fake, (), None, k, noise_key)
        return critic_objective(config, state, c_params, inputs, keys, probe=False)[0]

    keys = [jax.random.fold_in(key, k) for k in range(config.unroll_steps)]
    params, _ = unrolled.look_ahead(
        loss_fn,
        state.critic_tx,
        state.critic_params,
        state.critic_opt_state,
        keys,
        config.axis_name,
    )
    return params


def _generator_update(
    config: StepConfig,
    state: GANState,
    batch_size: int,
    key: Array,
    real: PyTree | None = None,
) -> tuple[GANState, Metrics]:
    """One generator update; ``real``: the batch the look-ahead uses (``unroll_steps`` only)."""
    family = losses_lib.get_loss(config.loss)
    z_key, label_key, noise_key = jax.random.split(key, 3)
    z, codes = _latents(config, z_key, batch_size)
    labels = ()
    if config.num_classes is not None:
        randint = lambda k, shape: jax.random.randint(k, shape, 0, config.num_classes)
        labels = (parallel.draw_like(randint, label_key, (batch_size,), config.axis_name),)

    def loss_fn(g_params):
        fake, g_state = _apply(state.generator, g_params, state.generator_state, (z, *labels), True)
        critic_params = state.critic_params
        if config.unroll_steps:
            unroll_key = jax.random.fold_in(key, _UNROLL_STREAM)
            critic_params = look_ahead_params(config, state, real, fake, unroll_key)
        fake = _augmented(config, state, fake, _augment_key(key))
        if config.instance_noise:
            std = _annealed(config.instance_noise, config.noise_anneal_steps, state.step)
            fake = _with_instance_noise(fake, std, noise_key, config.axis_name)
        fake = packing.pack_tree(fake, config.pack)
        out, c_state = _apply(
            state.critic, critic_params, state.critic_state, (fake, *labels), True
        )
        scores, q = out if config.info else (out, None)
        loss, aux = family.generator(scores), {"g_state": g_state, "c_state": c_state}
        if config.info is not None:
            aux["information"] = _information(config, q, codes)
            loss = loss - aux["information"]["total"]
        return loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator_params)
    grads = parallel.mean_tree(grads, config.axis_name)
    updates, opt_state = state.generator_tx.update(
        grads, state.generator_opt_state, state.generator_params
    )
    params = optax.apply_updates(state.generator_params, updates)
    ema = state.generator_ema_params
    if config.ema_decay is not None:
        ema = optax.incremental_update(params, ema, 1.0 - config.ema_decay)
    g_state = parallel.mean_tree(aux["g_state"], config.axis_name)
    state = state.replace(
        generator_params=params,
        generator_opt_state=opt_state,
        generator_state=g_state,
        generator_ema_params=ema,
    )
    if config.power_iterations == "per_call":
        # The released SNGAN code's count: this pass, too, advances the critic's power
        # iteration; otherwise the critic's statistics are left alone (this pass trains G).
        c_state = parallel.mean_tree(aux["c_state"], config.axis_name)
        state = state.replace(critic_state=c_state)
    metrics = {"generator_loss": loss, "generator_param_grad_norm": optax.tree.norm(grads)}
    if config.info is not None:
        metrics["generator_information"] = aux["information"]["total"]
    return state, metrics


# Beyond this many critic updates per step the scan stays rolled, trading XLA:CPU's slower
# convolutions in loop bodies for a compile time that does not grow with n_critic.
_MAX_UNROLL = 10


def train_step(
    config: StepConfig, state: GANState, batches: Mapping[str, Array]
) -> tuple[GANState, Metrics]:
    """``n_critic`` critic updates then one generator update.

    Args:
      config: static settings; bind it with ``functools.partial`` before jitting.
      state: the current ``GANState``.
      batches: ``{"x": [n_critic, B, ...]}`` (plus ``"y": [n_critic, B]`` labels for a
        conditional GAN), one real batch per critic update.

    Returns:
      The new state and a flat dict of scalar metrics. Critic metrics are
      averaged over the ``n_critic`` updates, except, without a penalty,
      ``critic_grad_norm_interpolates``: the last update's (see above).
    """
    config = _run_config(config, state)
    batches = {k: v for k, v in batches.items() if k == "x" or config.num_classes is not None}
    n_critic, batch_size = jax.tree.leaves(batches["x"])[0].shape[:2]
    packing.check_pack(config.pack, batch_size)
    key = _step_key(state)
    critic_key, generator_key = jax.random.split(key)
    critic_keys = jax.random.split(critic_key, n_critic)

    def critic_body(state, inputs, probe=True):
        batch, k = inputs
        with jax.named_scope("critic_update"):
            return _critic_update(config, state, batch, k, probe=probe)

    # Unrolled: XLA:CPU runs convolutions inside a rolled loop body up to 10x slower than the
    # same code laid out straight (measured in BUILD_NOTES.md).
    scan = functools.partial(jax.lax.scan, unroll=n_critic <= _MAX_UNROLL)
    if n_critic == 1:
        first = jax.tree.map(lambda a: a[0], batches)
        state, critic_metrics = critic_body(state, (first, critic_keys[0]))
    elif config.penalty is not None:
        # The penalty returns its norms on interpolates: every update reports them for free.
        state, critic_metrics = scan(critic_body, state, (batches, critic_keys))
    else:
        # Without a penalty those norms cost a backward pass of their own (a fifth of a WGAN
        # step's FLOPs when every update measures them): only the last update does.
        head = jax.tree.map(lambda a: a[:-1], (batches, critic_keys))
        last = jax.tree.map(lambda a: a[-1], (batches, critic_keys))
        state, scanned = scan(functools.partial(critic_body, probe=False), state, head)
        state, final = critic_body(state, last)
        critic_metrics = {
            name: jnp.concatenate([scanned[name], value[None]]) if name in scanned else value
            for name, value in final.items()
        }
    # The look-ahead's real batch: the last critic update's, as the unrolled-GAN code reuses it.
    real = _real_input(config, jax.tree.map(lambda a: a[-1], batches))
    with jax.named_scope("generator_update"):
        state, generator_metrics = _generator_update(config, state, batch_size, generator_key, real)
    metrics = {name: jnp.mean(value) for name, value in critic_metrics.items()}
    if config.augment:
        metrics["augment_probability"] = state.augment_probability
    if config.ada_target is not None:
        state = _adapt(config, state, metrics["augment_signal"], n_critic * batch_size)
    metrics.update(generator_metrics)
    metrics["critic_param_norm"] = optax.tree.norm(state.critic_params)
    metrics["generator_param_norm"] = optax.tree.norm(state.generator_params)
    if config.instance_noise:
        metrics["instance_noise_std"] = jnp.asarray(
            _annealed(config.instance_noise, config.noise_anneal_steps, state.step), jnp.float32
        )
    if config.flip_probability:
        metrics["flip_probability"] = jnp.asarray(
            _annealed(config.flip_probability, config.flip_anneal_steps, state.step), jnp.float32
        )
    metrics = parallel.mean_tree(metrics, config.axis_name)
    return state.replace(step=state.step + 1), metrics


def _run_config(config: StepConfig, state: GANState) -> StepConfig:
    """``config`` as ``state``'s run trains with it: a swept penalty weight put in its penalty.

    A vmapped sweep (``gans.sweep``) keeps each run's (traced) weight in ``state.hparams``;
    from here on the step reads the one typed ``config.penalty``.
    """
    if "penalty_weight" not in state.hparams:
        return config
    if config.penalty is None:
        raise ValueError(
            "the state sweeps the penalty weight (state.hparams['penalty_weight']) but the step "
            "has no penalty; give StepConfig a penalty, e.g. penalties.GradientPenalty()."
        )
    weight = state.hparams["penalty_weight"]
    return dataclasses.replace(config, penalty=config.penalty.with_weight(weight))


def _adapt(config: StepConfig, state: GANState, signal: Array, images: int) -> GANState:
    """ADA's update of ``p`` from the step's ``E[sign(D(real))]`` over the global batch."""
    if config.axis_name is not None:
        signal = jax.lax.pmean(signal, config.axis_name)
        images = images * jax.lax.axis_size(config.axis_name)
    p = augment_lib.adapt_probability(
        state.augment_probability,
        signal,
        target=config.ada_target,
        images=images,
        kimg=config.ada_kimg,
    )
    return state.replace(augment_probability=p)


def make_train_step(
    config: StepConfig,
) -> Callable[[GANState, Mapping[str, Array]], tuple[GANState, Metrics]]:
    """Binds ``config``; the caller chooses ``jax.jit`` or ``jax.pmap``."""
    return functools.partial(train_step, config)
