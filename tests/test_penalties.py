"""Penalties: closed forms on linear critics, per-example norms, safe gradients, typed options."""

import dataclasses
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import penalties

KEY = jax.random.key(0)


def linear_critic(w, b=0.3):
    """f(x) = w . x + b: its input gradient is w everywhere, so ||grad|| = ||w||."""
    return lambda x: x.reshape(x.shape[0], -1) @ w.ravel() + b


def batches(shape=(16, 3, 3, 2), seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape) * 3.0 + 1.0


class GradientPenaltyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_critic_closed_form(self):
        real, fake = batches()
        for scale in (0.3, 1.0, 2.5):
            w = scale * jax.random.normal(jax.random.key(2), real.shape[1:])
            critic = linear_critic(w)
            for seed in range(3):
                penalty = self.variant(
                    lambda r, f, k, critic=critic: penalties.gradient_penalty(
                        critic, r, f, k, weight=10.0
                    )
                )
                value, norms = penalty(real, fake, jax.random.key(seed))
                expected = 10.0 * (jnp.linalg.norm(w) - 1.0) ** 2
                np.testing.assert_allclose(value, expected, rtol=1e-5)
                np.testing.assert_allclose(norms, jnp.linalg.norm(w), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_sided_is_zero_inside_the_ball(self):
        real, fake = batches()
        for scale in (0.0, 0.5, 1.0):
            w = jnp.zeros(real.shape[1:]).at[0, 0, 0].set(scale)
            value, _ = self.variant(
                lambda r, f, w=w: penalties.gradient_penalty(
                    linear_critic(w), r, f, KEY, one_sided=True
                )
            )(real, fake)
            assert value == 0.0
        w = jnp.zeros(real.shape[1:]).at[0, 0, 0].set(1.5)
        value, _ = penalties.gradient_penalty(
            linear_critic(w), real, fake, KEY, one_sided=True, weight=2.0
        )
        np.testing.assert_allclose(value, 2.0 * 0.5**2, rtol=1e-6)

    def test_target_norm_option(self):
        real, fake = batches()
        w = jnp.zeros(real.shape[1:]).at[1, 1, 1].set(3.0)
        value, _ = penalties.gradient_penalty(
            linear_critic(w), real, fake, KEY, target=2.0, weight=1.0
        )
        np.testing.assert_allclose(value, 1.0, rtol=1e-6)


def quadratic_critic(x):
    """f(x_i) = ||x_i||^2 / 2, whose input gradient is x_i itself: per-example norm ||x_i||."""
    return 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)


def test_norm_is_per_example_not_batch_wide():
    # Examples at different distances from 0 have different gradient norms; a
    # norm over the whole batch would give one number sqrt(sum_i ||x_i||^2).
    x = jnp.stack([jnp.full((2, 2), v) for v in (0.25, 0.5, 1.0, 2.0)])
    norms = penalties.gradient_norms(quadratic_critic, x)
    np.testing.assert_allclose(norms, [0.5, 1.0, 2.0, 4.0], rtol=1e-6)
    # Penalty at these exact points: with real == fake the interpolate is the point itself.
    value, _ = penalties.gradient_penalty(quadratic_critic, x, x, KEY, weight=1.0)
    per_example = np.mean((np.array([0.5, 1.0, 2.0, 4.0]) - 1.0) ** 2)
    batch_wide = (np.sqrt(0.25 + 1 + 4 + 16) - 1.0) ** 2
    np.testing.assert_allclose(value, per_example, rtol=1e-6)
    assert not np.isclose(value, batch_wide)


def test_interpolation_factor_is_drawn_per_example():
    # With real = 0 and fake = 1 (all coordinates), x^ = 1 - eps, so the quadratic
    # critic's gradient norm reveals each example's eps: they must differ.
    real, fake = jnp.zeros((64, 4)), jnp.ones((64, 4))
    _, norms = penalties.gradient_penalty(quadratic_critic, real, fake, KEY)
    eps = 1.0 - norms / 2.0  # ||x^|| = (1 - eps) * sqrt(4)
    assert float(jnp.std(eps)) > 0.2  # U[0, 1] has std 0.29
    assert float(jnp.min(eps)) >= 0.0 and float(jnp.max(eps)) <= 1.0


