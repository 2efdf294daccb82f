"""Experiments run from their flagfiles, and bad input fails with one clear sentence."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = ROOT / "experiments" / "flags"
# Shrunk so that a run is seconds: the flagfile still sets everything else.
TINY = ["--steps=2", "--log_every=1", "--width=16", "--batch_size=16", "--sample_every=0"]


def run_experiment(module, *args, cwd=ROOT):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


TRICKS = [
    "--ema_decay=0.9",
    "--instance_noise=0.1",
    "--noise_anneal_steps=10",
    "--generator_lr=2e-4",
    "--critic_lr=4e-4",
]
LABEL_TRICKS = ["--label_smoothing=0.1", "--flip_probability=0.05", "--flip_anneal_steps=10"]
CROSS_ENTROPY = ("mm_gan", "ns_gan", "dragan", "cgan", "infogan")
FLAGFILES = sorted(path.name for path in FLAGS.glob("*.cfg"))


def test_every_flagfile_opens_with_what_it_runs_its_cpu_time_and_the_expected_result():
    for name in FLAGFILES:
        header = (FLAGS / name).read_text().split("\n--", 1)[0]
        assert "CPU time:" in header and "Expected:" in header, name


@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_two_steps_from_the_flagfile(tmp_path, flagfile):
    module = flagfile.rsplit("_", 1)[0]
    workdir = tmp_path / "run"
    # The shared training tricks ride along, so every experiment is shown to accept them.
    tricks = [] if module == "vae" else TRICKS + (LABEL_TRICKS if module in CROSS_ENTROPY else [])
    result = run_experiment(
        module, f"--flagfile={FLAGS / flagfile}", f"--workdir={workdir}", *TINY, *tricks
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    record = json.loads(lines[-1])
    expected = (
        ("loss", "reconstruction", "kl")
        if module == "vae"
        else ("critic_loss", "generator_loss", "penalty", "critic_grad_norm_interpolates")
    )
    for key in expected:
        assert key in record
    assert ("wasserstein_estimate" in record) == (module in ("wgan", "wgan_gp", "msg_gan"))
    assert ("information_categorical" in record) == (module == "infogan")
    assert (workdir / "samples.png").stat().st_size > 1000
    assert (workdir / "params.msgpack").exists()
    assert "step 2/2" in result.stdout


BAD_INPUTS = [
    (["--loss=wasserstien"], "unknown loss 'wasserstien'; known losses:"),
    (["--penalty=gp2"], "unknown penalty 'gp2'; known penalties:"),
    (["--penalty_weight=-1"], "--penalty_weight must be >= 0"),
    (["--n_critic=0"], "--n_critic must be >= 1"),
    (["--dataset=mnistt"], "unknown dataset 'mnistt'; known datasets:"),
    (["--flagfile=/nonexistent/wgan.cfg"], "/nonexistent/wgan.cfg"),
    (["--steps=abc"], "steps"),
    (["--critic_norm=batch", "--dataset=digits"], "--critic_norm=batch"),
    (["--label_smoothing=0.1"], "cross-entropy losses only"),
    (["--flip_probability=0.1", "--loss=hinge"], "cross-entropy losses only"),
    (["--model=msg"], "--model=msg needs image data"),
    (["--conditional", "--dataset=swissroll"], "--conditional needs labelled data"),
    (["--optimistic", "--optimizer=rmsprop"], "optimistic updates exist for adam and sgd"),
    (["--dragan_symmetric"], "--dragan_symmetric applies to --penalty=dragan only"),
    (["--info_categories=1"], "--info_categories must be 0 (off) or >= 2"),
    (["--ema_decay=1.5"], "ema_decay must be in (0, 1)"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_clear_sentence(tmp_path, args, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    result = run_experiment("wgan_gp", f"--workdir={workdir}", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    # Nothing in the workdir was touched.
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    assert (workdir / "notes.txt").read_text() == "mine"


def test_a_workdir_holding_a_run_is_refused_and_kept(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 1}\n')
    result = run_experiment("wgan_gp", f"--workdir={workdir}", "--steps=1")
    assert result.returncode != 0
    assert "already holds a run" in result.stderr
    assert (workdir / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    result = run_experiment("wgan_gp", f"--workdir={target}", "--steps=1")
    assert result.returncode != 0
    assert "is a file" in result.stderr
    assert target.read_text() == "keep"
