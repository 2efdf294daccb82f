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

import functools
from collections.abc import Callable
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import optax

from gans import augment, parallel

Array = jax.Array
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


def _check_weight(weight: float) -> None:
    if not isinstance(weight, jax.core.Tracer) and weight < 0:
        raise ValueError(
            f"penalty weight must be >= 0, got {weight}; the papers use 10 (0.1 for 2-D toys)."
        )


def _norm_deviation(norms: Array, target: float, one_sided: bool) -> Array:
    deviation = norms - target
    return jax.nn.relu(deviation) if one_sided else deviation


def gradient_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array,
    *,
    weight: float = 10.0,
    target: float = 1.0,
    one_sided: bool = False,
    mode: GradMode = "sum",
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """WGAN-GP penalty on random interpolates [WGAN-GP, Eq. 3].

    ``lambda * E[(||grad f(x^)||_2 - target)^2]`` with ``x^ = eps x + (1 - eps) x~``
    and ``eps ~ U[0, 1]`` drawn once per example. The one-sided variant
    penalises only norms above the target: ``lambda * E[max(0, ||grad|| - target)^2]``.

    Args:
      critic_fn: batch -> scores ``[B]``, closing over the critic parameters.
      real: real batch ``[B, ...]``.
      fake: generated batch, same shape as ``real``.
      key: PRNG key for the interpolation factors.
      weight: lambda; 10 in the paper (0.1 for its 2-D toys).
      target: the gradient norm aimed at (1 for a 1-Lipschitz critic).
      one_sided: penalise only norms above ``target``.
      mode: see ``input_gradients``.
      axis_name: the pmap axis the batch is split over, or None.

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
    eps = parallel.draw_like(jax.random.uniform, key, (_batch_size(real),), axis_name)
    interpolates = _mix(real, fake, eps)
    norms = gradient_norms(critic_fn, interpolates, mode=mode)
    value = weight * jnp.mean(_norm_deviation(norms, target, one_sided) ** 2)
    return value, norms


def dragan_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array,
    *,
    weight: float = 10.0,
    scale: float = 0.5,
    symmetric: bool = False,
    target: float = 1.0,
    mode: GradMode = "sum",
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """DRAGAN penalty: the gradient penalty around perturbed real data [DRAGAN].

    As in the authors' code: ``x_p = x + scale * std(x) * u`` with ``u ~ U[0, 1]``
    element-wise (one-sided, ``std`` over the whole real batch), then
    ``x^ = x + alpha (x_p - x)`` with ``alpha ~ U[0, 1]`` per example, and
    ``lambda * E[(||grad f(x^)|| - 1)^2]``. ``symmetric=True`` draws
    ``u ~ U[-1, 1]`` so the perturbation is centred on the data. ``fake`` is unused.

    Returns:
      ``(penalty, grad_norms)`` with norms at ``x^``.
    """
    del fake
    _check_weight(weight)
    noise_key, alpha_key = jax.random.split(key)
    low = -1.0 if symmetric else 0.0
    leaves, treedef = jax.tree.flatten(real)
    noise_keys = jax.random.split(noise_key, len(leaves))
    uniform = lambda x: functools.partial(jax.random.uniform, dtype=x.dtype, minval=low, maxval=1.0)
    perturbed = treedef.unflatten(
        [
            x
            + scale
            * parallel.std(x, axis_name)
            * parallel.draw_like(uniform(x), k, x.shape, axis_name)
            for x, k in zip(leaves, noise_keys)
        ]
    )
    alpha = parallel.draw_like(jax.random.uniform, alpha_key, (_batch_size(real),), axis_name)
    points = _mix(perturbed, real, alpha)  # x + alpha (x_p - x)
    norms = gradient_norms(critic_fn, points, mode=mode)
    value = weight * jnp.mean((norms - target) ** 2)
    return value, norms


def r1_penalty(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array,
    *,
    weight: float = 10.0,
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


PENALTIES: dict[str, Penalty] = {
    "gradient_penalty": gradient_penalty,
    "dragan": dragan_penalty,
    "r1": r1_penalty,
}


def get_penalty(name: str) -> Penalty:
    """Returns the penalty registered under ``name``."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise ValueError(
            f"unknown penalty {name!r}; known penalties: {', '.join(sorted(PENALTIES))}."
        ) from None


def consistency_regularization(
    critic_fn: CriticFn,
    real: Array,
    fake: Array,
    key: Array,
    *,
    weight: float = 10.0,
    fake_weight: float = 0.0,
    policy: tuple[str, ...] = ("translation",),
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """Consistency regularisation: the critic's squared change under augmentation.

    ``lambda_real * E[(D(x) - D(T(x)))^2] + lambda_fake * E[(D(G(z)) - D(T(G(z))))^2]``: CR-GAN
    (Zhang et al., 2020, "Consistency Regularization for Generative Adversarial Networks",
    Eq. 1) with ``fake_weight = 0``; balanced CR (Zhao et al., 2021, "Improved Consistency
    Regularization for GANs", Eq. 3) penalises generated images too. Gradients flow through
    both scores, as in the papers. ``T`` is ``gans.augment.augment`` with ``policy`` (CR-GAN's
    CIFAR setting: random shifts, and flips, which change what a digit is). Of this module's
    signature, but a regulariser of the critic's outputs rather than of its input gradient: the
    trainer adds it beside a Lipschitz penalty, not in place of one.

    Returns:
      ``(value, changes)``: the weighted scalar and the per-example squared changes ``[B]`` of
      the real batch.
    """
    _check_weight(weight)
    _check_weight(fake_weight)
    real_key, fake_key = jax.random.split(key)

    def changes(x, k):
        moved = augment.augment(x, k, policy, axis_name=axis_name)
        return jnp.square(critic_fn(x) - critic_fn(moved))

    real_changes = changes(real, real_key)
    value = weight * jnp.mean(real_changes)
    if not isinstance(fake_weight, jax.core.Tracer) and fake_weight == 0:
        return value, real_changes
    return value + fake_weight * jnp.mean(changes(fake, fake_key)), real_changes
