"""Closed-form properties of the adversarial losses."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import losses

ZEROS = jnp.zeros(16)


class LossValuesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_cross_entropy_at_zero_logits_is_two_log_two(self):
        loss = self.variant(losses.cross_entropy_discriminator_loss)(ZEROS, ZEROS)
        np.testing.assert_allclose(loss, 2 * math.log(2), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_optimal_discriminator_is_p_over_p_plus_q(self):
        # Pointwise, V(D) = p log D + q log(1 - D) is maximised at D* = p / (p + q):
        # minimise the discriminator loss over logits on a two-point support.
        p, q = jnp.array([0.7, 0.3]), jnp.array([0.2, 0.8])

        def weighted_loss(logits):
            return -jnp.sum(p * jax.nn.log_sigmoid(logits) + q * jax.nn.log_sigmoid(-logits))

        # D* = p / (p + q) is the logit log(p / q): the gradient vanishes there and
        # the loss is convex in the logit, so it is the minimum.
        logits = jnp.log(p / q)
        np.testing.assert_allclose(jax.nn.sigmoid(logits), p / (p + q), rtol=1e-6)
        np.testing.assert_allclose(self.variant(jax.grad(weighted_loss))(logits), 0.0, atol=1e-6)
        for delta in (-0.1, 0.1):
            assert weighted_loss(logits + delta) > weighted_loss(logits)
        # And the value there is -log 4 + 2 JSD(p || q).
        m = (p + q) / 2
        jsd = 0.5 * jnp.sum(p * jnp.log(p / m)) + 0.5 * jnp.sum(q * jnp.log(q / m))
        np.testing.assert_allclose(-weighted_loss(logits), -math.log(4) + 2 * jsd, atol=1e-5)

    def test_cross_entropy_is_finite_for_huge_logits(self):
        big = jnp.array([1e4, -1e4])
        value = losses.cross_entropy_discriminator_loss(big, -big)
        grads = jax.grad(losses.cross_entropy_discriminator_loss, argnums=(0, 1))(big, -big)
        assert jnp.isfinite(value)
        assert all(jnp.all(jnp.isfinite(g)) for g in grads)

    @chex.variants(with_jit=True, without_jit=True)
    def test_generator_values(self):
        logits = jnp.array([-1.0, 0.5, 2.0])
        d = jax.nn.sigmoid(logits)
        np.testing.assert_allclose(
            self.variant(losses.minimax_generator_loss)(logits), jnp.mean(jnp.log(1 - d)), rtol=1e-6
        )
        np.testing.assert_allclose(
            self.variant(losses.non_saturating_generator_loss)(logits),
            -jnp.mean(jnp.log(d)),
            rtol=1e-6,
        )

    def test_wasserstein_hinge_least_squares(self):
        real, fake = jnp.array([1.0, 3.0]), jnp.array([-2.0, 0.0])
        assert losses.wasserstein_critic_loss(real, fake) == pytest.approx(-3.0)
        assert losses.wasserstein_generator_loss(fake) == pytest.approx(1.0)
        # max(0, 1 - 1) + max(0, 1 - 3) = 0 and max(0, 1 - 2) + max(0, 1 + 0) = 1, averaged.
        assert losses.hinge_discriminator_loss(real, fake) == pytest.approx(0.5)
        assert losses.least_squares_discriminator_loss(jnp.ones(3), jnp.zeros(3)) == 0.0
        assert losses.least_squares_generator_loss(jnp.ones(3)) == 0.0


def test_minimax_generator_gradient_vanishes_where_non_saturating_does_not():
    # As D(G(z)) -> 0 (logit -> -inf), d/dlogit log(1 - D) = -D -> 0, while
    # d/dlogit -log D = -(1 - D) -> -1.
    for logit in (-5.0, -10.0, -20.0):
        x = jnp.array([logit])
        mm = jax.grad(losses.minimax_generator_loss)(x)[0]
        ns = jax.grad(losses.non_saturating_generator_loss)(x)[0]
        assert abs(mm) < 1e-2 * math.exp(logit + 5)
        assert abs(ns) == pytest.approx(1.0, abs=1e-2)


def test_one_sided_label_smoothing_targets():
    real = losses.discriminator_targets(8, real=True, label_smoothing=0.1)
    fake = losses.discriminator_targets(8, real=False, label_smoothing=0.1)
    np.testing.assert_allclose(real, 0.9)
    np.testing.assert_allclose(fake, 0.0)
    # The smoothed loss at logits 0 is unchanged (log 2 whatever the target) but
    # its minimiser moves: the optimal real logit is log(0.9 / 0.1).
    grad = jax.grad(
        lambda l: losses.cross_entropy_discriminator_loss(
            l, jnp.full(1, -50.0), label_smoothing=0.1
        )
    )(jnp.array([math.log(9.0)]))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_noisy_labels_flip_at_the_requested_rate():
    key = jax.random.key(0)
    targets = losses.discriminator_targets(100_000, real=True, flip_probability=0.2, key=key)
    assert set(np.unique(np.asarray(targets))) == {0.0, 1.0}
    assert float(jnp.mean(targets == 0.0)) == pytest.approx(0.2, abs=0.005)
    fake = losses.discriminator_targets(100_000, real=False, flip_probability=0.2, key=key)
    assert float(jnp.mean(fake == 1.0)) == pytest.approx(0.2, abs=0.005)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(label_smoothing=-0.1), "label_smoothing"),
        (dict(flip_probability=0.7), "flip_probability"),
    ],
)
def test_bad_label_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        losses.discriminator_targets(4, real=True, key=jax.random.key(0), **options)


def test_noisy_labels_need_a_key():
    with pytest.raises(ValueError, match="PRNG key"):
        losses.discriminator_targets(4, real=True, flip_probability=0.1)


def test_registry_has_both_parts_of_every_family():
    assert set(losses.LOSSES) == {
        "minimax",
        "non_saturating",
        "wasserstein",
        "least_squares",
        "hinge",
    }
    real, fake = jnp.array([0.3, -0.2]), jnp.array([-0.5, 0.1])
    for family in losses.LOSSES.values():
        assert jnp.shape(family.discriminator(real, fake)) == ()
        assert jnp.shape(family.generator(fake)) == ()


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'wasserstien'; known losses: hinge, "):
        losses.get_loss("wasserstien")
