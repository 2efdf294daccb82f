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
        "parallel",  # pmap or shard_map: how the same step is compiled over the devices.
        "distributed",
        "coordinator_address",
        "num_processes",
        "process_id",
        "data_dir",
        "compilation_cache",  # Where compiled programs are kept: the same programs either way.
    }
)


# Settings added after runs were recorded, with the value that trains as those runs did: a
# record without one resumes under that value (a flag and the step's field of one name).
ADDED_SETTINGS: dict[str, Any] = {"power_iterations": "per_update"}


class ResumeError(ValueError):
    """A workdir's run cannot be resumed with these settings."""


class WorkdirInUseError(ValueError):
    """Another process is training into the same workdir."""


class DamagedRunError(ResumeError):
    """A file or folder of a run directory is not what the run wrote there."""


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
    has_run_files |= (path / CHECKPOINTS).is_dir() and any((path / CHECKPOINTS).iterdir())
    if has_run_files and not (path / CONFIG_FILE).exists():
        raise ValueError(
            f"--workdir {str(path)!r} already holds a run without its {CONFIG_FILE}, which "
            "cannot be resumed; choose a new directory."
        )
    finished = (path / PARAMS_FILE).exists() or any(path.glob(f"run_*/{PARAMS_FILE}"))
    if finished and not (path / CHECKPOINTS).exists():  # Not a folder: damage, named later.
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


def _differences(
    saved: Any, given: Any, prefix: str = "", resumable: frozenset[str] = RESUMABLE_CHANGES
) -> list[str]:
    """Every setting whose value differs, nested records as ``name.field``; top-level names in
    ``resumable`` may differ."""
    if isinstance(saved, dict) and isinstance(given, dict):
        found = []
        for name in sorted(set(saved) | set(given)):
            if not prefix and name in resumable:
                continue
            if name not in saved and name in ADDED_SETTINGS:
                if given[name] == ADDED_SETTINGS[name]:
                    continue
            found += _differences(saved.get(name), given.get(name), f"{prefix}{name}.", resumable)
        return found
    if saved == given:
        return []
    return [f"--{prefix[:-1]} was {saved!r}, now {given!r}"]


def _named_differences(
    saved: dict[str, Any], given: dict[str, Any], resumable: frozenset[str] = RESUMABLE_CHANGES
) -> list[str]:
    """The differing flags; the settings built from them (nested records such as the step's)
    only where no flag differs, since a changed flag changes its copies there too."""
    flat = lambda record: {k: v for k, v in record.items() if not isinstance(v, dict)}
    return _differences(flat(saved), flat(given), resumable=resumable) or _differences(
        saved, given, resumable=resumable
    )


def _kind(value: Any) -> str:
    """A JSON value's kind, numbers as one (a float setting may be recorded as ``1``)."""
    if value is None or isinstance(value, bool):
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _wrong_kinds(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Settings whose recorded value is of another kind than the setting's (``"sixteen"`` for
    a batch size): damage, not a change of settings. A setting of either side unset is not."""
    return [
        f"{name} holds {saved[name]!r} where the setting is a {_kind(given[name])}"
        for name in sorted(set(saved) & set(given))
        if None not in (saved[name], given[name]) and _kind(saved[name]) != _kind(given[name])
    ]


def read_record(workdir: pathlib.Path) -> dict[str, Any]:
    """The run's record (``config.json``).

    Raises:
      DamagedRunError: it is not UTF-8, not JSON, or not a JSON object.
    """
    path = workdir / CONFIG_FILE
    saved = _read_json(path)
    if not isinstance(saved, dict):
        raise _damaged(path, f"it holds a JSON {type(saved).__name__}, not the run's record")
    return saved


def check_kinds(workdir: pathlib.Path, saved: dict[str, Any], given: dict[str, Any]) -> None:
    """Raises ``DamagedRunError`` naming the record's values of another kind than the
    settings' of the same names (``given``)."""
    wrong = _wrong_kinds(saved, _as_json(given))
    if wrong:
        raise _damaged(workdir / CONFIG_FILE, ", ".join(wrong))


def check_same_settings(
    workdir: pathlib.Path, config: dict[str, Any] | None, resumable: frozenset[str] = frozenset()
) -> None:
    """Refuses to resume a run whose record differs from ``config`` in a setting that
    changes what it trains, naming every such difference. Settings in ``RESUMABLE_CHANGES``
    and in ``resumable`` (the callers' own, such as their actions' intervals) may differ.

    Raises:
      DamagedRunError: the saved record cannot be read, is not a record, or holds a value of
        the wrong kind.
      ResumeError: the records differ.
    """
    if config is None or not (workdir / CONFIG_FILE).exists():
        return
    saved, given = read_record(workdir), _as_json(config)
    check_kinds(workdir, saved, given)
    changed = _named_differences(saved, given, RESUMABLE_CHANGES | resumable)
    if changed:
        raise ResumeError(
            f"--workdir {str(workdir)!r} holds a run with other settings ({', '.join(changed)}); "
            "resume it with its own settings or choose a new directory."
        )


