"""InfoGAN (Chen et al., 2016): latent codes (one 10-class categorical, two continuous in
[-1, 1]) appended to z; a Q head on the critic's trunk predicts them; both players maximise
the mutual-information lower bound ``L_I = E[log Q(c|x)] + H(c)`` (lambda 1 for the
categorical code, 0.1 for the continuous ones). Non-saturating loss, Adam 2e-4, beta1 0.5.
The metrics log ``information_categorical``, which can reach ln 10 = 2.303.

    python -m experiments.infogan --flagfile=experiments/flags/infogan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="non_saturating",
    penalty="none",
    info_categories=10,
    info_continuous=2,
    n_critic=1,
    **{**shared_flags.DCGAN_ADAM, "generator_lr": 1e-3},
)

if __name__ == "__main__":
    common.run()
