"""Hinge-loss GAN (Lim & Ye, 2017; Miyato et al., 2018), Adam 2e-4, beta1 0.5.

python -m experiments.hinge_gan --flagfile=experiments/flags/hinge_gan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="hinge",
    penalty="none",
    n_critic=1,
    **shared_flags.DCGAN_ADAM,
)

if __name__ == "__main__":
    common.run()