def test_sum_shortcut_equals_exact_vmap_form():
    mlp = lambda x: (
        jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.linspace(-1, 1, 18).reshape(18, 1))[:, 0] ** 2
    )
    real, fake = batches((8, 3, 3, 2))
    fast = penalties.gradient_penalty(mlp, real, fake, KEY, mode="sum")
    exact = penalties.gradient_penalty(mlp, real, fake, KEY, mode="vmap")
    np.testing.assert_allclose(fast[0], exact[0], rtol=1e-5)
    np.testing.assert_allclose(fast[1], exact[1], rtol=1e-5)


def test_sum_shortcut_is_wrong_with_cross_example_ops():
    # A batch-normalising critic couples examples: the shortcut's precondition fails.
    def batchnorm_critic(x):
        h = x.reshape(x.shape[0], -1).sum(axis=1)
        return (h - h.mean()) / (h.std() + 1e-3)

    real, _ = batches((8, 4))
    fast = penalties.gradient_norms(batchnorm_critic, real, mode="sum")
    exact = penalties.gradient_norms(batchnorm_critic, real, mode="vmap")
    assert not np.allclose(fast, exact, rtol=1e-2)


def test_penalty_gradient_is_finite_at_zero_input_gradient():
    # A critic whose input gradient is exactly zero (w = 0): the norm's derivative
    # at 0 is undefined for a plain sqrt; the safe norm keeps the penalty's
    # gradient with respect to w finite.
    real, fake = batches((8, 5))

    def penalty_of(w):
        return penalties.gradient_penalty(linear_critic(w), real, fake, KEY)[0]

    value, grad = jax.value_and_grad(penalty_of)(jnp.zeros(5))
    np.testing.assert_allclose(value, 10.0)
    assert jnp.all(jnp.isfinite(grad))


def test_double_backprop_reaches_the_critic_parameters():
    # d/dw lambda (||w|| - 1)^2 = 2 lambda (||w|| - 1) w / ||w||.
    real, fake = batches((8, 3))
    w = jnp.array([1.0, 2.0, 2.0])  # ||w|| = 3
    grad = jax.grad(lambda w: penalties.gradient_penalty(linear_critic(w), real, fake, KEY)[0])(w)
    np.testing.assert_allclose(grad, 2 * 10.0 * 2.0 * w / 3.0, rtol=1e-5)


def test_dragan_perturbs_real_data_one_sided():
    real = jax.random.normal(KEY, (256, 4))
    _, norms = penalties.dragan_penalty(quadratic_critic, real, None, jax.random.key(3))
    # Points are x + alpha * 0.5 * std(x) * u with u, alpha in [0, 1]; the
    # quadratic critic's gradient is the point itself, so ||point - x|| is bounded.
    bound = 0.5 * float(jnp.std(real)) * 2.0  # ||u|| <= sqrt(4)
    deviations = jnp.abs(norms - jnp.linalg.norm(real, axis=1))
    assert float(jnp.max(deviations)) <= bound + 1e-5
    w = jnp.array([0.0, 3.0, 0.0, 4.0])
    value, _ = penalties.dragan_penalty(linear_critic(w), real, None, KEY, symmetric=True)
    np.testing.assert_allclose(value, 10.0 * (5.0 - 1.0) ** 2, rtol=1e-5)


def test_r1_closed_form():
    real = jax.random.normal(KEY, (32, 3))
    w = jnp.array([0.0, 3.0, 4.0])
    value, norms = penalties.r1_penalty(linear_critic(w), real, None, None, weight=2.0)
    np.testing.assert_allclose(value, 0.5 * 2.0 * 25.0, rtol=1e-6)
    np.testing.assert_allclose(norms, 5.0, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(penalties.PENALTIES))
def test_every_penalty_rejects_a_negative_weight(name):
    real, fake = batches((4, 2))
    with pytest.raises(ValueError, match="weight must be >= 0"):
        penalties.get_penalty(name)(linear_critic(jnp.ones(2)), real, fake, KEY, weight=-1.0)


