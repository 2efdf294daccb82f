"""Mode coverage on the 2-D ring and grid: the unrolled-GAN / VEEGAN / PacGAN protocol, six losses.

    python -m experiments.paper.mode_coverage \
        --flagfile=experiments/flags/paper_mode_coverage.cfg --workdir=runs/mode_coverage

The protocol of Metz et al. (2017, unrolled GAN), Srivastava et al. (2017, VEEGAN, Table 1) and
Elfeki et al. (2019, GDPP, Table 1), as the unrolled-GAN demo notebook and GDPP's synthetic code
have it:

- data: ring-8, eight Gaussians of std 0.01 on the unit circle, and grid-25, 25 Gaussians of
  std 0.05 at ``{-4, -2, 0, 2, 4}^2`` (``gans.data.toy.ring`` and ``grid`` with their defaults);
- generator: ``z ~ N(0, I_256)``, two hidden layers of 128 tanh units, a linear 2-D output;
  discriminator: two hidden layers of 128 tanh units, one linear score; every kernel
  orthogonal with gain 1.4 (``tf.orthogonal_initializer(gain=1.4)`` there), biases zero;
- batch 512, 25,000 generator steps, Adam with beta1 0.5 (beta2 0.999, eps 1e-8) at 1e-3 for
  the generator and 1e-4 for the discriminator;
- evaluation: 2,500 samples; a sample is high quality within 3 std of its nearest mode; a mode
  is captured with at least 20 high-quality samples (PacGAN; ``gans.metrics.mixture``); GDPP's
  code counts a mode with a single one, reported beside it.

The losses: NS-GAN, MM-GAN and LSGAN with that Adam; WGAN with weight clipping at 0.01,
RMSProp 5e-5 and n_critic 5 (Arjovsky et al., 2017); WGAN-GP with lambda 0.1 (the value of the
WGAN-GP paper's 2-D experiments) and n_critic 5; DRAGAN with lambda 10 and the symmetric
perturbation (see ``experiments/flags/dragan_8gaussians.cfg``). Each (loss, dataset) pair trains
its seeds as one vmapped program (``gans.runner`` with ``num_runs``, ``gans.sweep``), and every
finished pair rewrites the table and the picture, so a stopped run keeps what it finished.

Two differences from that code remain: ``gans.train`` updates the discriminator, then the
generator against the updated discriminator (that code updates both at once, from the same
parameters), and the ring's modes are eight distinct points (that code spaces them with
``linspace(0, 2 pi, 8)``, so its first and last coincide: seven distinct modes, one of
double weight). The flagfile shortens the run to fit a CPU; its header says how.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments import cli

Z_DIM = 256
HIDDEN = (128, 128)
NUM_SAMPLES = 2500
DATASETS = ("ring8", "grid25")


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
    """

    label: str
    loss: str
    penalty: str | None = None
    penalty_options: tuple[tuple[str, Any], ...] = ()
    n_critic: int = 1
    optimizer: str = "adam"
    clip: float | None = None


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

