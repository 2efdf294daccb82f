"""MSG-GAN (Karnewar & Wang, 2020): multi-scale gradients. The generator emits an image at
every resolution of its up-sampling path; the critic reads each at the matching depth, so
gradients reach every generator scale directly. Trained as WGAN-GP (lambda 10, Adam 1e-4,
beta1 0, beta2 0.9, n_critic 5); the penalty is taken over all scales of an example at once.
Image data only.

    python -m experiments.msg_gan --flagfile=experiments/flags/msg_gan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    model="msg",
    loss="wasserstein",
    penalty="gradient_penalty",
    penalty_weight=10.0,
    n_critic=5,
    optimizer="adam",
    critic_lr=1e-4,
    generator_lr=1e-4,
    beta1=0.0,
    beta2=0.9,
)

if __name__ == "__main__":
    common.run()
