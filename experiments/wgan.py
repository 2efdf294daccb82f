"""WGAN with weight clipping (Arjovsky, Chintala & Bottou, 2017, Algorithm 1).

Wasserstein critic loss, every critic parameter clipped to [-0.01, 0.01] after each update
(``optax.chain(optax.rmsprop(5e-5), clip_weights(0.01))``), n_critic = 5.
``--warmup_critic_steps=100`` adds the original code's schedule: 100 critic updates for the
first 25 generator steps and every 500th.

    python -m experiments.wgan --flagfile=experiments/flags/wgan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="wasserstein",
    penalty="none",
    clip=0.01,
    optimizer="rmsprop",
    critic_lr=5e-5,
    generator_lr=5e-5,
    n_critic=5,
)

if __name__ == "__main__":
    common.run()
