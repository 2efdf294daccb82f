"""Failures of kinds beyond flag values: the operating system's refusals, encodings, damaged
run folders, hostile images, resource limits, interrupts and bugs each end a command with one
sentence, a known exit status, no traceback, and every file the user had byte for byte.

``FAILURES`` is the second bad-input table (README's Safety section; ``test_safety.BAD_INPUTS``
is the first, of flag values). Each row runs the command a user would, in a process of its
own, on a folder that holds a note of the user's and, where the row says, a copy of a finished
toy run (``trained``: checkpoints at steps 2 and 4), damaged as the row says.
"""

import dataclasses
import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from cli import ROOT, TRAINED, environment, run_experiment, snapshot

from experiments import cli
from gans import checkpoints

DEMO = ("--dataset=8gaussians", "--steps=2", "--batch_size=16", "--width=16", "--log_every=1")
RUNS = [*TRAINED, "--num_runs=2"]  # The run the rows on runs.json and run_K/ resume.


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Two toy runs trained together (``run_0/``, ``run_1/``, ``runs.json``)."""
    workdir = tmp_path_factory.mktemp("trained_runs") / "run"
    result = run_experiment("wgan_gp", *RUNS, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _one_sentence(result, status=2):
    """The one line of stderr, which must be the error's sentence."""
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


# Setups: each takes the row's folder (the run's workdir, holding the user's note) and
# ``fixture(name)``, which gives a session fixture's value.


def copy(name="trained"):
    def setup(workdir, fixture):
        shutil.copytree(fixture(name), workdir, dirs_exist_ok=True)

    return setup


def damaged(path, damage, name="trained"):
    """A copy of the run ``name`` whose ``path`` is changed by ``damage(path)``."""

    def setup(workdir, fixture):
        copy(name)(workdir, fixture)
        damage(workdir / path)

    return setup


def text(content):
    def damage(path):
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def edited(old, new):
    def damage(path):
        content = path.read_bytes()
        assert old in content, (path, old)
        path.write_bytes(content.replace(old, new, 1))

    return damage


def as_folder(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.mkdir()


def as_file(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.write_text("the user's file\n")


def removed(path):
    path.unlink()


def images(folder, count=20, extra=None):
    """A folder of ``count`` 16x16 grey PNGs and, with ``extra``, one hostile file of its
    ``(name, bytes)``."""

    def setup(workdir, fixture):
        from PIL import Image

        target = workdir.parent / folder
        target.mkdir()
        for k in range(count):
            Image.fromarray(np.full((16, 16), 10 * k, np.uint8)).save(target / f"{k:02d}.png")
        if extra is not None:
            (target / extra[0]).write_bytes(extra[1])

    return setup


def array(name, values, suffix_as=None):
    """An array saved with ``np.save`` as ``name`` (renamed to ``suffix_as`` if given)."""

    def setup(workdir, fixture):
        np.save(workdir.parent / name, values)
        if suffix_as is not None:
            (workdir.parent / name).rename(workdir.parent / suffix_as)

    return setup


def both(*setups):
    def setup(workdir, fixture):
        for each in setups:
            each(workdir, fixture)

    return setup


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# A PNG that says it is 60,000 x 60,000 pixels (3.6 billion) in 57 bytes.
BOMB = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b""))
    + _png_chunk(b"IEND", b"")
)


@dataclasses.dataclass(frozen=True)
class Failure:
    """One row: the command (``module`` with ``args``; ``{tmp}`` is the row's folder, the run's
    workdir ``{tmp}/run`` unless ``workdir`` says otherwise), what is set up first, and a word
    of the sentence. ``limit`` (bash's ``ulimit`` options) and ``env`` run it in a fresh
    interpreter."""

    what: str
    args: tuple[str, ...]
    message: str
    setup: Callable | None = None
    module: str = "wgan_gp"
    workdir: str | None = "{tmp}/run"
    limit: str | None = None
    env: dict[str, str] | None = None
    status: int = 2


