"""Which GAN is best on the digits? Every unconditional loss of the zoo and the VAE, over seeds.

    python -m experiments.paper.digits_comparison \
        --flagfile=experiments/flags/paper_digits_comparison.cfg --workdir=runs/paper_digits

In the spirit of Lucic et al. (2018), "Are GANs Created Equal? A Large-Scale Study": one budget
of generator steps for all, several seeds each, and the quality reported as a distribution over
seeds (min / median / max digits-FID, and the mean ± std with a bootstrap interval of the mean,
``gans.statistics``) rather than as one best run; with 5 seeds or more, also the expected best
digits-FID of k of them (the paper's Fig. 4). Each model trains from its own
digits flagfile (``experiments/flags/NAME_digits.cfg``), so each keeps its paper's optimiser,
learning rate and ``n_critic``; only ``--steps``, ``--num_runs`` and ``--seed`` are overridden
(and ``--eval_every``, with ``--log_every`` for the GANs whose FID is tracked over training,
which change what is logged, not what is trained). A GAN trains its seeds as one
vmapped program (``--num_runs``) in ``WORKDIR/NAME/run_K``; the VAE, which trains one run at a
time, trains them one after another in ``WORKDIR/vae/run_K`` and is scored here, from its final
parameters, exactly as ``gans.evaluation`` scores a GAN: 360 samples from the key ``seed + 4``,
digits-FID against the classifier's train split, beside the real-vs-real floor.

``--data=mnist`` asks the same question of MNIST: each model trains from its MNIST flagfile
(``NAME_mnist.cfg``, the digits one's settings on ``--dataset=mnist5k``), ``--image_size``
overrides its size, and every model is scored by the MNIST classifier on 1,000 samples
(MNIST-FID, beside the held-out 1,000 against the other 4,000).

Every finished model rewrites the table (``--table``), so a stopped comparison keeps what it
finished, and re-running the same command skips finished models and resumes unfinished ones from
their checkpoints.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from experiments import cli

# Each experiment's name in the table, in the zoo's order.
LABELS = {
    "mm_gan": "MM-GAN",
    "ns_gan": "NS-GAN",
    "lsgan": "LSGAN",
    "hinge_gan": "hinge",
    "wgan": "WGAN",
    "wgan_gp": "WGAN-GP",
    "dragan": "DRAGAN",
    "vae": "VAE",
}
FLAGFILES = pathlib.Path(__file__).resolve().parents[1] / "flags"
TIMINGS_FILE = "timings.json"
EVALUATION_FILE = "evaluation.json"
METRICS_FILE = "metrics.jsonl"
# As gans.evaluation.sample_quality: the samples' key is seed + 4.
SAMPLE_KEY_OFFSET = 4
# The data a comparison may run on (its flagfiles' suffix): the name of its FID and the digits
# classifier that scores it, whose Source.num_samples is the samples' count.
DATA = {"digits": ("digits-FID", "digits"), "mnist": ("MNIST-FID", "mnist5k")}
# With fewer seeds best-of-k adds little: k = 1 is the mean and k = n the min, both in the table.
BEST_OF_K_MIN_SEEDS = 5


def check_names(names: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the known experiments if one of ``names`` is unknown."""
    unknown = [name for name in names if name not in LABELS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; known: {', '.join(LABELS)}.")
    if not names:
        raise ValueError(f"give at least one experiment of: {', '.join(LABELS)}.")


def run_directories(workdir: pathlib.Path, name: str, num_seeds: int) -> list[pathlib.Path]:
    """Where each seed of ``name`` writes: ``run_K``, as ``gans.runner`` names several runs.

    One GAN run writes into its workdir itself; the VAE's seeds always have their own ``run_K``.
    """
    if num_seeds == 1 and name != "vae":
        return [workdir / name]
    return [workdir / name / f"run_{k}" for k in range(num_seeds)]


def command(
    name: str,
    workdir: pathlib.Path,
    *,
    steps: int,
    seed: int,
    num_runs: int,
    eval_every: int | None = None,
    data: str = "digits",
    image_size: int | None = None,
) -> list[str]:
    """The training command of one experiment: its flagfile for ``data`` (``NAME_digits.cfg``
    or ``NAME_mnist.cfg``), with the budget (and ``image_size``, if given) overridden.

    A GAN scores its samples at the last step, and with ``eval_every`` also every so many steps
    (then also logging every ``eval_every`` steps, since it scores on logging steps only); neither
    changes what is trained. The VAE takes neither ``--num_runs`` nor ``--eval_every`` (GAN
    flags): it is called once per seed, with its own run directory as ``workdir``.
    """
    args = [
        sys.executable,
        "-m",
        f"experiments.{name}",
        f"--flagfile={FLAGFILES / f'{name}_{data}.cfg'}",
        f"--workdir={workdir}",
        f"--steps={steps}",
        f"--seed={seed}",
    ]
    if image_size is not None:
        args.append(f"--image_size={image_size}")
    if name == "vae":
        if num_runs != 1 or eval_every is not None:
            raise ValueError("the VAE trains one run at a time, unscored; call it once per seed.")
        return args
    args.append(f"--num_runs={num_runs}")
    if eval_every is None:
        return [*args, f"--eval_every={steps}"]
    return [*args, f"--eval_every={eval_every}", f"--log_every={eval_every}"]


def final_quality(directory: pathlib.Path) -> dict[str, float] | None:
    """A run's final sample quality: its ``evaluation.json``, else its last ``eval/`` metrics line.

    Returns None while the run has neither (still training, or never scored).
    """
    evaluation = directory / EVALUATION_FILE
    if evaluation.is_file():
        return json.loads(evaluation.read_text())
    log = directory / METRICS_FILE
    if not log.is_file():
        return None
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    if "eval/fid" not in last:
        return None
    scores = {k.removeprefix("eval/"): v for k, v in last.items() if k.startswith("eval/")}
    return {"step": last["step"], **scores}


def is_finished(workdir: pathlib.Path, name: str, num_seeds: int, steps: int) -> bool:
    """Whether every seed of ``name`` has its quality at step ``steps``."""
    qualities = [final_quality(d) for d in run_directories(workdir, name, num_seeds)]
    return all(q is not None and q["step"] == steps for q in qualities)


def vae_samples(directory: pathlib.Path, seed: int, num: int) -> tuple[Any, int]:
    """``num`` samples of a finished VAE run, from its ``config.json`` and ``params.msgpack``.

    The decoder's means ``x'(z)`` for ``z ~ N(0, I)`` drawn with the key ``seed + 4``, as
    ``gans.vae.vae_generate`` gives them (the moving-average weights where the run kept them).

    Returns:
      The samples ``[num, S, S, 1]`` and the step of the parameters.
    """
    import flax.serialization
    import jax

    from gans import models

    config = json.loads((directory / "config.json").read_text())
    stored = flax.serialization.msgpack_restore((directory / "params.msgpack").read_bytes())
    params = stored.get("ema_params") or stored["params"]
    # The image decoder experiments.vae builds (compose.build_vae_run); only it draws samples.
    decoder = models.DCGANGenerator(
        image_size=config["image_size"], channels=1, width=config["width"], batch_norm=False
    )
    key = jax.random.key(seed + SAMPLE_KEY_OFFSET)
    z = jax.random.normal(key, (num, config["z_dim"]), "float32")
    return decoder.apply({"params": params["decoder"]}, z, train=False), int(stored["step"])


def vae_quality(directory: pathlib.Path, seed: int) -> dict[str, Any]:
    """Scores a finished VAE run as ``gans.evaluation`` scores a GAN: by its data set's
    classifier (``Dataset.scoring``), on as many samples (360 digits, 1,000 MNIST), the floor."""
    from gans import data
    from gans.metrics import digits_classifier

    config = json.loads((directory / "config.json").read_text())
    dataset = data.get_dataset(config["dataset"], image_size=config["image_size"])
    source = digits_classifier.source(dataset.scoring.classifier)
    samples, step = vae_samples(directory, seed, source.num_samples)
    result = digits_classifier.digits_sample_quality(samples, source_name=source.name)
    result["fid_real_vs_real"] = digits_classifier.digits_fid_floor(
        samples.shape[1], source_name=source.name
    )
    return {"step": step, **result}


def _environment() -> dict[str, str]:
    # One CPU device per child unless the caller chose otherwise: several simulated devices
    # would only split each batch.
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    return env


def _run_logged(args: list[str], log: pathlib.Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(" ".join(args) + "\n")
        out.flush()
        result = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, env=_environment(), check=False
        )
    if result.returncode in (130, 143):  # Stopped by SIGINT / SIGTERM after its checkpoint.
        raise KeyboardInterrupt
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:4])} failed (exit {result.returncode}); see {log}.")


