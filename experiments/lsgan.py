"""Least squares GAN (Mao et al., 2017) with the 0-1 coding, Adam 2e-4, beta1 0.5.

python -m experiments.lsgan --flagfile=experiments/flags/lsgan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="least_squares",
    penalty="none",
    n_critic=1,
    **shared_flags.DCGAN_ADAM,
)

if __name__ == "__main__":
    common.run()