# Published rows: (model, modes, high-quality %) per dataset. VEEGAN Table 1 (Srivastava et al.,
# 2017) and GDPP Table 1 (Elfeki et al., 2019); neither reports a reverse KL on these sets.
PUBLISHED: dict[str, tuple[tuple[str, str, float, float], ...]] = {
    "ring8": (
        ("VEEGAN T1", "GAN", 1.0, 99.3),
        ("VEEGAN T1", "ALI", 2.8, 0.13),
        ("VEEGAN T1", "Unrolled GAN", 7.6, 35.6),
        ("VEEGAN T1", "VEEGAN", 8.0, 52.9),
        ("GDPP T1", "WGAN-GP", 6.8, 59.6),
    ),
    "grid25": (
        ("VEEGAN T1", "GAN", 3.3, 0.5),
        ("VEEGAN T1", "ALI", 15.8, 1.6),
        ("VEEGAN T1", "Unrolled GAN", 23.6, 16.0),
        ("VEEGAN T1", "VEEGAN", 24.6, 40.0),
        ("GDPP T1", "WGAN-GP", 24.2, 28.7),
    ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every (loss, dataset) program shares; the defaults are the protocol's.

    Attributes:
      steps: generator updates.
      seeds: runs with seeds 0 .. seeds - 1, trained as one vmapped program.
      batch_size: examples per critic and generator update.
      generator_lr, critic_lr: the protocol's Adam rates (every loss but WGAN).
      wgan_lr: WGAN's RMSProp rate, both players (Arjovsky et al., 2017: 5e-5).
      init_scale: gain of the orthogonal kernels.
      log_every: steps between metrics lines.
      checkpoint_every: steps between checkpoints (re-running resumes); 0: the last only.
    """

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
        for name in ("steps", "seeds", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("generator_lr", "critic_lr", "wgan_lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint_every must be >= 0, got {self.checkpoint_every}.")


def check_names(losses: Sequence[str], datasets: Sequence[str]) -> None:
    """Raises ValueError naming the known choices for an unknown loss or dataset."""
    for name in losses:
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}.")
    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}.")
    if not losses or not datasets:
        raise ValueError("give at least one loss and one dataset.")


def models(init_scale: float = 1.4):
    """The protocol's generator and discriminator: 2 x 128 tanh MLPs, orthogonal kernels."""
    import flax.linen as nn

    from gans.models import MLPCritic, MLPGenerator

    init = nn.initializers.orthogonal(scale=init_scale)
    generator = MLPGenerator(out_dim=2, hidden=HIDDEN, activation=nn.tanh, kernel_init=init)
    critic = MLPCritic(hidden=HIDDEN, activation=nn.tanh, kernel_init=init)
    return generator, critic


def build_run(loss: str, dataset: str, settings: Settings, *, seed: int = 0, num_runs: int = 0):
    """The ``gans.runner.Run`` of one (loss, dataset) program.

    Args:
      loss, dataset: keys of ``LOSSES`` and ``DATASETS``.
      settings: the shared settings.
      seed: the first run's seed.
      num_runs: runs trained together (0: ``settings.seeds``).
    """
    from gans import data, penalties, runner, train

    check_names([loss], [dataset])
    game = LOSSES[loss]
    generator, critic = models(settings.init_scale)
    if game.optimizer == "adam":
        generator_tx = train.make_optimizer("adam", settings.generator_lr, b1=0.5, b2=0.999)
        critic_tx = train.make_optimizer("adam", settings.critic_lr, b1=0.5, b2=0.999)
    else:
        generator_tx = train.make_optimizer(game.optimizer, settings.wgan_lr)
        critic_tx = train.make_optimizer(game.optimizer, settings.wgan_lr, clip=game.clip)
    return runner.Run(
        dataset=data.get_dataset(dataset),
        generator=generator,
        critic=critic,
        generator_tx=generator_tx,
        critic_tx=critic_tx,
        step=train.StepConfig(
            loss=game.loss,
            z_dim=Z_DIM,
            penalty=(
                None
                if game.penalty is None
                else penalties.make_penalty(game.penalty, **dict(game.penalty_options))
            ),
        ),
        n_critic=game.n_critic,
        batch_size=settings.batch_size,
        steps=settings.steps,
        seed=seed,
        log_every=settings.log_every,
        num_samples=NUM_SAMPLES,
        num_runs=num_runs or settings.seeds,
        checkpoint_every=settings.checkpoint_every,
        clip=game.clip,
    )


def final_samples(run, workdir: str | pathlib.Path) -> list[np.ndarray]:
    """Each run's 2,500 samples from its last checkpoint.

    The latents are the ones ``gans.runner`` scores a finished run on (``draw_samples`` and the
    runner's sampler derive them alike from the run's seed), so these are the scored samples.
    """
    import jax

    from gans import runner, sampling

    states, _ = runner.restore(run, workdir)
    keys = [jax.random.split(jax.random.key(seed))[1] for seed in run.seeds()]
    return [sampling.draw_samples(run.step, s, NUM_SAMPLES, k)[0] for s, k in zip(states, keys)]


def score(samples: np.ndarray, dataset: str) -> dict[str, float]:
    """``mode_coverage`` (modes with >= 20 high-quality samples) plus modes with >= 1."""
    from gans import data
    from gans.metrics.mixture import mode_coverage

    mixture = data.get_dataset(dataset).mixture
    scores = mode_coverage(samples, mixture.centres, mixture.sigma)
    any_hit = mode_coverage(samples, mixture.centres, mixture.sigma, min_count=1)
    return {**scores, "modes_any": any_hit["modes"]}


def train_pair(
    loss: str, dataset: str, settings: Settings, workdir: pathlib.Path, log=print
) -> tuple[dict[str, Any], np.ndarray]:
    """Trains one (loss, dataset) program; returns its record and seed 0's samples."""
    from gans import runner

    run = build_run(loss, dataset, settings)
    directory = workdir / f"{loss}_{dataset}"
    config = {"loss": loss, "dataset": dataset, **dataclasses.asdict(settings)}

    def progress(p: runner.Progress) -> None:
        rate = f"{1000 / p.steps_per_second:.0f} ms/step" if p.steps_per_second > 0 else "compiling"
        eta = f"{p.eta_seconds / 60:.1f} min" if math.isfinite(p.eta_seconds) else "?"
        log(f"  {loss} on {dataset}: step {p.step}/{p.steps}, {rate}, ETA {eta}")

    start = time.perf_counter()
    runner.train_and_evaluate(run, directory, config=config, on_progress=progress)
    samples = final_samples(run, directory)
    seconds = time.perf_counter() - start
    record = {
        "loss": loss,
        "dataset": dataset,
        "steps": settings.steps,
        "seeds": list(run.seeds()),
        "wall_seconds": seconds,
        "runs": [score(s, dataset) for s in samples],
    }
    return record, samples[0]


def _mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    values = np.asarray(values, np.float64) * scale
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "inf"
    text = f"{finite.mean():.{digits}f} ± {finite.std():.{digits}f}"
    missing = len(values) - len(finite)
    return text + (f" ({missing} inf)" if missing else "")


def table_rows(records: Sequence[dict[str, Any]], dataset: str) -> list[str]:
    """Markdown rows for one dataset: ours (mean ± std over seeds), then the published ones."""
    from gans import data

    num_modes = data.get_dataset(dataset).mixture.num_modes
    rows = [
        (
            f"| {dataset} | loss | modes (of {num_modes}; >= 20 hq) | modes (>= 1 hq) "
            "| high quality % | reverse KL | modes per seed | wall |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        if record["dataset"] != dataset:
            continue
        runs = record["runs"]
        per_seed = ", ".join(str(r["modes"]) for r in runs)
        label = LOSSES[record["loss"]].label
        rows.append(
            f"| ours, {record['steps']:,} steps, {len(runs)} seeds | {label} "
            f"| {_mean_std([r['modes'] for r in runs])} "
            f"| {_mean_std([r['modes_any'] for r in runs])} "
            f"| {_mean_std([r['high_quality'] for r in runs], 100.0)} "
            f"| {_mean_std([r['reverse_kl'] for r in runs], digits=2)} "
            f"| {per_seed} | {record['wall_seconds'] / 60:.1f} min |"
        )
    for source, model, modes, quality in PUBLISHED[dataset]:
        rows.append(f"| {source} | {model} | {modes} | | {quality} | | | |")
    return rows


def departures(settings: Settings) -> list[str]:
    """How ``settings`` depart from the protocol (25,000 steps, 5 seeds, batch 512...)."""
    protocol = Settings()
    changes = []
    if settings.steps != protocol.steps:
        changes.append(f"{settings.steps:,} generator steps, not {protocol.steps:,}")
    if settings.seeds != protocol.seeds:
        changes.append(f"{settings.seeds} seeds, not {protocol.seeds}")
    if settings.batch_size != protocol.batch_size:
        changes.append(f"batch {settings.batch_size}, not {protocol.batch_size}")
    for name, what in (
        ("generator_lr", "the generator's Adam rate"),
        ("critic_lr", "the discriminator's Adam rate"),
        ("wgan_lr", "WGAN's RMSProp rate"),
        ("init_scale", "the orthogonal gain"),
    ):
        value, published = getattr(settings, name), getattr(protocol, name)
        if value != published:
            changes.append(f"{what} {value:g}, not {published:g}")
    return changes


def write_table(
    records: Sequence[dict[str, Any]], path: pathlib.Path, settings: Settings, command: str
) -> None:
    """Writes the markdown table of every finished record (one section per dataset)."""
    total = sum(r["wall_seconds"] for r in records) / 60
    lines = [
        "# Mode coverage on ring-8 and grid-25 (unrolled GAN / VEEGAN / PacGAN protocol)",
        "",
        f"Generated by `{command}` ({total:.1f} min of training and scoring for the rows below).",
        "",
        *[f"- **Not the protocol: {change}.**" for change in departures(settings)],
        (
            f"- z of {Z_DIM} dims, G and D 2 x 128 tanh, orthogonal kernels (gain "
            f"{settings.init_scale:g}), batch {settings.batch_size}, {settings.steps:,} generator "
            f"steps; Adam (beta1 0.5) at G {settings.generator_lr:g}, D {settings.critic_lr:g}, "
            f"except WGAN: RMSProp {settings.wgan_lr:g}, clip 0.01, n_critic 5. WGAN-GP: lambda "
            "0.1, n_critic 5. DRAGAN: lambda 10, symmetric perturbation."
        ),
        (
            "- Scored on 2,500 samples of each seed: high quality within 3 std of the nearest "
            "mode; a mode is captured with >= 20 high-quality samples (PacGAN); GDPP's released "
            "code counts a mode with >= 1. Ours: mean ± std over seeds; published: as printed."
        ),
        "",
    ]
    for dataset in DATASETS:
        if any(r["dataset"] == dataset for r in records):
            lines += table_rows(records, dataset) + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def save_picture(samples: dict[tuple[str, str], np.ndarray], records, path: pathlib.Path) -> None:
    """One panel per (dataset, loss): seed 0's 2,500 samples over the real modes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gans import data

    datasets = [d for d in DATASETS if any(k[1] == d for k in samples)]
    losses = [name for name in LOSSES if any(k[0] == name for k in samples)]
    scores = {(r["loss"], r["dataset"]): r["runs"][0] for r in records}
    fig, axes = plt.subplots(
        len(datasets), len(losses), figsize=(2.6 * len(losses), 3.0 * len(datasets)), squeeze=False
    )
    for row, dataset in enumerate(datasets):
        mixture = data.get_dataset(dataset).mixture
        extent = float(np.abs(mixture.centres).max()) * 1.3 + 0.3
        for col, loss in enumerate(losses):
            ax = axes[row, col]
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if (loss, dataset) not in samples:
                ax.set_title(f"{LOSSES[loss].label}\n(not run)", fontsize=8)
                continue
            fake = samples[(loss, dataset)]
            ax.scatter(*mixture.centres.T, s=40, facecolors="none", edgecolors="orange", lw=1)
            ax.scatter(fake[:, 0], fake[:, 1], s=1, c="tab:green", alpha=0.5)
            s = scores[(loss, dataset)]
            ax.set_title(
                f"{LOSSES[loss].label} on {dataset}\n{s['modes']}/{mixture.num_modes} modes, "
                f"{100 * s['high_quality']:.0f}% hq",
                fontsize=8,
            )
    fig.suptitle("seed 0, 2,500 samples (green) and the modes (orange)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_table(
    losses: Sequence[str],
    datasets: Sequence[str],
    settings: Settings,
    *,
    workdir: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path,
    command: str = "python -m experiments.paper.mode_coverage",
    log=print,
) -> list[dict[str, Any]]:
    """Trains every (loss, dataset) program in turn, rewriting the table after each.

    Records and seed 0's samples also go to ``workdir`` (``results.json``, ``samples_*.npy``).
    Returns the records.
    """
    check_names(losses, datasets)
    workdir, table, picture = pathlib.Path(workdir), pathlib.Path(table), pathlib.Path(picture)
    workdir.mkdir(parents=True, exist_ok=True)
    records, pictured = [], {}
    for dataset in datasets:
        for loss in losses:
            log(f"training {loss} on {dataset}: {settings.seeds} seeds, {settings.steps} steps")
            record, samples = train_pair(loss, dataset, settings, workdir, log)
            records.append(record)
            pictured[(loss, dataset)] = samples
            np.save(workdir / f"samples_{loss}_{dataset}.npy", samples)
            (workdir / "results.json").write_text(json.dumps(records, indent=1))
            write_table(records, table, settings, command)
            save_picture(pictured, records, picture)
            runs = record["runs"]
            log(
                f"done {loss} on {dataset} in {record['wall_seconds'] / 60:.1f} min: modes "
                f"{[r['modes'] for r in runs]}, high quality "
                f"{[round(100 * r['high_quality'], 1) for r in runs]}%"
            )
    return records


def redraw(
    settings: Settings,
    *,
    workdir: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path,
    command: str,
) -> list[dict[str, Any]]:
    """Rewrites the table and picture from ``workdir``'s records and samples, training nothing."""
    workdir = pathlib.Path(workdir)
    path = workdir / "results.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; train first (without --redraw).")
    records = json.loads(path.read_text())
    pictured = {
        (r["loss"], r["dataset"]): np.load(workdir / f"samples_{r['loss']}_{r['dataset']}.npy")
        for r in records
    }
    write_table(records, pathlib.Path(table), settings, command)
    save_picture(pictured, records, pathlib.Path(picture))
    return records


def _define_flags() -> None:
    # Defined when run as a program, not on import, so that tests and other modules can import
    # these functions without adding global flags (``--steps``...) that could clash with theirs.
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for the runs (one per loss and dataset).")
    flags.DEFINE_list("losses", list(LOSSES), f"Losses, from: {', '.join(LOSSES)}.")
    flags.DEFINE_list("datasets", list(DATASETS), "Datasets: ring8, grid25.")
    flags.DEFINE_integer("steps", Settings.steps, "Generator updates (the protocol: 25,000).")
    flags.DEFINE_integer("seeds", Settings.seeds, "Seeds 0 .. seeds - 1, one vmapped program.")
    flags.DEFINE_integer("batch_size", Settings.batch_size, "Examples per update.")
    flags.DEFINE_float("generator_lr", Settings.generator_lr, "The generator's Adam rate.")
    flags.DEFINE_float("critic_lr", Settings.critic_lr, "The discriminator's Adam rate.")
    flags.DEFINE_float("wgan_lr", Settings.wgan_lr, "WGAN's RMSProp rate (both players).")
    flags.DEFINE_float("init_scale", Settings.init_scale, "Gain of the orthogonal kernels.")
    flags.DEFINE_integer("log_every", Settings.log_every, "Steps between progress lines.")
    flags.DEFINE_integer(
        "checkpoint_every", Settings.checkpoint_every, "Steps between checkpoints (0: last only)."
    )
    flags.DEFINE_string(
        "table", "experiments/results/paper_mode_coverage.md", "The markdown table to write."
    )
    flags.DEFINE_string(
        "picture", "experiments/results/paper_mode_coverage.png", "The sample picture to write."
    )
    flags.DEFINE_bool(
        "redraw",
        False,
        "Only rewrite the table and picture from --workdir's results (same flags otherwise).",
    )
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags, logging

    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint at INFO.
    cli.check_command_line(argv)
    try:
        settings = Settings(
            steps=FLAGS.steps,
            seeds=FLAGS.seeds,
            batch_size=FLAGS.batch_size,
            generator_lr=FLAGS.generator_lr,
            critic_lr=FLAGS.critic_lr,
            wgan_lr=FLAGS.wgan_lr,
            init_scale=FLAGS.init_scale,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
        )
        check_names(FLAGS.losses, FLAGS.datasets)
    except ValueError as e:
        cli.fail(str(e))
    # The training command; a redraw shows the command whose results it draws.
    given = [arg for arg in sys.argv[1:] if arg not in ("--redraw", "--redraw=true")]
    command = "python -m experiments.paper.mode_coverage " + " ".join(given)
    outputs = {"workdir": FLAGS.workdir, "table": FLAGS.table, "picture": FLAGS.picture}
    if FLAGS.redraw:
        try:
            redraw(settings, command=command, **outputs)
        except ValueError as e:
            cli.fail(str(e))
        print(f"table: {FLAGS.table}, picture: {FLAGS.picture}")
        return
    start = time.perf_counter()
    run_table(
        FLAGS.losses,
        FLAGS.datasets,
        settings,
        command=command,
        log=lambda line: print(line, flush=True),
        **outputs,
    )
    minutes = (time.perf_counter() - start) / 60
    print(f"all done in {minutes:.1f} min; table: {FLAGS.table}, picture: {FLAGS.picture}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
