"""Finished records of a reproduction table, kept across programs and sessions.

A reproduction trains its rows one program at a time; each finished program's record (its
settings, per-seed scores and wall time) goes into one JSON file, and the samples it pictures
into a compressed ``.npz`` beside it, both rewritten whole (``gans.workdir.write_atomically``).
A later run keeps every record whose row and settings it would train again, so a table can be
filled over several sessions, or by several processes, and redrawn without training.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pathlib
from typing import Any

import numpy as np


def samples_path(results: pathlib.Path) -> pathlib.Path:
    """Where seed 0's samples of every record in ``results`` are kept (float16, ``.npz``)."""
    return results.with_name(results.stem + "_samples.npz")


def load_results(results: str | pathlib.Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records in ``results`` (none if it does not exist) and their pictured samples."""
    results = pathlib.Path(results)
    records = json.loads(results.read_text()) if results.is_file() else []
    pictured = {}
    if samples_path(results).is_file():
        with np.load(samples_path(results)) as saved:
            pictured = {name: saved[name].astype(np.float32) for name in saved.files}
    return records, pictured


def sample_key(row: str, dataset: str) -> str:
    """The name of a record's samples in the ``.npz``."""
    return f"{row}@{dataset}"


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    # Records name their row "loss" (the first tables' rows were losses).
    return record["loss"], record["dataset"], json.dumps(record.get("protocol"), sort_keys=True)


def find_record(
    records: list[dict[str, Any]], row: str, dataset: str, protocol: dict[str, Any]
) -> dict[str, Any] | None:
    """The record of ``row`` on ``dataset`` trained with ``protocol``, if any."""
    wanted = (row, dataset, json.dumps(protocol, sort_keys=True))
    return next((record for record in records if _key(record) == wanted), None)


def save_result(results: pathlib.Path, record: dict[str, Any], samples: np.ndarray) -> None:
    """Adds ``record`` (with its ``"loss"`` row, ``"dataset"`` and ``"protocol"``) and its
    samples to ``results``, replacing a record of the same three; both files are rewritten
    whole, so a killed program leaves the old files or the new ones, and under a lock, so two
    processes adding records to one file keep both. The record gets the ``"machine"`` it was
    finished on (``gans.run.device_name``) unless it names one: a run repeats to the bit on one
    machine only."""
    from gans import run as run_lib
    from gans import workdir as workdir_lib

    record = {**record, "machine": record.get("machine") or run_lib.device_name()}

    results.parent.mkdir(parents=True, exist_ok=True)
    # Processes sharing one results file (one per core) add their records in turn: a lock on
    # the folder (nothing written for it) around the read and the rewrite.
    folder = os.open(results.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        records, pictured = load_results(results)
        records = [r for r in records if _key(r) != _key(record)] + [record]
        pictured[sample_key(record["loss"], record["dataset"])] = samples
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: np.asarray(v, np.float16) for k, v in pictured.items()})
        workdir_lib.write_atomically(samples_path(results), buffer.getvalue())
        workdir_lib.write_atomically(results, json.dumps(records, indent=1) + "\n")
    finally:
        os.close(folder)  # Releases the lock.
