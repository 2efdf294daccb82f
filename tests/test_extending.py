"""A model, a data set, a loss and a periodic action of one's own, from this file alone:
nothing under gans/ or experiments/ is edited, and a run trains with them (README's "Adding a
model, a data set, a loss or a periodic action")."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import data, loop, losses, runner, step_config
from gans import run as run_lib


class LineCritic(nn.Module):
    """A critic of 2-D points: one linear unit, so its slope is its kernel."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(1)(x)[:, 0]


class ShiftGenerator(nn.Module):
    """A generator that only shifts its noise: ``G(z) = z[:, :2] + b``."""

    @nn.compact
    def __call__(self, z, train: bool = True):
        return z[:, :2] + self.param("b", nn.initializers.zeros, (2,))


class Corners(data.Dataset):
    """Four points, the corners of the unit square, drawn with replacement by item index."""

    name = "corners"
    element_shape = (2,)
    num_classes = 4

    def batch(self, index, batch_size, seed, group=1):
        rng = np.random.default_rng([seed, index])
        labels = rng.integers(0, 4, size=(group, batch_size))
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        return {"x": corners[labels], "y": labels.astype(np.int32)}


class GeneratorShift(loop.PeriodicAction):
    """Every ``every`` steps: logs the generator's shift and keeps it in ``shifts.json``."""

    at_last = False

    def __init__(self, every, path):
        super().__init__(every)
        self.path, self.seen = path, {}

    def apply(self, moment):
        shift = np.asarray(moment.state.generator_params["b"])
        self.seen[moment.step] = shift.tolist()
        for line in moment.lines:
            line["shift_norm"] = float(np.linalg.norm(shift))

    def end(self, moment):
        self.path.write_text(json.dumps(self.seen))


def squared_hinge_critic_loss(real_scores, fake_scores):
    """``E[max(0, 1 - D(x))^2] + E[max(0, 1 + D(x~))^2]``."""
    return jnp.mean(jax.nn.relu(1 - real_scores) ** 2) + jnp.mean(jax.nn.relu(1 + fake_scores) ** 2)


@pytest.fixture
def corners():
    data.register("corners", Corners)
    yield
    del data.DATASETS["corners"], data.OPTIONS["corners"]


def test_a_model_a_dataset_a_loss_and_an_action_of_ones_own_train(tmp_path, corners, monkeypatch):
    traced = []

    def critic_loss(real_scores, fake_scores):
        traced.append(real_scores.shape)  # Once, when the step is traced.
        return squared_hinge_critic_loss(real_scores, fake_scores)

    squared_hinge = losses.LossFamily(critic_loss, losses.hinge_generator_loss)
    monkeypatch.setitem(losses.LOSSES, "squared_hinge", squared_hinge)
    sgd = optax.sgd(0.1)
    run = run_lib.Run(
        dataset=data.get_dataset("corners"),
        generator=ShiftGenerator(),
        critic=LineCritic(),
        generator_tx=sgd,
        critic_tx=sgd,
        step=step_config.StepConfig(loss="squared_hinge", z_dim=2, penalty="gradient_penalty"),
        n_critic=1,
        batch_size=8,
        steps=4,
        log_every=1,
        checkpoint_every=0,
        num_samples=16,
    )
    action = GeneratorShift(every=2, path=tmp_path / "shifts.json")
    runner.train_and_evaluate(run, tmp_path / "run", actions=[action])
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    # The action acted at steps 2 and 4, and what it added to those lines was logged.
    assert ["shift_norm" in line for line in lines] == [False, True, False, True]
    shifts = json.loads((tmp_path / "shifts.json").read_text())
    assert sorted(shifts) == ["2", "4"]
    assert lines[3]["shift_norm"] == pytest.approx(np.linalg.norm(shifts["4"]))
    assert shifts["2"] != shifts["4"]  # The generator moved.
    assert traced == [(8,)]  # The step's critic loss was the new one, on batches of 8.


def test_a_registered_name_is_refused_a_second_time_and_a_prefix_always(corners):
    with pytest.raises(ValueError, match="dataset 'corners' is registered already"):
        data.register("corners", Corners)
    with pytest.raises(ValueError, match="must be non-empty and not begin with tfds:"):
        data.register("tfds:corners", Corners)
    assert isinstance(data.get_dataset("corners"), Corners)
    assert jax.tree.map(np.shape, data.get_dataset("corners").batch(0, 8, 0, 2)) == {
        "x": (2, 8, 2),
        "y": (2, 8),
    }


