"""The two-player train step: one pure function ``(state, batches) -> (state, metrics)``.

One call performs ``n_critic`` critic updates, each on its own real batch
(compiled as a ``lax.scan``), then one generator update, as in WGAN Alg. 1 and
WGAN-GP Alg. 1. ``n_critic = 1`` gives the alternating updates of the original
GAN. The same function runs under ``jax.jit`` on one device and under
``jax.pmap(..., axis_name='batch')`` on many: gradients and metrics are averaged
with ``lax.pmean`` only when ``StepConfig.axis_name`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from gans import losses as losses_lib
from gans import penalties as penalties_lib

Array = jax.Array
PyTree = Any
Metrics = dict[str, Array]


class GANState(struct.PyTreeNode):
    """Everything that changes during training, as one immutable pytree.

    ``*_state`` hold the non-trainable Flax collections (``batch_stats``) and are
    empty dicts for models without them. ``key`` is the run's root key: step
    ``t`` draws its randomness from ``fold_in(key, t)``, so no key is ever reused
    and a resumed run draws the same numbers.
    """

    step: Array
    generator_params: PyTree
    critic_params: PyTree
    generator_state: PyTree
    critic_state: PyTree
    generator_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    key: Array
    generator: nn.Module = struct.field(pytree_node=False)
    critic: nn.Module = struct.field(pytree_node=False)
    generator_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    critic_tx: optax.GradientTransformation = struct.field(pytree_node=False)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the train step (hashable, closed over by ``jit``).

    Attributes:
      loss: a name in ``gans.losses.LOSSES``.
      z_dim: latent size; ``z ~ N(0, I)``.
      penalty: a name in ``gans.penalties.PENALTIES``, or None.
      penalty_options: keyword options of the penalty (``weight``, ``one_sided``...).
      label_smoothing: one-sided smoothing of the real target (cross-entropy losses).
      flip_probability: chance of flipping a discriminator target (cross-entropy losses).
      axis_name: the pmap axis to average gradients over, or None on one device.
    """

    loss: str
    z_dim: int
    penalty: str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    label_smoothing: float = 0.0
    flip_probability: float = 0.0
    axis_name: str | None = None

    def __post_init__(self):
        family = losses_lib.get_loss(self.loss)
        if self.penalty is not None:
            penalties_lib.get_penalty(self.penalty)
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}.")
        if not family.uses_labels and (self.label_smoothing or self.flip_probability):
            raise ValueError(
                f"label smoothing and noisy labels apply to cross-entropy losses only, not to "
                f"{self.loss!r}; drop them or use loss 'non_saturating' or 'minimax'."
            )
        losses_lib.check_label_options(self.label_smoothing, self.flip_probability)
        weight = dict(self.penalty_options).get("weight", 0.0)
        if weight < 0:
            raise ValueError(
                f"penalty weight (lambda) must be >= 0, got {weight}; the papers use 10."
            )


