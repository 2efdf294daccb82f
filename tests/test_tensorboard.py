"""TensorBoard shows what a run wrote, each once, read back with TensorBoard's own reader: its
pictures, its diagnostics' histograms, its record and its metrics; and every command takes
JAX's own flags."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorboardX
from cli import ROOT, environment, run_experiment
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from test_checkpoints import Stop, make_run, stop_at

from gans import runner, tensorboard_log

WIDTH = 16
# The critic of make_run: 2-D input, two hidden layers of WIDTH, one score; weights and biases.
CRITIC_WEIGHTS = (2 + 1) * WIDTH + (WIDTH + 1) * WIDTH + (WIDTH + 1) * 1
RECORD = {"width": WIDTH, "step_config": {"loss": "wasserstein", "n_critic": 2}}
EVERY_STEP = {"log_every": 1, "sample_every": 1, "diagnose_every": 1}


def read_events(path):
    """Every event under ``path`` (0 keeps all of a kind), as TensorBoard loads them."""
    guidance = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    events = event_accumulator.EventAccumulator(str(path), size_guidance=guidance)
    events.Reload()
    return events


def steps(events):
    return [event.step for event in events]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run stopped after step 3 was shown but before it was saved (so resumed from
    step 2), trained to its end, then run again with nothing left to train."""
    workdir = tmp_path_factory.mktemp("run")
    run = make_run(width=WIDTH, steps=4, checkpoint_every=2, **EVERY_STEP)
    with pytest.raises(Stop):
        runner.train_and_evaluate(run, workdir, config=RECORD, on_progress=stop_at(3))
    runner.train_and_evaluate(run, workdir, config=RECORD)
    runner.train_and_evaluate(run, workdir, config=RECORD)
    return workdir, read_events(workdir / "tensorboard")


def test_every_picture_drawn_is_shown_at_its_step(trained):
    workdir, events = trained
    images = events.Images("samples")
    assert steps(images) == [1, 2, 3, 4]  # Step 4's is the final picture, drawn at the end.
    for image in images:
        shown = Image.open(io.BytesIO(image.encoded_image_string))
        drawn = Image.open(workdir / "samples" / f"step_{image.step:07d}.png")
        assert (image.width, image.height) == shown.size == drawn.size
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(drawn.convert("RGB")))


def test_the_critic_weight_histogram_counts_every_weight_at_each_diagnosed_step(trained):
    workdir, events = trained
    histograms = events.Histograms("diag/critic_weight_histogram")
    assert histograms
    for event in histograms:
        value = event.histogram_value
        saved = np.load(workdir / "diagnostics" / f"step_{event.step:07d}.npz")
        edges = saved["diag__critic_weight_histogram_edges"]
        assert value.num == sum(value.bucket) == CRITIC_WEIGHTS
        assert list(value.bucket) == saved["diag__critic_weight_histogram"].tolist()
        assert np.allclose(value.bucket_limit, edges[1:])
        assert edges[0] <= value.min < value.max <= edges[-1]


def test_each_examples_gradient_norm_is_in_the_histogram_of_its_points(trained):
    workdir, events = trained
    log = (workdir / "metrics.jsonl").read_text().splitlines()
    lines = {line["step"]: line for line in map(json.loads, log)}
    for points in ("real", "fake", "interpolates"):
        histograms = events.Histograms(f"diag/critic_grad_norms_{points}")
        assert steps(histograms) == [1, 2, 3, 4]
        for event in histograms:
            value, line = event.histogram_value, lines[event.step]
            assert value.num == len(
                np.load(workdir / "diagnostics" / f"step_{event.step:07d}.npz")[
                    f"diag__critic_grad_norms_{points}"
                ]
            )
            assert value.sum / value.num == pytest.approx(line[f"diag/critic_grad_norm_{points}"])
            assert value.max == pytest.approx(line[f"diag/critic_grad_norm_{points}_max"])


