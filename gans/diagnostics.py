"""Training diagnostics for logging steps: pure, jittable functions of a ``GANState``.

``diagnose(state, config, batch, key)`` draws one fake batch and returns two flat dicts:
scalars for a metrics log (every name starts with ``diag/``) and histogram arrays. It measures

- the critic's input-gradient norms at real, fake and interpolated points (the gradient
  penalty drives them to 1; a 1-Lipschitz critic keeps them at or below 1);
- the per-layer gradient norms of the critic loss with respect to each layer's output, input
  first (WGAN-GP Fig. 1b: under weight clipping they explode or vanish geometrically with
  depth; under the penalty they stay level);
- a histogram of the critic's weights and, given the clip value ``c``, the fraction of weights
  within 1% of ``+-c`` (WGAN-GP Fig. 1b right: clipping piles the weights at the bounds);
- the norm of the generator loss's gradient with respect to the generator's parameters;
- the critic's mean scores on real and fake data and, for the Wasserstein loss, the estimate
  ``E[f(real)] - E[f(fake)]``.

Every pass runs the models in training mode, as the train step does, and discards the model
state they update. The activation gradients need no change to the models: a Flax method
interceptor (``flax.linen.intercept_methods``) adds a zero perturbation to the output of every
Dense and convolution layer, and the gradient with respect to that perturbation is the gradient
with respect to the layer's output, as ``Module.perturb`` would give.

Reference:
  [WGAN-GP] Gulrajani et al., Improved Training of Wasserstein GANs, 2017, Fig. 1b.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.module import InterceptorContext

from gans import losses as losses_lib
from gans import penalties as penalties_lib
from gans import state as state_lib
from gans import step_config, train

Array = jax.Array
PyTree = Any

# The layers whose outputs count as "activations": the linear maps that give a network depth.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Dense, nn.DenseGeneral, nn.Conv, nn.ConvTranspose)

# The name of the critic's input in the per-layer dict; it comes first, as layer 0.
INPUT = "input"


class Diagnostics(NamedTuple):
    """What ``diagnose`` returns: flat scalars for a metrics log, and histogram arrays."""

    scalars: dict[str, Array]
    histograms: dict[str, Array]


# --------------------------------------------------------------------------- #
# Input gradients.
# --------------------------------------------------------------------------- #
def input_gradient_norms(
    critic_fn: penalties_lib.CriticFn,
    real: PyTree,
    fake: PyTree,
    key: Array,
    *,
    mode: penalties_lib.GradMode = "sum",
) -> dict[str, Array]:
    """Per-example ``||grad_x f(x_i)||_2`` at real, fake and interpolated points.

    Interpolates are drawn by the gradient penalty itself (``eps ~ U[0, 1]`` per example, from
    ``key``), so the same key gives the penalty's points. Each batch is scored alone, as the
    penalty scores its points.

    Args:
      critic_fn: batch ``[B, ...]`` -> scores ``[B]``.
      real, fake: batches of the same shape.
      key: PRNG key for the interpolation factors.
      mode: see ``gans.penalties.input_gradients``.

    Returns:
      ``{"real": [B], "fake": [B], "interpolates": [B]}``.
    """
    _, at_interpolates = penalties_lib.gradient_penalty(
        critic_fn, real, fake, key, weight=0.0, mode=mode
    )
    return {
        "real": penalties_lib.gradient_norms(critic_fn, real, mode=mode),
        "fake": penalties_lib.gradient_norms(critic_fn, fake, mode=mode),
        "interpolates": at_interpolates,
    }


# --------------------------------------------------------------------------- #
# Gradients with respect to every layer's output.
# --------------------------------------------------------------------------- #
def _layer_name(context: InterceptorContext) -> str:
    # The root module has an empty path: a bare layer used as the whole model.
    return "/".join(context.module.path) or type(context.module).__name__


def _layer_interceptor(
    on_output: Callable[[str, int, Array], Array], layer_types: tuple[type[nn.Module], ...]
):
    """An interceptor passing the ``k``-th output of each layer through ``on_output``."""
    calls: dict[str, int] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(context.module, layer_types):
            return out
        name = _layer_name(context)
        k = calls.get(name, 0)
        calls[name] = k + 1
        return on_output(name, k, out)

    return interceptor


def layer_output_gradients(
    loss_fn: Callable[..., tuple[Array, Any]],
    *args: PyTree,
    layer_types: tuple[type[nn.Module], ...] = LAYER_TYPES,
) -> tuple[tuple[Array, Any], dict[str, list[Array]], tuple[PyTree, ...]]:
    """Gradients of ``loss_fn(*args)`` w.r.t. every layer's output and w.r.t. ``args``.

    ``loss_fn`` returns ``(scalar loss, aux)`` and applies Flax modules inside. Each call of a
    module of ``layer_types`` gets a zero perturbation added to its output; the gradient with
    respect to it is the gradient with respect to that output. A first, shape-only pass
    (``jax.eval_shape``) finds the layers and their output shapes, so the models need no
    ``self.perturb`` calls.

    Returns:
      ``((loss, aux), layer_grads, arg_grads)``: ``layer_grads`` maps a layer's path in the
      module tree (``"Dense_0"``, ``"trunk/Conv_1"``) to the gradients of its outputs, one per
      call, in the order the layers were first called (input to output); ``arg_grads`` holds
      one gradient per argument.
    """
    shapes: dict[str, list[jax.ShapeDtypeStruct]] = {}

    def record(name, k, out):
        shapes.setdefault(name, []).append(jax.ShapeDtypeStruct(out.shape, out.dtype))
        return out

    with nn.intercept_methods(_layer_interceptor(record, layer_types)):
        jax.eval_shape(loss_fn, *args)
    zeros = {name: [jnp.zeros(s.shape, s.dtype) for s in calls] for name, calls in shapes.items()}

    def perturbed_loss(perturbations, *args):
        add = lambda name, k, out: out + perturbations[name][k]
        with nn.intercept_methods(_layer_interceptor(add, layer_types)):
            return loss_fn(*args)

    argnums = tuple(range(len(args) + 1))
    value, grads = jax.value_and_grad(perturbed_loss, argnums, has_aux=True)(zeros, *args)
    # In call order: the gradient's own dict comes back with sorted keys.
    return value, {name: grads[0][name] for name in shapes}, grads[1:]


def _per_example_norms(tree: PyTree) -> Array:
    """``[B]`` norms over every leaf's non-batch axes."""
    leaves = jax.tree.leaves(tree)
    flat = jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
    return optax.safe_norm(flat, 0.0, axis=1)


