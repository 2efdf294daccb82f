"""SNGAN: the hinge loss against a spectrally normalised ResNet critic.

Miyato et al., "Spectral Normalization for Generative Adversarial Networks", 2018, Table 3
setting (C) for its CIFAR-10 ResNet: hinge loss, spectral normalisation of every critic layer,
global sum pooling, generator width 256 and critic width 128, Adam(2e-4, beta1 0, beta2 0.9),
n_critic 5, the learning rate decayed linearly to 0 (the authors' released code), batch 64.

    python -m experiments.sngan --flagfile=experiments/flags/sngan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="hinge",
    penalty="none",
    model="resnet",
    spectral_norm=True,
    critic_pooling="sum",
    width=256,
    critic_width=128,
    optimizer="adam",
    critic_lr=2e-4,
    generator_lr=2e-4,
    beta1=0.0,
    beta2=0.9,
    n_critic=5,
    lr_schedule="linear",
)

if __name__ == "__main__":
    common.run()