# A researcher's own experiment, whole: a model with an option of its own, a data set, an action
# with an interval flag of its own and the stock WGAN-GP settings, in one file outside the
# package, run as a command.
OWN_EXPERIMENT = """
import dataclasses
import json

import flax.linen as nn
import numpy as np
from absl import flags

from experiments import common, wgan_gp  # noqa: F401  (WGAN-GP's defaults)
from gans import data, loop
from gans.models import registry

flags.DEFINE_float("shift_init", 0.0, "The line model's initial shift.")
flags.DEFINE_integer("shift_every", 1, "Steps between logs of the generator's shift.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class LineOptions:
    shift_init: float = 0.0
    slope_init: float = 0.0  # No flag of this name: it keeps its default.

    def __post_init__(self):
        if abs(self.shift_init) > 10:
            raise ValueError(f"shift_init must be within [-10, 10], got {self.shift_init}.")


class Shift(nn.Module):
    shift_init: float

    @nn.compact
    def __call__(self, z, train=True):
        return z[:, :2] + self.param("b", nn.initializers.constant(self.shift_init), (2,))


class Line(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
        return nn.Dense(1)(x)[:, 0]


def build_line(spec, options):
    print(f"built {options}", flush=True)
    return Shift(options.shift_init), Line()


class Corners(data.Dataset):
    name, element_shape, num_classes = "corners", (2,), None

    def __init__(self, fraction=1.0):
        self.corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        self.corners = self.corners[: max(1, round(4 * fraction))]
        print(f"corners: {len(self.corners)} of 4", flush=True)

    def batch(self, index, batch_size, seed, group=1):
        rng = np.random.default_rng([seed, index])
        return {"x": self.corners[rng.integers(0, len(self.corners), size=(group, batch_size))]}


class ShiftLog(loop.PeriodicAction):
    at_last, resumable_settings = False, ("shift_every",)

    def __init__(self, every, path):
        super().__init__(every)
        self.path = path

    def apply(self, moment):
        shift = np.asarray(moment.state.generator_params["b"])
        for line in moment.lines:
            line["shift_norm"] = float(np.linalg.norm(shift))
        with self.path.open("a") as log:
            log.write(json.dumps([moment.step, shift.tolist()]) + "\\n")


registry.register("line", build_line, LineOptions)
data.register("corners", Corners, options=("fraction",))

if __name__ == "__main__":
    common.run(actions=lambda run, workdir: [ShiftLog(FLAGS.shift_every, workdir / "shifts.txt")])
"""


def _own_experiment(tmp_path, *args):
    import subprocess
    import sys

    script = tmp_path / "my_experiment.py"
    script.write_text(OWN_EXPERIMENT)
    common = ("--dataset=corners", "--data_fraction=0.5", "--z_dim=2", "--batch_size=8")
    common += ("--steps=2", "--log_every=1")
    return subprocess.run(
        [sys.executable, str(script), *common, f"--workdir={tmp_path / 'run'}", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_model_of_ones_own_is_one_file_and_its_flags_reach_its_options(tmp_path):
    result = _own_experiment(tmp_path, "--model=line", "--shift_init=0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built LineOptions(shift_init=0.5, slope_init=0.0)" in result.stdout
    assert "corners: 2 of 4" in result.stdout  # --data_fraction reached the data set.
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1, 2]
    # The action acted at every step (--shift_every=1), and the log kept what it added.
    shifts = [json.loads(line) for line in (tmp_path / "run" / "shifts.txt").open()]
    assert [step for step, _ in shifts] == [1, 2]
    assert lines[1]["shift_norm"] == pytest.approx(np.linalg.norm(shifts[1][1]))
    # Its interval may change on resume (it says so), the model's option may not.
    again = _own_experiment(tmp_path, "--model=line", "--shift_init=0.5", "--shift_every=2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the checkpoint of step 2" in again.stdout
    other = _own_experiment(tmp_path, "--model=line", "--shift_init=0.25")
    assert other.returncode != 0, other.stdout
    assert "holds a run with other settings (--shift_init was 0.5, now 0.25)" in other.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        # A flag of another model is refused, naming the models that take it, both ways.
        (("--model=line", "--depth=2"), "error: --depth applies to --model=mlp only, not line."),
        (("--model=mlp", "--shift_init=1"), "error: --shift_init applies to --model=line only"),
        # The options check themselves.
        (("--model=line", "--shift_init=11"), "error: shift_init must be within [-10, 10]"),
        # An unknown name lists the known ones, this file's among the built-in ones.
        (("--model=lines",), ("error: unknown model 'lines'; known models: ", " line, mlp")),
        # So is a flag of a data-set option that it does not take.
        (("--model=line", "--image_size=16"), "--image_size applies to digits, mnist5k"),
    ],
)
def test_a_model_of_ones_own_refuses_what_it_does_not_take(tmp_path, args, message):
    result = _own_experiment(tmp_path, *args)
    parts = (message,) if isinstance(message, str) else message
    assert result.returncode != 0, result.stdout[-2000:]
    assert all(part in result.stderr for part in parts), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_model_registry_refuses_a_taken_name_and_options_without_valid_defaults():
    from gans.models import registry

    build = lambda spec, options: (ShiftGenerator(), LineCritic())  # noqa: E731
    with pytest.raises(ValueError, match="model 'dcgan' is registered already"):
        registry.register("dcgan", build)
    with pytest.raises(ValueError, match="must be non-empty and not 'auto'"):
        registry.register("auto", build)
    with pytest.raises(ValueError, match="must be a dataclass"):
        registry.register("toy", build, dict)
    assert "toy" not in registry.BUILDERS
    assert registry.owners("minibatch_std") == ("dcgan", "mlp")
    assert registry.describe_owners("critic_norm") == "--model=dcgan, msg and resnet"
    assert registry.default_for((2,)) == "mlp" and registry.default_for((28, 28, 1)) == "dcgan"
    with pytest.raises(ValueError, match="--model=resnet needs image data; the data is 2-D"):
        registry.get("resnet").build(
            registry.Spec(element_shape=(2,)), registry.get("resnet").options()
        )
