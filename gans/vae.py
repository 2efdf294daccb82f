"""The VAE baseline's loss and train step, as pure functions beside the GANs' ``train.py``.

The VAE maximises the evidence lower bound (ELBO) of Kingma & Welling (2014), Eq. 3:

    log p(x) >= ELBO(x) = E_{q(z|x)}[log p(x | z)] - KL(q(z | x) || p(z)),

with ``p(z) = N(0, I)``, ``q(z | x) = N(mean(x), diag exp(log_variance(x)))`` and a Gaussian
likelihood ``p(x | z) = N(x; x'(z), sigma^2 I)`` whose mean ``x'`` is the decoder's output. The
expectation is estimated with one reparameterised sample per example; the KL term is analytic.
With ``sigma^2 = 1/2`` the reconstruction term is the plain sum of squared errors, the
"X and X' minimise MSE" of the project's notes; a weight ``beta`` on the KL term gives the
beta-VAE of Higgins et al. (2017).

``vae_train_step`` has the GAN step's calling convention, ``(config, state, {"x": [n, B, ...]})
-> (state, metrics)``, so one data pipeline and one loop serve both. Nothing here is jitted.

References:
    [VAE]      Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
    [beta-VAE] Higgins et al., beta-VAE: Learning Basic Visual Concepts with a Constrained
               Variational Framework, ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gans import parallel
from gans.models.vae import VAE, reparameterize

Array = jax.Array
PyTree = Any
Metrics = dict[str, Array]

LIKELIHOODS = ("gaussian",)

__all__ = [
    "LIKELIHOODS",
    "VAEConfig",
    "VAEState",
    "create_vae_state",
    "elbo_loss",
    "gaussian_kl",
    "make_vae_train_step",
    "reconstruction_loss",
    "reparameterize",
    "vae_generate",
    "vae_reconstruct",
    "vae_train_step",
]


# --------------------------------------------------------------------------- #
# The ELBO's two terms.
# --------------------------------------------------------------------------- #
def gaussian_kl(mean: Array, log_variance: Array) -> Array:
    """Per-example ``KL(N(mean, diag exp(log_variance)) || N(0, I))``, in nats.

    ``KL = 1/2 sum_j (exp(lv_j) + mean_j^2 - 1 - lv_j)`` ([VAE] Appendix B, negated), which is
    zero exactly at ``mean = 0, lv = 0`` and positive elsewhere.

    Args:
        mean: ``[B, D]`` means of ``q(z | x)``.
        log_variance: ``[B, D]`` log variances of ``q(z | x)``.

    Returns:
        ``[B]`` divergences.
    """
    if mean.shape != log_variance.shape:
        raise ValueError(
            f"mean and log_variance must have the same shape, got {mean.shape} and "
            f"{log_variance.shape}."
        )
    terms = jnp.exp(log_variance) + jnp.square(mean) - 1.0 - log_variance
    return 0.5 * jnp.sum(jnp.reshape(terms, (terms.shape[0], -1)), axis=-1)


def _check_likelihood(kind: str, variance: float | Array) -> None:
    if kind not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {kind!r}; known likelihoods: {', '.join(LIKELIHOODS)}."
        )
    if isinstance(variance, (int, float)) and not variance > 0:
        raise ValueError(f"the likelihood's variance sigma^2 must be > 0, got {variance}.")


def reconstruction_loss(
    x: Array,
    reconstruction: Array,
    *,
    kind: str = "gaussian",
    variance: float | Array = 0.5,
    include_constant: bool = False,
) -> Array:
    """Per-example negative log-likelihood ``-log p(x | z)``, summed over all of x's coordinates.

    For ``kind='gaussian'``, ``p(x | z) = N(x; x', sigma^2 I)`` with ``x' = reconstruction``:

        ``-log p(x | z) = ||x - x'||^2 / (2 sigma^2) [+ D/2 log(2 pi sigma^2)]``,

    ``D`` the number of coordinates of one example. With the default ``sigma^2 = 1/2`` the loss
    is the plain sum of squared errors ``||x - x'||^2``; a smaller ``sigma^2`` weighs
    reconstruction more against the KL term (like ``beta < 1``) and gives sharper, less
    regularised samples. The constant does not change gradients and is left out unless asked
    for. A Bernoulli likelihood is not offered: the decoders end in tanh, so their outputs are
    means in [-1, 1], not logits, and ``log`` of a squashed mean is not numerically stable.

    Args:
        x: ``[B, ...]`` data.
        reconstruction: ``[B, ...]`` decoder means, same shape as `x`.
        kind: The likelihood, a name in ``LIKELIHOODS``.
        variance: ``sigma^2``, the likelihood's fixed per-coordinate variance.
        include_constant: Whether to add ``D/2 log(2 pi sigma^2)``, making the value the exact
            negative log-density in nats.

    Returns:
        ``[B]`` losses.
    """
    _check_likelihood(kind, variance)
    if x.shape != reconstruction.shape:
        raise ValueError(
            f"x and reconstruction must have the same shape, got {x.shape} and "
            f"{reconstruction.shape}."
        )
    squared_error = jnp.sum(jnp.reshape(jnp.square(x - reconstruction), (x.shape[0], -1)), axis=-1)
    loss = squared_error / (2.0 * variance)
    if include_constant:
        num_coordinates = math.prod(x.shape[1:])
        loss = loss + 0.5 * num_coordinates * jnp.log(2.0 * jnp.pi * jnp.asarray(variance))
    return loss


def elbo_loss(
    x: Array,
    reconstruction: Array,
    mean: Array,
    log_variance: Array,
    *,
    beta: float = 1.0,
    kind: str = "gaussian",
    variance: float | Array = 0.5,
) -> tuple[Array, Metrics]:
    """The negative (beta-)ELBO to minimise, ``mean_B [rec(x) + beta KL(x)]``, and its parts.

    ``rec`` is `reconstruction_loss` (without its constant) and ``KL`` is `gaussian_kl`, both per
    example; ``beta = 1`` is the VAE of [VAE], other values the beta-VAE of [beta-VAE].

    Args:
        x: ``[B, ...]`` data.
        reconstruction: ``[B, ...]`` decoder means for one sample ``z ~ q(z | x)`` per example.
        mean: ``[B, D]`` means of ``q(z | x)``.
        log_variance: ``[B, D]`` log variances of ``q(z | x)``.
        beta: Weight of the KL term, >= 0.
        kind: The likelihood, a name in ``LIKELIHOODS``.
        variance: The likelihood's ``sigma^2``.

    Returns:
        The scalar loss and a dict of batch means: ``reconstruction`` (the loss's reconstruction
        term), ``kl`` (in nats), ``elbo`` (the true ELBO in nats, i.e. with ``beta = 1`` and the
        likelihood's normalising constant, a lower bound on ``log p(x)`` whatever ``beta`` is) and
        ``mse`` (mean squared error per coordinate, comparable across sizes and variances).
    """
    if isinstance(beta, (int, float)) and beta < 0:
        raise ValueError(f"beta (the KL weight) must be >= 0, got {beta}; the VAE uses 1.")
    rec = reconstruction_loss(x, reconstruction, kind=kind, variance=variance)
    kl = gaussian_kl(mean, log_variance)
    loss = jnp.mean(rec + beta * kl)
    log_normalizer = 0.5 * math.prod(x.shape[1:]) * jnp.log(2.0 * jnp.pi * jnp.asarray(variance))
    metrics = {
        "reconstruction": jnp.mean(rec),
        "kl": jnp.mean(kl),
        "elbo": -jnp.mean(rec + log_normalizer + kl),
        "mse": jnp.mean(jnp.square(x - reconstruction)),
    }
    return loss, metrics


# --------------------------------------------------------------------------- #
# State and train step.
# --------------------------------------------------------------------------- #
class VAEState(struct.PyTreeNode):
    """Everything that changes while training a VAE, as one immutable pytree.

    ``step`` counts parameter updates; update ``t`` draws its randomness from
    ``fold_in(key, t)``, so no key is reused and a resumed run draws the same numbers.
    ``ema_params`` is the exponential moving average of ``params`` used for samples, or None
    when the config keeps none.
    """

    step: Array
    params: PyTree
    opt_state: optax.OptState
    key: Array
    model: VAE = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_params: PyTree = None


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Static settings of the VAE step (hashable, closed over by ``jit``).

    Attributes:
      beta: weight of the KL term; 1 for the VAE, other values for a beta-VAE.
      likelihood: the decoder's likelihood, a name in ``LIKELIHOODS``.
      variance: the likelihood's ``sigma^2``; 1/2 makes the reconstruction term the plain sum of
        squared errors.
      ema_decay: if set, keep an exponential moving average of the weights for samples.
      axis_name: the pmap axis to average gradients and metrics over, or None on one device.
    """

    beta: float = 1.0
    likelihood: str = "gaussian"
    variance: float = 0.5
    ema_decay: float | None = None
    axis_name: str | None = None

    def __post_init__(self):
        _check_likelihood(self.likelihood, self.variance)
        if self.beta < 0:
            raise ValueError(f"beta (the KL weight) must be >= 0, got {self.beta}; the VAE uses 1.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}; try 0.999.")


def create_vae_state(
    *,
    model: VAE,
    tx: optax.GradientTransformation,
    example: Array,
    key: Array,
    config: VAEConfig | None = None,
) -> VAEState:
    """Initialises the VAE and its optimizer.

    Args:
      model: a ``gans.models.vae.VAE``.
      tx: the optax optimizer (e.g. ``optax.adam(1e-3)``).
      example: a real batch ``[B, ...]`` (only its shape and dtype are used).
      key: the run's root key; split here into init and training streams.
      config: the step's settings; with ``ema_decay`` set, the state carries an EMA copy.
    """
    init_key, sample_key, train_key = jax.random.split(key, 3)
    x = jnp.zeros((1,) + example.shape[1:], example.dtype)
    init = functools.partial(model.init, {"params": init_key}, x, sample_key, train=False)
    # Checked on shapes first, so a wrong model fails before paying for its initialisation.
    collections = sorted(set(jax.eval_shape(init)) - {"params"})
    if collections:
        raise ValueError(
            f"the VAE must have parameters only, but it also has {collections}; build the image "
            "decoder as DCGANGenerator(..., batch_norm=False)."
        )
    params = init()["params"]
    return VAEState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        key=train_key,
        model=model,
        tx=tx,
        # A copy, not an alias: the step donates the state, and two leaves sharing a buffer
        # cannot both be donated.
        ema_params=(
            jax.tree.map(jnp.copy, params)
            if config is not None and config.ema_decay is not None
            else None
        ),
    )


def _update(config: VAEConfig, state: VAEState, x: Array) -> tuple[VAEState, Metrics]:
    """One gradient step on the negative ELBO of the batch `x` [B, ...]."""
    key = jax.random.fold_in(state.key, state.step)
    if config.axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(config.axis_name))

    def loss_fn(params):
        reconstruction, mean, log_variance = state.model.apply(
            {"params": params}, x, key, train=True
        )
        return elbo_loss(
            x,
            reconstruction,
            mean,
            log_variance,
            beta=config.beta,
            kind=config.likelihood,
            variance=config.variance,
        )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = parallel.mean_tree(grads, config.axis_name)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if config.ema_decay is not None:
        ema = optax.incremental_update(params, ema, 1.0 - config.ema_decay)
    metrics = {"loss": loss, **metrics, "param_grad_norm": optax.tree.norm(grads)}
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return state, metrics


