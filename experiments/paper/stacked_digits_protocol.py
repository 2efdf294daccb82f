"""The Stacked-digits study's rows and settings, and how a row's run and its classifier are built
(``experiments.paper.stacked_digits`` trains and scores them, ``stacked_digits_report`` reports
them; both read them here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

DATASET = "stacked_digits"  # The default; --dataset=stacked_mnist5k is Stacked MNIST.


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: a game, its optimizer and the mode-collapse remedy it adds.

    Attributes:
      label: the name printed in the table.
      loss: a name in ``gans.losses.LOSSES``.
      penalty: a name in ``gans.penalties.PENALTIES``, or None.
      penalty_options: the penalty's keyword options.
      n_critic: critic updates per generator update.
      optimizer: ``dcgan`` (Adam at ``--dcgan_lr``, beta1 0.5, beta2 0.999) or ``wgan_gp``
        (Adam at ``--wgan_gp_lr``, beta1 0, beta2 0.9).
      critic_norm: the DCGAN critic's normalisation (``batch`` for the DCGAN, ``none`` under a
        gradient penalty, whose norms must stay per example).
      pack: PacGAN's packing, ``StepConfig.pack`` (1: off).
      unroll_steps: the unrolled GAN's look-ahead, ``StepConfig.unroll_steps`` (0: off).
      minibatch_std_group: the critic's minibatch standard deviation over groups of this many
        examples (``models.layers.minibatch_std``; 0: off).
    """

    label: str
    loss: str
    penalty: str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    n_critic: int = 1
    optimizer: str = "dcgan"
    critic_norm: str = "batch"
    pack: int = 1
    unroll_steps: int = 0
    minibatch_std_group: int = 0

    def step_options(self) -> dict[str, int]:
        """The ``StepConfig`` fields this row sets away from their defaults."""
        options = {"pack": self.pack} if self.pack != 1 else {}
        return options | ({"unroll_steps": self.unroll_steps} if self.unroll_steps else {})