def _damaged(path: pathlib.Path, what: str) -> DamagedRunError:
    return DamagedRunError(
        f"{str(path)!r} is damaged ({what}), so the run cannot be resumed; nothing was changed: "
        "restore it from a copy, or choose a new --workdir."
    )


def _read_text(path: pathlib.Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _damaged(path, f"byte {error.start} is not UTF-8 text") from None


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise _damaged(path, f"not valid JSON: {error.msg} at line {error.lineno}") from None


def _check_log(path: pathlib.Path) -> None:
    """Every line a JSON object with a whole-number ``step`` after the previous line's; only
    the last line may be cut short (a kill while it was written)."""
    text = _read_text(path)
    lines = text.splitlines()
    previous = 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                return  # Cut short by a kill: dropped when the run resumes.
            raise _damaged(path, f"line {number} is not a JSON record") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise _damaged(path, f"line {number} has no whole-number step")
        if step <= previous:
            raise _damaged(path, f"line {number}'s step {step} does not follow step {previous}")
        previous = step


def _check_params(path: pathlib.Path) -> None:
    from flax import serialization  # Only where a finished run is resumed.

    try:
        serialization.msgpack_restore(path.read_bytes())
    except Exception as error:  # msgpack's errors have no common base class.
        raise _damaged(path, f"not a parameter file: {type(error).__name__}") from None


def _check_runs(path: pathlib.Path, runs: list[dict[str, Any]] | None) -> None:
    saved = _read_json(path)
    if not (isinstance(saved, list) and all(isinstance(entry, dict) for entry in saved)):
        raise _damaged(path, "it is not a list of runs")
    seeds = [entry.get("seed") for entry in saved]
    expected = seeds if runs is None else [entry["seed"] for entry in runs]
    if seeds != expected:
        raise _damaged(path, f"it lists seeds {seeds} where the record gives {expected}")


def check_run_folder(
    workdir: pathlib.Path,
    workdirs: list[pathlib.Path],
    config: dict[str, Any] | None,
    runs: list[dict[str, Any]] | None = None,
    resumable: frozenset[str] = frozenset(),
) -> None:
    """Reads and checks everything of a run folder that resuming relies on or rewrites, before
    anything is written: a damaged file refuses the run with nothing truncated or replaced.

    Each of the run's files and folders must be of its kind (a file where a folder belongs is
    damage); the record must be the same run's (``check_same_settings``, where ``resumable``
    settings may differ too); ``runs.json`` must
    list the runs' seeds; each metrics log must be steps in order; final parameters must read
    back; each complete checkpoint must be a folder (its contents are checked by restoring it).

    Raises:
      DamagedRunError: naming the first damaged file and what is wrong with it.
      ResumeError: the record holds other settings.
    """
    folders = [workdir / CHECKPOINTS]
    files = [workdir / CONFIG_FILE, workdir / RUNS_FILE]
    for w in workdirs:
        folders += [w, w / "samples", w / "tensorboard", w / "diagnostics"]
        files += [w / METRICS_FILE, w / PARAMS_FILE, w / "curves.png", w / "samples.png"]
    for path in folders:
        if path.exists() and not path.is_dir():
            raise _damaged(path, "a file where the run keeps a folder")
    for path in files:
        if path.is_dir():
            raise _damaged(path, "a folder where the run keeps a file")
    if (workdir / CHECKPOINTS).is_dir():
        numbered = [e for e in (workdir / CHECKPOINTS).iterdir() if e.name.isdigit()]
        for entry in numbered:
            if not entry.is_dir():
                raise _damaged(entry, "a file where a checkpoint's folder belongs")
        # Orbax names a checkpoint by its step only once it is complete, and removes an old one
        # (beyond max_to_keep) by deleting its files, then its folder: a process killed then
        # leaves an older folder part-emptied, which Orbax removes again at the next save. Only
        # the newest, the one a resume reads, must hold a checkpoint.
        newest = max(numbered, key=lambda entry: int(entry.name), default=None)
        if newest is not None and not any(newest.iterdir()):
            raise _damaged(newest, "an empty folder where the latest checkpoint belongs")
    check_same_settings(workdir, config, resumable)
    if (workdir / RUNS_FILE).exists():
        _check_runs(workdir / RUNS_FILE, runs)
    for w in workdirs:
        if (w / METRICS_FILE).exists():
            _check_log(w / METRICS_FILE)
        if (w / PARAMS_FILE).exists():
            _check_params(w / PARAMS_FILE)


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
