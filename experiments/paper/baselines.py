"""The baselines since 2018 on the digits at 32x32: ResNets, SNGAN, attention, CR, DiffAugment.

    python -m experiments.paper.baselines \
        --flagfile=experiments/flags/paper_baselines.cfg --workdir=runs/paper_baselines

Three tables, each row one committed flagfile with a few flags changed, trained for one budget
of generator steps with every seed as one vmapped program (``--num_runs``), and scored at its
last step by ``gans.evaluation`` (360 samples: digits-FID, precision and recall on the features
of the framework's digits classifier, against the classifier's train split: the full data set,
whatever fraction a row trained on):

- ``architectures``: the DCGAN and the WGAN-GP paper's ResNet under WGAN-GP, and SNGAN;
- ``data``: DiffAugment's claim (Zhao et al., 2020, Fig. 1, Tables 2-3) that augmenting both
  players' critic inputs helps more as the data shrinks: SNGAN on 100 %, 25 % and 10 % of the
  1,797 digits, with and without ``--augment``, and ADA's adaptive probability on 10 %;
- ``components``: self-attention (SAGAN) and consistency regularisation (CR-GAN, bCR), each
  against the SNGAN baseline it was added to in its paper.

Every finished row rewrites the tables (``--table``); re-running the same command skips finished
rows and resumes unfinished ones from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from experiments import cli
from experiments.paper import digits_comparison

FLAGFILES = digits_comparison.FLAGFILES


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: an experiment module, its digits flagfile and the flags this row changes."""

    label: str
    module: str
    flagfile: str
    flags: tuple[str, ...] = ()


AUGMENT = "--augment=translation,cutout"  # DiffAugment's policy for grey images (colour adds
# only brightness and contrast there).
ROWS = {
    "wgan_gp_dcgan": Row("WGAN-GP, DCGAN", "wgan_gp", "wgan_gp_digits.cfg", ("--image_size=32",)),
    "wgan_gp_resnet": Row("WGAN-GP, ResNet", "wgan_gp", "wgan_gp_resnet_digits.cfg"),
    "sngan": Row("SNGAN (hinge, SN ResNet)", "sngan", "sngan_digits.cfg"),
    "sngan_25": Row(
        "SNGAN, 25 % of the digits", "sngan", "sngan_digits.cfg", ("--data_fraction=0.25",)
    ),
    "sngan_10": Row(
        "SNGAN, 10 % of the digits", "sngan", "sngan_digits.cfg", ("--data_fraction=0.1",)
    ),
    "sngan_augment": Row("SNGAN + DiffAugment", "sngan", "sngan_digits.cfg", (AUGMENT,)),
    "sngan_25_augment": Row(
        "SNGAN + DiffAugment, 25 %", "sngan", "sngan_digits.cfg", ("--data_fraction=0.25", AUGMENT)
    ),
    "sngan_10_augment": Row(
        "SNGAN + DiffAugment, 10 %", "sngan", "sngan_digits.cfg", ("--data_fraction=0.1", AUGMENT)
    ),
    "sngan_10_ada": Row(
        "SNGAN + ADA (p from 0, target 0.6), 10 %",
        "sngan",
        "sngan_digits.cfg",
        ("--data_fraction=0.1", AUGMENT, "--augment_probability=0", "--ada_target=0.6"),
    ),
    "sngan_attention": Row(
        "SNGAN + self-attention at 16x16",
        "sngan",
        "sngan_digits.cfg",
        ("--attention_resolution=16",),
    ),
    "sngan_cr": Row(
        "SNGAN + CR (lambda 10)", "sngan", "sngan_digits.cfg", ("--consistency_weight=10",)
    ),
    "sngan_bcr": Row(
        "SNGAN + bCR (10, 10)",
        "sngan",
        "sngan_digits.cfg",
        ("--consistency_weight=10", "--consistency_fake_weight=10"),
    ),
}
TABLES = {
    "architectures": ("wgan_gp_dcgan", "wgan_gp_resnet", "sngan"),
    "data": (
        "sngan",
        "sngan_augment",
        "sngan_25",
        "sngan_25_augment",
        "sngan_10",
        "sngan_10_augment",
        "sngan_10_ada",
    ),
    "components": ("sngan", "sngan_attention", "sngan_cr", "sngan_bcr"),
}


