"""WGAN-GP: Wasserstein loss with the gradient penalty on interpolates.

Gulrajani et al., Improved Training of Wasserstein GANs, 2017, Algorithm 1:
Adam(1e-4, beta1=0, beta2=0.9), lambda = 10, n_critic = 5, no BatchNorm in the
critic. The paper's 2-D toys use lambda = 0.1 and beta1 = 0.5 (see the flagfile).

    python -m experiments.wgan_gp --flagfile=experiments/flags/wgan_gp_8gaussians.cfg
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="wasserstein",
    penalty="gradient_penalty",
    optimizer="adam",
    critic_lr=1e-4,
    generator_lr=1e-4,
    beta1=0.0,
    beta2=0.9,
    penalty_weight=10.0,
    n_critic=5,
)

if __name__ == "__main__":
    common.run()