TOY = (*TRAINED[:-2], "--steps=2")  # A fresh toy run (TRAINED resumes the trained one).
DAMAGED = "is damaged ("
FAILURES = [
    # The operating system's refusals.
    Failure("a path component too long", TOY, "File name too long", workdir="{tmp}/" + "x" * 300),
    Failure("a file where a folder belongs", TOY, "(not a directory)", workdir="{tmp}/note/run"),
    Failure("a flagfile that is a folder", ("--flagfile={tmp}",), "Is a directory"),
    Failure("a flagfile that does not exist", ("--flagfile={tmp}/no.cfg",), "No such file"),
    Failure(
        "samples written over a folder",
        ("--out={tmp}/run",),
        "must name a .npy file",
        copy(),
        module="sample",
    ),
    Failure(
        "scores written over the user's file",
        ("--samples={tmp}/s.npy", "--dataset=digits", "--image_size=16", "--out={tmp}/note"),
        "exists; choose another --out",
        array("s.npy", np.zeros((8, 16, 16, 1), np.float32)),
        module="evaluate",
        workdir=None,
    ),
    # Encodings.
    Failure(
        "a flagfile in UTF-16",
        ("--flagfile={tmp}/utf16.cfg",),
        "is not UTF-8 text",
        lambda w, f: (w.parent / "utf16.cfg").write_bytes("--steps=2\n".encode("utf-16")),
    ),
    Failure(
        "a flagfile with a NUL byte",
        ("--flagfile={tmp}/nul.cfg",),
        "flag --steps=2",
        lambda w, f: (w.parent / "nul.cfg").write_bytes(b"--steps=2\x00\n"),
    ),
    Failure(
        "a workdir name that is not UTF-8",
        TOY,
        "--workdir holds a byte that is not UTF-8 text (0xff)",
        workdir=os.fsdecode(b"{tmp}/r\xff"),
    ),
    # Damaged records of every file a run folder holds.
    Failure(
        "a record cut in half",
        TRAINED,
        DAMAGED + "not valid JSON",
        damaged("config.json", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    ),
    Failure(
        "a record that is a list",
        TRAINED,
        DAMAGED + "it holds a JSON list",
        damaged("config.json", text("[1, 2]")),
    ),
    Failure(
        "a record field of the wrong kind",
        TRAINED,
        DAMAGED + "batch_size holds 'sixteen' where the setting is a number",
        damaged("config.json", edited(b'"batch_size": 16', b'"batch_size": "sixteen"')),
    ),
    Failure(
        "an empty record", TRAINED, DAMAGED + "not valid JSON", damaged("config.json", text(""))
    ),
    Failure(
        "a record that is not UTF-8",
        TRAINED,
        DAMAGED + "byte",
        damaged("config.json", edited(b"8gaussians", b"8gau\xdfssians")),
    ),
    Failure(
        "a record that is a folder",
        TRAINED,
        DAMAGED + "a folder where",
        damaged("config.json", as_folder),
    ),
    Failure(
        "checkpoints without a record",
        TRAINED,
        "without its config.json",
        damaged("config.json", removed),
    ),
    Failure(
        "a log line of garbage",
        TRAINED,
        DAMAGED + "line 2 is not a JSON record",
        damaged("metrics.jsonl", edited(b"\n", b"\ngarbage\n")),
    ),
    Failure(
        "a log line without a step",
        TRAINED,
        DAMAGED + "line 1 has no whole-number step",
        damaged("metrics.jsonl", edited(b'"step": 1', b'"step": "one"')),
    ),
    Failure(
        "log lines out of order",
        TRAINED,
        DAMAGED + "line 2's step 2 does not follow step 3",
        damaged("metrics.jsonl", edited(b'"step": 1', b'"step": 3')),
    ),
    Failure(
        "a log that is not UTF-8",
        TRAINED,
        DAMAGED + "byte 0 is not UTF-8",
        damaged("metrics.jsonl", text(b"\xff\xfe{")),
    ),
    Failure(
        "a log that is a folder",
        TRAINED,
        DAMAGED + "a folder where",
        damaged("metrics.jsonl", as_folder),
    ),
    Failure(
        "checkpoints that are a file",
        TRAINED,
        DAMAGED + "a file where the run keeps a folder",
        damaged("checkpoints", as_file),
    ),
    Failure(
        "a checkpoint that is a file",
        TRAINED,
        DAMAGED + "a file where a checkpoint's",
        damaged("checkpoints/4", as_file),
    ),
    Failure(
        "an empty checkpoint",
        TRAINED,
        DAMAGED + "an empty folder where the latest checkpoint",
        damaged("checkpoints/4", lambda p: (shutil.rmtree(p), p.mkdir())),
    ),
    Failure(
        "a checkpoint's metadata of garbage",
        TRAINED,
        "the checkpoint at step 4",
        damaged("checkpoints/4/default/_METADATA", text("garbage")),
    ),
    Failure(
        "final parameters of garbage",
        TRAINED,
        DAMAGED + "not a parameter file",
        damaged("params.msgpack", text(b"\xc1garbage")),
    ),
    Failure(
        "samples that are a file", TRAINED, DAMAGED + "a file where", damaged("samples", as_file)
    ),
    Failure(
        "TensorBoard's folder a file",
        TRAINED,
        DAMAGED + "a file where",
        damaged("tensorboard", as_file),
    ),
    Failure(
        "the curves a folder", TRAINED, DAMAGED + "a folder where", damaged("curves.png", as_folder)
    ),
    Failure("the lock a folder", TRAINED, "Is a directory", damaged(".lock", as_folder)),
    Failure(
        "a run list of garbage",
        RUNS,
        DAMAGED + "not valid JSON",
        damaged("runs.json", text("[{"), "trained_runs"),
    ),
    Failure(
        "a run list of other seeds",
        RUNS,
        DAMAGED + "it lists seeds [0, 7]",
        damaged("runs.json", edited(b'"seed": 1', b'"seed": 7'), "trained_runs"),
    ),
    Failure(
        "a run's folder a file",
        RUNS,
        DAMAGED + "a file where",
        damaged("run_1", as_file, "trained_runs"),
    ),
    Failure(
        "a run's log of garbage",
        RUNS,
        DAMAGED + "line 1 is not",
        damaged("run_0/metrics.jsonl", text("garbage\n{}\n"), "trained_runs"),
    ),
    Failure(
        "scoring a run of a damaged record",
        (),
        DAMAGED + "it holds a JSON list",
        damaged("config.json", text("[]")),
        module="evaluate",
    ),
    Failure(
        "sampling a run of a damaged record",
        ("--out={tmp}/s.npy",),
        DAMAGED + "not valid JSON",
        damaged("config.json", text("{")),
        module="sample",
    ),
    # Hostile images and data sets.
    Failure(
        "a decompression bomb",
        ("--dataset=folder:{tmp}/bomb", "--image_size=16", "--batch_size=4", "--steps=2"),
        "too large to decode safely",
        images("bomb", extra=("bomb.png", BOMB)),
    ),
    Failure(
        "a text file named .png",
        ("--dataset=folder:{tmp}/text", "--image_size=16", "--batch_size=4", "--steps=2"),
        "cannot be read as an image",
        images("text", extra=("notes.png", b"not an image\n")),
    ),
    Failure(
        "an empty .jpg",
        ("--dataset=folder:{tmp}/empty", "--image_size=16", "--batch_size=4", "--steps=2"),
        "cannot be read as an image",
        images("empty", extra=("photo.jpg", b"")),
    ),
    Failure(
        "a folder smaller than a batch",
        ("--dataset=folder:{tmp}/few", "--image_size=16", "--batch_size=16", "--steps=2"),
        "batch_size 16 exceeds the 3 examples",
        images("few", count=3),
    ),
    Failure(
        "a data fraction smaller than a batch",
        ("--dataset=digits", "--data_fraction=0.005", "--batch_size=64", "--steps=2"),
        "batch_size 64 exceeds the 10 examples",
    ),
    Failure(
        "an .npz that is an .npy",
        ("--dataset=npz:{tmp}/x.npz", "--steps=2"),
        "is an .npy file (one array), not an .npz",
        array("x.npy", np.zeros((8, 16, 16, 1), np.float32), suffix_as="x.npz"),
    ),
    Failure(
        "samples in an .npy named .npz",
        ("--samples={tmp}/x.npz", "--dataset=digits", "--image_size=16"),
        "is an .npy file (one array), not an .npz",
        array("x.npy", np.zeros((8, 16, 16, 1), np.float32), suffix_as="x.npz"),
        module="evaluate",
        workdir=None,
    ),
    Failure(
        "no samples",
        ("--samples={tmp}/none.npy", "--dataset=digits", "--image_size=16"),
        "holds 0 images; give >= 4",
        array("none.npy", np.zeros((0, 16, 16, 1), np.float32)),
        module="evaluate",
        workdir=None,
    ),
    Failure(
        "a reference smaller than precision's k",
        ("--samples={tmp}/s.npy", "--dataset=folder:{tmp}/few", "--image_size=16"),
        "holds 3 images; precision and recall compare each",
        both(images("few", count=3), array("s.npy", np.zeros((8, 16, 16, 1), np.float32))),
        module="evaluate",
        workdir=None,
    ),
    # Resource limits and the platform.
    Failure(
        "states that cannot fit memory",
        ("--dataset=8gaussians", "--steps=2", "--num_runs=100000"),
        "100,000 runs need about",
    ),
    Failure(
        "an address space too small for JAX",
        TOY,
        "the address-space limit (ulimit -v) is 1,536 MiB",
        limit=f"-v {1536 * 1024}",
    ),
    Failure(
        "a file size limit below a checkpoint's",
        (*TOY, "--checkpoint_every=1"),
        "the file size limit (ulimit -f) is 4 KiB",
        limit="-f 4",
    ),
    Failure(
        "a platform the machine does not have",
        TOY,
        "JAX cannot start the backend 'tpu'",
        env={"JAX_PLATFORMS": "tpu"},
    ),
]


def test_the_table_has_at_least_45_rows_with_distinct_names():
    assert len(FAILURES) >= 45
    assert len({row.what for row in FAILURES}) == len(FAILURES)


@pytest.mark.parametrize("row", FAILURES, ids=lambda row: row.what)
def test_every_failure_is_one_sentence_and_keeps_every_file(tmp_path, row, request, commands):
    workdir = tmp_path / "run"
    (tmp_path / "note").write_text("the user's note\n")
    if row.setup is not None:
        row.setup(workdir, request.getfixturevalue)
    before = snapshot(tmp_path)
    args = [arg.format(tmp=tmp_path) for arg in row.args]
    if row.workdir is not None:
        args.append(f"--workdir={row.workdir.format(tmp=tmp_path)}")
    if row.limit is None and row.env is None:
        result = commands(row.module, *args, cwd=tmp_path)
    else:
        # Limits set by the shell, not in a fork of this multithreaded (JAX) process.
        command = [sys.executable, "-m", f"experiments.{row.module}", *args]
        if row.limit is not None:
            command = ["bash", "-c", f'ulimit {row.limit} && exec "$@"', "bash", *command]
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=environment(1, **(row.env or {})),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=300,
        )
    line = _one_sentence(result, row.status)
    assert row.message in line, line
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before


