"""The state a run starts from: ``GANState``, its optimizers and ``create_state``.

``make_optimizer`` builds either player's optax optimizer (optionally with WGAN weight
clipping and sweepable hyper-parameters); ``create_state`` initialises both players and
their optimizer states into one immutable ``GANState`` pytree, which ``gans.train`` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from gans import constraints, packing

if TYPE_CHECKING:
    from gans.step_config import StepConfig

Array = jax.Array
PyTree = Any


class GANState(struct.PyTreeNode):
    """Everything that changes during training, as one immutable pytree.

    ``*_state`` hold the non-trainable Flax collections (``batch_stats``) and are
    empty dicts for models without them. ``generator_ema_params`` is the
    exponential moving average of the generator's weights (None when off). ``key``
    is the run's root key: step ``t`` draws its randomness from
    ``fold_in(key, t)``, so no key is ever reused and a resumed run draws the
    same numbers. ``hparams`` holds hyper-parameters that vary across vmapped runs
    (``gans.sweep``): a ``"penalty_weight"`` there is this run's weight of the config's
    penalty, put into the typed penalty once, at the top of ``train_step``.
    ``augment_probability`` is the chance ``p`` of each augmentation (``gans.augment``), kept
    here because ADA moves it after every step; None without augmentation.
    """

    step: Array
    generator_params: PyTree
    critic_params: PyTree
    generator_state: PyTree
    critic_state: PyTree
    generator_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    key: Array
    generator_ema_params: PyTree = None
    augment_probability: Array | None = None
    hparams: dict[str, Array] = struct.field(default_factory=dict)
    generator: nn.Module = struct.field(pytree_node=False, default=None)
    critic: nn.Module = struct.field(pytree_node=False, default=None)
    generator_tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)
    critic_tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)


def make_optimizer(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    b1: float = 0.5,
    b2: float = 0.999,
    decay: float = 0.99,
    clip: float | None = None,
    optimistic: bool = False,
    sweepable: bool = False,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    """An optax optimizer by name, optionally followed by WGAN weight clipping.

    With ``sweepable`` the learning rate and the clip bound also live in the optimizer state
    as ``learning_rate_scale`` (a factor on the updates, 1 here) and ``clip``, so vmapped
    runs can each hold their own (``gans.sweep``). Adam, RMSProp and SGD updates are linear
    in the learning rate, so scaling the update by ``r`` is training at ``r`` times the rate.

    Args:
      name: ``"adam"`` (WGAN-GP) or ``"rmsprop"`` (WGAN), or ``"sgd"``.
      learning_rate: a float or an ``optax`` schedule.
      b1, b2: Adam's moment decays (WGAN-GP: 0 or 0.5, and 0.9).
      decay: RMSProp's squared-gradient decay (0.99 as in PyTorch's RMSprop).
      clip: if set, weight clipping to ``[-clip, clip]`` after every update.
      optimistic: optimistic updates (Daskalakis et al., 2018), which damp the rotation of
        the two-player game: optax's ``optimistic_adam_v2`` or ``optimistic_gradient_descent``.
      sweepable: keep the learning-rate factor and clip bound in the state, as above.
      eps_root: Adam's constant inside the square root, ``sqrt(nu + eps_root)``: a positive
        one keeps the update differentiable where ``nu`` is 0, as the unrolled GAN's
        look-ahead needs (``gans.unrolled.EPS_ROOT``). RMSProp's ``eps`` is inside the root
        already; SGD has none.
    """
    if optimistic and name not in ("adam", "sgd"):
        raise ValueError(f"optimistic updates exist for adam and sgd, not {name!r}.")
    if name == "adam" and optimistic:
        tx = optax.optimistic_adam_v2(learning_rate, b1=b1, b2=b2, eps_root=eps_root)
    elif name == "sgd" and optimistic:
        tx = optax.optimistic_gradient_descent(learning_rate)
    elif name == "adam":
        tx = optax.adam(learning_rate, b1=b1, b2=b2, eps_root=eps_root)
    elif name == "rmsprop":
        tx = optax.rmsprop(learning_rate, decay=decay, eps=1e-8)
    elif name == "sgd":
        tx = optax.sgd(learning_rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: adam, rmsprop, sgd.")
    if sweepable:
        # Before clipping: the projection onto the box must see the final update.
        scale = optax.inject_hyperparams(
            lambda learning_rate_scale: optax.scale(learning_rate_scale)
        )
        tx = optax.chain(tx, scale(learning_rate_scale=1.0))
    if clip is not None:
        clip_tx = constraints.clip_weights
        if sweepable:
            clip_tx = optax.inject_hyperparams(lambda clip: constraints.clip_weights(clip))
        tx = optax.chain(tx, clip_tx(clip))
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
    config: StepConfig,
    example: PyTree,
    key: Array,
) -> GANState:
    """Initialises both players and their optimizers.

    Args:
      generator, critic: Flax modules following the ``models`` contract.
      generator_tx, critic_tx: the two players' optax optimizers.
      config: the step's settings (latent size, conditioning, EMA).
      example: a real batch ``[B, ...]`` (only its shape and dtype are used).
      key: the run's root key; split here into init and training streams.
    """
    g_key, c_key, train_key = jax.random.split(key, 3)
    labels = () if config.num_classes is None else (jnp.zeros((1,), jnp.int32),)
    z = jnp.zeros((1, config.latent_size), jnp.float32)
    x = jax.tree.map(lambda a: jnp.zeros((config.pack,) + a.shape[1:], a.dtype), example)
    if config.real_transform is not None:
        x = config.real_transform(x)
    x = packing.pack_tree(x, config.pack)  # A packed critic is built for m examples' channels.
    g_vars = generator.init({"params": g_key}, z, *labels, train=False)
    c_vars = critic.init({"params": c_key}, x, *labels, train=False)
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
        # A copy: the average must not share buffers with the parameters, which are donated.
        generator_ema_params=(
            jax.tree.map(jnp.copy, g_params) if config.ema_decay is not None else None
        ),
        augment_probability=(
            jnp.asarray(config.augment_probability, jnp.float32) if config.augment else None
        ),
        generator=generator,
        critic=critic,
        generator_tx=generator_tx,
        critic_tx=critic_tx,
    )