def test_unknown_penalty_lists_the_known_ones():
    with pytest.raises(ValueError, match="known penalties: dragan, gradient_penalty, r1"):
        penalties.get_penalty("gp2")


def test_pytree_batches_take_one_norm_over_every_leaf():
    # Two "scales" of one example: f(x) = w1 . x1 + w2 . x2 has gradient norm
    # sqrt(||w1||^2 + ||w2||^2) per example, as for one concatenated input.
    w1, w2 = jnp.array([3.0, 0.0]), jnp.array([[0.0, 4.0], [0.0, 0.0]])

    def critic(x):
        small, large = x
        return small @ w1 + large.reshape(large.shape[0], -1) @ w2.ravel()

    k1, k2 = jax.random.split(KEY)
    real = (jax.random.normal(k1, (8, 2)), jax.random.normal(k2, (8, 2, 2)))
    fake = jax.tree.map(lambda x: x + 1.0, real)
    for penalty in (penalties.gradient_penalty, penalties.dragan_penalty):
        value, norms = penalty(critic, real, fake, KEY, weight=1.0)
        np.testing.assert_allclose(norms, 5.0, rtol=1e-6)
        np.testing.assert_allclose(value, 16.0, rtol=1e-5)
    exact = penalties.gradient_norms(critic, real, mode="vmap")
    np.testing.assert_allclose(exact, 5.0, rtol=1e-6)


def tanh_critic(x):
    """A critic with input-dependent gradients, so that where it is evaluated matters."""
    flat = x.reshape(x.shape[0], -1)
    return jnp.tanh(flat @ jnp.linspace(-1.0, 1.0, flat.shape[1]))


def test_a_typed_penalty_computes_exactly_what_its_function_computes():
    real, fake = batches()
    for typed, function, options in (
        (
            penalties.GradientPenalty(weight=2.0, one_sided=True),
            penalties.gradient_penalty,
            {"weight": 2.0, "one_sided": True},
        ),
        (
            penalties.DraganPenalty(scale=0.3, symmetric=True),
            penalties.dragan_penalty,
            {"scale": 0.3, "symmetric": True},
        ),
        (
            penalties.R1Penalty(weight=3.0, mode="vmap"),
            penalties.r1_penalty,
            {"weight": 3.0, "mode": "vmap"},
        ),
    ):
        chex.assert_trees_all_equal(
            typed(tanh_critic, real, fake, KEY), function(tanh_critic, real, fake, KEY, **options)
        )
        # Under jit too: one program, whichever way the options are bound.
        chex.assert_trees_all_equal(
            jax.jit(lambda r, f, k, typed=typed: typed(tanh_critic, r, f, k))(real, fake, KEY),
            jax.jit(
                lambda r, f, k, function=function, options=options: function(
                    tanh_critic, r, f, k, **options
                )
            )(real, fake, KEY),
        )


@pytest.mark.parametrize("name", sorted(penalties.PENALTIES))
def test_typed_options_mirror_the_function_keywords_and_defaults(name):
    per_call = {"axis_name", "factors", "draws"}  # Not hyper-parameters: given at the call.
    parameters = inspect.signature(penalties.get_penalty(name)).parameters.values()
    keywords = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    fields = {f.name: f.default for f in dataclasses.fields(penalties.OPTIONS[name])}
    assert fields == {k: v for k, v in keywords.items() if k not in per_call}
    assert penalties.OPTIONS[name].name == name


def test_typed_penalties_are_checked_hashable_values():
    a, b = penalties.GradientPenalty(weight=1.0), penalties.GradientPenalty(weight=1.0)
    assert a == b and hash(a) == hash(b) and a != penalties.GradientPenalty(weight=2.0)
    assert a.with_weight(2.0) == penalties.GradientPenalty(weight=2.0)
    assert str(a) == "gradient_penalty"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.weight = 3.0
    with pytest.raises(ValueError, match="weight must be >= 0"):
        penalties.DraganPenalty(weight=-1.0)
    with pytest.raises(ValueError, match="unknown gradient mode 'exact'"):
        penalties.R1Penalty(mode="exact")