def test_a_flagfile_that_is_not_utf8_is_named(tmp_path, commands):
    flagfile = tmp_path / "latin1.cfg"
    flagfile.write_bytes("# r\xe9glages\n--steps=2\n".encode("latin-1"))
    result = commands("wgan_gp", f"--flagfile={flagfile}", f"--workdir={tmp_path / 'run'}")
    line = _one_sentence(result)
    assert str(flagfile) in line and "not UTF-8" in line, line
    assert not (tmp_path / "run").exists()


def test_an_unexpected_exception_is_called_a_bug_with_its_traceback_in_a_file(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(cli.BUG_REPORTS_ENV, str(tmp_path))

    def broken(argv):
        return {}["missing"]

    with pytest.raises(SystemExit) as stop:
        cli.guarded(broken)(["prog"])
    assert stop.value.code == cli.BUG_STATUS
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (KeyError: 'missing'); this is a bug")
    (report,) = tmp_path.glob("gans-bug-*.txt")
    assert str(report) in err and "Traceback" in report.read_text()
    assert 'return {}["missing"]' in report.read_text()


@pytest.mark.parametrize(
    "raised, status, words",
    [
        (KeyboardInterrupt(), cli.INTERRUPT_STATUS, "interrupted"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/a"), 2, "the disk is full"),
        (PermissionError(errno.EACCES, "Permission denied", "/runs"), 2, "you may write to"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/runs/x"), 2, "name a file"),
        (FileExistsError(errno.EEXIST, "File exists", "/runs/x"), 2, "move it away"),
        (MemoryError(), 2, "out of memory"),
        (ValueError("--steps must be >= 1, got 0."), 2, "--steps must be >= 1"),
    ],
)
def test_every_expected_failure_class_has_its_sentence_and_status(raised, status, words, capsys):
    def failing(argv):
        raise raised

    with pytest.raises(SystemExit) as stop:
        cli.guarded(failing)(["prog"])
    assert stop.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_os_error_sentences_name_the_path_and_the_fix():
    error = OSError(errno.ENAMETOOLONG, "File name too long", "/r/" + "x" * 300)
    sentence = cli.os_error_sentence(error)
    assert sentence.startswith("File name too long: /r/xxx") and sentence.endswith(
        "use a shorter path (each name at most 255 bytes)."
    )
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    assert cli.os_error_sentence(moved).startswith("Invalid cross-device link: /a -> /b; ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "number, delay",
    [(signal.SIGINT, 0.5), (signal.SIGINT, 1.0), (signal.SIGINT, 2.0), (signal.SIGINT, 5.0)]
    + [(signal.SIGTERM, 2.0)],
)
def test_a_signal_at_any_moment_ends_the_command_and_a_rerun_resumes_or_starts_clean(
    tmp_path, number, delay
):
    # Sent while Python imports, JAX starts, the step compiles or the loop trains.
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.wgan_gp", *DEMO[:-1], "--steps=100000"]
        + [f"--workdir={workdir}"],
        cwd=ROOT,
        env=environment(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    os.kill(process.pid, number)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + number, (out[-1000:], err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert "done in" not in out  # It did not train on to the end.
    if (workdir / "config.json").exists():
        # A run that trained a step is bound to its settings, and resumable: a checkpoint of
        # the step it stopped after was written.
        assert checkpoints.latest_step(workdir) is not None
    else:
        # One stopped before its first step binds nothing: other settings start clean.
        rerun = run_experiment("wgan_gp", *DEMO, f"--workdir={workdir}")
        assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_the_memory_estimate_counts_parameters_and_adams_two_slots():
    import dataclasses

    from gans import data, models, run, step_config
    from gans import state as state_lib

    toy = run.Run(
        dataset=data.get_dataset("8gaussians"),
        generator=models.MLPGenerator(out_dim=2, hidden=(8,)),
        critic=models.MLPCritic(hidden=(8,)),
        generator_tx=state_lib.make_optimizer("adam", 1e-3),
        critic_tx=state_lib.make_optimizer("adam", 1e-3),
        step=step_config.StepConfig(loss="wasserstein", z_dim=2),
        n_critic=1,
        batch_size=4,
        steps=1,
    )
    # Generator 2 -> 8 -> 2 and critic 2 -> 8 -> 1: 42 and 33 float32 parameters, each with
    # Adam's mu and nu beside it, and a few scalars (step counts, keys).
    params = 42 + 33
    assert 3 * 4 * params <= run.state_bytes(toy) < 3 * 4 * params + 256
    run.check_memory(toy, available=1)  # One run is never refused: nothing to trade.
    many = dataclasses.replace(toy, num_runs=1000)
    needed = 2 * 1000 * run.state_bytes(toy)
    run.check_memory(many, available=needed)
    with pytest.raises(ValueError, match=r"1,000 runs need about .* more than this machine's"):
        run.check_memory(many, available=needed - 1)
