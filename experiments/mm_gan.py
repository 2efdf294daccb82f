"""Minimax GAN (MM-GAN): the saturating generator loss E[log(1 - D(G(z)))] of Goodfellow et al.
(2014), Eq. 1, with the DCGAN optimiser (Adam 2e-4, beta1 0.5).

    python -m experiments.mm_gan --flagfile=experiments/flags/mm_gan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="minimax",
    penalty="none",
    n_critic=1,
    **shared_flags.DCGAN_ADAM,
)

if __name__ == "__main__":
    common.run()
