"""Failures of kinds beyond flag values: the operating system's refusals, encodings, interrupts
and bugs each end a command with one sentence, a known exit status, no traceback, and nothing
the user had changed."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from cli import ROOT, environment

from experiments import cli

DEMO = ("--dataset=8gaussians", "--steps=2", "--batch_size=16", "--width=16", "--log_every=1")


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_sentence(result, status=2):
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "name, workdir, message",
    [
        ("a path component too long", "{tmp}/" + "x" * 300 + "/run", "File name too long"),
        ("a file where a folder belongs", "{tmp}/a_file/run", "(not a directory)"),
    ],
)
def test_the_operating_systems_refusals_are_one_sentence(
    tmp_path, commands, name, workdir, message
):
    (tmp_path / "a_file").write_text("the user's file\n")
    before = _snapshot(tmp_path)
    result = commands("wgan_gp", *DEMO, f"--workdir={workdir.format(tmp=tmp_path)}")
    line = _one_sentence(result)
    assert message in line, line
    assert _snapshot(tmp_path) == before


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
@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0, 5.0])
def test_ctrl_c_at_any_moment_ends_the_command_with_130_and_one_sentence(tmp_path, delay):
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
    os.kill(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out[-1000:], err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert "done in" not in out  # It did not train on to the end.


def test_runs_whose_states_cannot_fit_are_refused_before_anything_is_allocated(tmp_path, commands):
    # The demo's default MLPs (3 x 512): 12.8 MiB of state a run, 2,500 GiB for 100,000.
    args = ("--dataset=8gaussians", "--steps=2", "--num_runs=100000")
    result = commands("wgan_gp", *args, f"--workdir={tmp_path / 'run'}")
    line = _one_sentence(result)
    assert "100,000 runs need about" in line and "more than this machine's" in line, line
    assert not any((tmp_path / "run").iterdir())  # No record binds the folder.


def test_the_memory_estimate_counts_parameters_and_adams_two_slots():
    import dataclasses

    from gans import data, models, run, train

    toy = run.Run(
        dataset=data.get_dataset("8gaussians"),
        generator=models.MLPGenerator(out_dim=2, hidden=(8,)),
        critic=models.MLPCritic(hidden=(8,)),
        generator_tx=train.make_optimizer("adam", 1e-3),
        critic_tx=train.make_optimizer("adam", 1e-3),
        step=train.StepConfig(loss="wasserstein", z_dim=2),
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