ROWS: dict[str, Row] = {
    "ns_gan": Row("NS-GAN (DCGAN)", "non_saturating"),
    "wgan_gp": Row(
        "WGAN-GP (lambda 10, n_critic 5)",
        "wasserstein",
        penalty="gradient_penalty",
        penalty_options=(("weight", 10.0),),
        n_critic=5,
        optimizer="wgan_gp",
        critic_norm="none",
    ),
    "pacgan2": Row("PacGAN2 (NS-GAN, pack 2)", "non_saturating", pack=2),
    "unrolled5": Row("Unrolled NS-GAN (5 steps)", "non_saturating", unroll_steps=5),
    # Karras et al. (2018), section 3: the group of 4 of their released code and StyleGAN2's.
    "minibatch_std": Row(
        "NS-GAN, minibatch-std critic (group 4)", "non_saturating", minibatch_std_group=4
    ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every row shares; the defaults are PacGAN's VEEGAN setting where it has one.

    Attributes:
      steps: generator updates (that setting: 50 epochs of 128,000 stacks at batch 64).
      seeds: runs with seeds 0 .. seeds - 1, trained as one vmapped program per row.
      batch_size: examples per critic and generator update.
      z_dim: size of the latent ``z ~ N(0, I)``.
      width: the DCGAN generator's channels at its last stage (and the critic's first
        convolution's, unless ``critic_width`` is set).
      dcgan_lr: Adam's rate, both players, of the DCGAN rows.
      wgan_gp_lr: Adam's rate, both players, of WGAN-GP.
      num_samples: samples scored per seed.
      log_every: steps between progress lines.
      checkpoint_every: steps between checkpoints (re-running resumes); 0: the last only.
      dataset: ``stacked_digits`` (sklearn's 8x8 digits) or ``stacked_mnist5k`` (MNIST's).
      image_size: the stacks' side (8 for ``stacked_digits``; 16, 28, 32 or 64 for MNIST's).
      critic_width: the critic's first convolution's channels; 0: ``width``.
    """

    steps: int = 100_000
    seeds: int = 3
    batch_size: int = 64
    z_dim: int = 100
    width: int = 64
    dcgan_lr: float = 2e-4
    wgan_gp_lr: float = 1e-4
    num_samples: int = 26_000
    log_every: int = 500
    checkpoint_every: int = 5000
    dataset: str = DATASET
    image_size: int = 8
    critic_width: int = 0

    def __post_init__(self):
        for name in ("steps", "seeds", "batch_size", "z_dim", "width", "num_samples", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("dcgan_lr", "wgan_gp_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if self.dataset not in ("stacked_digits", "stacked_mnist5k"):
            raise ValueError(
                f"--dataset must be stacked_digits or stacked_mnist5k, got {self.dataset!r}."
            )
        if self.critic_width < 0:
            raise ValueError(f"--critic_width must be >= 0, got {self.critic_width}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint_every must be >= 0, got {self.checkpoint_every}.")


def check_rows(names: Sequence[str]) -> None:
    """Raises ValueError naming the known rows for an unknown one, or for none at all."""
    for name in names:
        if name not in ROWS:
            raise ValueError(f"unknown row {name!r}; known rows: {', '.join(ROWS)}.")
    if not names:
        raise ValueError(f"give at least one row of: {', '.join(ROWS)}.")


def build_run(name: str, settings: Settings, *, seed: int = 0, num_runs: int = 0):
    """The ``gans.run.Run`` of one row.

    Args:
      name: a key of ``ROWS``.
      settings: the shared settings.
      seed: the first run's seed.
      num_runs: runs trained together (0: ``settings.seeds``).
    """
    from gans import data, models, penalties, step_config, unrolled
    from gans import run as run_lib
    from gans import state as state_lib

    check_rows([name])
    row = ROWS[name]
    dataset = data.get_dataset(settings.dataset, image_size=settings.image_size)
    size, _, channels = dataset.element_shape
    generator = models.DCGANGenerator(image_size=size, channels=channels, width=settings.width)
    critic_width = settings.critic_width or settings.width
    critic = models.DCGANCritic(
        width=critic_width,
        normalization=row.critic_norm,
        minibatch_std=bool(row.minibatch_std_group),
        minibatch_std_group=row.minibatch_std_group or None,
    )
    if row.optimizer == "dcgan":
        lr, b1, b2 = settings.dcgan_lr, 0.5, 0.999
    else:
        lr, b1, b2 = settings.wgan_gp_lr, 0.0, 0.9
    # The unrolled rows differentiate through the critic's Adam: see gans.unrolled.EPS_ROOT.
    eps_root = unrolled.EPS_ROOT if row.unroll_steps else 0.0
    penalty = None
    if row.penalty is not None:
        penalty = penalties.make_penalty(row.penalty, **dict(row.penalty_options))
    return run_lib.Run(
        dataset=dataset,
        generator=generator,
        critic=critic,
        generator_tx=state_lib.make_optimizer("adam", lr, b1=b1, b2=b2),
        critic_tx=state_lib.make_optimizer("adam", lr, b1=b1, b2=b2, eps_root=eps_root),
        step=step_config.StepConfig(
            loss=row.loss, z_dim=settings.z_dim, penalty=penalty, **row.step_options()
        ),
        n_critic=row.n_critic,
        batch_size=settings.batch_size,
        steps=settings.steps,
        seed=seed,
        log_every=settings.log_every,
        num_runs=num_runs or settings.seeds,
        checkpoint_every=settings.checkpoint_every,
    )


def classifier(settings: Settings):
    """The classifier that reads each channel of the study's stacks (its data set's)."""
    from gans import data
    from gans.metrics import digits_classifier

    dataset = data.get_dataset(settings.dataset, image_size=settings.image_size)
    return digits_classifier.classifier_for(dataset.scoring, settings.image_size)
