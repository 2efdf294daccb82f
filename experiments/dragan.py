"""DRAGAN (Kodali et al., 2017): the non-saturating GAN with a gradient penalty around
perturbed real data, lambda 10, Adam(1e-4, 0.5, 0.9), as in the authors' code.

The perturbation is the original code's: ``x + 0.5 * std(x) * U[0, 1]`` element-wise
(one-sided); ``--dragan_symmetric`` draws ``U[-1, 1]`` instead. See
``gans.penalties.dragan_penalty``.

    python -m experiments.dragan --flagfile=experiments/flags/dragan_digits.cfg --workdir=...
"""

from experiments import common, shared_flags

shared_flags.set_defaults(
    loss="non_saturating",
    penalty="dragan",
    penalty_weight=10.0,
    n_critic=1,
    optimizer="adam",
    critic_lr=1e-4,
    generator_lr=1e-4,
    beta1=0.5,
    beta2=0.9,
)

if __name__ == "__main__":
    common.run()