def train(
    name: str,
    workdir: pathlib.Path,
    *,
    steps: int,
    seed: int,
    num_seeds: int,
    eval_every: int | None = None,
    data: str = "digits",
    image_size: int | None = None,
) -> float:
    """Trains (or resumes) every seed of one experiment; returns the wall time in seconds."""
    options = {"data": data, "image_size": image_size}
    start = time.perf_counter()
    if name == "vae":
        for k, directory in enumerate(run_directories(workdir, name, num_seeds)):
            scored = final_quality(directory)
            if scored is not None and scored["step"] == steps:
                continue  # A seed finished before the comparison was stopped.
            args = command(name, directory, steps=steps, seed=seed + k, num_runs=1, **options)
            _run_logged(args, directory / "train.log")
            result = vae_quality(directory, seed + k)
            (directory / EVALUATION_FILE).write_text(json.dumps(result, indent=2, default=float))
    else:
        args = command(
            name,
            workdir / name,
            steps=steps,
            seed=seed,
            num_runs=num_seeds,
            eval_every=eval_every,
            **options,
        )
        _run_logged(args, workdir / name / "train.log")
    return time.perf_counter() - start


def summarize(workdir: pathlib.Path, name: str, num_seeds: int) -> dict[str, Any] | None:
    """One row: the digits-FID of every seed, their min / median / max and summary, settings, time.

    The ``summary`` is a `gans.statistics.Summary` (mean, std and bootstrap interval). Returns
    None while some seed has no final quality yet.
    """
    from gans import statistics as seed_statistics  # Takes seconds (scipy): after the flags.

    directories = run_directories(workdir, name, num_seeds)
    qualities = [final_quality(d) for d in directories]
    if any(q is None for q in qualities):
        return None
    fids = [q["fid"] for q in qualities]
    config_path = (directories[0] if name == "vae" else workdir / name) / "config.json"
    config = json.loads(config_path.read_text())
    timings_path = workdir / TIMINGS_FILE
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    return {
        "name": name,
        "label": LABELS[name],
        "fids": fids,
        "min": min(fids),
        "median": statistics.median(fids),
        "max": max(fids),
        "summary": seed_statistics.summarize(fids),
        "classes": [q.get("classes") for q in qualities],
        "floor": qualities[0]["fid_real_vs_real"],
        "steps": qualities[0]["step"],
        "optimizer": describe_optimizer(name, config),
        "wall_seconds": timings.get(name),
    }


