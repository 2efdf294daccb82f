"""Checkpoints: a stopped run resumes bit for bit, and what cannot be resumed is refused."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import checkpoints, data, models, runner, step_config, train, workdir
from gans import run as run_lib
from gans import state as state_lib
from gans import workdir as workdir_lib

CONFIG = step_config.StepConfig(
    loss="wasserstein",
    z_dim=2,
    penalty="gradient_penalty",
    penalty_options=(("weight", 0.1),),
    ema_decay=0.9,
)
OPTIMIZER = state_lib.make_optimizer("adam", 1e-3, b1=0.5, b2=0.9)


def make_run(width=16, **options):
    settings = dict(
        dataset=data.get_dataset("8gaussians"),
        generator=models.MLPGenerator(out_dim=2, hidden=(width, width)),
        critic=models.MLPCritic(hidden=(width, width)),
        generator_tx=OPTIMIZER,
        critic_tx=OPTIMIZER,
        step=CONFIG,
        n_critic=2,
        batch_size=16,
        steps=12,
        log_every=2,
        checkpoint_every=4,
        num_samples=50,
    )
    settings.update(options)
    return run_lib.Run(**settings)


class Stop(Exception):
    pass


def stop_at(step):
    def on_progress(progress):
        if progress.step == step:
            raise Stop

    return on_progress


def test_a_run_stopped_and_resumed_equals_the_run_left_alone(tmp_path):
    runner.train_and_evaluate(make_run(), tmp_path / "alone", config={"width": 16})
    resumed = tmp_path / "resumed"
    # Stopped at the logging step 6: the latest checkpoint is step 4, and line 6 was written.
    with pytest.raises(Stop):
        runner.train_and_evaluate(make_run(), resumed, config={"width": 16}, on_progress=stop_at(6))
    assert checkpoints.latest_step(resumed) == 4
    assert json.loads((resumed / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    runner.train_and_evaluate(make_run(), resumed, config={"width": 16})
    # Bit for bit: the same log lines, none duplicated or lost, and the same parameters.
    alone = (tmp_path / "alone" / "metrics.jsonl").read_text()
    assert (resumed / "metrics.jsonl").read_text() == alone
    assert [json.loads(line)["step"] for line in alone.splitlines()] == [2, 4, 6, 8, 10, 12]
    params = "params.msgpack"
    assert (resumed / params).read_bytes() == (tmp_path / "alone" / params).read_bytes()
    # The last few checkpoints are kept.
    assert checkpoints.Checkpointer(resumed).all_steps() == [4, 8, 12]


@pytest.mark.parametrize("left", ["nothing", "a part"])
def test_an_old_checkpoint_half_removed_by_a_kill_does_not_stop_the_resume(tmp_path, left):
    # Orbax removes a checkpoint beyond max_to_keep file by file, then its folder: a kill in
    # between leaves the old step's folder emptied or in part. The newest is whole.
    runner.train_and_evaluate(make_run(checkpoint_every=2), tmp_path / "alone", config=None)
    resumed = tmp_path / "resumed"
    with pytest.raises(Stop):
        runner.train_and_evaluate(
            make_run(checkpoint_every=2), resumed, config=None, on_progress=stop_at(10)
        )
    assert checkpoints.Checkpointer(resumed).all_steps() == [4, 6, 8]
    old = resumed / "checkpoints" / "4"
    for path in sorted(old.rglob("*"), reverse=True)[: None if left == "nothing" else 2]:
        path.unlink() if path.is_file() else path.rmdir()
    runner.train_and_evaluate(make_run(checkpoint_every=2), resumed, config=None)
    alone = (tmp_path / "alone" / "metrics.jsonl").read_text()
    assert (resumed / "metrics.jsonl").read_text() == alone
    assert checkpoints.Checkpointer(resumed).all_steps() == [8, 10, 12]  # Removed anew.


def test_an_empty_latest_checkpoint_is_damage(tmp_path):
    runner.train_and_evaluate(make_run(steps=8), tmp_path, config=None)
    for path in sorted((tmp_path / "checkpoints" / "8").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(
        workdir.DamagedRunError, match="8' is damaged .an empty folder where the latest"
    ):
        runner.train_and_evaluate(make_run(steps=12), tmp_path, config=None)


def test_the_whole_state_round_trips(tmp_path):
    run = make_run()
    state = state_lib.create_state(
        generator=run.generator,
        critic=run.critic,
        generator_tx=OPTIMIZER,
        critic_tx=OPTIMIZER,
        config=CONFIG,
        example=jnp.zeros((4, 2)),
        key=jax.random.key(7),
    )
    state, _ = jax.jit(train.make_train_step(CONFIG))(state, {"x": jnp.ones((2, 4, 2))})
    saver = checkpoints.Checkpointer(tmp_path)
    saver.save(1, state)
    restored = saver.restore(state.replace(step=jnp.zeros((), jnp.int32)))
    as_data = lambda tree: jax.tree.map(
        lambda leaf: jax.random.key_data(leaf) if checkpoints._is_key(leaf) else leaf, tree
    )
    equal = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), as_data(restored), as_data(state))
    assert all(jax.tree.leaves(equal))
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    runner.train_and_evaluate(make_run(steps=4), tmp_path, config=None)
    with pytest.raises(workdir_lib.ResumeError, match="holds arrays of other shapes"):
        runner.train_and_evaluate(make_run(width=32, steps=8), tmp_path, config=None)


def test_other_settings_are_refused_before_anything_is_touched(tmp_path):
    runner.train_and_evaluate(make_run(steps=4), tmp_path, config={"width": 16, "steps": 4})
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(workdir_lib.ResumeError, match="--width was 16, now 32"):
        runner.train_and_evaluate(make_run(steps=4), tmp_path, config={"width": 32, "steps": 4})
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_a_run_that_fails_before_its_first_step_binds_no_folder(tmp_path):
    # A generator of 3-D points for 2-D data fails when the step is traced, after the folder
    # was checked and the checkpoints opened: the corrected command must not meet a record.
    broken = make_run(generator=models.MLPGenerator(out_dim=3, hidden=(16,)))
    with pytest.raises(TypeError):
        runner.train_and_evaluate(broken, tmp_path, config={"out_dim": 3})
    assert not any((tmp_path / name).exists() for name in ("config.json", "metrics.jsonl"))
    runner.train_and_evaluate(make_run(steps=2), tmp_path, config={"out_dim": 2})
    assert json.loads((tmp_path / "config.json").read_text()) == {"out_dim": 2}


@pytest.mark.parametrize(
    "log, damage",
    [
        ('{"step": 2}\ngarbage\n{"step": 4}\n', "line 2 is not a JSON record"),
        ('{"step": 2}\n[4]\n', "line 2 has no whole-number step"),
        ('{"step": 2}\n{"step": true}\n', "line 2 has no whole-number step"),
        ('{"step": 4}\n{"step": 2}\n', "line 2's step 2 does not follow step 4"),
        ('{"step": 2}\n{"st\n', "line 2 is not a JSON record"),  # Cut, then written after.
    ],
)
def test_a_damaged_log_refuses_the_run_and_is_kept_as_it_was(tmp_path, log, damage):
    runner.train_and_evaluate(make_run(steps=4), tmp_path, config={"width": 16})
    (tmp_path / "metrics.jsonl").write_text(log)
    with pytest.raises(workdir.DamagedRunError, match=damage):
        runner.train_and_evaluate(make_run(steps=8), tmp_path, config={"width": 16})
    assert (tmp_path / "metrics.jsonl").read_text() == log


def test_a_line_cut_short_by_a_kill_is_dropped_with_everything_after_it(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"st')
    workdir.truncate_log(log, 4)
    assert log.read_text() == '{"step": 2}\n{"step": 4}\n'


def test_unfinished_checkpoints_are_not_counted(tmp_path):
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir()
    assert checkpoints.latest_step(tmp_path) == 8
    assert checkpoints.latest_step(tmp_path / "nothing") is None


def test_the_loop_logs_evaluations_diagnostics_tensorboard_and_curves(tmp_path):
    run = make_run(steps=4, eval_every=2, diagnose_every=4, num_samples=50)
    runner.train_and_evaluate(run, tmp_path, config=None)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all("eval/wasserstein_1" in line and "eval/modes" in line for line in lines)
    assert "diag/activation_grad_norm/00_input" not in lines[0]
    assert lines[1]["diag/activation_grad_norm/03_Dense_2"] == pytest.approx(1.0)
    assert (tmp_path / "diagnostics" / "step_0000004.npz").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_diagnostics_are_refused_for_several_runs():
    with pytest.raises(ValueError, match="diagnostics run on one device and one run"):
        make_run(num_runs=2, diagnose_every=10)


# A run folder written by the framework at commit d92fb4c, before ``--model`` became a lookup in
# gans.models.registry: WGAN-GP's DCGAN on the digits with these flags, left as a kill during
# step 5 leaves it (the record, the checkpoint of step 4 and the log's first 4 lines; that run's
# later checkpoint, lines and end-of-run files removed).
RECORDED_RUN = pathlib.Path(__file__).parent / "data" / "run_d92fb4c"
RECORDED_FLAGS = (
    "--dataset=digits",
    "--width=8",
    "--z_dim=16",
    "--batch_size=16",
    "--checkpoint_every=2",
    "--log_every=1",
    "--sample_every=0",
    "--steps=6",
)


def _log(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _assert_lines_close(lines, expected):
    assert [line["step"] for line in lines] == [line["step"] for line in expected]
    for line, want in zip(lines, expected, strict=True):
        assert line.keys() == want.keys()
        np.testing.assert_allclose([line[k] for k in want], list(want.values()), rtol=1e-4)


def test_a_run_recorded_by_an_earlier_version_resumes_and_trains_as_a_new_one(tmp_path, commands):
    recorded = tmp_path / "recorded"
    shutil.copytree(RECORDED_RUN, recorded)
    before = _log(recorded)
    result = commands("wgan_gp", *RECORDED_FLAGS, f"--workdir={recorded}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from the checkpoint of step 4" in result.stdout
    resumed = _log(recorded)
    assert resumed[:4] == before  # Kept as they were.
    # The same settings trained from scratch today give the same six steps: the record and the
    # checkpoint were read as written, and the numbers did not move between the versions.
    fresh = tmp_path / "fresh"
    result = commands("wgan_gp", *RECORDED_FLAGS, f"--workdir={fresh}")
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_lines_close(resumed, _log(fresh))