def test_make_penalty_builds_the_typed_value_and_lists_what_it_knows():
    made = penalties.make_penalty("dragan", weight=1.0, symmetric=True)
    assert made == penalties.DraganPenalty(weight=1.0, symmetric=True)
    with pytest.raises(ValueError, match="known penalties: dragan, gradient_penalty, r1"):
        penalties.make_penalty("gp2")
    with pytest.raises(
        ValueError, match="no option 'symmetric'; its options: weight, target, one_sided, mode"
    ):
        penalties.make_penalty("gradient_penalty", symmetric=True)


def test_a_typed_weight_may_be_traced():
    # A vmapped sweep's weights: one traced value per run, checked where they are set.
    real, fake = batches((8, 4))
    values = jax.vmap(
        lambda w: penalties.GradientPenalty().with_weight(w)(tanh_critic, real, fake, KEY)[0]
    )(jnp.array([0.5, 2.0]))
    single = penalties.GradientPenalty(weight=1.0)(tanh_critic, real, fake, KEY)[0]
    np.testing.assert_allclose(values, [0.5 * single, 2.0 * single], rtol=1e-6)


def test_the_penalty_from_given_factors_equals_the_key_driven_one():
    real, fake = batches()
    factors = penalties.interpolation_factors(KEY, real.shape[0])
    from_key = penalties.gradient_penalty(tanh_critic, real, fake, KEY, one_sided=True)
    given = penalties.gradient_penalty(
        tanh_critic, real, fake, None, one_sided=True, factors=factors
    )
    chex.assert_trees_all_equal(given, from_key)
    typed = penalties.GradientPenalty(one_sided=True)(
        tanh_critic, real, fake, None, factors=factors
    )
    chex.assert_trees_all_equal(typed, from_key)


def test_the_penalty_of_hand_chosen_factors_is_known():
    # The quadratic critic's gradient at x^ = eps x + (1 - eps) x~ is x^ itself.
    real, fake = batches((5, 3))
    eps = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0])
    value, norms = penalties.gradient_penalty(
        quadratic_critic, real, fake, None, weight=2.0, factors=eps
    )
    points = np.asarray(eps)[:, None] * np.asarray(real) + (1 - np.asarray(eps))[:, None] * fake
    expected = np.linalg.norm(points, axis=1)
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    np.testing.assert_allclose(value, 2.0 * np.mean((expected - 1.0) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"one value per example, shape \(5,\), got \(4,\)"):
        penalties.gradient_penalty(quadratic_critic, real, fake, None, factors=eps[:4])


def test_dragan_from_given_draws_equals_the_key_driven_one():
    real = jax.random.normal(KEY, (16, 3, 3, 2))
    for symmetric in (False, True):
        draws = penalties.perturbation_draws(KEY, real, symmetric=symmetric)
        from_key = penalties.dragan_penalty(tanh_critic, real, None, KEY, symmetric=symmetric)
        given = penalties.dragan_penalty(tanh_critic, real, None, None, draws=draws)
        chex.assert_trees_all_equal(given, from_key)
    # By hand: u = 1 and alpha = 1 put every point at x + 0.5 std(x), the quadratic
    # critic's gradient there.
    real = real.reshape(16, -1)
    draws = (jnp.ones_like(real), jnp.ones(16))
    _, norms = penalties.dragan_penalty(quadratic_critic, real, None, None, draws=draws)
    shifted = np.asarray(real) + 0.5 * np.std(np.asarray(real))
    np.testing.assert_allclose(norms, np.linalg.norm(shifted, axis=1), rtol=1e-5)


def test_consistency_from_given_views_equals_the_key_driven_one():
    k1, k2 = jax.random.split(KEY)
    real = jax.random.uniform(k1, (4, 8, 8, 1), minval=-1.0, maxval=1.0)
    fake = jax.random.uniform(k2, (4, 8, 8, 1), minval=-1.0, maxval=1.0)
    for fake_weight in (0.0, 10.0):
        views = penalties.consistency_views(KEY, real, fake)
        options = {"weight": 10.0, "fake_weight": fake_weight}
        from_key = penalties.consistency_regularization(tanh_critic, real, fake, KEY, **options)
        given = penalties.consistency_regularization(
            tanh_critic, real, fake, None, views=views, **options
        )
        chex.assert_trees_all_equal(given, from_key)