def make_optimizer(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    b1: float = 0.5,
    b2: float = 0.999,
    decay: float = 0.99,
    clip: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer by name, optionally followed by WGAN weight clipping.

    Args:
      name: ``"adam"`` (WGAN-GP) or ``"rmsprop"`` (WGAN), or ``"sgd"``.
      learning_rate: a float or an ``optax`` schedule.
      b1, b2: Adam's moment decays (WGAN-GP: 0 or 0.5, and 0.9).
      decay: RMSProp's squared-gradient decay (0.99 as in PyTorch's RMSprop).
      clip: if set, weight clipping to ``[-clip, clip]`` after every update.
    """
    from gans import constraints  # local: constraints imports nothing from here.

    if name == "adam":
        tx = optax.adam(learning_rate, b1=b1, b2=b2)
    elif name == "rmsprop":
        tx = optax.rmsprop(learning_rate, decay=decay, eps=1e-8)
    elif name == "sgd":
        tx = optax.sgd(learning_rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: adam, rmsprop, sgd.")
    if clip is not None:
        tx = optax.chain(tx, constraints.clip_weights(clip))
    return tx


def _split_variables(variables: Mapping[str, PyTree]) -> tuple[PyTree, PyTree]:
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def create_state(
    *,
    generator: nn.Module,
    critic: nn.Module,
    generator_tx: optax.GradientTransformation,
    critic_tx: optax.GradientTransformation,
    z_dim: int,
    example: Array,
    key: Array,
) -> GANState:
    """Initialises both players and their optimizers.

    Args:
      generator, critic: Flax modules following the ``models`` contract.
      generator_tx, critic_tx: the two players' optax optimizers.
      z_dim: latent size.
      example: a real batch ``[B, ...]`` (only its shape and dtype are used).
      key: the run's root key; split here into init and training streams.
    """
    g_key, c_key, train_key = jax.random.split(key, 3)
    g_vars = generator.init({"params": g_key}, jnp.zeros((1, z_dim), jnp.float32), train=False)
    c_vars = critic.init(
        {"params": c_key}, jnp.zeros((1,) + example.shape[1:], example.dtype), train=False
    )
    g_params, g_state = _split_variables(g_vars)
    c_params, c_state = _split_variables(c_vars)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        generator_params=g_params,
        critic_params=c_params,
        generator_state=g_state,
        critic_state=c_state,
        generator_opt_state=generator_tx.init(g_params),
        critic_opt_state=critic_tx.init(c_params),
        key=train_key,
        generator=generator,
        critic=critic,
        generator_tx=generator_tx,
        critic_tx=critic_tx,
    )


def _apply(
    module: nn.Module, params: PyTree, model_state: PyTree, inputs: Array, train: bool
) -> tuple[Array, PyTree]:
    """Applies a module, returning its output and its updated model state."""
    variables = {"params": params, **model_state}
    if train and model_state:
        out, updates = module.apply(variables, inputs, train=True, mutable=list(model_state))
        return out, updates
    return module.apply(variables, inputs, train=train), model_state


def generate(state: GANState, z: Array, *, train: bool = False) -> Array:
    """Samples ``G(z)``; ``train=False`` uses BatchNorm's running averages."""
    return _apply(state.generator, state.generator_params, state.generator_state, z, train)[0]