def _critic_scores(
    state: state_lib.GANState, config: step_config.StepConfig, x: PyTree, labels: tuple
) -> Array:
    """The critic's scores ``[B]`` in training mode, its updated model state discarded."""
    out, _ = train._apply(state.critic, state.critic_params, state.critic_state, (x, *labels), True)
    return out[0] if config.info is not None else out


def _critic_loss_fn(
    state: state_lib.GANState, config: step_config.StepConfig, labels: tuple
) -> Callable[[PyTree, PyTree], tuple[Array, tuple[Array, Array]]]:
    """``(real, fake) -> (adversarial critic loss, (real scores, fake scores))``."""
    family = losses_lib.get_loss(config.loss)
    label_options = {"label_smoothing": config.label_smoothing} if family.uses_labels else {}

    def loss_fn(real, fake):
        if "batch_stats" in state.critic_state:
            # As in the train step: one batch's statistics must not mix real and fake examples.
            real_scores = _critic_scores(state, config, real, labels)
            fake_scores = _critic_scores(state, config, fake, labels)
        else:
            joint_labels = tuple(jnp.concatenate([y, y]) for y in labels)
            scores = _critic_scores(state, config, train._concat(real, fake), joint_labels)
            real_scores, fake_scores = jnp.split(scores, 2)
        loss = family.discriminator(real_scores, fake_scores, **label_options)
        return loss, (real_scores, fake_scores)

    return loss_fn