def describe_optimizer(name: str, config: dict[str, Any]) -> str:
    """The optimiser and ``n_critic`` a run's ``config.json`` records, e.g. ``Adam 2e-4 (0.5, 0.999)``."""
    optimizer = {"adam": "Adam", "rmsprop": "RMSProp", "sgd": "SGD"}[config["optimizer"]]
    rate = f"{config['generator_lr']:g}"
    if name != "vae" and config["critic_lr"] != config["generator_lr"]:
        rate = f"{config['critic_lr']:g} / {config['generator_lr']:g}"
    text = f"{optimizer} {rate}"
    if config["optimizer"] == "adam":
        text += f" ({config['beta1']:g}, {config['beta2']:g})"
    if name != "vae":
        text += f", n_critic {config['n_critic']}"
        if config.get("clip"):
            text += f", clip {config['clip']:g}"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def table(
    rows: Sequence[dict[str, Any]], pending: Sequence[str] = (), metric: str = "digits-FID"
) -> str:
    """The markdown table: one line per model, best median FID first, then the floor."""
    lines = [
        (
            f"| model | optimiser (its flagfile's) | {metric} mean ± std [95 % interval] | min "
            "| median | max | every seed | digits produced (of 10) | wall time (all seeds) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda row: row["median"]):
        seeds = ", ".join(f"{fid:.2f}" for fid in row["fids"])
        classes = ", ".join("-" if c is None else f"{c:g}" for c in row["classes"])
        lines.append(
            f"| {row['label']} | {row['optimizer']} | {row['summary'].format(digits=2)} "
            f"| {row['min']:.2f} | {row['median']:.2f} | {row['max']:.2f} | {seeds} | {classes} "
            f"| {_duration(row['wall_seconds'])} |"
        )
    for name in pending:
        lines.append(f"| {LABELS[name]} | (not finished) | | | | | | | |")
    if rows:
        floor = rows[0]["floor"]
        lines.append(
            f"| real vs real (train split vs held-out) | | {floor:.2f} | {floor:.2f} "
            f"| {floor:.2f} | {floor:.2f} | | | |"
        )
    return "\n".join(lines) + "\n"


def best_of_k_table(rows: Sequence[dict[str, Any]]) -> str:
    """Expected best digits-FID of k of each model's n seeds, k = 1 .. n; "" below 5 seeds.

    Lucic et al. (2018), Fig. 4: what a budget of k runs buys, exact over every k-subset of the
    n seeds (`gans.statistics.best_of_k`). Best median first, as in `table`.
    """
    from gans import statistics as seed_statistics

    n = min((len(row["fids"]) for row in rows), default=0)
    if n < BEST_OF_K_MIN_SEEDS:
        return ""
    lines = [
        "| model | " + " | ".join(f"best of {k}" for k in range(1, n + 1)) + " |",
        "|---|" + "---|" * n,
    ]
    for row in sorted(rows, key=lambda row: row["median"]):
        best = seed_statistics.best_of_k(row["fids"], range(1, n + 1))
        lines.append(f"| {row['label']} | " + " | ".join(f"{v:.2f}" for v in best.values()) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    workdir: pathlib.Path,
    names: Sequence[str],
    num_seeds: int,
    path: pathlib.Path,
    data: str = "digits",
) -> list[dict[str, Any]]:
    """Writes the table of every finished model of ``names`` (the rest listed as not finished)."""
    from gans.metrics import digits_classifier

    metric, classifier = DATA[data]
    num_samples = digits_classifier.source(classifier).num_samples
    rows, pending = [], []
    for name in names:
        row = summarize(workdir, name, num_seeds)
        (pending if row is None else rows).append(row if row is not None else name)
    steps = sorted({row["steps"] for row in rows})
    header = (
        f"{metric[0].upper() + metric[1:]} (lower is better) after "
        f"{', '.join(map(str, steps)) or '?'} generator steps, {num_seeds} seeds per model; "
        f"{num_samples:,} samples each against the classifier's train split. Mean ± std (ddof 1) "
        "over seeds [percentile bootstrap 95 % interval of the mean].\n\n"
    )
    text = header + table(rows, pending, metric)
    best_of_k = best_of_k_table(rows)
    if best_of_k:
        text += (
            f"\nExpected best {metric} of k runs of the {num_seeds} (Lucic et al., 2018, Fig. 4), "
            "exact over every k-subset of the seeds:\n\n" + best_of_k
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return rows


def _record_time(workdir: pathlib.Path, name: str, seconds: float) -> None:
    path = workdir / TIMINGS_FILE
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[name] = seconds
    path.write_text(json.dumps(timings, indent=2))


def run_comparison(
    workdir: pathlib.Path,
    names: Sequence[str],
    *,
    steps: int,
    seed: int,
    num_seeds: int,
    eval_every: int,
    tracked: Sequence[str] = (),
    table_path: pathlib.Path,
    data: str = "digits",
    image_size: int | None = None,
) -> list[dict[str, Any]]:
    """Trains every model not yet finished, rewriting the table after each; returns its rows.

    The GANs in ``tracked`` also log their digits-FID every ``eval_every`` steps.
    """
    check_names(names)
    if tracked:
        check_names(tracked)
    for name in names:
        if is_finished(workdir, name, num_seeds, steps):
            print(f"{name}: finished earlier, kept", flush=True)
            continue
        print(f"{name}: training {num_seeds} seeds for {steps} steps", flush=True)
        seconds = train(
            name,
            workdir,
            steps=steps,
            seed=seed,
            num_seeds=num_seeds,
            eval_every=eval_every if name in tracked and name != "vae" else None,
            data=data,
            image_size=image_size,
        )
        _record_time(workdir, name, seconds)
        row = summarize(workdir, name, num_seeds)
        fids = ", ".join(f"{fid:.2f}" for fid in row["fids"])
        print(
            f"{name}: {DATA[data][0]} {fids} (median {row['median']:.2f}) in {_duration(seconds)}",
            flush=True,
        )
        write_table(workdir, names, num_seeds, table_path, data)
    return write_table(workdir, names, num_seeds, table_path, data)


def _define_flags() -> None:
    # Defined when run as a program, so that tests can import the module.
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for the runs, one subdirectory per model.")
    flags.DEFINE_list("experiments", list(LABELS), f"Models, from: {', '.join(LABELS)}.")
    flags.DEFINE_integer("steps", 1000, "Generator steps, the same budget for every model.")
    flags.DEFINE_integer("num_seeds", 3, "Seeds seed .. seed + num_seeds - 1 of every model.")
    flags.DEFINE_integer("seed", 0, "The first seed.")
    flags.DEFINE_list(
        "track",
        ["ns_gan", "wgan", "wgan_gp"],
        "GANs that also log their digits-FID during training, for "
        "experiments.paper.tracks_quality (the others are scored at the last step only).",
    )
    flags.DEFINE_integer("eval_every", 50, "Steps between the tracked GANs' digits-FID.")
    flags.DEFINE_enum(
        "data", "digits", list(DATA), "digits (NAME_digits.cfg) or mnist (NAME_mnist.cfg)."
    )
    flags.DEFINE_integer("image_size", None, "Overrides every flagfile's --image_size.")
    flags.DEFINE_string("table", None, "The markdown table to write (default: WORKDIR/table.md).")
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("steps", "num_seeds", "eval_every"))
    workdir = pathlib.Path(FLAGS.workdir)
    table_path = pathlib.Path(FLAGS.table) if FLAGS.table else workdir / "table.md"
    start = time.perf_counter()
    with cli.training_boundary(ValueError, RuntimeError):
        run_comparison(
            workdir,
            FLAGS.experiments,
            steps=FLAGS.steps,
            seed=FLAGS.seed,
            num_seeds=FLAGS.num_seeds,
            eval_every=FLAGS.eval_every,
            tracked=FLAGS.track,
            table_path=table_path,
            data=FLAGS.data,
            image_size=FLAGS.image_size,
        )
    print(f"done in {_duration(time.perf_counter() - start)}; table: {table_path}", flush=True)
    print(table_path.read_text(), flush=True)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
