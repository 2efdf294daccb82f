"""Does the critic's loss track sample quality? WGAN's estimate does, the GAN's discriminator loss not.

    python -m experiments.paper.tracks_quality \
        --flagfile=experiments/flags/paper_tracks_quality.cfg --workdir=runs/paper_digits \
        --out=experiments/results/paper_tracks_quality.png

Arjovsky et al. (2017), Figures 3 and 4: the WGAN critic's estimate of the Wasserstein distance
``E[f(real)] - E[f(fake)]`` falls as the samples improve, so it is a loss curve worth looking
at, while the discriminator loss of the original GAN (an estimate of ``2 JS - 2 log 2``) says
nothing about sample quality. Gulrajani et al. (2017), Section 5.4, show the same for WGAN-GP's
negative critic loss.

Reads the runs of ``experiments.paper.digits_comparison`` (NS-GAN, WGAN and WGAN-GP trained with
their digits-FID logged every ``--eval_every`` steps), so nothing is trained here: per model, the
critic-side quantity and the digits-FID over generator steps on twin axes, one line per seed,
and Pearson's r and Spearman's rho between the two, per seed, in the panel's title and printed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from experiments import cli

QUALITY = "eval/fid"
METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class Panel:
    """What one panel plots: a model's critic-side quantity against its digits-FID.

    Attributes:
      label: the model, as the title names it.
      estimate: the metrics key of the critic-side quantity.
      estimate_label: its axis label.
    """

    label: str
    estimate: str
    estimate_label: str


PANELS = {
    "wgan": Panel("WGAN (weight clipping)", "wasserstein_estimate", "Wasserstein estimate"),
    "wgan_gp": Panel("WGAN-GP", "wasserstein_estimate", "Wasserstein estimate"),
    "ns_gan": Panel("NS-GAN", "critic_loss", "discriminator loss"),
}


@dataclasses.dataclass(frozen=True)
class Series:
    """One seed's logging steps where both quantities exist, and their correlations."""

    steps: np.ndarray
    estimate: np.ndarray
    quality: np.ndarray
    pearson: float
    spearman: float


def correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Pearson's r and Spearman's rho (Pearson's r of the ranks) of two paired series."""
    from scipy import stats

    return float(stats.pearsonr(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def read_series(log: pathlib.Path, estimate: str, skip: int = 0) -> Series:
    """The steps after ``skip`` of a ``metrics.jsonl`` logging both ``estimate`` and the FID.

    Raises:
      ValueError: fewer than three such steps (no correlation to speak of).
    """
    records = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [
        (r["step"], r[estimate], r[QUALITY])
        for r in records
        if estimate in r and QUALITY in r and r["step"] > skip
    ]
    if len(rows) < 3:
        raise ValueError(
            f"{log} has {len(rows)} steps after {skip} logging both {estimate} and {QUALITY}; "
            "train with --eval_every (experiments.paper.digits_comparison --track)."
        )
    steps, values, quality = (np.array(column, np.float64) for column in zip(*rows))
    return Series(steps, values, quality, *correlations(values, quality))


def run_logs(directory: pathlib.Path) -> list[pathlib.Path]:
    """The metrics logs of a workdir: one per ``run_K`` of several runs, else its own."""
    logs = sorted(directory.glob(f"run_*/{METRICS_FILE}"), key=lambda p: int(p.parent.name[4:]))
    return logs or [directory / METRICS_FILE]


def read_panels(
    workdir: pathlib.Path, names: Sequence[str], skip: int = 0
) -> dict[str, list[Series]]:
    """Every seed's series of each model in ``names`` (a subdirectory of ``workdir`` each)."""
    unknown = [name for name in names if name not in PANELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(PANELS)}.")
    result = {}
    for name in names:
        logs = run_logs(workdir / name)
        missing = [str(log) for log in logs if not log.is_file()]
        if missing:
            raise ValueError(
                f"{missing[0]} does not exist; run experiments.paper.digits_comparison."
            )
        result[name] = [read_series(log, PANELS[name].estimate, skip) for log in logs]
    return result


def title(name: str, series: Sequence[Series]) -> str:
    """The panel's title: the model, then r and rho of every seed, seed 0 first."""
    pearson = ", ".join(f"{s.pearson:.2f}" for s in series)
    spearman = ", ".join(f"{s.spearman:.2f}" for s in series)
    return (
        f"{PANELS[name].label} (seed 0 bold)\nper seed: Pearson r {pearson}\n"
        f"Spearman rho {spearman}"
    )


def save_figure(panels: dict[str, list[Series]], path: pathlib.Path) -> None:
    """One panel per model: its critic-side quantity (blue) and digits-FID (red, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for axis, (name, series) in zip(axes[0], panels.items()):
        twin = axis.twinx()
        for k, s in enumerate(series):
            # Seed 0 drawn bold, the others faint.
            style = {
                "marker": ".",
                "linewidth": 1.6 if k == 0 else 0.8,
                "alpha": 1 if k == 0 else 0.5,
            }
            axis.plot(s.steps, s.estimate, color="tab:blue", **style)
            twin.plot(s.steps, s.quality, color="tab:red", **style)
        axis.set_xlabel("generator step")
        axis.set_ylabel(PANELS[name].estimate_label, color="tab:blue")
        twin.set_ylabel("digits-FID (log scale)", color="tab:red")
        twin.set_yscale("log")
        axis.set_title(title(name, series), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(panels: dict[str, list[Series]]) -> str:
    """One line per model and seed: the correlations and the steps they are taken over."""
    lines = []
    for name, series in panels.items():
        for k, s in enumerate(series):
            lines.append(
                f"{PANELS[name].label}, seed {k}: {PANELS[name].estimate} vs digits-FID over "
                f"{len(s.steps)} steps ({s.steps[0]:.0f} to {s.steps[-1]:.0f}): Pearson r = "
                f"{s.pearson:.2f}, Spearman rho = {s.spearman:.2f}"
            )
    return "\n".join(lines)


def _define_flags() -> None:
    # Defined when run as a program, so that tests can import the module.
    from absl import flags

    flags.DEFINE_string(
        "workdir", None, "The --workdir of experiments.paper.digits_comparison (its runs)."
    )
    flags.DEFINE_string("out", None, "The PNG to write.")
    flags.DEFINE_list("models", list(PANELS), f"Panels, from: {', '.join(PANELS)}.")
    flags.DEFINE_integer("skip", 0, "Ignore logging steps up to this one.")
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.check_command_line(argv)
    try:
        panels = read_panels(pathlib.Path(FLAGS.workdir), FLAGS.models, FLAGS.skip)
    except ValueError as e:
        cli.fail(str(e))
    save_figure(panels, pathlib.Path(FLAGS.out))
    print(report(panels), flush=True)
    print(f"picture: {FLAGS.out}", flush=True)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
