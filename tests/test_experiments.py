"""Experiments run from their flagfiles, and bad input fails with one clear sentence."""

import json
import socket

import numpy as np
import pytest
from cli import FLAGS, TINY, assert_same_metrics, environment, metric_lines, run_experiment

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
# One experiment module per flagfile, except the papers' reproductions (experiments.paper,
# paper_*.cfg), which drive many runs and are tested shrunk in their own test files.
TRAINING_FLAGFILES = [name for name in FLAGFILES if not name.startswith("paper_")]


def test_every_flagfile_opens_with_what_it_runs_its_cpu_time_and_the_expected_result():
    for name in FLAGFILES:
        header = (FLAGS / name).read_text().split("\n--", 1)[0]
        assert "CPU time:" in header and "Expected:" in header, name


def test_every_flagfile_line_is_a_comment_or_one_flag_and_no_flag_is_given_twice():
    # absl skips a line that is neither, silently: a damaged flagfile would still "work".
    for name in FLAGFILES:
        lines = [line for line in (FLAGS / name).read_text().splitlines() if line.strip()]
        flags = [line for line in lines if not line.startswith("#")]
        assert all(line.startswith("--") and " " not in line for line in flags), name
        names = [line.split("=", 1)[0] for line in flags]
        assert len(names) == len(set(names)), name
        assert len(lines) < 80, name


MODULES = sorted(
    (path.stem for path in FLAGS.parent.glob("*.py") if not path.stem.startswith("_")),
    key=len,
    reverse=True,
)
# Flagfiles of data sets that cannot be downloaded here run their settings on the digits (the
# TFDS loaders are tested on mocked data in tests/test_tfds.py); the ResNets, whose programs
# take XLA:CPU far longer to compile, at their smallest side.
OFFLINE = {"cifar10": ["--dataset=digits"]}
RESNET_SHRUNK = ["--image_size=16"]


def module_of(flagfile: str) -> str:
    """The experiment a flagfile runs: the longest module name it starts with."""
    return next(module for module in MODULES if flagfile.startswith(module + "_"))


def _one_flagfile_per_experiment_first() -> list:
    """Every training flagfile; the default tier keeps one per experiment, the slow tier
    (``-m slow``) has the rest.

    The one kept is the experiment's 8gaussians flagfile, else its DCGAN digits one: the step
    of a 2-D MLP compiles in a second, that of a DCGAN in ten and of a ResNet in twenty
    (SNGAN's flagfiles are all ResNets: they run in the slow tier only).
    """
    by_experiment = {}
    for name in TRAINING_FLAGFILES:
        by_experiment.setdefault(module_of(name), []).append(name)
    kept = {
        min(names, key=lambda n: (not n.endswith("_8gaussians.cfg"), not n.endswith("_digits.cfg")))
        for experiment, names in by_experiment.items()
        if experiment != "sngan"
    }
    return [
        name if name in kept else pytest.param(name, marks=pytest.mark.slow)
        for name in TRAINING_FLAGFILES
    ]


