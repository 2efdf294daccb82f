"""The train step's static settings: ``StepConfig`` and InfoGAN's ``InfoCodes``.

A ``StepConfig`` is hashable and closed over by ``jit``; it checks its options when built and
turns a penalty name into the typed ``gans.penalties.PenaltyOptions`` value, so the step
(``gans.train``) reads one validated config and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from gans import augment as augment_lib
from gans import losses as losses_lib
from gans import packing
from gans import penalties as penalties_lib

PyTree = Any

# When the critic's spectral normalisation runs its power iteration (``StepConfig``).
POWER_ITERATIONS = ("per_update", "per_call")


@dataclasses.dataclass(frozen=True)
class InfoCodes:
    """InfoGAN's latent codes and the weights of their mutual-information terms.

    Attributes:
      num_categories: classes of the categorical code (10 for digits).
      num_continuous: continuous codes, each ``U[-1, 1]``.
      categorical_weight: lambda of ``L_I`` for the categorical code (1 in the paper).
      continuous_weight: lambda for the continuous codes (the paper uses a smaller one).
    """

    num_categories: int = 10
    num_continuous: int = 2
    categorical_weight: float = 1.0
    continuous_weight: float = 0.1

    @property
    def size(self) -> int:
        return self.num_categories + self.num_continuous


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the train step (hashable, closed over by ``jit``).

    Attributes:
      loss: a name in ``gans.losses.LOSSES``.
      z_dim: size of the noise ``z ~ N(0, I)`` (InfoGAN codes are appended to it).
      penalty: the Lipschitz penalty with its hyper-parameters bound, a typed value such as
        ``penalties.GradientPenalty(weight=10.0)`` (``gans.penalties.PenaltyOptions``), or None.
        A registered name is accepted as shorthand and turned into that value with
        ``penalty_options`` (``penalties.make_penalty``), so the config holds one typed value
        either way and the step reads nothing else.
      penalty_options: with a name for ``penalty`` only: its keyword options as pairs
        (``(("weight", 10.0),)``); emptied once turned into the typed value.
      label_smoothing: one-sided smoothing of the real target (cross-entropy losses).
      flip_probability: chance of flipping a discriminator target (cross-entropy losses).
      flip_anneal_steps: if > 0, the flip probability decays linearly to 0 over these steps.
      instance_noise: std of Gaussian noise added to every critic input, real and fake
        (Sonderby et al., 2017), decaying linearly to 0 over ``noise_anneal_steps``.
      noise_anneal_steps: if > 0, the annealing length of ``instance_noise``.
      num_classes: if set, a conditional GAN: real batches carry labels ``"y"``, the
        generator is called as ``G(z, y)`` and the critic as ``D(x, y)``.
      info: if set, InfoGAN: codes appended to ``z`` and the critic returns
        ``(scores, q)``; both players add ``-L_I`` to their losses.
      ema_decay: if set, keep an exponential moving average of the generator's weights.
      real_transform: applied to each real batch before the critic sees it (e.g. MSG-GAN's
        image pyramid), so real and generated batches share one structure.
      augment: differentiable augmentation (``gans.augment``): transform names applied to
        real and generated images before every critic call of both players' losses, so the
        penalty, too, is taken on (interpolates of) augmented images, as in the DiffAugment
        and ADA reference code, whose critic is ``D o T``. Empty: off.
      augment_probability: the chance of each transform per example (DiffAugment: 1); with
        ``ada_target`` the initial ``p`` (ADA: 0).
      ada_target: if set, ADA's adaptive ``p``, moved after every step toward
        ``E[sign(D(real))] = ada_target`` (``gans.augment.adapt_probability``).
      ada_kimg: thousands of real images for ADA's ``p`` to cross [0, 1] (ADA: 500).
      consistency_weight, consistency_fake_weight: consistency regularisation of the critic
        (``penalties.consistency_regularization``; CR-GAN: 10, 0; bCR: 10, 10), added to the
        critic's loss beside any penalty, on the images before ``augment``.
      consistency_policy: the transforms of consistency regularisation.
      pack: PacGAN's packing (``gans.packing``): the critic scores this many samples
        concatenated along the channel axis, real with real and fake with fake; 1: off.
      unroll_steps: the unrolled GAN (``gans.unrolled``): the generator's loss is taken at the
        critic's parameters this many of its own updates ahead, on the step's last real batch
        and the generator's own samples, and differentiated through them; 0: off.
      power_iterations: when a spectrally normalised critic advances its power iteration
        (``gans.models.layers.apply_layer``: one iteration per training call). ``per_update``:
        once per critic update, real and fake scored in one call, and not in the generator's
        pass, which leaves the critic's state alone: ``n_critic`` iterations a step.
        ``per_call``: as Miyato et al.'s released Chainer code, every critic call in training
        mode advances it, real and fake in two calls and the generator's pass too: ``2 n_critic
        + 1`` a step (11 at SNGAN's n_critic 5). Without spectral normalisation the two differ
        only in cost (``per_call`` scores real and fake apart).
      axis_name: the pmap axis to average gradients over, or None on one device.
    """

    loss: str
    z_dim: int
    penalty: penalties_lib.PenaltyOptions | str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    label_smoothing: float = 0.0
    flip_probability: float = 0.0
    flip_anneal_steps: int = 0
    instance_noise: float = 0.0
    noise_anneal_steps: int = 0
    num_classes: int | None = None
    info: InfoCodes | None = None
    ema_decay: float | None = None
    real_transform: Callable[[PyTree], PyTree] | None = None
    augment: tuple[str, ...] = ()
    augment_probability: float = 1.0
    ada_target: float | None = None
    ada_kimg: float = 500.0
    consistency_weight: float = 0.0
    consistency_fake_weight: float = 0.0
    consistency_policy: tuple[str, ...] = ("translation",)
    pack: int = 1
    unroll_steps: int = 0
    power_iterations: str = "per_update"
    axis_name: str | None = None

    def __post_init__(self):
        family = losses_lib.get_loss(self.loss)
        self._resolve_penalty()
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}.")
        if not family.uses_labels and (self.label_smoothing or self.flip_probability):
            raise ValueError(
                f"label smoothing and noisy labels apply to cross-entropy losses only, not to "
                f"{self.loss!r}; drop them or use loss 'non_saturating' or 'minimax'."
            )
        losses_lib.check_label_options(self.label_smoothing, self.flip_probability)
        if self.instance_noise < 0:
            raise ValueError(f"instance noise std must be >= 0, got {self.instance_noise}.")
        if self.flip_anneal_steps < 0 or self.noise_anneal_steps < 0:
            raise ValueError("annealing lengths must be >= 0 steps.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}; try 0.999.")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"a conditional GAN needs num_classes >= 2, got {self.num_classes}.")
        self._check_augmentation()
        self._check_remedies()

    def _resolve_penalty(self) -> None:
        """Turns a penalty name and its option pairs into the typed value (checked there)."""
        if isinstance(self.penalty, str):
            penalty = penalties_lib.make_penalty(self.penalty, **dict(self.penalty_options))
            # Frozen: set once here, so equal settings give equal (and equally hashed) configs.
            object.__setattr__(self, "penalty", penalty)
            object.__setattr__(self, "penalty_options", ())
        elif self.penalty_options:
            raise ValueError(
                "penalty_options go with a penalty name; a typed penalty carries its own "
                f"options: {self.penalty!r}."
            )
        if self.penalty is not None and not isinstance(self.penalty, penalties_lib.PenaltyOptions):
            raise ValueError(
                f"penalty must be a registered name or a gans.penalties.PenaltyOptions such as "
                f"penalties.GradientPenalty(weight=10.0), got {self.penalty!r}."
            )

    def _check_augmentation(self) -> None:
        if self.augment:
            augment_lib.parse_policy(self.augment)
        if (self.augment or self.consistency) and self.real_transform is not None:
            raise ValueError(
                "augmentation and consistency regularisation transform one image per example; "
                "a multi-scale (MSG-GAN) critic takes several: drop --augment / --consistency."
            )
        augment_lib.check_probability(self.augment_probability)
        if self.ada_target is not None:
            if not self.augment:
                raise ValueError("ADA adapts the augmentation probability: give --augment too.")
            augment_lib.check_adaptive(self.ada_target, self.ada_kimg)
        for name in ("consistency_weight", "consistency_fake_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}; CR uses 10.")
        if self.consistency:
            augment_lib.parse_policy(self.consistency_policy)

    def _check_remedies(self) -> None:
        """Packing and unrolling, and the options they cannot be combined with."""
        packing.check_pack(self.pack)
        if self.pack > 1:
            clashes = {
                "a conditional GAN (--num_classes)": self.num_classes is not None,
                "InfoGAN codes": self.info is not None,
                "a multi-scale (MSG-GAN) critic": self.real_transform is not None,
                "consistency regularisation": self.consistency,
            }
            for what, present in clashes.items():
                if present:
                    raise ValueError(
                        f"packing scores several samples at once, which {what} cannot: its "
                        "scores are per example; drop --pack or that option."
                    )
        if self.unroll_steps < 0:
            raise ValueError(
                f"unroll_steps must be >= 0, got {self.unroll_steps}; Metz et al. use 5."
            )
        if self.unroll_steps and (self.num_classes is not None or self.info is not None):
            raise ValueError(
                "the unrolled look-ahead scores the generator's samples without labels or codes; "
                "drop --unroll_steps for conditional and InfoGAN runs."
            )
        if self.power_iterations not in POWER_ITERATIONS:
            raise ValueError(
                f"unknown power_iterations {self.power_iterations!r}; known: "
                f"{', '.join(POWER_ITERATIONS)}."
            )
        if self.power_iterations == "per_call" and self.unroll_steps:
            raise ValueError(
                "with --unroll_steps the generator's pass scores a look-ahead critic, whose power "
                "iteration is not the critic's own: use --power_iterations=per_update."
            )

    @property
    def consistency(self) -> bool:
        """Whether consistency regularisation is on."""
        return bool(self.consistency_weight or self.consistency_fake_weight)

    @property
    def latent_size(self) -> int:
        """Width of the generator's input vector: ``z`` plus any InfoGAN codes."""
        return self.z_dim + (self.info.size if self.info else 0)
