"""Safety: bad input is refused in one sentence, NaNs stop a run, kills and restarts lose nothing.

The bad-input table is README's "Safety" table: every row runs the command a user would, in a
process of its own (forked from one that imported JAX once: the ``commands`` fixture), and
checks one sentence naming the problem, a non-zero exit, no traceback, and a workdir left
exactly as it was.
"""

import dataclasses
import json
import pathlib
import random
import shutil
import signal
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli import TOY, TRAINED, environment, metric_lines, run_experiment, snapshot
from test_checkpoints import make_run

from gans import checkpoints, data, loop, runner
from gans import run as run_lib
from gans import workdir as workdir_lib

# The VAE run the rows on its own flags (--beta) resume: a checkpoint at step 2.
VAE_TRAINED = [
    "--steps=2",
    "--log_every=1",
    "--width=16",
    "--batch_size=16",
    "--sample_every=0",
    "--checkpoint_every=2",
]


@pytest.fixture(scope="session")
def trained_vae(tmp_path_factory) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp("trained_vae") / "run"
    result = run_experiment("vae", *VAE_TRAINED, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def copy_run(workdir, trained):
    shutil.copytree(trained(), workdir, dirs_exist_ok=True)


def copy_vae_run(workdir, trained):
    shutil.copytree(trained("trained_vae"), workdir, dirs_exist_ok=True)


def edit_config(**changes):
    def setup(workdir, trained):
        copy_run(workdir, trained)
        config = json.loads((workdir / "config.json").read_text())
        (workdir / "config.json").write_text(json.dumps({**config, **changes}))

    return setup


def damage_checkpoint(how):
    def setup(workdir, trained):
        copy_run(workdir, trained)
        for path in sorted((workdir / "checkpoints" / "4").rglob("*")):
            if path.is_file() and "/d/" in str(path):
                content = path.read_bytes()
                damaged = (
                    content[: len(content) // 2] if how == "truncate" else b"\0" * len(content)
                )
                path.write_bytes(damaged)

    return setup


def write(name, content):
    def setup(workdir, trained):
        (workdir / name).write_text(content)

    return setup


def without_checkpoints(workdir, trained):
    copy_run(workdir, trained)
    shutil.rmtree(workdir / "checkpoints")


@dataclasses.dataclass(frozen=True)
class Bad:
    """One bad input: the command's arguments and the words its error must contain."""

    what: str
    args: tuple[str, ...]
    message: str
    module: str = "wgan_gp"
    # Prepares the workdir: (workdir, trained) -> None, where trained() trains the shared run
    # (trained("trained_vae"): the VAE's).
    setup: Callable | None = None
    # Replaces --workdir ("{tmp}" is the test's directory; "" gives an empty --workdir=).
    workdir: str | None = None
    devices: int = 1


FLAGFILE_UNKNOWN = "--lossx=wasserstein\n"
FLAGFILE_TYPE = "--batch_size=sixty-four\n"

BAD_INPUTS = [
    # Flags.
    Bad("unknown loss", ("--loss=wasserstien",), "unknown loss 'wasserstien'; known losses:"),
    Bad("unknown penalty", ("--penalty=gp2",), "unknown penalty 'gp2'; known penalties:"),
    Bad("unknown flag", ("--stpes=10",), "Unknown command line flag 'stpes'"),
    Bad("wrong type", ("--steps=abc",), "steps"),
    Bad("stray argument", ("wgan_gp.cfg",), "unexpected arguments 'wgan_gp.cfg'"),
    Bad("zero batch", ("--batch_size=0",), "--batch_size must be >= 1, got 0"),
    Bad("negative steps", ("--steps=-5",), "--steps must be >= 1, got -5"),
    Bad("zero width", ("--width=0",), "--width must be >= 1, got 0"),
    Bad("zero critic updates", ("--n_critic=0",), "n_critic must be >= 1, got 0"),
    Bad("zero learning rate", ("--critic_lr=0",), "--critic_lr must be > 0"),
    Bad("beta1 of 1", ("--beta1=1",), "--beta1 must be in [0, 1)"),
    Bad("negative penalty", ("--penalty_weight=-1",), "must be >= 0, got -1.0; the papers use 10"),
    Bad("negative clip", ("--clip=-0.01",), "clip bound must be > 0, got -0.01"),
    Bad("negative eval_every", ("--eval_every=-1",), "eval_every must be >= 0, got -1"),
    # Every flag of its kind: numbers finite, paths non-empty, seeds in the int32 range.
    Bad("NaN penalty weight", ("--penalty_weight=nan",), "--penalty_weight must be a finite"),
    Bad("infinite learning rate", ("--critic_lr=inf",), "--critic_lr must be a finite number"),
    Bad("infinite steps", ("--steps=inf",), "--steps=inf"),
    Bad("NaN sweep value", ("--sweep=penalty_weight=nan,1",), "must list finite numbers only"),
    Bad("NaN VAE beta", ("--beta=nan",), "--beta must be a finite number, got nan", "vae"),
    Bad("empty workdir", (), "--workdir is empty; give it a path", workdir=""),
    Bad("empty data_dir", ("--data_dir=",), "--data_dir is empty; give it a path"),
    Bad("empty flagfile", ("--flagfile=",), "--flagfile is empty; give it a path"),
    Bad("empty sample out", ("--out=",), "--out is empty; give it a path", module="sample"),
    Bad(
        "empty inception weights",
        ("--inception_weights=",),
        "--inception_weights is empty; give it a path",
        module="evaluate",
    ),
    Bad("negative seed", ("--seed=-1",), "--seed must be an integer from 0 to 2147483647, got -1"),
    Bad("seed of 2**32", ("--seed=4294967296",), "--seed must be an integer from 0 to 2147483647"),
    Bad("seeds past the last", ("--seed=2147483647", "--num_runs=2"), "past the largest"),
    Bad("EMA decay > 1", ("--ema_decay=1.5",), "ema_decay must be in (0, 1)"),
    Bad("one InfoGAN category", ("--info_categories=1",), "--info_categories must be 0"),
    Bad("smoothing a W loss", ("--label_smoothing=0.1",), "cross-entropy losses only"),
    Bad("flips with hinge", ("--flip_probability=0.1", "--loss=hinge"), "cross-entropy losses"),
    Bad("BatchNorm with GP", ("--critic_norm=batch", "--dataset=digits"), "--critic_norm=batch"),
    Bad("MSG on 2-D data", ("--model=msg",), "--model=msg needs image data"),
    Bad("optimistic RMSProp", ("--optimistic", "--optimizer=rmsprop"), "exist for adam and sgd"),
    Bad("symmetric GP", ("--dragan_symmetric",), "applies to --penalty=dragan only"),
    Bad("sweep unknown", ("--sweep=beta1=0,0.5",), "cannot sweep 'beta1'; sweepable:"),
    Bad("sweep malformed", ("--sweep=penalty_weight",), "is not NAME=V1,V2,..."),
    Bad("runs and sweep", ("--num_runs=2", "--sweep=penalty_weight=1,10"), "either --num_runs"),
    Bad("zero runs", ("--num_runs=0",), "num_runs must be >= 1, got 0"),
    Bad("zero devices", ("--num_devices=0",), "--num_devices=0 but this host has 1 CPU device"),
    Bad("sweep clip unclipped", ("--sweep=clip=0.01,0.1",), "needs weight clipping on"),
    Bad("half distributed", ("--distributed", "--num_processes=2"), "needs all of"),
    Bad("process id alone", ("--process_id=1",), "--process_id needs --distributed"),
    # Remedies for mode collapse.
    Bad("zero pack", ("--pack=0",), "--pack must be >= 1, got 0"),
    Bad("pack not dividing", ("--pack=3", "--batch_size=16"), "divisible by --pack"),
    Bad("pack conditional", ("--pack=2", "--conditional"), "drop --pack"),
    Bad("negative unroll", ("--unroll_steps=-1",), "--unroll_steps must be >= 0, got -1"),
    Bad("unroll InfoGAN", ("--unroll_steps=2", "--info_categories=4"), "drop --unroll_steps"),
    Bad("minibatch std on MSG", ("--minibatch_std", "--model=msg", "--dataset=digits"), "not msg"),
    Bad("standard CNN on 2-D data", ("--model=standard_cnn",), "needs image data"),
    Bad(
        "sum pooling on DCGAN", ("--dataset=digits", "--critic_pooling=sum"), "--model=resnet only"
    ),
    Bad(
        "norm on the standard CNN",
        ("--model=standard_cnn", "--dataset=digits", "--critic_norm=layer"),
        "--critic_norm applies to --model=dcgan, msg and resnet, not standard_cnn",
    ),
    Bad("MLP depth on DCGAN", ("--dataset=digits", "--depth=2"), "--model=mlp only, not dcgan"),
    Bad("unknown model", ("--model=stylegan",), "unknown model 'stylegan'; known models: dcgan"),
    Bad(
        "BatchNorm in the ResNet",
        ("--dataset=digits", "--model=resnet", "--critic_norm=batch"),
        "the ResNet critic has no BatchNorm",
    ),
    Bad(
        "InfoGAN's BatchNorm critic under a penalty",
        ("--model=infogan_mnist", "--dataset=digits"),
        "makes a gradient penalty batch-wide instead of per example; use --penalty=none",
    ),
    Bad(
        "minibatch std on the standard CNN",
        ("--model=standard_cnn", "--dataset=digits", "--minibatch_std"),
        "not standard_cnn",
    ),
    # Flagfiles.
    Bad("missing flagfile", ("--flagfile=/nonexistent/wgan.cfg",), "/nonexistent/wgan.cfg"),
    Bad(
        "unknown flag in a flagfile",
        ("--flagfile={tmp}/bad.cfg",),
        "Unknown command line flag 'lossx'",
        setup=lambda workdir, trained: (workdir.parent / "bad.cfg").write_text(FLAGFILE_UNKNOWN),
    ),
    Bad(
        "wrong type in a flagfile",
        ("--flagfile={tmp}/bad.cfg",),
        "batch_size",
        setup=lambda workdir, trained: (workdir.parent / "bad.cfg").write_text(FLAGFILE_TYPE),
    ),
    # Datasets and devices.
    Bad("unknown dataset", ("--dataset=mnistt",), "unknown dataset 'mnistt'; known datasets:"),
    Bad("unknown TFDS set", ("--dataset=tfds:no_such_set",), "no_such_set"),
    Bad(
        "unprepared dataset",
        ("--dataset=mnist", "--data_dir=/nonexistent/tfds"),
        "is not prepared in",
    ),
    Bad(
        "data_dir on digits",
        ("--data_dir=/tmp", "--dataset=digits"),
        "--data_dir applies to mnist, fashion_mnist, cifar10, celeb_a and tfds:NAME, not digits.",
    ),
    Bad(
        "split of the digits",
        ("--split=test", "--dataset=digits"),
        "--split applies to mnist, fashion_mnist, cifar10, celeb_a and tfds:NAME, not digits.",
    ),
    Bad("missing image folder", ("--dataset=folder:{tmp}/none",), "does not exist; give a folder"),
    Bad(
        "folder without images",
        ("--dataset=folder:{tmp}/run",),
        "notes.txt is not a PNG or JPEG image; remove it, or pass --skip_bad_images",
    ),
    Bad("missing npz", ("--dataset=npz:{tmp}/x.npz",), "does not exist; give an .npz file"),
    Bad(
        "image mode of digits",
        ("--dataset=digits", "--image_mode=rgb"),
        "--image_mode applies to folder:PATH and npz:PATH, not digits.",
    ),
    Bad(
        "samples and a run to evaluate",
        ("--samples={tmp}/s.npy",),
        "give --samples or --workdir, not both",
        module="evaluate",
    ),
    Bad("unsupported image size", ("--dataset=digits", "--image_size=13"), "one of (8, 16, 32)"),
    Bad("image size of 2-D data", ("--image_size=16",), "--image_size applies to digits, mnist5k"),
    Bad("conditional unlabelled", ("--conditional", "--dataset=swissroll"), "needs labelled data"),
    Bad("more devices than host", ("--num_devices=2",), "but this host has 1 CPU device(s)"),
    Bad(
        "batch over devices",
        ("--batch_size=12",),
        "batch size 12 does not divide evenly over 8 devices",
        devices=8,
    ),
    # Baselines: ResNets, spectral norm, augmentation.
    Bad(
        "mnist5k at a size it does not serve",
        ("--dataset=mnist5k", "--image_size=30"),
        "mnist5k's image_size must be one of (16, 28, 32, 64)",
    ),
    Bad(
        "unknown augmentation",
        ("--dataset=digits", "--augment=rotate"),
        "unknown augmentation 'rotate'",
    ),
    Bad("augmenting 2-D data", ("--augment=translation",), "--augment transforms images"),
    Bad("NaN augment probability", ("--augment_probability=nan",), "must be a finite number"),
    Bad(
        "ADA target out of range",
        ("--dataset=digits", "--augment=translation", "--ada_target=1.5"),
        "ADA's target must be in (0, 1)",
    ),
    Bad(
        "ResNet at 8 pixels",
        ("--dataset=digits", "--image_size=8", "--model=resnet"),
        "(16, 32, 48, 64)",
    ),
    Bad(
        "attention resolution absent",
        ("--dataset=digits", "--image_size=16", "--model=resnet", "--attention_resolution=5"),
        "attention",
    ),
    Bad(
        "attention on DCGAN",
        ("--dataset=digits", "--attention_resolution=8"),
        "--model=resnet only",
    ),
    Bad(
        "power iterations without spectral norm",
        ("--power_iterations=per_call",),
        "give --spectral_norm too, or drop it",
    ),
    Bad(
        "spectral norm and clipping",
        ("--spectral_norm", "--clip=0.01"),
        "drop --clip or --spectral_norm",
    ),
    Bad("zero data fraction", ("--data_fraction=0",), "--data_fraction must be in (0, 1]"),
    Bad(
        "data fraction of 2-D data",
        ("--data_fraction=0.5",),
        "--data_fraction applies to digits, mnist5k, stacked_digits and stacked_mnist5k, not "
        "8gaussians",
    ),
    # The VAE.
    Bad("VAE with a GAN flag", ("--label_smoothing=0.1",), "the VAE has no critic", "vae"),
    Bad("VAE with n_critic", ("--n_critic=2",), "--n_critic is a GAN flag", module="vae"),
    Bad("VAE with MSG", ("--model=msg",), "the VAE on 8gaussians is built with", module="vae"),
    Bad("VAE with runs", ("--num_runs=2",), "the VAE trains one run at a time", module="vae"),
    # Workdirs.
    Bad(
        "workdir is a file",
        TRAINED,
        "is a file; give a directory path",
        setup=write("notes.txt", "mine"),
        workdir="{tmp}/run/notes.txt",
    ),
    Bad("workdir under a file", TRAINED, "cannot be written", workdir="{tmp}/run/notes.txt/x"),
    Bad("workdir not writable", TRAINED, "cannot be written", workdir="/sys/gans_run"),
    Bad(
        "workdir of unknown files",
        TRAINED,
        "already holds a run without its config.json",
        setup=write("metrics.jsonl", '{"step": 1}\n'),
    ),
    Bad(
        "finished, no checkpoints",
        TRAINED,
        "already holds a finished run without checkpoints",
        setup=without_checkpoints,
    ),
    Bad(
        "workdir of other settings",
        (*TRAINED, "--width=32"),
        "holds a run with other settings (--width was 16, now 32)",
        setup=copy_run,
    ),
    Bad(
        "resume with another penalty weight",
        (*TRAINED, "--penalty_weight=1"),
        "--penalty_weight was 0.1, now 1.0",
        setup=copy_run,
    ),
    # The experiment module's own flags are part of the record too.
    Bad(
        "resume with another VAE beta",
        (*VAE_TRAINED, "--beta=0.5"),
        "--beta was 1.0, now 0.5",
        module="vae",
        setup=copy_vae_run,
    ),
    # Checkpoints.
    Bad(
        "truncated checkpoint",
        TRAINED,
        "the checkpoint at step 4",
        setup=damage_checkpoint("truncate"),
    ),
    Bad(
        "zeroed checkpoint",
        TRAINED,
        "is damaged",
        setup=damage_checkpoint("zero"),
    ),
    Bad(
        "checkpoint of another shape",
        (*TRAINED, "--width=32"),
        "holds arrays of other shapes",
        setup=edit_config(width=32),
    ),
    Bad(
        "corrupt config.json",
        TRAINED,
        "is damaged (not valid JSON",
        setup=write("config.json", "{"),
    ),
    # Commands on a run.
    Bad("evaluate without a run", (), "holds no run (no config.json)", module="evaluate"),
    Bad("sample zero", ("--num=0", "--out={tmp}/s.npy"), "--num must be >= 1", "sample"),
    Bad("sample not .npy", ("--out={tmp}/s.txt",), "must name a .npy file", module="sample"),
    Bad(
        "evaluate damaged",
        (),
        "is damaged",
        module="evaluate",
        setup=damage_checkpoint("zero"),
    ),
]


def test_the_table_has_at_least_25_rows_with_distinct_names():
    assert len(BAD_INPUTS) >= 25
    assert len({row.what for row in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("row", BAD_INPUTS, ids=lambda row: row.what)
def test_bad_input_is_one_clear_sentence_and_touches_nothing(tmp_path, row, request, commands):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    if row.setup is not None:
        row.setup(workdir, lambda name="trained": request.getfixturevalue(name))
    before = snapshot(tmp_path)
    target = (str(workdir) if row.workdir is None else row.workdir).format(tmp=tmp_path)
    args = [arg.format(tmp=tmp_path) for arg in row.args]
    # From the test's directory, so that nothing written to the current one (where an empty
    # path points) escapes the snapshot.
    result = commands(row.module, f"--workdir={target}", *args, cwd=tmp_path, devices=row.devices)
    assert result.returncode != 0
    assert row.message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert snapshot(tmp_path) == before


# Non-finite values.


@dataclasses.dataclass(frozen=True)
class Poisoned:
    """A dataset whose real batch of one step is all ``value`` (NaN or infinity)."""

    dataset: data.Dataset
    step: int
    value: float

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def batch(self, index, batch_size, seed, group=1):
        item = self.dataset.batch(index, batch_size, seed, group=group)
        if index == self.step - 1:
            item = {**item, "x": np.full_like(item["x"], self.value)}
        return item


@pytest.mark.parametrize(
    "value, log_every, stopped_at, kept",
    [
        # Caught at the next logging step (8); the checkpoint of step 6 is the last one.
        (float("nan"), 2, 8, [3, 6]),
        # Caught before the checkpoint of step 9 is written, though no line is logged there.
        (float("inf"), 10, 9, [3, 6]),
    ],
)
def test_a_non_finite_value_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, value, log_every, stopped_at, kept
):
    dataset = data.get_dataset("8gaussians")
    poisoned = Poisoned(dataset, step=7, value=value)
    run = make_run(dataset=poisoned, log_every=log_every, checkpoint_every=3)
    with pytest.raises(loop.NonFiniteError) as error:
        runner.train_and_evaluate(run, tmp_path)
    message = str(error.value)
    assert f"became non-finite at step {stopped_at}" in message
    assert "critic_loss" in message and "lower the learning rates" in message
    assert checkpoints.Checkpointer(tmp_path).all_steps() == kept
    lines = metric_lines(tmp_path)
    assert [line["step"] for line in lines] == list(range(log_every, 7, log_every))
    assert all(np.isfinite(v) for line in lines for v in line.values())
    assert not (tmp_path / "params.msgpack").exists()
    # The kept checkpoint is finite and resumes.
    restored, step = runner.restore(make_run(), tmp_path)
    assert step == kept[-1]
    assert all(
        bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(restored[0].critic_params)
    )


def test_a_diverging_run_says_so_from_the_command_line(tmp_path):
    result = run_experiment(
        "wgan_gp",
        *TOY,
        "--steps=5",
        "--critic_lr=1e30",
        "--lr_schedule=constant",
        f"--workdir={tmp_path}",
    )
    assert result.returncode != 0
    assert "training diverged:" in result.stderr and "became non-finite at step" in result.stderr
    assert "Traceback" not in result.stderr


# Signals, kills and the lock.


def wait_for_step(workdir, process, step, timeout=240):
    """Waits until the run has logged ``step`` (or later)."""
    deadline = time.monotonic() + timeout
    while True:
        path = workdir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        complete = [line for line in lines if line.endswith("}")]
        if complete and json.loads(complete[-1])["step"] >= step:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"step {step} not reached in {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigint_and_sigterm_save_a_checkpoint_and_a_second_writer_is_refused(tmp_path):
    workdir = tmp_path / "run"
    # Checkpoints only when stopped.
    args = [*TOY, "--steps=100000", "--checkpoint_every=0", f"--workdir={workdir}"]
    step = 0
    for number in (signal.SIGINT, signal.SIGTERM):
        process = run_experiment("wgan_gp", *args, wait=False)
        wait_for_step(workdir, process, step + 3)
        if number == signal.SIGINT:
            second = run_experiment("wgan_gp", *args)
            assert second.returncode != 0
            assert "is in use by another run (process" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + number, stderr[-3000:]
        # Each session's log names the machine it trained on (a run repeats to the bit on one
        # machine only).
        assert f"steps into {workdir} on {run_lib.cpu_model()}" in stdout
        if step:
            assert f"resuming from the checkpoint of step {step}" in stdout
        name = signal.Signals(number).name
        assert f"stopped by {name} after step " in stderr and "Traceback" not in stderr
        step = int(stderr.split(f"stopped by {name} after step ")[1].split(",")[0])
        assert checkpoints.latest_step(workdir) == step
        assert [line["step"] for line in metric_lines(workdir)] == list(range(1, step + 1))


@pytest.mark.slow
def test_twenty_kills_at_random_moments_lose_and_repeat_nothing(tmp_path):
    args = [*TOY, "--steps=400", "--checkpoint_every=4"]
    # Restarts reuse the compiled step, so that the kills land in training, not in compiling.
    env = environment(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    workdir = tmp_path / "killed"
    generator = random.Random(0)
    kills_during_a_save = 0
    for _ in range(20):
        before = metric_lines(workdir)[-1]["step"] if (workdir / "metrics.jsonl").exists() else 0
        process = run_experiment("wgan_gp", *args, f"--workdir={workdir}", wait=False, env=env)
        wait_for_step(workdir, process, before + 1)
        time.sleep(generator.uniform(0.0, 0.2))
        process.kill()
        process.communicate()
        assert process.returncode == -signal.SIGKILL, "the run ended before it was killed"
        # Orbax writes a checkpoint into a temporary directory and renames it when complete.
        kills_during_a_save += any(
            ".orbax-checkpoint-tmp" in p.name for p in (workdir / "checkpoints").iterdir()
        )
    final = run_experiment("wgan_gp", *args, f"--workdir={workdir}", env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    alone = run_experiment("wgan_gp", *args, f"--workdir={tmp_path / 'alone'}", env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    # Bit for bit the log of a run left alone: nothing duplicated, lost or changed.
    assert (workdir / "metrics.jsonl").read_text() == (
        tmp_path / "alone" / "metrics.jsonl"
    ).read_text()
    assert (workdir / "params.msgpack").read_bytes() == (
        tmp_path / "alone" / "params.msgpack"
    ).read_bytes()
    print(f"{kills_during_a_save} of 20 kills interrupted a checkpoint write")
    # A checkpoint every 4 steps takes about half the loop's time: 9 of 20 in one run; none of
    # 20 would have a chance of about 1e-5.
    assert kills_during_a_save >= 1


# Determinism.


def test_the_same_seed_gives_the_same_bits_and_another_seed_does_not(tmp_path):
    logs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runner.train_and_evaluate(make_run(seed=seed), tmp_path / name)
        logs[name] = (tmp_path / name / "metrics.jsonl").read_text()
    assert logs["a"] == logs["b"]
    assert (tmp_path / "a" / "params.msgpack").read_bytes() == (
        tmp_path / "b" / "params.msgpack"
    ).read_bytes()
    first, other = metric_lines(tmp_path / "a"), metric_lines(tmp_path / "c")
    assert all(x["critic_loss"] != y["critic_loss"] for x, y in zip(first, other))


@pytest.mark.slow
def test_the_same_seed_on_eight_devices_gives_the_same_bits(tmp_path):
    for name in ("a", "b"):
        runner.train_and_evaluate(make_run(num_devices=8), tmp_path / name)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (
        tmp_path / "b" / "metrics.jsonl"
    ).read_text()


@pytest.mark.parametrize(
    "raised, status, message",
    [
        (loop.Interrupted(41, signal.SIGINT), 130, "stopped by SIGINT after step 41"),
        (loop.Interrupted(41, signal.SIGTERM), 128 + signal.SIGTERM, "SIGTERM"),
        (KeyboardInterrupt(), 130, "error: interrupted outside a training step"),
        (loop.NonFiniteError("loss became non-finite"), 2, "error: training diverged: loss"),
        (workdir_lib.ResumeError("other settings"), 2, "error: other settings"),
        (ValueError("a bad row"), 2, "error: a bad row"),
    ],
    ids=["sigint", "sigterm", "ctrl_c_outside_a_step", "diverged", "resume", "user_error"],
)
def test_every_training_command_ends_early_with_one_sentence(raised, status, message, capsys):
    # The one boundary of the experiments and the paper programs (experiments.cli).
    from experiments import cli as program_cli

    with pytest.raises(SystemExit) as exit_info:
        with program_cli.training_boundary():
            raise raised
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RuntimeError, match="a bug"):  # Anything else is not a user's mistake.
        with program_cli.training_boundary():
            raise RuntimeError("a bug")
