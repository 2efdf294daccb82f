"""TensorBoard as a periodic action: each run's record, log lines, pictures and histograms.

What a run writes elsewhere (``metrics.jsonl``, ``samples/step_N.png``, the diagnostics'
``.npz`` files) is shown here, read back from those files at the steps they were written, so
one place draws and TensorBoard shows what was drawn.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gans import workdir as workdir_lib
from gans.loop import Moment, PeriodicAction


def _import_tensorboardx():
    """``tensorboardX``, imported where a loop runs, without the PyTorch it would import.

    Where PyTorch is installed, ``import tensorboardX`` imports it too (1.1 s of every command's
    start) only to accept its tensors; the loop writes numbers and numpy arrays. A ``None`` in
    ``sys.modules`` makes ``import torch`` raise ImportError for that one import, which
    tensorboardX handles by leaving PyTorch out. A program that imported PyTorch keeps it.
    """
    if "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


class TensorBoard(PeriodicAction):
    """Each run's ``tensorboard/``: its record as text when it starts, its log lines as
    scalars, and the pictures and histograms other actions wrote, at their steps.

    It acts after ``sampling.Pictures`` and the diagnostics and reads the files they just wrote,
    so one place draws and TensorBoard shows what was drawn: ``samples/step_N.png`` every
    ``sample_every`` steps and the final one at the end, as the image ``samples``; at logging
    steps, ``diagnostics/step_N.npz`` where it was written, as histograms.

    Args:
      workdirs: each run's directory.
      every: the logging interval.
      start_step: the step resumed from (0: a fresh start).
      sample_every: the pictures' interval (0: only the final one).
      config: the run's record (``config.json``), written once, when the run starts.
    """

    def __init__(
        self,
        workdirs: Sequence[pathlib.Path],
        every: int,
        start_step: int,
        *,
        sample_every: int = 0,
        config: dict[str, Any] | None = None,
    ):
        tensorboardX = _import_tensorboardx()
        super().__init__(every)
        self.workdirs, self.sample_every = list(workdirs), sample_every
        # Events past the checkpoint resumed from (written before a kill) are hidden; a fresh
        # start hides everything an attempt killed before its first checkpoint wrote. The
        # suffix keeps two attempts within a second from sharing (and truncating) one file.
        self.boards = [
            tensorboardX.SummaryWriter(
                str(w / "tensorboard"),
                purge_step=start_step + 1 if start_step else 0,
                filename_suffix=f".{time.time_ns()}",
            )
            for w in self.workdirs
        ]
        if config is not None and not start_step:
            for board in self.boards:
                board.add_text("config", _settings_table(config), 0)
                board.flush()

    def __call__(self, moment: Moment) -> None:
        super().__call__(moment)
        # The last step's picture is drawn by ``Pictures.end``.
        if self.sample_every and moment.step % self.sample_every == 0 and not moment.last:
            self._pictures(moment.step)

    def apply(self, moment: Moment) -> None:
        for board, line, w in zip(self.boards, moment.lines, self.workdirs):
            for name, value in line.items():
                if name != "step":
                    board.add_scalar(name, value, moment.step)
            diagnosed = workdir_lib.diagnostics_file(w, moment.step)
            if diagnosed.exists():
                _add_histograms(board, diagnosed, moment.step)
            board.flush()

    def end(self, moment: Moment | None) -> None:
        # A run with nothing left to train showed its final picture when it ended.
        if moment is not None:
            self._pictures(moment.steps)

    def _pictures(self, step: int) -> None:
        from PIL import Image

        for board, w in zip(self.boards, self.workdirs):
            path = workdir_lib.sample_picture(w, step)
            if path.exists():
                with Image.open(path) as picture:
                    pixels = np.asarray(picture.convert("RGB"))
                board.add_image("samples", pixels, step, dataformats="HWC")
                board.flush()

    def close(self) -> None:
        for board in self.boards:
            board.close()


def _settings_table(config: dict[str, Any]) -> str:
    """``config`` as a Markdown table, one row per setting, nested records as ``name.field``."""
    rows = ["| setting | value |", "|---|---|"]

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for name in sorted(value):
                add(f"{prefix}{name}.", value[name])
        else:
            shown = json.dumps(value, default=str).replace("|", "\\|")
            rows.append(f"| {prefix[:-1]} | {shown} |")

    add("", config)
    return "\n".join(rows)


def _add_histograms(board: Any, path: pathlib.Path, step: int) -> None:
    """Writes the histograms in ``path`` (``gans.runner``'s diagnostics file) at ``step``.

    An array ``NAME`` with a ``NAME_edges`` beside it (or beside a name it is nested in, for
    the per-parameter histograms sharing one set of edges) holds counts; any other array holds
    the values themselves.
    """
    with np.load(path) as saved:
        arrays = {workdir_lib.histogram_name(key): saved[key] for key in saved.files}
    for name, values in arrays.items():
        if name.endswith("_edges"):
            continue
        parts = name.split("/")
        owners = ("/".join(parts[:k]) + "_edges" for k in range(len(parts), 0, -1))
        edges = next((arrays[e] for e in owners if e in arrays), None)
        if edges is None:
            board.add_histogram(name, values, step)
            continue
        counts = np.asarray(values, np.float64)
        filled = np.flatnonzero(counts)
        if not filled.size:
            continue
        # The values are gone: their sums are the bins' centres', their range the filled bins'.
        centres = (edges[:-1] + edges[1:]) / 2
        board.add_histogram_raw(
            name,
            min=float(edges[filled[0]]),
            max=float(edges[filled[-1] + 1]),
            num=int(counts.sum()),
            sum=float(counts @ centres),
            sum_squares=float(counts @ centres**2),
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )
