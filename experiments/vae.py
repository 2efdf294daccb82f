"""VAE baseline (Kingma & Welling, 2014) on the GANs' data, logged and pictured like them.

The encoder maps x to (mean, log variance) of q(z|x); z = mean + sigma * eps; the decoder is
the GAN's generator (DCGAN without BatchNorm for images, the MLP for 2-D data). Loss =
reconstruction (squared error / 2 variance) + beta * KL(q(z|x) || N(0, I)), Adam 1e-3
(``--generator_lr``). Samples are decoded from the prior N(0, I).

    python -m experiments.vae --flagfile=experiments/flags/vae_digits.cfg --workdir=...
"""

from absl import flags

from experiments import common, compose, shared_flags

flags.DEFINE_float("beta", 1.0, "Weight of the KL term (1: the ELBO).")
flags.DEFINE_float("variance", 0.5, "Variance of the Gaussian likelihood (0.5: squared error).")

shared_flags.set_defaults(optimizer="adam", generator_lr=1e-3, beta1=0.9, beta2=0.999)

if __name__ == "__main__":
    common.run(lambda: compose.build_vae_run(beta=flags.FLAGS.beta, variance=flags.FLAGS.variance))
