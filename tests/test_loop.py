"""The loop as periodic actions, the workdir's record, and the one builder of InfoGAN inputs."""

import json
import math
import os
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gans import checkpoints, loop
from gans import workdir as workdir_lib
from gans.models import infogan


def _counting_step(state, batch):
    del batch
    return state + 1, {"loss": jnp.asarray(float(state + 1))}


class _Recorder(loop.PeriodicAction):
    def __init__(self, every, calls):
        super().__init__(every)
        self.calls = calls

    def apply(self, moment):
        self.calls.append(moment.step)

    def end(self, moment):
        self.calls.append(("end", None if moment is None else moment.step))

    def close(self):
        self.calls.append("close")


def test_a_periodic_action_applies_at_its_multiples_and_at_the_last_step():
    calls = []
    state = loop.train(
        0, _counting_step, lambda step: None, steps=10, actions=[_Recorder(4, calls)]
    )
    assert state == 10
    assert calls == [4, 8, 10, ("end", 10), "close"]


def test_a_resumed_loop_starts_after_its_checkpoint_and_every_zero_means_the_last_only():
    calls = []
    loop.train(
        5, _counting_step, lambda step: None, steps=7, actions=[_Recorder(0, calls)], start_step=5
    )
    assert calls == [7, ("end", 7), "close"]


def test_nothing_left_to_train_still_ends_every_action():
    calls = []
    loop.train(
        3, _counting_step, lambda step: None, steps=3, actions=[_Recorder(1, calls)], start_step=3
    )
    assert calls == [("end", None), "close"]


def test_actions_act_in_order_and_see_the_lines_earlier_ones_measured():
    seen = []

    class Measure(loop.PeriodicAction):
        def apply(self, moment):
            for line in moment.lines:
                line["extra"] = 2.0

    class Read(loop.PeriodicAction):
        def apply(self, moment):
            seen.append(dict(moment.lines[0]))

    loop.train(0, _counting_step, lambda step: None, steps=2, actions=[Measure(1), Read(1)])
    assert seen == [{"step": 1, "loss": 1.0, "extra": 2.0}, {"step": 2, "loss": 2.0, "extra": 2.0}]


def test_a_line_action_measures_only_at_logging_steps_that_are_its_multiples():
    measured = []

    def measure(state, k, step, workdir):
        measured.append(step)
        return {}

    action = loop.LineAction(3, 2, measure, lambda s: [s], [pathlib.Path(".")], at_last=False)
    loop.train(0, _counting_step, lambda step: None, steps=13, actions=[action])
    assert measured == [6, 12]  # 3 is not a logging step; 13, the last, not at_last.


def test_check_finite_names_every_bad_metric_and_the_run():
    def diverging(state, batch):
        values = jnp.asarray([1.0, math.nan])
        return state, {"loss": values, "penalty": jnp.asarray([1.0, math.inf])}

    with pytest.raises(
        loop.NonFiniteError, match="loss, penalty became non-finite at step 1 in run 1"
    ):
        loop.train(0, diverging, lambda s: None, steps=3, actions=[loop.CheckFinite(1)], num_runs=2)


