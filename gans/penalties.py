"""Lipschitz penalties on the critic's input gradient, all of one signature.

    penalty(critic_fn, real, fake, key, *, weight, **options) -> (value, grad_norms)

``critic_fn`` maps a batch ``[B, ...]`` to scores ``[B]`` and closes over the
critic's parameters, so that ``jax.grad`` of the critic loss with respect to
those parameters flows through the penalty (double backpropagation). ``value``
is the weighted scalar penalty, ready to be added to the critic loss;
``grad_norms`` ``[B]`` are the per-example input-gradient norms at the points
where the penalty was evaluated, returned so the trainer can log them without
a second backward pass. Under ``pmap``, ``axis_name`` makes the random draws (and
DRAGAN's batch std) those of the global batch, so a run does not depend on the
device count (see ``gans.parallel``).

A penalty with its hyper-parameters bound is a typed value: a frozen dataclass per penalty
(``GradientPenalty(weight=10.0, one_sided=True)``), hashable and checked when built, and
itself a penalty of the signature above (it passes its fields as the options). This is what
``gans.step_config.StepConfig`` holds; ``make_penalty(name, **options)`` builds one from a
registered name. The random numbers a penalty draws have their own functions
(``interpolation_factors``, ``perturbation_draws``, ``consistency_views``), and the penalty
takes the drawn values in place of ``key``, so a value can be reproduced outside without
copying the key handling.

Norms are per example, ``||grad_x f(x_i)||_2`` over all of ``x_i``'s
coordinates, through ``optax.safe_norm`` so the penalty's own gradient is
defined (zero) where an input gradient is exactly zero. A batch may be a pytree
of arrays sharing the leading batch axis (e.g. MSG-GAN's one image per scale):
an example is then its slice of every leaf, and its norm runs over all of them.

References:
  [WGAN-GP] Gulrajani et al., Improved Training of Wasserstein GANs, 2017, Alg. 1.
  [DRAGAN]  Kodali et al., On Convergence and Stability of GANs, 2017.
  [R1]      Mescheder et al., Which Training Methods for GANs do actually Converge?, 2018.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gans import augment, parallel

Array = jax.Array
PyTree = Any
CriticFn = Callable[[Array], Array]
GradMode = Literal["sum", "vmap"]


class Penalty(Protocol):
    """The shared signature of every penalty in this module."""

    def __call__(
        self, critic_fn: CriticFn, real: Array, fake: Array, key: Array, **options
    ) -> tuple[Array, Array]: ...


def _per_example(x: Array, shape_of: Array) -> Array:
    """Reshapes per-example draws ``[B]`` to broadcast against ``shape_of``."""
    return x.reshape((-1,) + (1,) * (shape_of.ndim - 1))


def _batch_size(x) -> int:
    return jax.tree.leaves(x)[0].shape[0]


def _mix(a, b, weight: Array):
    """``weight * a + (1 - weight) * b`` leaf by leaf, one ``weight [B]`` per example."""
    return jax.tree.map(
        lambda u, v: _per_example(weight, u) * u + (1.0 - _per_example(weight, u)) * v, a, b
    )


def input_gradients(critic_fn: CriticFn, x: Array, *, mode: GradMode = "sum") -> Array:
    """Per-example input gradients ``grad_x f(x_i)``, shape of ``x``.

    Args:
      critic_fn: batch ``[B, ...]`` -> scores ``[B]``.
      x: points ``[B, ...]``.
      mode: ``"sum"`` takes one backward pass of ``sum_i f(x_i)``: since
        ``d/dx_i sum_j f(x_j) = d f(x_i)/dx_i`` this *is* the per-example gradient
        **provided the critic has no cross-example operations** (BatchNorm in
        training mode, minibatch discrimination). ``"vmap"`` differentiates each
        example alone through ``jax.vmap`` and is exact for any critic, at the
        cost of running the critic on batches of one.

    Returns:
      The gradients, same shape as ``x``.
    """
    if mode == "sum":
        return jax.grad(lambda inputs: jnp.sum(critic_fn(inputs)))(x)
    if mode == "vmap":
        single = lambda xi: critic_fn(jax.tree.map(lambda leaf: leaf[None], xi))[0]
        return jax.vmap(jax.grad(single))(x)
    raise ValueError(f"unknown gradient mode {mode!r}; choose 'sum' or 'vmap'.")


def gradient_norms(critic_fn: CriticFn, x: Array, *, mode: GradMode = "sum") -> Array:
    """Per-example ``||grad_x f(x_i)||_2`` ``[B]``, with a norm that is safe at zero."""
    grads = jax.tree.leaves(input_gradients(critic_fn, x, mode=mode))
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in grads], axis=1)
    return optax.safe_norm(flat, 0.0, axis=1)


def _check_weight(weight: float | Array) -> None:
    # A traced weight (one per vmapped run, gans.sweep) is checked where it is set.
    if not isinstance(weight, jax.core.Tracer) and np.any(np.asarray(weight) < 0):
        raise ValueError(
            f"penalty weight must be >= 0, got {weight}; the papers use 10 (0.1 for 2-D toys)."
        )


def _norm_deviation(norms: Array, target: float, one_sided: bool) -> Array:
    deviation = norms - target
    return jax.nn.relu(deviation) if one_sided else deviation


def interpolation_factors(key: Array, batch_size: int, *, axis_name: str | None = None) -> Array:
    """WGAN-GP's interpolation factors ``eps ~ U[0, 1]``, one per example, ``[B]``.

    Under ``pmap`` (``axis_name``) this device's slice of the global batch's draw.
    """
    return parallel.draw_like(jax.random.uniform, key, (batch_size,), axis_name)


def _check_per_example(name: str, values: Array, batch_size: int) -> None:
    if jnp.shape(values) != (batch_size,):
        raise ValueError(
            f"{name} must hold one value per example, shape ({batch_size},), got "
            f"{jnp.shape(values)}."
        )


def gradient_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array | None,
    *,
    weight: float | Array = 10.0,
    target: float = 1.0,
    one_sided: bool = False,
    mode: GradMode = "sum",
    axis_name: str | None = None,
    factors: Array | None = None,
) -> tuple[Array, Array]:
    """WGAN-GP penalty on random interpolates [WGAN-GP, Eq. 3].

    ``lambda * E[(||grad f(x^)||_2 - target)^2]`` with ``x^ = eps x + (1 - eps) x~``
    and ``eps ~ U[0, 1]`` drawn once per example. The one-sided variant
    penalises only norms above the target: ``lambda * E[max(0, ||grad|| - target)^2]``.

    Args:
      critic_fn: batch -> scores ``[B]``, closing over the critic parameters.
      real: real batch ``[B, ...]``.
      fake: generated batch, same shape as ``real``.
      key: PRNG key for the interpolation factors (``interpolation_factors``); unused, and may
        be None, when ``factors`` are given.
      weight: lambda; 10 in the paper (0.1 for its 2-D toys).
      target: the gradient norm aimed at (1 for a 1-Lipschitz critic).
      one_sided: penalise only norms above ``target``.
      mode: see ``input_gradients``.
      axis_name: the pmap axis the batch is split over, or None.
      factors: ``eps`` ``[B]`` drawn beforehand, e.g. ``interpolation_factors(key, B)``, which
        is what the penalty draws from ``key`` without them.

    Returns:
      ``(penalty, grad_norms)``: scalar and per-example norms ``[B]`` at ``x^``.
    """
    _check_weight(weight)
    shapes = [jax.tree.map(jnp.shape, real), jax.tree.map(jnp.shape, fake)]
    if shapes[0] != shapes[1]:
        raise ValueError(
            f"real and fake batches must have the same shape to interpolate, got {shapes[0]} "
            f"and {shapes[1]}."
        )
    if factors is None:
        factors = interpolation_factors(key, _batch_size(real), axis_name=axis_name)
    _check_per_example("interpolation factors", factors, _batch_size(real))
    interpolates = _mix(real, fake, factors)
    norms = gradient_norms(critic_fn, interpolates, mode=mode)
    value = weight * jnp.mean(_norm_deviation(norms, target, one_sided) ** 2)
    return value, norms


def perturbation_draws(
    key: Array, real: PyTree, *, symmetric: bool = False, axis_name: str | None = None
) -> tuple[PyTree, Array]:
    """DRAGAN's random numbers: directions ``u`` like ``real`` and factors ``alpha`` ``[B]``.

    ``u ~ U[0, 1]`` element-wise (``U[-1, 1]`` with ``symmetric``), in each leaf's dtype, and
    ``alpha ~ U[0, 1]`` per example; under ``pmap`` this device's slice of the global draws.
    """
    noise_key, alpha_key = jax.random.split(key)
    low = -1.0 if symmetric else 0.0
    leaves, treedef = jax.tree.flatten(real)
    noise_keys = jax.random.split(noise_key, len(leaves))
    uniform = lambda x: functools.partial(jax.random.uniform, dtype=x.dtype, minval=low, maxval=1.0)
    directions = treedef.unflatten(
        [parallel.draw_like(uniform(x), k, x.shape, axis_name) for x, k in zip(leaves, noise_keys)]
    )
    alpha = parallel.draw_like(jax.random.uniform, alpha_key, (_batch_size(real),), axis_name)
    return directions, alpha


def dragan_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array | None,
    *,
    weight: float | Array = 10.0,
    scale: float = 0.5,
    symmetric: bool = False,
    target: float = 1.0,
    mode: GradMode = "sum",
    axis_name: str | None = None,
    draws: tuple[PyTree, Array] | None = None,
) -> tuple[Array, Array]:
    """DRAGAN penalty: the gradient penalty around perturbed real data [DRAGAN].

    As in the authors' code: ``x_p = x + scale * std(x) * u`` with ``u ~ U[0, 1]``
    element-wise (one-sided, ``std`` over the whole real batch), then
    ``x^ = x + alpha (x_p - x)`` with ``alpha ~ U[0, 1]`` per example, and
    ``lambda * E[(||grad f(x^)|| - 1)^2]``. ``symmetric=True`` draws
    ``u ~ U[-1, 1]`` so the perturbation is centred on the data. ``fake`` is unused.
    ``draws = (u, alpha)`` given beforehand (``perturbation_draws``) replace the ones drawn
    from ``key``, which may then be None (``symmetric`` only shapes the draw).

    Returns:
      ``(penalty, grad_norms)`` with norms at ``x^``.
    """
    del fake
    _check_weight(weight)
    if draws is None:
        draws = perturbation_draws(key, real, symmetric=symmetric, axis_name=axis_name)
    directions, alpha = draws
    _check_per_example("DRAGAN's alpha", alpha, _batch_size(real))
    perturbed = jax.tree.map(
        lambda x, u: x + scale * parallel.std(x, axis_name) * u, real, directions
    )
    points = _mix(perturbed, real, alpha)  # x + alpha (x_p - x)
    norms = gradient_norms(critic_fn, points, mode=mode)
    value = weight * jnp.mean((norms - target) ** 2)
    return value, norms


def r1_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array | None,
    *,
    weight: float | Array = 10.0,
    mode: GradMode = "sum",
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """R1 penalty: ``gamma / 2 * E_{P_r}[||grad f(x)||^2]`` on real data [R1, Eq. 9].

    ``weight`` is gamma. ``fake``, ``key`` and ``axis_name`` are unused (nothing is drawn).

    Returns:
      ``(penalty, grad_norms)`` with norms at the real points.
    """
    del fake, key, axis_name
    _check_weight(weight)
    norms = gradient_norms(critic_fn, real, mode=mode)
    return 0.5 * weight * jnp.mean(norms**2), norms


class PenaltyOptions:
    """A penalty with its hyper-parameters bound: a typed, hashable ``functools.partial``.

    Subclasses are frozen, keyword-only dataclasses whose fields are the keyword options of
    ``function`` (same names and defaults); an instance is itself a ``Penalty``, called with
    the per-call options only (``axis_name``, drawn values):

        penalty = GradientPenalty(weight=10.0, one_sided=True)
        value, norms = penalty(critic_fn, real, fake, key, axis_name="batch")
    """

    name: ClassVar[str]
    function: ClassVar[Penalty]

    def __post_init__(self):
        _check_weight(self.weight)
        if self.mode not in ("sum", "vmap"):
            raise ValueError(f"unknown gradient mode {self.mode!r}; choose 'sum' or 'vmap'.")

    def options(self) -> dict[str, Any]:
        """The fields as ``function``'s keyword options."""
        # Not dataclasses.asdict, which would deep-copy a traced weight.
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def __call__(
        self, critic_fn: CriticFn, real: PyTree, fake: PyTree, key: Array | None, **call_options
    ) -> tuple[Array, Array]:
        return type(self).function(critic_fn, real, fake, key, **self.options(), **call_options)

    def with_weight(self, weight: float | Array) -> PenaltyOptions:
        """The same penalty with another weight, e.g. a vmapped run's traced one (``gans.sweep``)."""
        return dataclasses.replace(self, weight=weight)

    def __str__(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientPenalty(PenaltyOptions):
    """``gradient_penalty``'s options: WGAN-GP, two- or one-sided."""

    name: ClassVar[str] = "gradient_penalty"
    function: ClassVar[Penalty] = staticmethod(gradient_penalty)

    weight: float | Array = 10.0
    target: float = 1.0
    one_sided: bool = False
    mode: GradMode = "sum"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DraganPenalty(PenaltyOptions):
    """``dragan_penalty``'s options."""

    name: ClassVar[str] = "dragan"
    function: ClassVar[Penalty] = staticmethod(dragan_penalty)

    weight: float | Array = 10.0
    scale: float = 0.5
    symmetric: bool = False
    target: float = 1.0
    mode: GradMode = "sum"


@dataclasses.dataclass(frozen=True, kw_only=True)
class R1Penalty(PenaltyOptions):
    """``r1_penalty``'s options (``weight`` is gamma)."""

    name: ClassVar[str] = "r1"
    function: ClassVar[Penalty] = staticmethod(r1_penalty)

    weight: float | Array = 10.0
    mode: GradMode = "sum"


OPTIONS: dict[str, type[PenaltyOptions]] = {
    options.name: options for options in (GradientPenalty, DraganPenalty, R1Penalty)
}
PENALTIES: dict[str, Penalty] = {name: options.function for name, options in OPTIONS.items()}


def get_penalty(name: str) -> Penalty:
    """Returns the penalty registered under ``name``."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise ValueError(
            f"unknown penalty {name!r}; known penalties: {', '.join(sorted(PENALTIES))}."
        ) from None


def make_penalty(name: str, **options) -> PenaltyOptions:
    """The typed value of the penalty registered under ``name`` with ``options`` bound.

    ``make_penalty("dragan", weight=10.0, symmetric=True) == DraganPenalty(weight=10.0,
    symmetric=True)``; unknown names and options raise ``ValueError`` listing the known ones.
    """
    get_penalty(name)
    known = [field.name for field in dataclasses.fields(OPTIONS[name])]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"penalty {name!r} has no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(known)}."
        )
    return OPTIONS[name](**options)


def consistency_views(
    key: Array,
    real: Array,
    fake: Array | None = None,
    *,
    policy: tuple[str, ...] = ("translation",),
    axis_name: str | None = None,
) -> tuple[Array, Array | None]:
    """Consistency regularisation's random views ``(T(real), T(fake))`` (None without ``fake``)."""
    real_key, fake_key = jax.random.split(key)
    moved = lambda x, k: augment.augment(x, k, policy, axis_name=axis_name)
    return moved(real, real_key), None if fake is None else moved(fake, fake_key)


def consistency_regularization(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array | None,
    *,
    weight: float | Array = 10.0,
    fake_weight: float | Array = 0.0,
    policy: tuple[str, ...] = ("translation",),
    axis_name: str | None = None,
    views: tuple[Array, Array | None] | None = None,
) -> tuple[Array, Array]:
    """Consistency regularisation: the critic's squared change under augmentation.

    ``lambda_real * E[(D(x) - D(T(x)))^2] + lambda_fake * E[(D(G(z)) - D(T(G(z))))^2]``: CR-GAN
    (Zhang et al., 2020, "Consistency Regularization for Generative Adversarial Networks",
    Eq. 1) with ``fake_weight = 0``; balanced CR (Zhao et al., 2021, "Improved Consistency
    Regularization for GANs", Eq. 3) penalises generated images too. Gradients flow through
    both scores, as in the papers. ``T`` is ``gans.augment.augment`` with ``policy`` (CR-GAN's
    CIFAR setting: random shifts, and flips, which change what a digit is). Of this module's
    signature, but a regulariser of the critic's outputs rather than of its input gradient: the
    trainer adds it beside a Lipschitz penalty, not in place of one. ``views = (T(real),
    T(fake))`` given beforehand (``consistency_views``) replace the ones drawn from ``key``.

    Returns:
      ``(value, changes)``: the weighted scalar and the per-example squared changes ``[B]`` of
      the real batch.
    """
    _check_weight(weight)
    _check_weight(fake_weight)
    with_fake = isinstance(fake_weight, jax.core.Tracer) or fake_weight != 0
    if views is None:
        views = consistency_views(
            key, real, fake if with_fake else None, policy=policy, axis_name=axis_name
        )
    real_view, fake_view = views
    change = lambda x, moved: jnp.square(critic_fn(x) - critic_fn(moved))
    real_changes = change(real, real_view)
    value = weight * jnp.mean(real_changes)
    if not with_fake:
        return value, real_changes
    return value + fake_weight * jnp.mean(change(fake, fake_view)), real_changes