def test_the_record_is_a_table_of_its_settings_written_once(trained):
    _, events = trained
    (text,) = events.Tensors("config/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert text.step == 0
    assert f"| width | {WIDTH} |" in table.splitlines()
    assert '| step_config.loss | "wasserstein" |' in table.splitlines()


def test_the_scalars_are_the_metrics_log(trained):
    workdir, events = trained
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for name in ("critic_loss", "diag/critic_grad_norm_real"):
        logged = events.Scalars(name)
        assert steps(logged) == [line["step"] for line in lines]
        assert [e.value for e in logged] == pytest.approx([line[name] for line in lines])


def test_a_resumed_run_shows_every_step_once(trained):
    workdir, events = trained
    assert len(list((workdir / "tensorboard").iterdir())) == 3  # One event file per attempt.
    assert steps(events.Images("samples")) == [1, 2, 3, 4]
    assert steps(events.Histograms("diag/critic_weight_histogram")) == [1, 2, 3, 4]
    assert steps(events.Scalars("critic_loss")) == [1, 2, 3, 4]
    assert steps(events.Tensors("config/text_summary")) == [0]


def test_counts_are_read_with_their_edges_and_other_arrays_as_values(tmp_path):
    edges = np.linspace(-1.0, 1.0, 5)
    path = tmp_path / "step_0000007.npz"
    np.savez(
        path,
        diag__weights=np.array([0, 3, 1, 0]),
        diag__weights_edges=edges,
        diag__weights__Dense_0__kernel=np.array([0, 2, 0, 0]),  # Nested: the same edges.
        diag__norms=np.array([0.5, 1.0, 1.5]),
    )
    with tensorboardX.SummaryWriter(str(tmp_path / "board")) as board:
        tensorboard_log._add_histograms(board, path, 7)
    events = read_events(tmp_path / "board")
    for tag, counts in [
        ("diag/weights", [0, 3, 1, 0]),
        ("diag/weights/Dense_0/kernel", [0, 2, 0, 0]),
    ]:
        (event,) = events.Histograms(tag)
        assert (event.step, list(event.histogram_value.bucket)) == (7, counts)
        assert list(event.histogram_value.bucket_limit) == edges[1:].tolist()
    (norms,) = events.Histograms("diag/norms")
    value = norms.histogram_value
    assert (value.num, value.min, value.max, value.sum) == (3, 0.5, 1.5, 3.0)
    assert "diag/weights_edges" not in events.Tags()["histograms"]


# A paper program's shape: its own flag, absl's app.run, and the check every program makes.
PROGRAM = """
import json, sys
from absl import app, flags
from experiments import cli

flags.DEFINE_integer("bins", 4, "a flag of the program's own")

def main(argv):
    cli.start_training_program(argv)
    seen = {"program_flags": [f.name for f in cli.program_flags()]}
    if "jax" in sys.modules:
        import jax

        seen.update(x64=jax.config.jax_enable_x64, log_compiles=jax.config.jax_log_compiles)
    print(json.dumps(seen))

app.run(main)
"""


def run_program(*args):
    command = [sys.executable, "-c", PROGRAM, *args]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_jax_flags_reach_jax_from_the_command_line_and_flagfiles(tmp_path):
    flagfile = tmp_path / "jax.cfg"
    flagfile.write_text("--jax_enable_x64\n--bins=8\n")
    seen = run_program(f"--flagfile={flagfile}", "--jax_log_compiles=true")
    assert seen["x64"] and seen["log_compiles"]
    assert not any(name.startswith("jax_") for name in seen["program_flags"])


def test_a_command_line_without_them_parses_without_jax():
    seen = run_program("--bins=8")
    assert "x64" not in seen  # The program found JAX unimported.


def test_an_experiment_takes_jax_flags_and_still_checks_its_own():
    done = run_experiment("wgan_gp", "--jax_platforms=cpu", "--steps=0", "--workdir=unused")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: --steps must be >= 1, got 0."


def test_the_loop_imports_tensorboardx_without_pytorch_and_leaves_pytorch_importable():
    # PyTorch is installed here (the test extra): tensorboardX would import it, 1.1 s of every
    # command's start, only to accept its tensors.
    program = (
        "import sys; from gans import tensorboard_log as log; tb = log._import_tensorboardx(); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "import torch; assert torch.zeros(2).numpy().tolist() == [0.0, 0.0]; "
        "print(tb.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tensorboardX"
