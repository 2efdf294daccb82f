"""A model, a data set, a loss and a periodic action of one's own, from this file alone:
nothing under gans/ or experiments/ is edited, and a run trains with them (README's "Adding a
model, a data set or a periodic action")."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gans import data, loop, losses, runner, train


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
    del data.DATASETS["corners"]


def test_a_model_a_dataset_a_loss_and_an_action_of_ones_own_train(tmp_path, corners, monkeypatch):
    traced = []

    def critic_loss(real_scores, fake_scores):
        traced.append(real_scores.shape)  # Once, when the step is traced.
        return squared_hinge_critic_loss(real_scores, fake_scores)

    squared_hinge = losses.LossFamily(critic_loss, losses.hinge_generator_loss)
    monkeypatch.setitem(losses.LOSSES, "squared_hinge", squared_hinge)
    sgd = optax.sgd(0.1)
    run = runner.Run(
        dataset=data.get_dataset("corners"),
        generator=ShiftGenerator(),
        critic=LineCritic(),
        generator_tx=sgd,
        critic_tx=sgd,
        step=train.StepConfig(loss="squared_hinge", z_dim=2, penalty="gradient_penalty"),
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
