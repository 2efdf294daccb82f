"""The mode-coverage protocols: their networks, rows and settings, as the study trains them and
as the papers published them (``experiments.paper.mode_coverage`` trains,
``experiments.paper.mode_coverage_report`` reports; both read them here).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

Z_DIM = 256
HIDDEN = (128, 128)
NUM_SAMPLES = 2500
DATASETS = ("ring8", "grid25")


@dataclasses.dataclass(frozen=True)
class Networks:
    """One published protocol's networks and the parts of its training that go with them.

    Attributes:
      label: how the table names the protocol.
      z_dim: the latent's dimensions (a standard normal).
      beta1: Adam's beta1 for both players (beta2 0.999, eps 1e-8).
      batch_of_packs: whether ``Settings.batch_size`` counts packs (PacGAN's batch of 100 is
        100 packs of m samples) rather than samples.
    """

    label: str
    z_dim: int
    beta1: float
    batch_of_packs: bool


NETWORKS: dict[str, Networks] = {
    "unrolled": Networks(
        "unrolled GAN / VEEGAN / GDPP: G and D 2 x 128 tanh", Z_DIM, 0.5, batch_of_packs=False
    ),
    "pacgan": Networks(
        "PacGAN: G 4 x 400 BatchNorm ReLU, D 3 x 200 maxout (5 pieces)", 2, 0.8, batch_of_packs=True
    ),
}
PACGAN_INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class Loss:
    """One row of the table: a game and the optimizer its paper trains it with.

    Attributes:
      label: the name printed in the table.
      loss: a name in ``gans.losses.LOSSES``.
      penalty: a name in ``gans.penalties.PENALTIES``, or None.
      penalty_options: the penalty's keyword options.
      n_critic: critic updates per generator update.
      optimizer: ``adam`` (the protocol's, at ``--generator_lr`` and ``--critic_lr``) or
        ``rmsprop`` (both players at ``--wgan_lr``).
      clip: the critic's weight-clipping bound, or None.
      pack: PacGAN's packing (``StepConfig.pack``); 1: off.
      unroll_steps: the unrolled GAN's look-ahead (``StepConfig.unroll_steps``); 0: off.
      minibatch_std: a minibatch-std layer in the critic (groups of 4, ProGAN's).
    """

    label: str
    loss: str
    penalty: str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    n_critic: int = 1
    optimizer: str = "adam"
    clip: float | None = None
    pack: int = 1
    unroll_steps: int = 0
    minibatch_std: bool = False


LOSSES: dict[str, Loss] = {
    "ns_gan": Loss("NS-GAN", "non_saturating"),
    "mm_gan": Loss("MM-GAN", "minimax"),
    "wgan": Loss("WGAN", "wasserstein", n_critic=5, optimizer="rmsprop", clip=0.01),
    "wgan_gp": Loss(
        "WGAN-GP (lambda 0.1)",
        "wasserstein",
        penalty="gradient_penalty",
        penalty_options=(("weight", 0.1),),
        n_critic=5,
    ),
    "dragan": Loss(
        "DRAGAN (lambda 10)",
        "non_saturating",
        penalty="dragan",
        penalty_options=(("weight", 10.0), ("symmetric", True)),
    ),
    "lsgan": Loss("LSGAN", "least_squares"),
}

# The remedies a row name may add to a loss, as LOSS+REMEDY[+REMEDY]: packM (PacGAN, M >= 2),
# unrollK (unrolled GAN, K >= 1) and mbstd (minibatch standard deviation).
_REMEDY = re.compile(r"^(?:pack(?P<pack>[2-9]|[1-9][0-9]+)|unroll(?P<unroll>[1-9][0-9]*)|mbstd)$")


def row(name: str) -> Loss:
    """The row ``name`` names: a key of ``LOSSES``, with any remedies after ``+``.

    ``ns_gan+pack2`` is NS-GAN with a critic of pairs, ``wgan_gp+unroll5`` WGAN-GP whose
    generator looks five critic updates ahead, ``ns_gan+mbstd`` NS-GAN with a minibatch-std
    critic.
    """
    base, *remedies = name.split("+")
    if base not in LOSSES:
        raise ValueError(f"unknown loss {base!r}; known: {', '.join(LOSSES)}.")
    loss, labels = LOSSES[base], []
    for remedy in remedies:
        match = _REMEDY.match(remedy)
        if match is None:
            raise ValueError(
                f"unknown remedy {remedy!r} in {name!r}; known: packM (M >= 2), unrollK "
                "(K >= 1), mbstd, as in ns_gan+pack2."
            )
        if match["pack"]:
            loss = dataclasses.replace(loss, pack=int(match["pack"]))
            labels.append(f"PacGAN{match['pack']}")
        elif match["unroll"]:
            loss = dataclasses.replace(loss, unroll_steps=int(match["unroll"]))
            labels.append(f"unrolled {match['unroll']}")
        else:
            loss = dataclasses.replace(loss, minibatch_std=True)
            labels.append("minibatch std")
    if labels:
        loss = dataclasses.replace(loss, label=f"{loss.label} + {' + '.join(labels)}")
    return loss


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every (loss, dataset) program shares; the defaults are the protocol's.

    Attributes:
      networks: the protocol's networks, a key of ``NETWORKS``.
      steps: generator updates.
      seeds: runs with seeds 0 .. seeds - 1, trained as one vmapped program.
      batch_size: examples per critic and generator update (packs, under ``pacgan``).
      generator_lr, critic_lr: the protocol's Adam rates (every loss but WGAN).
      wgan_lr: WGAN's RMSProp rate, both players (Arjovsky et al., 2017: 5e-5).
      init_scale: gain of the orthogonal kernels (``unrolled``; PacGAN's kernels are normal
        with std ``PACGAN_INIT_STD``).
      log_every: steps between metrics lines.
      checkpoint_every: steps between checkpoints (re-running resumes); 0: the last only.
    """

    networks: str = "unrolled"
    steps: int = 25_000
    seeds: int = 5
    batch_size: int = 512
    generator_lr: float = 1e-3
    critic_lr: float = 1e-4
    wgan_lr: float = 5e-5
    init_scale: float = 1.4
    log_every: int = 500
    checkpoint_every: int = 5000

    def __post_init__(self):
        if self.networks not in NETWORKS:
            raise ValueError(f"unknown --networks {self.networks!r}; known: {', '.join(NETWORKS)}.")
        for name in ("steps", "seeds", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("generator_lr", "critic_lr", "wgan_lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint_every must be >= 0, got {self.checkpoint_every}.")


# Each protocol's settings as published, which ``mode_coverage_report`` names departures from.
PUBLISHED: dict[str, Settings] = {
    "unrolled": Settings(),
    "pacgan": Settings(
        networks="pacgan",
        steps=400_000,
        seeds=10,
        batch_size=100,
        generator_lr=1e-4,
        critic_lr=1e-4,
    ),
}


def check_names(losses: Sequence[str], datasets: Sequence[str]) -> None:
    """Raises ValueError naming the known choices for an unknown loss or dataset."""
    for name in losses:
        row(name)
    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}.")
    if not losses or not datasets:
        raise ValueError("give at least one loss and one dataset.")
