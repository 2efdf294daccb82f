"""The baselines study's rows and tables: which flagfile and flags each row trains, its budget,
and the protocol a record must match (read by ``baselines``, which trains, and
``baselines_report``, which draws)."""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from experiments.paper import digits_comparison

FLAGFILES = digits_comparison.FLAGFILES
METRIC = digits_comparison.DATA["mnist"][0]
DATASET = "mnist5k"  # Every row's data set, the records' "dataset".


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: an experiment module, its flagfile, the flags this row changes, its budget."""

    label: str
    module: str
    flagfile: str
    steps: int
    flags: tuple[str, ...] = ()


AUGMENT = "--augment=translation,cutout"  # DiffAugment's policy for grey images (colour adds
# only brightness and contrast there).
ADA = (AUGMENT, "--augment_probability=0", "--ada_target=0.6")
CNN = "sngan_cnn_mnist.cfg"
CNN_STEPS = 2000
# The ResNet rows cost 4 to 5 times as much a step: half the steps, and both sides of each
# comparison at the same budget.
RESNET_STEPS = 1000
RESNET_16 = ("--image_size=16",)
ROWS = {
    "wgan_gp_dcgan": Row("WGAN-GP, DCGAN", "wgan_gp", "wgan_gp_mnist_quick.cfg", RESNET_STEPS),
    "wgan_gp_resnet": Row(
        "WGAN-GP, ResNet", "wgan_gp", "wgan_gp_mnist_quick.cfg", RESNET_STEPS, ("--model=resnet",)
    ),
    "cnn_sn": Row("SNGAN: hinge, SN standard CNN", "sngan", CNN, CNN_STEPS),
    "cnn": Row("hinge, standard CNN, no SN", "sngan", CNN, CNN_STEPS, ("--nospectral_norm",)),
    "cnn_sn_per_call": Row(
        "SNGAN, power iteration per critic call",
        "sngan",
        CNN,
        CNN_STEPS,
        ("--power_iterations=per_call",),
    ),
    "cnn_sn_augment": Row("SNGAN + DiffAugment", "sngan", CNN, CNN_STEPS, (AUGMENT,)),
    "cnn_sn_25": Row(
        "SNGAN, 25 % of the digits", "sngan", CNN, CNN_STEPS, ("--data_fraction=0.25",)
    ),
    "cnn_sn_25_augment": Row(
        "SNGAN + DiffAugment, 25 %", "sngan", CNN, CNN_STEPS, ("--data_fraction=0.25", AUGMENT)
    ),
    "cnn_sn_10": Row(
        "SNGAN, 10 % of the digits", "sngan", CNN, CNN_STEPS, ("--data_fraction=0.1",)
    ),
    "cnn_sn_10_augment": Row(
        "SNGAN + DiffAugment, 10 %", "sngan", CNN, CNN_STEPS, ("--data_fraction=0.1", AUGMENT)
    ),
    "cnn_sn_10_ada": Row(
        "SNGAN + ADA (p from 0, target 0.6), 10 %",
        "sngan",
        CNN,
        CNN_STEPS,
        ("--data_fraction=0.1", *ADA),
    ),
    "cnn_sn_cr": Row(
        "SNGAN + CR (lambda 10)", "sngan", CNN, CNN_STEPS, ("--consistency_weight=10",)
    ),
    "cnn_sn_bcr": Row(
        "SNGAN + bCR (10, 10)",
        "sngan",
        CNN,
        CNN_STEPS,
        ("--consistency_weight=10", "--consistency_fake_weight=10"),
    ),
    "resnet_sn": Row("SNGAN, ResNet", "sngan", "sngan_mnist.cfg", RESNET_STEPS, RESNET_16),
    "resnet_sn_attention": Row(
        "SNGAN, ResNet + self-attention at 8x8",
        "sngan",
        "sngan_mnist.cfg",
        RESNET_STEPS,
        (*RESNET_16, "--attention_resolution=8"),
    ),
}
TABLES = {
    "architectures": ("wgan_gp_dcgan", "wgan_gp_resnet"),
    "normalisation": ("cnn_sn", "cnn", "cnn_sn_per_call"),
    "data": (
        "cnn_sn",
        "cnn_sn_augment",
        "cnn_sn_25",
        "cnn_sn_25_augment",
        "cnn_sn_10",
        "cnn_sn_10_augment",
        "cnn_sn_10_ada",
    ),
    "components": ("resnet_sn", "resnet_sn_attention", "cnn_sn", "cnn_sn_cr", "cnn_sn_bcr"),
}


def check_rows(names: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the known rows if one of ``names`` is unknown."""
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise ValueError(f"unknown row {unknown[0]!r}; known rows: {', '.join(ROWS)}.")
    if not names:
        raise ValueError(f"give at least one row of: {', '.join(ROWS)}.")


def adaptive(name: str) -> bool:
    """Whether row ``name`` adapts its augmentation probability (ADA), whose ``p`` it reports."""
    return any(flag.startswith("--ada_target=") for flag in ROWS[name].flags)


def row_steps(name: str, steps: int) -> int:
    """Row ``name``'s budget: ``steps`` if given (> 0), else its own."""
    return steps or ROWS[name].steps


def command(
    name: str, workdir: pathlib.Path, *, steps: int, seed: int, num_seeds: int
) -> list[str]:
    """The training command of one row: its flagfile and flags, its budget, scored at the end."""
    row = ROWS[name]
    budget = row_steps(name, steps)
    return [
        sys.executable,
        "-m",
        f"experiments.{row.module}",
        f"--flagfile={FLAGFILES / row.flagfile}",
        *row.flags,
        f"--workdir={workdir / name}",
        f"--steps={budget}",
        f"--seed={seed}",
        f"--num_runs={num_seeds}",
        f"--eval_every={budget}",
        f"--sample_every={budget}",
        # Four checkpoints a run: a long row stopped part-way loses at most a quarter of it.
        f"--checkpoint_every={max(1, budget // 4)}",
    ]


def protocol(name: str, *, steps: int, seed: int, num_seeds: int) -> dict[str, Any]:
    """What a record of row ``name`` must have been trained with to be kept: its module,
    flagfile, flags, budget and seeds."""
    row = ROWS[name]
    return {
        "module": row.module,
        "flagfile": row.flagfile,
        "flags": list(row.flags),
        "steps": row_steps(name, steps),
        "seed": seed,
        "num_seeds": num_seeds,
    }