def vae_train_step(
    config: VAEConfig, state: VAEState, batches: Mapping[str, Array]
) -> tuple[VAEState, Metrics]:
    """One parameter update per batch in ``batches["x"]``, in order.

    The GAN step's calling convention, so the same data pipeline feeds both: with ``group=n``
    batches, one call makes ``n`` updates (compiled as a ``lax.scan``) and advances ``step`` by
    ``n``. Update ``t`` uses ``fold_in(key, t)``, so ``n`` updates in one call equal ``n`` calls
    of one update on the same batches.

    Args:
      config: static settings; bind it with ``functools.partial`` before jitting.
      state: the current ``VAEState``.
      batches: ``{"x": [n, B, ...]}``; other entries (labels) are ignored.

    Returns:
      The new state and a flat dict of scalar metrics, averaged over the ``n`` updates:
      ``loss``, ``reconstruction``, ``kl``, ``elbo``, ``mse``, ``param_grad_norm`` and
      ``param_norm`` (after the last update).
    """
    x = batches["x"]
    if x.shape[0] == 1:
        state, metrics = _update(config, state, x[0])
    else:
        # Unrolled for the reason given in train.train_step (XLA:CPU convolutions in loops).
        state, metrics = jax.lax.scan(
            lambda s, batch: _update(config, s, batch), state, x, unroll=True
        )
        metrics = {name: jnp.mean(value) for name, value in metrics.items()}
    metrics["param_norm"] = optax.tree.norm(state.params)
    return state, parallel.mean_tree(metrics, config.axis_name)


def make_vae_train_step(
    config: VAEConfig,
) -> Callable[[VAEState, Mapping[str, Array]], tuple[VAEState, Metrics]]:
    """Binds ``config``; the caller chooses ``jax.jit`` or ``jax.pmap``."""
    return functools.partial(vae_train_step, config)


def vae_generate(state: VAEState, z: Array, use_ema: bool = True) -> Array:
    """Samples the model: decoder means ``x'(z)`` for latents ``z`` [N, latent_dim] ~ N(0, I).

    With ``use_ema`` the moving average of the weights decodes, where the state keeps one.
    """
    params = state.ema_params if use_ema and state.ema_params is not None else state.params
    return state.model.apply({"params": params}, z, train=False, method=VAE.decode)


def vae_reconstruct(state: VAEState, x: Array) -> Array:
    """Reconstructions ``x'(mean(x))`` of `x` [B, ...], decoding the posterior mean (no noise)."""

    def encode_decode(module: VAE, x: Array) -> Array:
        mean, _ = module.encode(x, train=False)
        return module.decode(mean, train=False)

    return state.model.apply({"params": state.params}, x, method=encode_decode)