def activation_gradient_norms(
    state: state_lib.GANState,
    config: step_config.StepConfig,
    real: PyTree,
    fake: PyTree,
    labels: tuple = (),
    *,
    layer_types: tuple[type[nn.Module], ...] = LAYER_TYPES,
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Per-layer gradient norms of the critic loss, input first [WGAN-GP, Fig. 1b].

    The loss is the run's adversarial critic loss (``config.loss``, with label smoothing but
    without label flips, penalty or InfoGAN term) on ``real`` and ``fake``, each a batch of
    ``B``. An example's gradient at layer ``l`` is ``B * dL/dh_l(x_i)``, the gradient of the
    loss term that example contributes: for the Wasserstein loss ``+-df(x_i)/dh_l``, so the
    ``"input"`` entry is the mean input-gradient norm over real and fake points, and the entry
    of a layer whose output is the score is 1. Each entry is the mean of the per-example norms
    over all ``2B`` examples; a layer's output is the Dense or convolution output, before any
    activation. Layers the loss does not reach (InfoGAN's Q head) report 0.

    Args:
      state: holds the critic, its parameters and model state.
      config: the run's settings (loss, label smoothing, InfoGAN).
      real, fake: critic inputs ``[B, ...]`` (after ``config.real_transform``).
      labels: ``(y,)`` for a conditional critic (fake examples share the real labels), else ().
      layer_types: the modules whose outputs count as layers.

    Returns:
      ``(norms, aux)``: ``norms`` maps ``"<depth>_<layer path>"`` to a scalar: ``"00_input"``,
      ``"01_Dense_0"``, ... in depth order (the order of the first calls); the prefix keeps
      that order wherever keys get sorted (``jit`` returns dicts with sorted keys, and so do
      most metric logs). ``aux`` holds the ``"critic_adversarial_loss"`` and the
      ``"real_scores"`` and ``"fake_scores"`` ``[B]`` of the same pass.
    """
    loss_fn = _critic_loss_fn(state, config, labels)
    (loss, (real_scores, fake_scores)), layer_grads, input_grads = layer_output_gradients(
        loss_fn, real, fake, layer_types=layer_types
    )
    batch_size = real_scores.shape[0]
    mean_norm = lambda grads: jnp.mean(
        jnp.concatenate([_per_example_norms(g) for g in grads]) * batch_size
    )
    named = [(INPUT, input_grads), *layer_grads.items()]
    width = max(2, len(str(len(named) - 1)))
    norms = {f"{depth:0{width}d}_{name}": mean_norm(g) for depth, (name, g) in enumerate(named)}
    aux = {
        "critic_adversarial_loss": loss,
        "real_scores": real_scores,
        "fake_scores": fake_scores,
    }
    return norms, aux


# --------------------------------------------------------------------------- #
# Weights.
# --------------------------------------------------------------------------- #
def _flat_weights(params: PyTree) -> Array:
    return jnp.concatenate([jnp.ravel(p) for p in jax.tree.leaves(params)])


def weight_range(params: PyTree, clip: float | Array | None = None) -> Array:
    """The histograms' half-width: ``max |w|``, or ``max(c, max |w|)`` given a clip value."""
    bound = jnp.max(jnp.abs(_flat_weights(params)))
    if clip is not None:
        bound = jnp.maximum(bound, clip)
    return jnp.maximum(bound, jnp.finfo(bound.dtype).tiny)


def histogram(values: Array, bound: Array | float, bins: int) -> tuple[Array, Array]:
    """Counts ``[bins]`` of ``values`` in equal bins over ``[-bound, bound]``, and the edges.

    As ``numpy.histogram``: the last bin is closed; values beyond the range (none when
    ``bound`` is their largest magnitude) are counted in the end bins.
    """
    if bins < 1:
        raise ValueError(f"a histogram needs bins >= 1, got {bins}.")
    values = jnp.ravel(values)
    edges = jnp.linspace(-bound, bound, bins + 1)
    index = jnp.floor((values + bound) / (2 * bound) * bins).astype(jnp.int32)
    counts = jnp.bincount(jnp.clip(index, 0, bins - 1), length=bins)
    return counts, edges


def weight_histograms(
    params: PyTree,
    *,
    bins: int = 64,
    clip: float | Array | None = None,
    per_layer: bool = False,
) -> dict[str, Array]:
    """Histograms of all the critic's parameters, and optionally of each parameter array.

    Every histogram shares one set of edges over ``[-r, r]``, ``r = weight_range(params,
    clip)``: with clipping that is ``[-c, c]``, fixed for the whole run.

    Returns:
      ``{"all": counts [bins], "edges": [bins + 1]}`` plus, with ``per_layer``, one entry per
      parameter array named by its path (``"Dense_0/kernel"``).
    """
    bound = weight_range(params, clip)
    counts, edges = histogram(_flat_weights(params), bound, bins)
    out = {"all": counts, "edges": edges}
    if per_layer:
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            out[name] = histogram(leaf, bound, bins)[0]
    return out


def fraction_at_clip(params: PyTree, clip: float | Array, *, tolerance: float = 0.01) -> Array:
    """Fraction of parameters within ``tolerance * c`` of the bounds ``+-c``."""
    return jnp.mean(jnp.abs(_flat_weights(params)) >= (1.0 - tolerance) * clip)


# --------------------------------------------------------------------------- #
# The generator.
# --------------------------------------------------------------------------- #
def generator_grad_norm(
    state: state_lib.GANState,
    config: step_config.StepConfig,
    z: Array,
    labels: Array | None = None,
    codes: tuple | None = None,
) -> Array:
    """``||d L_G / d theta_G||_2`` for the run's generator loss at latents ``z``.

    The loss of the generator update (``config.loss``, minus InfoGAN's ``L_I``), both models in
    training mode, without instance noise.

    Args:
      state: the two players.
      config: the run's settings.
      z: latents ``[B, latent_size]``, already holding any InfoGAN codes.
      labels: class ids ``[B]`` for a conditional GAN.
      codes: the InfoGAN codes inside ``z`` (``train._latents`` returns both).
    """
    family = losses_lib.get_loss(config.loss)
    labels = () if labels is None else (labels,)

    def loss_fn(g_params):
        fake, _ = train._apply(state.generator, g_params, state.generator_state, (z, *labels), True)
        out, _ = train._apply(
            state.critic, state.critic_params, state.critic_state, (fake, *labels), True
        )
        scores, q = out if config.info is not None else (out, None)
        loss = family.generator(scores)
        if config.info is not None:
            loss = loss - train._information(config, q, codes)["total"]
        return loss

    return optax.tree.norm(jax.grad(loss_fn)(state.generator_params))


# --------------------------------------------------------------------------- #
# Everything at once.
# --------------------------------------------------------------------------- #
def _mean_and_max(prefix: str, values: Array) -> dict[str, Array]:
    return {prefix: jnp.mean(values), f"{prefix}_max": jnp.max(values)}


def diagnose(
    state: state_lib.GANState,
    config: step_config.StepConfig,
    batch: Mapping[str, Array],
    key: Array,
    *,
    clip: float | Array | None = None,
    bins: int = 64,
    per_layer_histograms: bool = False,
) -> Diagnostics:
    """All the diagnostics on one real batch; jit it with ``config`` and options bound.

    ``config.axis_name`` is ignored: under ``pmap`` each device reports its own shard's values.
    Models built with a BatchNorm ``axis_name`` (for ``pmap``) must be diagnosed under ``pmap``
    too, where that axis is bound.

    Args:
      state: the current ``GANState``.
      config: the run's ``StepConfig``.
      batch: one real batch ``{"x": [B, ...]}`` (plus ``"y": [B]`` for a conditional GAN),
        without the train step's leading ``n_critic`` axis.
      key: PRNG key for the fakes, the interpolates and the generator's latents.
      clip: the run's weight-clipping bound ``c``, if any: fixes the histogram range to
        ``[-c, c]`` and adds ``diag/critic_weight_frac_at_clip``.
      bins: histogram bins.
      per_layer_histograms: also histogram each parameter array.

    Returns:
      ``Diagnostics(scalars, histograms)``. Scalars: ``diag/critic_grad_norm_{real, fake,
      interpolates}`` (means) and their ``_max``; ``diag/activation_grad_norm/<depth>_<layer>``
      (``00_input``, ``01_Dense_0``, ...; see ``activation_gradient_norms``);
      ``diag/critic_adversarial_loss``, ``diag/critic_{real, fake}_score`` and, for the
      Wasserstein loss, ``diag/wasserstein_estimate``;
      ``diag/generator_param_grad_norm``; ``diag/critic_weight_max_abs`` and, with ``clip``,
      ``diag/critic_weight_frac_at_clip``. Histograms: ``diag/critic_weight_histogram``
      (counts), ``diag/critic_weight_histogram_edges`` and, with ``per_layer_histograms``,
      ``diag/critic_weight_histogram/<param path>``; and the per-example gradient norms
      themselves, ``diag/critic_grad_norms_{real, fake, interpolates}`` (``[B]`` each).
    """
    config = dataclasses.replace(config, axis_name=None)
    family = losses_lib.get_loss(config.loss)
    real = batch["x"] if config.real_transform is None else config.real_transform(batch["x"])
    labels = () if config.num_classes is None else (batch["y"],)
    batch_size = jax.tree.leaves(real)[0].shape[0]
    fake_key, interpolate_key, generator_key = jax.random.split(key, 3)

    z, _ = train._latents(config, fake_key, batch_size)
    fake, _ = train._apply(
        state.generator, state.generator_params, state.generator_state, (z, *labels), True
    )
    layer_norms, aux = activation_gradient_norms(state, config, real, fake, labels)
    critic_fn = lambda x: _critic_scores(state, config, x, labels)
    input_norms = input_gradient_norms(critic_fn, real, fake, interpolate_key)

    scalars = {}
    for points, norms in input_norms.items():
        scalars.update(_mean_and_max(f"diag/critic_grad_norm_{points}", norms))
    scalars.update((f"diag/activation_grad_norm/{name}", v) for name, v in layer_norms.items())
    real_score, fake_score = jnp.mean(aux["real_scores"]), jnp.mean(aux["fake_scores"])
    scalars["diag/critic_adversarial_loss"] = aux["critic_adversarial_loss"]
    scalars["diag/critic_real_score"] = real_score
    scalars["diag/critic_fake_score"] = fake_score
    if family.estimates_wasserstein:
        scalars["diag/wasserstein_estimate"] = real_score - fake_score

    z, codes = train._latents(config, generator_key, batch_size)
    scalars["diag/generator_param_grad_norm"] = generator_grad_norm(
        state, config, z, labels[0] if labels else None, codes
    )

    weights = state.critic_params
    scalars["diag/critic_weight_max_abs"] = jnp.max(jnp.abs(_flat_weights(weights)))
    if clip is not None:
        scalars["diag/critic_weight_frac_at_clip"] = fraction_at_clip(weights, clip)
    hist = weight_histograms(weights, bins=bins, clip=clip, per_layer=per_layer_histograms)
    histograms = {
        "diag/critic_weight_histogram": hist.pop("all"),
        "diag/critic_weight_histogram_edges": hist.pop("edges"),
    }
    histograms.update((f"diag/critic_weight_histogram/{name}", c) for name, c in hist.items())
    # The norms themselves: a penalty acts on each example's, which their mean hides.
    histograms.update((f"diag/critic_grad_norms_{points}", n) for points, n in input_norms.items())
    return Diagnostics(scalars, histograms)


def to_host(diagnostics: Diagnostics) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Fetches ``diagnose``'s output: Python floats for the scalars, NumPy histograms."""
    scalars, histograms = jax.device_get(tuple(diagnostics))
    return {k: float(v) for k, v in scalars.items()}, {
        k: np.asarray(v) for k, v in histograms.items()
    }
