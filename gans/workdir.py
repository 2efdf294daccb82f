"""A run's working directory: its checks, its lock, its record, atomic writes.

    config.json      the record of the run: its whole resolved configuration
    metrics.jsonl    one JSON line per logging step
    runs.json        each run's seed and setting, where several train together
    .lock            held while a process trains into the directory

Resuming compares the record on disk with the one given and names every difference.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import tempfile
from typing import Any

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
RUNS_FILE = "runs.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"  # gans.checkpoints.DIRECTORY, named here without importing Orbax.

# Settings that may change when a run resumes: they do not change what is trained. (Not
# --steps: learning-rate schedules are laid out over it.)
RESUMABLE_CHANGES = frozenset(
    {
        "workdir",  # A run directory may be moved or copied and resumed from there.
        "log_every",
        "sample_every",
        "checkpoint_every",
        "eval_every",
        "diagnose_every",
        "num_devices",
        "distributed",
        "coordinator_address",
        "num_processes",
        "process_id",
        "data_dir",
    }
)


# Settings added after runs were recorded, with the value that trains as those runs did: a
# record without one resumes under that value (a flag and the step's field of one name).
ADDED_SETTINGS: dict[str, Any] = {"power_iterations": "per_update"}


class ResumeError(ValueError):
    """A workdir's run cannot be resumed with these settings."""


class WorkdirInUseError(ValueError):
    """Another process is training into the same workdir."""


def write_atomically(path: str | os.PathLike, content: str | bytes) -> None:
    """Writes ``path`` whole or not at all: a kill leaves the old file or the new one.

    The temporary file has a unique name beside ``path``, so concurrent writers (pytest-xdist
    workers filling one cache) each replace the file whole.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
    os.chmod(f.name, 0o644)  # Temporary files are private (0600); a run's files need not be.
    os.replace(f.name, path)


def sample_picture(workdir: pathlib.Path, step: int) -> pathlib.Path:
    """Where a run draws its samples of ``step``: ``samples/step_NNNNNNN.png``."""
    return workdir / "samples" / f"step_{step:07d}.png"


def diagnostics_file(workdir: pathlib.Path, step: int) -> pathlib.Path:
    """Where a run keeps the histograms of its diagnostics at ``step``."""
    return workdir / "diagnostics" / f"step_{step:07d}.npz"


def histogram_key(name: str) -> str:
    """A histogram's name (``diag/critic_weight_histogram``) as a key of its ``.npz`` file,
    which cannot hold ``/``; ``histogram_name`` reverses it."""
    return name.replace("/", "__")


def histogram_name(key: str) -> str:
    return key.replace("__", "/")


def check_workdir(workdir: str | os.PathLike) -> pathlib.Path:
    """Creates the workdir, refusing one that is a file, cannot be written, or holds a run
    that cannot be resumed.

    A workdir holding a run of this framework (``config.json``) is resumed from its latest
    checkpoint; one holding final parameters but no checkpoint (a finished run from before
    checkpoints), or run files without a ``config.json``, is refused untouched.
    """
    if not str(workdir).strip():
        raise ValueError("--workdir is empty; give the directory to train into.")
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir {str(path)!r} is a file; give a directory path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--workdir {str(path)!r} cannot be written ({error.strerror.lower()}); choose a "
            "directory you can write to."
        ) from None
    has_run_files = any((path / name).exists() for name in (METRICS_FILE, PARAMS_FILE, RUNS_FILE))
    if has_run_files and not (path / CONFIG_FILE).exists():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a run without its {CONFIG_FILE}, which "
            "cannot be resumed; choose a new directory."
        )
    finished = (path / PARAMS_FILE).exists() or any(path.glob(f"run_*/{PARAMS_FILE}"))
    if finished and not (path / CHECKPOINTS).is_dir():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a finished run without checkpoints, which "
            "cannot be resumed; choose a new directory."
        )
    return path


@contextlib.contextmanager
def one_writer(workdir: pathlib.Path, writer: bool = True):
    """Holds ``workdir/.lock`` while a run trains into ``workdir``; a second run is refused.

    The lock is an advisory ``flock``, which the operating system drops when the process
    ends in any way (SIGKILL included), so a dead run never leaves a workdir locked. Only the
    writing process (``writer``: process 0) takes it.

    Raises:
      WorkdirInUseError: another live process holds the lock.
    """
    if not writer:
        yield
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            raise WorkdirInUseError(
                f"--workdir {str(workdir)!r} is in use by another run (process {owner}); wait "
                "for it to finish or stop it, or choose another directory."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _as_json(config: dict[str, Any] | None) -> dict[str, Any]:
    return json.loads(json.dumps(config or {}, default=str))


def _differences(saved: Any, given: Any, prefix: str = "") -> list[str]:
    """Every setting whose value differs, nested records as ``name.field``."""
    if isinstance(saved, dict) and isinstance(given, dict):
        found = []
        for name in sorted(set(saved) | set(given)):
            if not prefix and name in RESUMABLE_CHANGES:
                continue
            if name not in saved and name in ADDED_SETTINGS:
                if given[name] == ADDED_SETTINGS[name]:
                    continue
            found += _differences(saved.get(name), given.get(name), f"{prefix}{name}.")
        return found
    if saved == given:
        return []
    return [f"--{prefix[:-1]} was {saved!r}, now {given!r}"]


def _named_differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The differing flags; the settings built from them (nested records such as the step's)
    only where no flag differs, since a changed flag changes its copies there too."""
    flat = lambda record: {k: v for k, v in record.items() if not isinstance(v, dict)}
    return _differences(flat(saved), flat(given)) or _differences(saved, given)


def check_same_settings(workdir: pathlib.Path, config: dict[str, Any] | None) -> None:
    """Refuses to resume a run whose record differs from ``config`` in a setting that
    changes what it trains, naming every such difference.

    Raises:
      ResumeError: the records differ, or the saved one cannot be read.
    """
    if config is None or not (workdir / CONFIG_FILE).exists():
        return
    try:
        saved = json.loads((workdir / CONFIG_FILE).read_text())
    except ValueError:
        raise ResumeError(
            f"{str(workdir / CONFIG_FILE)!r} is not valid JSON, so the run cannot be resumed; "
            "restore the file or choose a new directory."
        ) from None
    changed = _named_differences(saved, _as_json(config))
    if changed:
        raise ResumeError(
            f"--workdir {str(workdir)!r} holds a run with other settings ({', '.join(changed)}); "
            "resume it with its own settings or choose a new directory."
        )


def write_config(workdir: pathlib.Path, config: dict[str, Any] | None) -> None:
    """Writes the record of the run into ``config.json``."""
    write_atomically(workdir / CONFIG_FILE, json.dumps(_as_json(config), indent=2, sort_keys=True))


def write_runs(workdir: pathlib.Path, runs: list[dict[str, Any]]) -> None:
    """Lists the runs trained together (their seeds and settings) in ``runs.json``."""
    write_atomically(workdir / RUNS_FILE, json.dumps(runs, indent=2))


def truncate_log(path: pathlib.Path, step: int) -> None:
    """Drops metrics lines after ``step`` (written after the checkpoint being resumed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            break  # A line cut short by a kill: it and anything after it are redone.
    write_atomically(path, "".join(line + "\n" for line in kept))


def read_log(path: pathlib.Path) -> list[dict[str, Any]]:
    """Every line of a metrics log (none if it does not exist yet)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]