def _mean_over_devices(tree: PyTree, axis_name: str | None) -> PyTree:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _step_key(state: GANState, axis_name: str | None) -> Array:
    key = jax.random.fold_in(state.key, state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return key


def _critic_update(
    config: StepConfig, state: GANState, real: Array, key: Array
) -> tuple[GANState, Metrics]:
    family = losses_lib.get_loss(config.loss)
    z_key, penalty_key, label_key, probe_key = jax.random.split(key, 4)
    z = jax.random.normal(z_key, (real.shape[0], config.z_dim), jnp.float32)
    fake, g_state = _apply(
        state.generator, state.generator_params, state.generator_state, z, train=True
    )
    fake = jax.lax.stop_gradient(fake)
    has_batch_stats = bool(state.critic_state)

    def loss_fn(c_params):
        if has_batch_stats:
            # Separate passes, as in the DCGAN reference: a joint batch would mix
            # real and fake examples in the batch statistics.
            real_scores, c_state = _apply(state.critic, c_params, state.critic_state, real, True)
            fake_scores, c_state = _apply(state.critic, c_params, c_state, fake, True)
        else:
            scores, c_state = _apply(
                state.critic, c_params, state.critic_state, jnp.concatenate([real, fake]), True
            )
            real_scores, fake_scores = jnp.split(scores, 2)
        label_options = {}
        if family.uses_labels:
            label_options = dict(
                label_smoothing=config.label_smoothing,
                flip_probability=config.flip_probability,
                key=label_key,
            )
        adversarial = family.discriminator(real_scores, fake_scores, **label_options)
        critic_fn = lambda x: _apply(state.critic, c_params, state.critic_state, x, True)[0]
        if config.penalty is not None:
            penalty_fn = penalties_lib.get_penalty(config.penalty)
            penalty, norms = penalty_fn(
                critic_fn, real, fake, penalty_key, **dict(config.penalty_options)
            )
        else:
            penalty = jnp.zeros((), jnp.float32)
            # Diagnostic only: the critic's slope on interpolates, as WGAN-GP plots it.
            _, norms = penalties_lib.gradient_penalty(critic_fn, real, fake, probe_key, weight=0.0)
            norms = jax.lax.stop_gradient(norms)
        aux = dict(
            c_state=c_state,
            real_score=jnp.mean(real_scores),
            fake_score=jnp.mean(fake_scores),
            adversarial=adversarial,
            penalty=penalty,
            grad_norm=jnp.mean(norms),
        )
        return adversarial + penalty, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
    grads = _mean_over_devices(grads, config.axis_name)
    updates, opt_state = state.critic_tx.update(grads, state.critic_opt_state, state.critic_params)
    params = optax.apply_updates(state.critic_params, updates)
    c_state = _mean_over_devices(aux.pop("c_state"), config.axis_name)
    metrics = {
        "critic_loss": loss,
        "critic_adversarial_loss": aux["adversarial"],
        "penalty": aux["penalty"],
        "critic_grad_norm_interpolates": aux["grad_norm"],
        "critic_real_score": aux["real_score"],
        "critic_fake_score": aux["fake_score"],
        "critic_param_grad_norm": optax.tree.norm(grads),
    }
    if family.estimates_wasserstein:
        metrics["wasserstein_estimate"] = aux["real_score"] - aux["fake_score"]
    state = state.replace(
        critic_params=params,
        critic_opt_state=opt_state,
        critic_state=c_state,
        generator_state=g_state,
    )
    return state, metrics


def _generator_update(
    config: StepConfig, state: GANState, batch_size: int, key: Array
) -> tuple[GANState, Metrics]:
    family = losses_lib.get_loss(config.loss)
    z = jax.random.normal(key, (batch_size, config.z_dim), jnp.float32)

    def loss_fn(g_params):
        fake, g_state = _apply(state.generator, g_params, state.generator_state, z, True)
        # The critic's own statistics are left alone: this pass trains G only.
        scores, _ = _apply(state.critic, state.critic_params, state.critic_state, fake, True)
        return family.generator(scores), g_state

    (loss, g_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator_params)
    grads = _mean_over_devices(grads, config.axis_name)
    updates, opt_state = state.generator_tx.update(
        grads, state.generator_opt_state, state.generator_params
    )
    params = optax.apply_updates(state.generator_params, updates)
    g_state = _mean_over_devices(g_state, config.axis_name)
    state = state.replace(
        generator_params=params, generator_opt_state=opt_state, generator_state=g_state
    )
    return state, {"generator_loss": loss, "generator_param_grad_norm": optax.tree.norm(grads)}


def train_step(
    config: StepConfig, state: GANState, batches: Mapping[str, Array]
) -> tuple[GANState, Metrics]:
    """``n_critic`` critic updates then one generator update.

    Args:
      config: static settings; bind it with ``functools.partial`` before jitting.
      state: the current ``GANState``.
      batches: ``{"x": [n_critic, B, ...]}``, one real batch per critic update.

    Returns:
      The new state and a flat dict of scalar metrics. Critic metrics are
      averaged over the ``n_critic`` updates.
    """
    real = batches["x"]
    key = _step_key(state, config.axis_name)
    critic_key, generator_key = jax.random.split(key)
    critic_keys = jax.random.split(critic_key, real.shape[0])

    def critic_body(state, inputs):
        real_batch, k = inputs
        return _critic_update(config, state, real_batch, k)

    if real.shape[0] == 1:
        state, critic_metrics = critic_body(state, (real[0], critic_keys[0]))
    else:
        # Fully unrolled: XLA:CPU runs convolutions inside a rolled loop body up to 10x
        # slower than the same code laid out straight (measured in BUILD_NOTES.md).
        state, critic_metrics = jax.lax.scan(
            critic_body, state, (real, critic_keys), unroll=True)
    state, generator_metrics = _generator_update(config, state, real.shape[1], generator_key)
    metrics = {name: jnp.mean(value) for name, value in critic_metrics.items()}
    metrics.update(generator_metrics)
    metrics["critic_param_norm"] = optax.tree.norm(state.critic_params)
    metrics["generator_param_norm"] = optax.tree.norm(state.generator_params)
    metrics = _mean_over_devices(metrics, config.axis_name)
    return state.replace(step=state.step + 1), metrics


def make_train_step(
    config: StepConfig,
) -> Callable[[GANState, Mapping[str, Array]], tuple[GANState, Metrics]]:
    """Binds ``config``; the caller chooses ``jax.jit`` or ``jax.pmap``."""
    return functools.partial(train_step, config)
