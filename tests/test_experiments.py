"""Experiments run from their flagfiles, and bad input fails with one clear sentence."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = ROOT / "experiments" / "flags"
# Shrunk so that a run is seconds: the flagfile still sets everything else.
TINY = ["--steps=2", "--log_every=1", "--width=16", "--batch_size=16", "--sample_every=0"]


def run_experiment(module, *args, cwd=ROOT, devices=1, wait=True):
    """Runs an experiment in a subprocess; ``wait=False`` returns the running process."""
    # One CPU device unless a test asks for more (tests/conftest.py simulates eight here).
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    flags += f" --xla_force_host_platform_device_count={devices}"
    # Most XLA optimisations off: these runs check behaviour, not speed, and compile in about
    # half the time (16.6 s -> 9.5 s for a digits run); the library tests keep them on.
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=flags.strip(),
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    command = [sys.executable, "-m", f"experiments.{module}", *args]
    if not wait:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


TRICKS = [
    "--ema_decay=0.9",
    "--instance_noise=0.1",
    "--noise_anneal_steps=10",
    "--generator_lr=2e-4",
    "--critic_lr=4e-4",
]
LABEL_TRICKS = ["--label_smoothing=0.1", "--flip_probability=0.05", "--flip_anneal_steps=10"]
# The VAE has one player: the tricks that apply to it.
VAE_TRICKS = ["--ema_decay=0.9", "--generator_lr=2e-4", "--optimistic"]
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
    if module == "vae":
        tricks = VAE_TRICKS
    else:
        tricks = TRICKS + (LABEL_TRICKS if module in CROSS_ENTROPY else [])
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


BAD_INPUTS = [("wgan_gp", args, message) for args, message in BAD_INPUTS] + [
    ("vae", ["--label_smoothing=0.1"], "--label_smoothing is a GAN flag and the VAE has no critic"),
    ("vae", ["--n_critic=2"], "--n_critic is a GAN flag"),
    ("vae", ["--model=msg"], "the VAE on 8gaussians is built with --model=mlp"),
    ("vae", ["--num_runs=2"], "the VAE trains one run at a time"),
    ("wgan_gp", ["--num_devices=2"], "--num_devices=2 but this host has 1 CPU device(s)"),
    ("wgan_gp", ["--sweep=beta1=0,0.5"], "cannot sweep 'beta1'; sweepable:"),
    ("wgan_gp", ["--sweep=penalty_weight"], "is not NAME=V1,V2,..."),
    ("wgan_gp", ["--num_runs=2", "--sweep=penalty_weight=1,10"], "either --num_runs or --sweep"),
    ("wgan_gp", ["--num_runs=0"], "--num_runs must be >= 1"),
    ("wgan_gp", ["--sweep=clip=0.01,0.1"], "--sweep=clip=... needs weight clipping on"),
    ("wgan_gp", ["--dataset=mnist", "--data_dir=/nonexistent/tfds"], "is not prepared in"),
    ("wgan_gp", ["--data_dir=/tmp"], "--data_dir applies to TFDS datasets"),
    ("wgan_gp", ["--distributed", "--num_processes=2"], "needs all of --coordinator_address"),
    ("wgan_gp", ["--process_id=1"], "--process_id needs --distributed"),
]


@pytest.mark.parametrize("module, args, message", BAD_INPUTS)
def test_bad_input_is_one_clear_sentence(tmp_path, module, args, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    result = run_experiment(module, f"--workdir={workdir}", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    # Nothing in the workdir was touched.
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    assert (workdir / "notes.txt").read_text() == "mine"


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tmp_path):
    result = run_experiment("wgan_gp", f"--workdir={tmp_path}", "--batch_size=12", devices=8)
    assert result.returncode != 0
    assert "batch size 12 does not divide evenly over 8 devices" in result.stderr
    assert "Traceback" not in result.stderr


def metric_lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(a, b):
    assert [line["step"] for line in a] == [line["step"] for line in b]
    for x, y in zip(a, b):
        for name, value in x.items():
            assert value == pytest.approx(y[name], rel=1e-4, abs=1e-5), name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_device_eight_devices_and_two_processes_of_four_train_alike(tmp_path):
    # SGD keeps the comparison at float tolerance: Adam turns a rounding-level difference in a
    # near-zero gradient into a whole step (see tests/test_parallel.py).
    args = [f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}", *TINY, "--optimizer=sgd"]
    one = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'one'}", devices=1)
    assert one.returncode == 0, one.stderr[-3000:]
    eight = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'eight'}", devices=8)
    assert eight.returncode == 0, eight.stderr[-3000:]
    assert_same_metrics(metric_lines(tmp_path / "eight"), metric_lines(tmp_path / "one"))

    # Two processes with four devices each, talking through gloo, as BUILD_NOTES.md shows.
    port = free_port()
    workdir = tmp_path / "two_processes"
    processes = [
        run_experiment(
            "wgan_gp",
            *args,
            f"--workdir={workdir}",
            "--distributed",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            devices=4,
            wait=False,
        )
        for i in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert_same_metrics(metric_lines(workdir), metric_lines(tmp_path / "one"))


def test_several_seeds_train_as_one_program_each_in_its_own_directory(tmp_path):
    workdir = tmp_path / "runs"
    args = [f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}", *TINY, "--num_runs=2"]
    result = run_experiment("wgan_gp", *args, f"--workdir={workdir}", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads((workdir / "runs.json").read_text())
    assert [(entry["directory"], entry["seed"]) for entry in runs] == [("run_0", 3), ("run_1", 4)]
    for entry in runs:
        assert (workdir / entry["directory"] / "samples.png").exists()
        assert len(metric_lines(workdir / entry["directory"])) == 2
    first, second = (metric_lines(workdir / f"run_{k}")[-1] for k in (0, 1))
    assert first["critic_loss"] != second["critic_loss"]
    # Run 1 is the run --seed=4 trains alone.
    alone = run_experiment("wgan_gp", *args[:-1], f"--workdir={tmp_path / 'alone'}", "--seed=4")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert_same_metrics(metric_lines(workdir / "run_1"), metric_lines(tmp_path / "alone"))


def run_command(module, *args):
    return run_experiment(module, *args)


def test_a_run_resumes_is_scored_and_sampled_from_its_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    args = [f"--flagfile={FLAGS / 'cgan_8gaussians.cfg'}", *TINY, f"--workdir={workdir}"]
    first = run_experiment("cgan", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = (workdir / "metrics.jsonl").read_text()
    # The same command again: the run is complete, so it resumes at its end and adds nothing.
    again = run_experiment("cgan", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from the checkpoint of step 2" in again.stdout
    assert (workdir / "metrics.jsonl").read_text() == lines
    assert (workdir / "curves.png").exists() and list((workdir / "tensorboard").iterdir())

    scored = run_command("evaluate", f"--workdir={workdir}", "--num=200")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "modes" in scored.stdout and "W1" in scored.stdout
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    assert evaluation["step"] == 2 and evaluation["wasserstein_1"] > 0

    out = tmp_path / "samples.npy"
    sampled = run_command("sample", f"--workdir={workdir}", "--num=30", f"--out={out}", "--label=3")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert np.load(out).shape == (30, 2)
    assert set(np.load(tmp_path / "samples_labels.npy")) == {3}
    # Nothing is overwritten.
    refused = run_command("sample", f"--workdir={workdir}", "--num=30", f"--out={out}")
    assert refused.returncode != 0 and "exists; choose another --out" in refused.stderr


def test_a_killed_run_restarted_with_the_same_command_loses_and_repeats_nothing(tmp_path):
    args = [
        f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}",
        "--steps=40",
        "--log_every=2",
        "--checkpoint_every=10",
        "--width=16",
        "--batch_size=16",
    ]
    alone = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-3000:]
    workdir = tmp_path / "killed"
    process = run_experiment("wgan_gp", *args, f"--workdir={workdir}", wait=False)
    deadline = time.monotonic() + 240
    while not (workdir / "checkpoints" / "10").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    process.kill()
    process.communicate()
    again = run_experiment("wgan_gp", *args, f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr[-3000:]
    log = (workdir / "metrics.jsonl").read_text()
    assert log == (tmp_path / "alone" / "metrics.jsonl").read_text()
    assert [json.loads(line)["step"] for line in log.splitlines()] == list(range(2, 41, 2))


def test_commands_on_a_workdir_without_a_run_say_so(tmp_path):
    result = run_command("evaluate", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "holds no run (no config.json)" in result.stderr
    assert "Traceback" not in result.stderr


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
