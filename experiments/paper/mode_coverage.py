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
double weight). ``paper_mode_coverage.cfg`` runs the protocol as published;
``paper_mode_coverage_quick.cfg`` is a labelled shortened variant.

PacGAN's own networks and training (Lin et al., 2018, Table 1; its released
``synthetic_data_experiments``) are the second protocol, ``--networks=pacgan``
(``paper_mode_coverage_pacgan.cfg``): ``z ~ N(0, I_2)``; a generator of four 400-unit layers,
each Dense without bias, BatchNorm (momentum 0.95, eps 1e-4, Blocks' defaults there) and ReLU,
then a linear 2-D output; a discriminator of three 200-unit maxout layers of 5 pieces and one
linear score; every kernel N(0, 0.02^2), biases zero; Adam(1e-4, beta1 0.8) for both players,
batches of 100 packs (100 m samples for PacGAN m), 400 epochs of 100,000 packs (400,000 steps),
10 runs, NS-GAN's loss. Its departures from that code: the generator draws the m samples of a
pack in one batch (BatchNorm's statistics over 100 m samples, not m batches of 100), the data
are drawn afresh each step (not 100,000 fixed packs), the updates alternate as above, and the
BatchNorm statistics used for sampling are the running averages of the last steps.

Rows are losses with any remedies after ``+`` (``row``): ``ns_gan+pack2`` (PacGAN),
``ns_gan+unroll5`` (unrolled GAN), ``ns_gan+mbstd`` (minibatch std). Finished rows are kept in
``--results`` (``experiments.paper.records``); ``experiments.paper.mode_coverage_report``
renders the table and the picture.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments import cli
from experiments.paper import records as record_store
from experiments.paper.mode_coverage_protocol import (
    DATASETS,
    HIDDEN,
    LOSSES,
    NETWORKS,
    NUM_SAMPLES,
    PACGAN_INIT_STD,
    Settings,
    check_names,
    row,
)


def models(init_scale: float = 1.4, minibatch_std: bool = False, networks: str = "unrolled"):
    """The protocol's generator and discriminator.

    ``unrolled``: 2 x 128 tanh MLPs with orthogonal kernels of gain ``init_scale``. ``pacgan``:
    PacGAN's generator (4 x 400, BatchNorm, ReLU) and maxout discriminator (3 x 200, 5 pieces),
    kernels N(0, 0.02^2). With ``minibatch_std`` the discriminator's last hidden layer also reads
    the minibatch standard deviation of groups of 4 (ProGAN's group size).
    """
    import functools

    import flax.linen as nn

    from gans.models import MLPCritic, MLPGenerator

    mbstd = {"minibatch_std": minibatch_std, "minibatch_std_group": 4 if minibatch_std else None}
    if networks == "pacgan":
        init = nn.initializers.normal(stddev=PACGAN_INIT_STD)
        norm = functools.partial(nn.BatchNorm, momentum=0.95, epsilon=1e-4)
        generator = MLPGenerator(out_dim=2, hidden=(400,) * 4, kernel_init=init, batch_norm=norm)
        critic = MLPCritic(hidden=(200,) * 3, maxout_pieces=5, kernel_init=init, **mbstd)
        return generator, critic
    init = nn.initializers.orthogonal(scale=init_scale)
    generator = MLPGenerator(out_dim=2, hidden=HIDDEN, activation=nn.tanh, kernel_init=init)
    critic = MLPCritic(hidden=HIDDEN, activation=nn.tanh, kernel_init=init, **mbstd)
    return generator, critic


def build_run(loss: str, dataset: str, settings: Settings, *, seed: int = 0, num_runs: int = 0):
    """The ``gans.run.Run`` of one (loss, dataset) program.

    Args:
      loss, dataset: keys of ``LOSSES`` and ``DATASETS``.
      settings: the shared settings.
      seed: the first run's seed.
      num_runs: runs trained together (0: ``settings.seeds``).
    """
    from gans import data, penalties, step_config
    from gans import run as run_lib
    from gans import state as state_lib

    check_names([loss], [dataset])
    game = row(loss)
    networks = NETWORKS[settings.networks]
    generator, critic = models(settings.init_scale, game.minibatch_std, settings.networks)
    if game.optimizer == "adam":
        b1 = networks.beta1
        generator_tx = state_lib.make_optimizer("adam", settings.generator_lr, b1=b1, b2=0.999)
        critic_tx = state_lib.make_optimizer("adam", settings.critic_lr, b1=b1, b2=0.999)
    else:
        generator_tx = state_lib.make_optimizer(game.optimizer, settings.wgan_lr)
        critic_tx = state_lib.make_optimizer(game.optimizer, settings.wgan_lr, clip=game.clip)
    return run_lib.Run(
        dataset=data.get_dataset(dataset),
        generator=generator,
        critic=critic,
        generator_tx=generator_tx,
        critic_tx=critic_tx,
        step=step_config.StepConfig(
            loss=game.loss,
            z_dim=networks.z_dim,
            penalty=(
                None
                if game.penalty is None
                else penalties.make_penalty(game.penalty, **dict(game.penalty_options))
            ),
            pack=game.pack,
            unroll_steps=game.unroll_steps,
        ),
        n_critic=game.n_critic,
        batch_size=settings.batch_size * (game.pack if networks.batch_of_packs else 1),
        steps=settings.steps,
        seed=seed,
        log_every=settings.log_every,
        num_samples=NUM_SAMPLES,
        num_runs=num_runs or settings.seeds,
        checkpoint_every=settings.checkpoint_every,
        clip=game.clip,
        # Vmapped on every backend: at these sizes XLA:CPU's batched products win too (5 NS-GAN
        # seeds: 0.91x five sequential runs vmapped, 0.98x mapped; experiments.speed_table).
        run_axis="vmap",
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
    from gans import loop, runner

    run = build_run(loss, dataset, settings)
    directory = workdir / f"{loss}_{dataset}"
    config = {"loss": loss, "dataset": dataset, **dataclasses.asdict(settings)}

    def progress(p: loop.Progress) -> None:
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
        "protocol": protocol(settings),
        "seeds": list(run.seeds()),
        "wall_seconds": seconds,
        "runs": [score(s, dataset) for s in samples],
    }
    return record, samples[0]


# The settings a record was trained with, which a kept record must match.
PROTOCOL_FIELDS = (
    "networks",
    "steps",
    "seeds",
    "batch_size",
    "generator_lr",
    "critic_lr",
    "wgan_lr",
    "init_scale",
)


def protocol(settings: Settings) -> dict[str, Any]:
    """What of ``settings`` changes the results (not the logging or checkpoint periods)."""
    return {name: getattr(settings, name) for name in PROTOCOL_FIELDS}


def run_table(
    losses: Sequence[str],
    datasets: Sequence[str],
    settings: Settings,
    *,
    workdir: str | pathlib.Path,
    results: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path,
    command: str = "python -m experiments.paper.mode_coverage",
    log=print,
) -> list[dict[str, Any]]:
    """Trains every (row, dataset) program not yet in ``results``, rewriting the table after each.

    A pair whose record ``results`` already holds with the same protocol is kept, not trained
    again: the table grows across sessions, and a stopped program resumes the pair it was
    training from its checkpoints in ``workdir``. Returns the table's records.
    """
    from experiments.paper import mode_coverage_report as report

    check_names(losses, datasets)
    workdir, table, picture = pathlib.Path(workdir), pathlib.Path(table), pathlib.Path(picture)
    results = pathlib.Path(results)
    workdir.mkdir(parents=True, exist_ok=True)
    records, pictured = [], {}
    for dataset in datasets:
        for loss in losses:
            saved, saved_samples = record_store.load_results(results)
            record = record_store.find_record(saved, loss, dataset, protocol(settings))
            key = record_store.sample_key(loss, dataset)
            if record is not None and key in saved_samples:
                log(f"kept {loss} on {dataset} from {results}")
                samples = saved_samples[key]
            else:
                log(f"training {loss} on {dataset}: {settings.seeds} seeds, {settings.steps} steps")
                record, samples = train_pair(loss, dataset, settings, workdir, log)
                record_store.save_result(results, record, samples)
                runs = record["runs"]
                log(
                    f"done {loss} on {dataset} in {record['wall_seconds'] / 60:.1f} min: modes "
                    f"{[r['modes'] for r in runs]}, high quality "
                    f"{[round(100 * r['high_quality'], 1) for r in runs]}%"
                )
            records.append(record)
            pictured[(loss, dataset)] = samples
            report.write_table(records, table, settings, command)
            report.save_picture(pictured, records, picture)
    return records


def redraw(
    losses: Sequence[str],
    datasets: Sequence[str],
    settings: Settings,
    *,
    results: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path,
    command: str,
) -> list[dict[str, Any]]:
    """Rewrites the table and picture from the records in ``results``, training nothing."""
    from experiments.paper import mode_coverage_report as report

    check_names(losses, datasets)
    saved, saved_samples = record_store.load_results(results)
    records, pictured = [], {}
    for dataset in datasets:
        for loss in losses:
            record = record_store.find_record(saved, loss, dataset, protocol(settings))
            if record is not None:
                records.append(record)
                pictured[(loss, dataset)] = saved_samples[record_store.sample_key(loss, dataset)]
    if not records:
        raise ValueError(
            f"{results} holds no records of these rows with these settings; train first "
            "(without --redraw)."
        )
    report.write_table(records, pathlib.Path(table), settings, command)
    report.save_picture(pictured, records, pathlib.Path(picture))
    return records


def output_path(networks: str, suffix: str) -> str:
    """Where a protocol's records, table or picture go by default: one set of files each, so
    that the two protocols' rows (and seed 0's samples, kept by row and dataset) never mix."""
    name = "paper_mode_coverage" if networks == "unrolled" else f"paper_mode_coverage_{networks}"
    return f"experiments/results/{name}.{suffix}"


def _define_flags() -> None:
    # Defined when run as a program, not on import, so that tests and other modules can import
    # these functions without adding global flags (``--steps``...) that could clash with theirs.
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for the runs (one per loss and dataset).")
    flags.DEFINE_list("losses", list(LOSSES), f"Losses, from: {', '.join(LOSSES)}.")
    flags.DEFINE_list("datasets", list(DATASETS), "Datasets: ring8, grid25.")
    flags.DEFINE_enum(
        "networks",
        Settings.networks,
        list(NETWORKS),
        "The protocol's networks: unrolled (unrolled GAN / VEEGAN / GDPP) or pacgan (PacGAN).",
    )
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
        "results",
        None,
        "Every finished pair's record (and, beside it, seed 0's samples): pairs already here "
        "with the same settings are kept, not trained again. Default: "
        f"{output_path('unrolled', 'json')}, or that name with _pacgan under --networks=pacgan.",
    )
    flags.DEFINE_string("table", None, "The markdown table to write (default: beside --results).")
    flags.DEFINE_string("picture", None, "The sample picture to write (default: beside --results).")
    flags.DEFINE_bool(
        "redraw",
        False,
        "Only rewrite the table and picture from --results (same flags otherwise).",
    )
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.start_training_program(argv)
    try:
        settings = Settings(
            networks=FLAGS.networks,
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
    command = cli.training_command("experiments.paper.mode_coverage")
    outputs = {
        "results": FLAGS.results or output_path(settings.networks, "json"),
        "table": FLAGS.table or output_path(settings.networks, "md"),
        "picture": FLAGS.picture or output_path(settings.networks, "png"),
    }
    if FLAGS.redraw:
        try:
            redraw(FLAGS.losses, FLAGS.datasets, settings, command=command, **outputs)
        except ValueError as e:
            cli.fail(str(e))
        print(f"table: {outputs['table']}, picture: {outputs['picture']}")
        return
    start = time.perf_counter()
    # Finished pairs are in the records; a stopped pair resumes from its checkpoints.
    with cli.training_boundary():
        run_table(
            FLAGS.losses,
            FLAGS.datasets,
            settings,
            workdir=FLAGS.workdir,
            command=command,
            log=lambda line: print(line, flush=True),
            **outputs,
        )
    minutes = (time.perf_counter() - start) / 60
    print(
        f"all done in {minutes:.1f} min; table: {outputs['table']}, picture: {outputs['picture']}"
    )


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