@pytest.mark.parametrize("flagfile", _one_flagfile_per_experiment_first())
def test_two_steps_from_the_flagfile(tmp_path, flagfile, commands):
    module = module_of(flagfile)
    workdir = tmp_path / "run"
    # The shared training tricks ride along, so every experiment is shown to accept them.
    if module == "vae":
        tricks = VAE_TRICKS
    else:
        tricks = TRICKS + (LABEL_TRICKS if module in CROSS_ENTROPY else []) + ["--critic_width=16"]
    tricks += OFFLINE.get(flagfile.removesuffix(".cfg").rsplit("_", 1)[-1], [])
    if module == "sngan" or "--model=resnet" in (FLAGS / flagfile).read_text():
        tricks += RESNET_SHRUNK
    result = commands(
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
    # The record is the whole configuration: the module's own flags and the step's settings.
    text = (workdir / "config.json").read_text()
    config = json.loads(text)
    assert config["experiment"] == f"experiments.{module}" and config["step_config"]
    assert ("beta" in config) == (module == "vae")
    assert "0x" not in text  # No object repr with a memory address, which would never match.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_device_eight_devices_and_two_processes_of_four_train_alike(tmp_path):
    # SGD keeps the comparison at float tolerance: Adam turns a rounding-level difference in a
    # near-zero gradient into a whole step (see tests/test_parallel.py).
    args = [f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}", *TINY, "--optimizer=sgd"]
    one = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'one'}", devices=1)
    assert one.returncode == 0, one.stderr[-3000:]
    for transform in ("pmap", "shard_map"):
        workdir = tmp_path / f"eight_{transform}"
        eight = run_experiment(
            "wgan_gp", *args, f"--workdir={workdir}", f"--parallel={transform}", devices=8
        )
        assert eight.returncode == 0, eight.stderr[-3000:]
        assert_same_metrics(metric_lines(workdir), metric_lines(tmp_path / "one"))

    # Two processes with four devices each, talking through gloo, as BUILD_NOTES.md shows;
    # with pmap, and with shard_map over one mesh of both processes' devices.
    for transform in ("pmap", "shard_map"):
        port = free_port()
        workdir = tmp_path / f"two_processes_{transform}"
        processes = [
            run_experiment(
                "wgan_gp",
                *args,
                f"--workdir={workdir}",
                f"--parallel={transform}",
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


@pytest.mark.slow
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


@pytest.mark.slow
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

    scored = run_experiment("evaluate", f"--workdir={workdir}", "--num=200")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "modes" in scored.stdout and "W1" in scored.stdout
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    assert evaluation["step"] == 2 and evaluation["wasserstein_1"] > 0

    out = tmp_path / "samples.npy"
    sampled = run_experiment(
        "sample", f"--workdir={workdir}", "--num=30", f"--out={out}", "--label=3"
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert np.load(out).shape == (30, 2)
    assert set(np.load(tmp_path / "samples_labels.npy")) == {3}
    # Nothing is overwritten.
    refused = run_experiment("sample", f"--workdir={workdir}", "--num=30", f"--out={out}")
    assert refused.returncode != 0 and "exists; choose another --out" in refused.stderr


@pytest.mark.slow
def test_augmentation_ada_and_consistency_from_the_command_line(tmp_path):
    workdir = tmp_path / "run"
    result = run_experiment(
        "sngan",
        f"--flagfile={FLAGS / 'sngan_digits.cfg'}",
        f"--workdir={workdir}",
        *TINY,
        "--critic_width=16",
        "--image_size=16",
        "--n_critic=1",
        "--augment=translation,cutout",
        "--augment_probability=0.5",
        "--ada_target=0.6",
        "--ada_kimg=0.1",
        "--consistency_weight=10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = metric_lines(workdir)
    assert first["augment_probability"] == 0.5 and first["consistency"] > 0
    # ADA moved p by one increment of 16 images over 100 after step 1.
    assert abs(second["augment_probability"] - 0.5) == pytest.approx(0.16, rel=1e-5)
    assert "augment p 0.500" in result.stdout


@pytest.mark.slow
def test_an_infogan_run_is_sampled_for_one_category_of_its_code(tmp_path):
    workdir = tmp_path / "run"
    args = [f"--flagfile={FLAGS / 'infogan_8gaussians.cfg'}", *TINY, f"--workdir={workdir}"]
    trained = run_experiment("infogan", *args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "samples.npy"
    sampled = run_experiment(
        "sample", f"--workdir={workdir}", "--num=20", f"--out={out}", "--label=2"
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert np.load(out).shape == (20, 2)
    assert set(np.load(tmp_path / "samples_labels.npy")) == {2}
    other = run_experiment(
        "sample", f"--workdir={workdir}", "--num=20", f"--out={tmp_path / 'b.npy'}", "--label=0"
    )
    assert other.returncode == 0, other.stderr[-3000:]
    # The same noise and continuous codes: only the category differs.
    assert not np.allclose(np.load(out), np.load(tmp_path / "b.npy"))
    refused = run_experiment(
        "sample", f"--workdir={workdir}", "--num=5", f"--out={tmp_path / 'c.npy'}", "--label=99"
    )
    assert (
        refused.returncode == 2 and "--label needs a conditional or InfoGAN run" in refused.stderr
    )


@pytest.mark.slow
def test_a_repeated_run_takes_its_programs_from_the_compilation_cache(tmp_path):
    # Without the test session's cache in the environment, the flag decides.
    env = {k: v for k, v in environment(1).items() if k != "JAX_COMPILATION_CACHE_DIR"}
    cache = tmp_path / "cache"
    args = [f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}", *TINY, f"--compilation_cache={cache}"]
    first = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'a'}", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = sorted(p.name for p in cache.iterdir())
    assert kept  # Every program, however short its compile.
    again = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'b'}", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir()) == kept  # Nothing compiled anew.
    assert_same_metrics(metric_lines(tmp_path / "a"), metric_lines(tmp_path / "b"))
    none = args[:-1] + ["--compilation_cache=none"]
    off = run_experiment("wgan_gp", *none, f"--workdir={tmp_path / 'c'}", env=env)
    assert off.returncode == 0 and sorted(p.name for p in cache.iterdir()) == kept
