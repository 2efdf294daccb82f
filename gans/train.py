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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from gans import augment as augment_lib
from gans import constraints, parallel
from gans import losses as losses_lib
from gans import penalties as penalties_lib
from gans.models import infogan

Array = jax.Array
PyTree = Any
Metrics = dict[str, Array]


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


@dataclasses.dataclass(frozen=True)
class InfoCodes:
    """InfoGAN's latent codes and the weights of their mutual-information terms.

    Attributes:
      num_categories: classes of the categorical code (10 for digits).
      num_continuous: continuous codes, each ``U[-1, 1]``.
      categorical_weight: lambda of ``L_I`` for the categorical code (1 in the paper).
      continuous_weight: lambda for the continuous codes (the paper uses a smaller one).
    """

    num_categories: int = 10
    num_continuous: int = 2
    categorical_weight: float = 1.0
    continuous_weight: float = 0.1

    @property
    def size(self) -> int:
        return self.num_categories + self.num_continuous


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the train step (hashable, closed over by ``jit``).

    Attributes:
      loss: a name in ``gans.losses.LOSSES``.
      z_dim: size of the noise ``z ~ N(0, I)`` (InfoGAN codes are appended to it).
      penalty: the Lipschitz penalty with its hyper-parameters bound, a typed value such as
        ``penalties.GradientPenalty(weight=10.0)`` (``gans.penalties.PenaltyOptions``), or None.
        A registered name is accepted as shorthand and turned into that value with
        ``penalty_options`` (``penalties.make_penalty``), so the config holds one typed value
        either way and the step reads nothing else.
      penalty_options: with a name for ``penalty`` only: its keyword options as pairs
        (``(("weight", 10.0),)``); emptied once turned into the typed value.
      label_smoothing: one-sided smoothing of the real target (cross-entropy losses).
      flip_probability: chance of flipping a discriminator target (cross-entropy losses).
      flip_anneal_steps: if > 0, the flip probability decays linearly to 0 over these steps.
      instance_noise: std of Gaussian noise added to every critic input, real and fake
        (Sonderby et al., 2017), decaying linearly to 0 over ``noise_anneal_steps``.
      noise_anneal_steps: if > 0, the annealing length of ``instance_noise``.
      num_classes: if set, a conditional GAN: real batches carry labels ``"y"``, the
        generator is called as ``G(z, y)`` and the critic as ``D(x, y)``.
      info: if set, InfoGAN: codes appended to ``z`` and the critic returns
        ``(scores, q)``; both players add ``-L_I`` to their losses.
      ema_decay: if set, keep an exponential moving average of the generator's weights.
      real_transform: applied to each real batch before the critic sees it (e.g. MSG-GAN's
        image pyramid), so real and generated batches share one structure.
      augment: differentiable augmentation (``gans.augment``): transform names applied to
        real and generated images before every critic call of both players' losses, so the
        penalty, too, is taken on (interpolates of) augmented images, as in the DiffAugment
        and ADA reference code, whose critic is ``D o T``. Empty: off.
      augment_probability: the chance of each transform per example (DiffAugment: 1); with
        ``ada_target`` the initial ``p`` (ADA: 0).
      ada_target: if set, ADA's adaptive ``p``, moved after every step toward
        ``E[sign(D(real))] = ada_target`` (``gans.augment.adapt_probability``).
      ada_kimg: thousands of real images for ADA's ``p`` to cross [0, 1] (ADA: 500).
      consistency_weight, consistency_fake_weight: consistency regularisation of the critic
        (``penalties.consistency_regularization``; CR-GAN: 10, 0; bCR: 10, 10), added to the
        critic's loss beside any penalty, on the images before ``augment``.
      consistency_policy: the transforms of consistency regularisation.
      axis_name: the pmap axis to average gradients over, or None on one device.
    """

    loss: str
    z_dim: int
    penalty: penalties_lib.PenaltyOptions | str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    label_smoothing: float = 0.0
    flip_probability: float = 0.0
    flip_anneal_steps: int = 0
    instance_noise: float = 0.0
    noise_anneal_steps: int = 0
    num_classes: int | None = None
    info: InfoCodes | None = None
    ema_decay: float | None = None
    real_transform: Callable[[PyTree], PyTree] | None = None
    augment: tuple[str, ...] = ()
    augment_probability: float = 1.0
    ada_target: float | None = None
    ada_kimg: float = 500.0
    consistency_weight: float = 0.0
    consistency_fake_weight: float = 0.0
    consistency_policy: tuple[str, ...] = ("translation",)
    axis_name: str | None = None

    def __post_init__(self):
        family = losses_lib.get_loss(self.loss)
        self._resolve_penalty()
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}.")
        if not family.uses_labels and (self.label_smoothing or self.flip_probability):
            raise ValueError(
                f"label smoothing and noisy labels apply to cross-entropy losses only, not to "
                f"{self.loss!r}; drop them or use loss 'non_saturating' or 'minimax'."
            )
        losses_lib.check_label_options(self.label_smoothing, self.flip_probability)
        if self.instance_noise < 0:
            raise ValueError(f"instance noise std must be >= 0, got {self.instance_noise}.")
        if self.flip_anneal_steps < 0 or self.noise_anneal_steps < 0:
            raise ValueError("annealing lengths must be >= 0 steps.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}; try 0.999.")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"a conditional GAN needs num_classes >= 2, got {self.num_classes}.")
        self._check_augmentation()

    def _resolve_penalty(self) -> None:
        """Turns a penalty name and its option pairs into the typed value (checked there)."""
        if isinstance(self.penalty, str):
            penalty = penalties_lib.make_penalty(self.penalty, **dict(self.penalty_options))
            # Frozen: set once here, so equal settings give equal (and equally hashed) configs.
            object.__setattr__(self, "penalty", penalty)
            object.__setattr__(self, "penalty_options", ())
        elif self.penalty_options:
            raise ValueError(
                "penalty_options go with a penalty name; a typed penalty carries its own "
                f"options: {self.penalty!r}."
            )
        if self.penalty is not None and not isinstance(self.penalty, penalties_lib.PenaltyOptions):
            raise ValueError(
                f"penalty must be a registered name or a gans.penalties.PenaltyOptions such as "
                f"penalties.GradientPenalty(weight=10.0), got {self.penalty!r}."
            )

    def _check_augmentation(self) -> None:
        if self.augment:
            augment_lib.parse_policy(self.augment)
        if (self.augment or self.consistency) and self.real_transform is not None:
            raise ValueError(
                "augmentation and consistency regularisation transform one image per example; "
                "a multi-scale (MSG-GAN) critic takes several: drop --augment / --consistency."
            )
        augment_lib.check_probability(self.augment_probability)
        if self.ada_target is not None:
            if not self.augment:
                raise ValueError("ADA adapts the augmentation probability: give --augment too.")
            augment_lib.check_adaptive(self.ada_target, self.ada_kimg)
        for name in ("consistency_weight", "consistency_fake_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}; CR uses 10.")
        if self.consistency:
            augment_lib.parse_policy(self.consistency_policy)

    @property
    def consistency(self) -> bool:
        """Whether consistency regularisation is on."""
        return bool(self.consistency_weight or self.consistency_fake_weight)

    @property
    def latent_size(self) -> int:
        """Width of the generator's input vector: ``z`` plus any InfoGAN codes."""
        return self.z_dim + (self.info.size if self.info else 0)


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
    """
    if optimistic and name not in ("adam", "sgd"):
        raise ValueError(f"optimistic updates exist for adam and sgd, not {name!r}.")
    if name == "adam" and optimistic:
        tx = optax.optimistic_adam_v2(learning_rate, b1=b1, b2=b2)
    elif name == "sgd" and optimistic:
        tx = optax.optimistic_gradient_descent(learning_rate)
    elif name == "adam":
        tx = optax.adam(learning_rate, b1=b1, b2=b2)
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
    x = jax.tree.map(lambda a: jnp.zeros((1,) + a.shape[1:], a.dtype), example)
    if config.real_transform is not None:
        x = config.real_transform(x)
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
    """What the critic update scores, its penalty included: augmented, then noised, batches.

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
    return real, fake