def check_rows(names: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the known rows if one of ``names`` is unknown."""
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise ValueError(f"unknown row {unknown[0]!r}; known rows: {', '.join(ROWS)}.")
    if not names:
        raise ValueError(f"give at least one row of: {', '.join(ROWS)}.")


def command(
    name: str, workdir: pathlib.Path, *, steps: int, seed: int, num_seeds: int
) -> list[str]:
    """The training command of one row: its flagfile and flags, the budget, scored at the end."""
    row = ROWS[name]
    return [
        sys.executable,
        "-m",
        f"experiments.{row.module}",
        f"--flagfile={FLAGFILES / row.flagfile}",
        *row.flags,
        f"--workdir={workdir / name}",
        f"--steps={steps}",
        f"--seed={seed}",
        f"--num_runs={num_seeds}",
        f"--eval_every={steps}",
    ]


def summarize(workdir: pathlib.Path, name: str, num_seeds: int) -> dict[str, Any] | None:
    """Row ``name``'s scores of every seed, their medians and summaries, its wall time; or None.

    Each metric has its values (``fid``...), their ``fid_median``... and ``fid_summary``... (a
    `gans.statistics.Summary`: mean, std and bootstrap interval); None while a seed is unfinished.
    """
    from gans import statistics as seed_statistics  # Takes seconds (scipy): after the flags.

    qualities = [
        digits_comparison.final_quality(d)
        for d in digits_comparison.run_directories(workdir, name, num_seeds)
    ]
    if any(q is None for q in qualities):
        return None
    timings_path = workdir / digits_comparison.TIMINGS_FILE
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    row = {"name": name, "label": ROWS[name].label, "steps": qualities[0]["step"]}
    for metric in ("fid", "precision", "recall"):
        row[metric] = [q[metric] for q in qualities]
        row[f"{metric}_median"] = statistics.median(row[metric])
        row[f"{metric}_summary"] = seed_statistics.summarize(row[metric])
    row["floor"] = qualities[0]["fid_real_vs_real"]
    row["wall_seconds"] = timings.get(name)
    return row


def table(rows: Sequence[dict[str, Any] | str]) -> str:
    """A markdown table, rows in the given order; a name instead of a row is unfinished."""
    lines = [
        (
            "| run | digits-FID median | mean ± std [95 % interval] | every seed | precision "
            "| recall | wall time (all seeds) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if isinstance(row, str):
            lines.append(f"| {ROWS[row].label} | (not finished) | | | | | |")
            continue
        seeds = ", ".join(f"{fid:.2f}" for fid in row["fid"])
        lines.append(
            f"| {row['label']} | {row['fid_median']:.2f} | {row['fid_summary'].format(digits=2)} "
            f"| {seeds} | {row['precision_summary'].format(digits=2)} "
            f"| {row['recall_summary'].format(digits=2)} "
            f"| {digits_comparison._duration(row['wall_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(
    workdir: pathlib.Path, names: Sequence[str], num_seeds: int, path: pathlib.Path
) -> dict[str, dict[str, Any]]:
    """Writes every table that holds one of ``names``; returns the finished rows by name."""
    finished = {}
    for name in ROWS:
        row = summarize(workdir, name, num_seeds) if name in names else None
        if row is not None:
            finished[name] = row
    parts = [
        (
            f"{num_seeds} seeds per row; digits-FID of 360 samples against the classifier's "
            "train split (lower is better), its median and, like precision and recall (k = 3), "
            "its mean ± std (ddof 1) over seeds [percentile bootstrap 95 % interval of the mean]."
            "\n"
        )
    ]
    for title, members in TABLES.items():
        shown = [name for name in members if name in names]
        if shown:
            parts.append(f"\n### {title}\n\n" + table([finished.get(n, n) for n in shown]))
    if finished:
        floor = next(iter(finished.values()))["floor"]
        parts.append(f"\nReal vs real (train split vs held-out): digits-FID {floor:.2f}.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(parts))
    temporary.replace(path)
    return finished


def run_study(
    workdir: pathlib.Path,
    names: Sequence[str],
    *,
    steps: int,
    seed: int,
    num_seeds: int,
    table_path: pathlib.Path,
) -> dict[str, dict[str, Any]]:
    """Trains every row not yet finished, rewriting the tables after each."""
    check_rows(names)
    for name in names:
        directories = digits_comparison.run_directories(workdir, name, num_seeds)
        qualities = [digits_comparison.final_quality(d) for d in directories]
        if all(q is not None and q["step"] == steps for q in qualities):
            print(f"{name}: finished earlier, kept", flush=True)
            continue
        print(f"{name}: training {num_seeds} seeds for {steps} steps", flush=True)
        start = time.perf_counter()
        args = command(name, workdir, steps=steps, seed=seed, num_seeds=num_seeds)
        digits_comparison._run_logged(args, workdir / name / "train.log")
        digits_comparison._record_time(workdir, name, time.perf_counter() - start)
        row = summarize(workdir, name, num_seeds)
        print(f"{name}: digits-FID {', '.join(f'{f:.2f}' for f in row['fid'])}", flush=True)
        write_tables(workdir, names, num_seeds, table_path)
    return write_tables(workdir, names, num_seeds, table_path)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for the runs, one subdirectory per row.")
    flags.DEFINE_list("rows", list(ROWS), f"Rows, from: {', '.join(ROWS)}.")
    flags.DEFINE_integer("steps", 1000, "Generator steps, the same budget for every row.")
    flags.DEFINE_integer("num_seeds", 3, "Seeds seed .. seed + num_seeds - 1 of every row.")
    flags.DEFINE_integer("seed", 0, "The first seed.")
    flags.DEFINE_string("table", None, "The markdown file to write (default: WORKDIR/table.md).")
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("steps", "num_seeds"))
    workdir = pathlib.Path(FLAGS.workdir)
    table_path = pathlib.Path(FLAGS.table) if FLAGS.table else workdir / "table.md"
    start = time.perf_counter()
    with cli.training_boundary(ValueError, RuntimeError):
        run_study(
            workdir,
            FLAGS.rows,
            steps=FLAGS.steps,
            seed=FLAGS.seed,
            num_seeds=FLAGS.num_seeds,
            table_path=table_path,
        )
    elapsed = digits_comparison._duration(time.perf_counter() - start)
    print(f"done in {elapsed}; tables: {table_path}", flush=True)
    print(table_path.read_text(), flush=True)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
