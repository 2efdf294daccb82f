"""Conditional GAN (Mirza & Osindero, 2014): the generator sees ``[z, one_hot(y)]``, the
critic sees the label as extra constant image channels (1 + 10 = 11 for grey digits), or
through a projection (``--conditioning=projection``, Miyato & Koyama, 2018). Non-saturating
loss, Adam 2e-4, beta1 0.5. On 2-D mixtures the label is the mode.

    python -m experiments.cgan --flagfile=experiments/flags/cgan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="non_saturating",
    penalty="none",
    conditional=True,
    n_critic=1,
    **shared_flags.DCGAN_ADAM,
)

if __name__ == "__main__":
    common.run()