def _concat(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda u, v: jnp.concatenate([u, v]), a, b)


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
    z_key, penalty_key, label_key, probe_key, noise_key = jax.random.split(key, 5)
    real = batch["x"] if config.real_transform is None else config.real_transform(batch["x"])
    labels = () if config.num_classes is None else (batch["y"],)
    batch_size = jax.tree.leaves(real)[0].shape[0]
    # Fakes share the real batch's labels, so interpolates between them have one label.
    z, codes = _latents(config, z_key, batch_size)
    fake, g_state = _apply(
        state.generator, state.generator_params, state.generator_state, (z, *labels), True
    )
    fake = jax.lax.stop_gradient(fake)
    clean_real, clean_fake = real, fake
    real, fake = critic_inputs(config, state, real, fake, _augment_key(key), noise_key)
    separate_passes = "batch_stats" in state.critic_state

    def loss_fn(c_params):
        def critic(x, labels, model_state):
            out, model_state = _apply(state.critic, c_params, model_state, (x, *labels), True)
            return (out if config.info else (out, None)), model_state

        if separate_passes:
            # As in the DCGAN reference: a joint batch would mix real and fake
            # examples in the batch statistics.
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
                clean_real,
                clean_fake,
                jax.random.fold_in(_augment_key(key), 1),
                weight=config.consistency_weight,
                fake_weight=config.consistency_fake_weight,
                policy=config.consistency_policy,
                axis_name=config.axis_name,
            )
            loss = loss + aux["consistency"]
        if config.info is not None:
            information = _information(config, q, codes)
            aux["information"] = information
            loss = loss - information["total"]
        return loss, aux

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