def test_a_failed_loop_closes_its_actions_without_ending_them():
    calls = []

    def broken(state, batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        loop.train(0, broken, lambda s: None, steps=3, actions=[_Recorder(1, calls)])
    assert calls == ["close"]


def test_a_signal_finishes_the_step_lets_the_actions_see_it_stopping_then_interrupts():
    stopping = []

    def step_then_signal(state, batch):
        if state == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return state + 1, {"loss": jnp.asarray(0.0)}

    class Watch(loop.PeriodicAction):
        def __call__(self, moment):
            stopping.append((moment.step, moment.stopping))

    with pytest.raises(loop.Interrupted, match="stopped by SIGTERM after step 2"):
        loop.train(0, step_then_signal, lambda s: None, steps=9, actions=[Watch(1)])
    assert stopping == [(1, False), (2, True)]


def test_the_host_waits_for_a_step_before_dispatching_the_one_after_next(monkeypatch):
    # At most two steps in flight: an interrupt waits for them, not for a long queue.
    events = []
    monkeypatch.setattr(loop.jax, "block_until_ready", lambda x: events.append(("wait", x)))

    def step(state, batch):
        events.append(("step", state + 1))
        return state + 1, state + 1  # The metrics are the step's number.

    loop.train(0, step, lambda s: None, steps=4, actions=[])
    assert events == [
        ("step", 1),
        ("step", 2),
        ("wait", 1),
        ("step", 3),
        ("wait", 2),
        ("step", 4),
        ("wait", 3),
    ]


def test_checkpoints_follow_orbax_interval_plus_the_last_step(tmp_path):
    checkpointer = checkpoints.Checkpointer(tmp_path, max_to_keep=10, every=3)
    save = loop.Checkpoint(checkpointer, lambda state: {"x": jnp.asarray(state)})
    loop.train(0, _counting_step, lambda s: None, steps=7, actions=[save])
    assert checkpointer.all_steps() == [3, 6, 7]
    checkpointer.close()


def test_the_record_comparison_names_every_differing_flag_and_skips_resumable_ones(tmp_path):
    saved = {"seed": 0, "beta": 1.0, "log_every": 10, "step_config": {"loss": "wgan", "n": 5}}
    workdir_lib.write_config(tmp_path, saved)
    given = {"seed": 1, "beta": 4.0, "log_every": 99, "step_config": {"loss": "hinge", "n": 5}}
    with pytest.raises(workdir_lib.ResumeError) as error:
        workdir_lib.check_same_settings(tmp_path, given)
    message = str(error.value)
    assert "--beta was 1.0, now 4.0" in message and "--seed was 0, now 1" in message
    # The built settings repeat the flags: named only where no flag differs.
    assert "log_every" not in message and "step_config" not in message
    with pytest.raises(workdir_lib.ResumeError, match="--step_config.loss was 'wgan', now 'x'"):
        workdir_lib.check_same_settings(tmp_path, {**saved, "step_config": {"loss": "x", "n": 5}})
    workdir_lib.check_same_settings(tmp_path, {**saved, "log_every": 99})  # Resumable.


def test_a_record_older_than_a_setting_resumes_under_the_value_that_trained_it(tmp_path):
    # power_iterations came after runs were recorded: "per_update" is how they trained.
    saved = {"seed": 0, "step_config": {"loss": "hinge"}}
    workdir_lib.write_config(tmp_path, saved)
    same = {"seed": 0, "power_iterations": "per_update"}
    workdir_lib.check_same_settings(
        tmp_path, {**same, "step_config": {"loss": "hinge", "power_iterations": "per_update"}}
    )
    other = {"seed": 0, "power_iterations": "per_call"}
    with pytest.raises(workdir_lib.ResumeError, match="--power_iterations was None, now 'per_c"):
        workdir_lib.check_same_settings(
            tmp_path, {**other, "step_config": {"loss": "hinge", "power_iterations": "per_call"}}
        )


def test_an_empty_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--workdir is empty"):
        workdir_lib.check_workdir("")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_replace_whole_files_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "record.json"
    workdir_lib.write_atomically(path, json.dumps({"a": 1}))
    workdir_lib.write_atomically(path, b'{"a": 2}')
    assert json.loads(path.read_text()) == {"a": 2}
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_truncating_a_log_keeps_lines_up_to_the_step_and_drops_a_cut_line(tmp_path):
    log = tmp_path / workdir_lib.METRICS_FILE
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    workdir_lib.truncate_log(log, 2)
    assert workdir_lib.read_log(log) == [{"step": 1}, {"step": 2}]


def test_infogan_inputs_fix_the_category_and_draw_the_prior_otherwise():
    z = jnp.zeros((6, 3))
    key = jax.random.key(0)
    fixed, (categorical, continuous) = infogan.generator_input(z, key, 4, 2, jnp.full(6, 2))
    np.testing.assert_array_equal(fixed[:, 3:7], jax.nn.one_hot(jnp.full(6, 2), 4))
    np.testing.assert_array_equal(categorical, 2)
    assert fixed.shape == (6, 3 + 4 + 2) and jnp.all(jnp.abs(continuous) <= 1)
    drawn, codes = infogan.generator_input(z, key, 4, 2)
    expected = infogan.sample_codes(key, 6, 4, 2)
    np.testing.assert_array_equal(codes[0], expected[0])
    np.testing.assert_array_equal(drawn[:, 3:], infogan.codes_vector(*expected, 4))
