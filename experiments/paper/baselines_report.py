"""The baselines study's tables and pictures, drawn from its records alone
(``experiments.paper.records``): one markdown table and one picture of seed 0's samples per
table of ``baselines_protocol.TABLES``."""

from __future__ import annotations

import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from experiments.paper import digits_comparison
from experiments.paper import records as record_store
from experiments.paper.baselines_protocol import (
    DATASET,
    METRIC,
    ROWS,
    TABLES,
    adaptive,
    check_rows,
    protocol,
)


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
    # Rows with a fixed probability log it too (records of 2026-12-07 kept it as final_p).
    adapted = {n: r["final_p"] for n, r in finished.items() if "final_p" in r and adaptive(n)}
    for name, values in adapted.items():
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