def _generator_update(
    config: StepConfig, state: GANState, batch_size: int, key: Array
) -> tuple[GANState, Metrics]:
    family = losses_lib.get_loss(config.loss)
    z_key, label_key, noise_key = jax.random.split(key, 3)
    z, codes = _latents(config, z_key, batch_size)
    labels = ()
    if config.num_classes is not None:
        randint = lambda k, shape: jax.random.randint(k, shape, 0, config.num_classes)
        labels = (parallel.draw_like(randint, label_key, (batch_size,), config.axis_name),)

    def loss_fn(g_params):
        fake, g_state = _apply(state.generator, g_params, state.generator_state, (z, *labels), True)
        fake = _augmented(config, state, fake, _augment_key(key))
        if config.instance_noise:
            std = _annealed(config.instance_noise, config.noise_anneal_steps, state.step)
            fake = _with_instance_noise(fake, std, noise_key, config.axis_name)
        # The critic's own statistics are left alone: this pass trains G only.
        out, _ = _apply(
            state.critic, state.critic_params, state.critic_state, (fake, *labels), True
        )
        scores, q = out if config.info else (out, None)
        loss, aux = family.generator(scores), {"g_state": g_state}
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
    key = _step_key(state)
    critic_key, generator_key = jax.random.split(key)
    critic_keys = jax.random.split(critic_key, n_critic)

    def critic_body(state, inputs, probe=True):
        batch, k = inputs
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
    state, generator_metrics = _generator_update(config, state, batch_size, generator_key)
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


def make_pmapped_train_step(
    config: StepConfig, devices: Sequence[Any] | None = None, *, vmapped: bool = False
) -> Callable[[GANState, Mapping[str, Array]], tuple[GANState, Metrics]]:
    """The train step data-parallel over ``devices`` (by default every device of every process).

    Takes a replicated state (``gans.parallel.replicate``) and batches split by
    ``gans.parallel.shard`` (``[devices, n_critic, B / devices, ...]``) and returns the
    replicated new state (donated) and per-device copies of the global metrics. Models with
    BatchNorm must be built with ``axis_name=gans.parallel.AXIS`` so their statistics are
    those of the global batch. With these, training equals the single-device step on the
    global batch up to float reduction order. ``vmapped`` trains K stacked runs on every
    device (``gans.sweep``): state ``[devices, K, ...]``, batches ``[devices, K, n_critic, ...]``.
    """
    config = dataclasses.replace(config, axis_name=parallel.AXIS)
    step = make_train_step(config)
    step = jax.vmap(step) if vmapped else step
    return jax.pmap(step, axis_name=parallel.AXIS, devices=devices, donate_argnums=0)
