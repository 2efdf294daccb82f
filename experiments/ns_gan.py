"""Non-saturating GAN (NS-GAN): the -log D generator loss of Goodfellow et al. (2014), Sec. 3, with
the DCGAN optimiser (Adam 2e-4, beta1 0.5).

    python -m experiments.ns_gan --flagfile=experiments/flags/ns_gan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="non_saturating",
    penalty="none",
    n_critic=1,
    **shared_flags.DCGAN_ADAM,
)

if __name__ == "__main__":
    common.run()
