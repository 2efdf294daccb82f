"""Stacked digits: the data set's draw, the mode scores and their bound, and the study's table."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
import scipy.stats
from cli import FLAGS, run_experiment

from experiments.paper import stacked_digits, stacked_digits_protocol, stacked_digits_report
from gans import data, runner, sampling
from gans.data import stacked
from gans.metrics import digits_classifier
from gans.metrics import stacked as stacked_metrics


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A classifier cache of this module's own, also where the study loads it from."""
    directory = tmp_path_factory.mktemp("gans_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(digits_classifier.CACHE_ENV, str(directory))
        yield directory


@pytest.fixture(scope="module")
def classifier(cache_dir):
    return digits_classifier.load_digits_classifier(8, cache_dir)


@pytest.fixture(scope="module")
def dataset():
    return data.get_dataset("stacked_digits")


def test_every_channel_is_one_of_the_digits_and_the_label_is_its_mode(dataset):
    item = dataset.batch(7, 32, seed=3, group=5)
    assert item["x"].shape == (5, 32, 8, 8, 3) and item["x"].dtype == np.float32
    assert item["y"].shape == (5, 32) and item["y"].dtype == np.int32
    images, labels = data.load_digits(8)
    taken = stacked.stack_indices(3, 7, 5 * 32, len(images))
    x, y = item["x"].reshape(-1, 8, 8, 3), item["y"].reshape(-1)
    for c in range(3):
        np.testing.assert_array_equal(x[..., c : c + 1], images[taken[:, c]])
    np.testing.assert_array_equal(
        y, 100 * labels[taken[:, 0]] + 10 * labels[taken[:, 1]] + labels[taken[:, 2]]
    )
    # Each channel is one of the 1,797 images, by value: the same range as DigitsDataset's.
    known = {image.tobytes() for image in images}
    assert all(x[k, ..., c : c + 1].tobytes() in known for k in range(len(x)) for c in range(3))
    assert x.min() == -1.0 and x.max() == 1.0


def test_all_1000_modes_are_drawn_uniformly_with_independent_channels(dataset):
    y = dataset.batch(0, 100_000, seed=0)["y"][0]
    counts = np.bincount(y, minlength=1000)
    assert len(counts) == 1000 and counts.min() > 0
    digits = np.stack([y // 100, y // 10 % 10, y % 10], axis=1)
    # The channels' labels are independent (contingency tables of each pair) and the modes
    # follow the digits' class law cubed (sklearn's classes hold 174 to 183 digits).
    for a, b in ((0, 1), (0, 2), (1, 2)):
        table = np.histogram2d(digits[:, a], digits[:, b], bins=10)[0]
        assert scipy.stats.chi2_contingency(table).pvalue > 1e-3
    frequencies = np.bincount(data.load_digits(8)[1]) / 1797
    law = np.einsum("i,j,k->ijk", frequencies, frequencies, frequencies).ravel()
    assert scipy.stats.chisquare(counts, law * len(y)).pvalue > 1e-3


def test_batches_are_a_function_of_index_and_seed_and_seeds_are_independent(dataset):
    first = dataset.batch(11, 64, seed=5, group=2)
    np.testing.assert_array_equal(
        first["x"], data.get_dataset("stacked_digits").batch(11, 64, 5, 2)["x"]
    )
    resumed = next(data.prefetch(dataset, 64, seed=5, group=2, start=11))
    np.testing.assert_array_equal(resumed["y"], first["y"])
    for other in (dataset.batch(12, 64, 5, 2), dataset.batch(11, 64, 6, 2)):
        # Two independent streams agree on a mode about once in a thousand examples.
        assert np.mean(other["y"] == first["y"]) < 0.02
    a, b = (dataset.batch(0, 20_000, seed)["y"][0] for seed in (0, 1))
    assert abs(np.mean(a == b) - 1e-3) < 1e-3
    # The stream is not the digits' own epoch stream of the same seed.
    digits_order = data.item_indices(0, 64, 5, 1, 1797, "digits")
    assert not np.array_equal(stacked.stack_indices(5, 0, 64, 1797)[:, 0], digits_order)


def test_the_image_size_and_fraction_options_are_the_digits_ones():
    large = data.get_dataset("stacked_digits", image_size=16, fraction=0.1)
    assert large.element_shape == (16, 16, 3) and len(large.digit_images) < 200
    assert large.batch(0, 8, 0)["x"].shape == (1, 8, 16, 16, 3)
    with pytest.raises(ValueError, match="one of"):
        data.get_dataset("stacked_digits", image_size=13)


def test_mode_scores_of_a_uniform_histogram_and_of_a_single_mode():
    uniform = stacked_metrics.mode_scores(np.repeat(np.arange(1000), 26))
    assert uniform["modes"] == 1000 and uniform["kl"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(uniform["histogram"], np.full(1000, 26))
    single = stacked_metrics.mode_scores(np.full(26_000, 417))
    assert single["modes"] == 1 and single["kl"] == pytest.approx(math.log(1000))
    # Any histogram: the KL is scipy's, empty bins contributing nothing (PacGAN's rule).
    modes = np.random.default_rng(0).integers(0, 300, 5000)
    random = stacked_metrics.mode_scores(modes)
    counts = np.bincount(modes, minlength=1000)
    assert random["modes"] == np.count_nonzero(counts) <= 300
    assert random["kl"] == pytest.approx(scipy.stats.entropy(counts, np.full(1000, 1e-3)))


def test_modes_read_channel_0_as_hundreds(classifier):
    split = digits_classifier.digits_split(8)
    right = np.flatnonzero(classifier.predict(split.held_out_images) == split.held_out_labels)
    chosen = [right[split.held_out_labels[right] == d][0] for d in (4, 0, 7)]
    image = np.concatenate([split.held_out_images[k] for k in chosen], axis=-1)[None]
    assert stacked_metrics.stacked_modes(image, classifier).tolist() == [407]
    assert stacked_metrics.stacked_mode_scores(image, classifier)["histogram"][407] == 1
    with pytest.raises(ValueError, match=r"\[N, S, S, 3\]"):
        stacked_metrics.stacked_modes(split.held_out_images, classifier)


def test_the_classifier_reads_real_stacks_about_as_often_as_its_accuracy_cubed(classifier):
    bound = stacked_metrics.stacked_accuracy_bound(classifier)
    assert bound["digit_accuracy"] > 0.97
    assert bound["independent_stack_accuracy"] == pytest.approx(bound["digit_accuracy"] ** 3)
    assert bound["stack_accuracy"] == pytest.approx(bound["independent_stack_accuracy"], abs=0.01)
    # Real data cover every mode, and sit near the KL floor of 26,000 draws ((K - 1) / 2N).
    assert bound["real_modes"] == 1000 and 0.01 < bound["real_kl"] < 0.1
    assert 0 < bound["data_kl"] < 1e-3


def _record(modes, kls, steps=2000):
    settings = dataclasses.asdict(stacked_digits_protocol.Settings(steps=steps))
    runs = [{"modes": m, "kl": k} for m, k in zip(modes, kls)]
    return {
        "settings": settings,
        "runs": runs,
        "seconds_per_step": 0.034,
        "train_seconds": 60.0,
        "score_seconds": 6.0,
    }


BOUND = {
    "num_samples": 26_000,
    "digit_accuracy": 0.989,
    "independent_stack_accuracy": 0.967,
    "stack_accuracy": 0.968,
    "real_modes": 1000,
    "real_kl": 0.047,
    "data_kl": 0.0003,
}


def test_the_table_renders_ours_the_real_data_and_the_published_rows(tmp_path):
    records = {
        "ns_gan": _record([100, 200, 300], [3.0, 2.0, 1.0]),
        "wgan_gp": _record([990] * 3, [0.1] * 3),
    }
    path = tmp_path / "table.md"
    settings = stacked_digits_protocol.Settings(steps=2000)
    stacked_digits_report.write_table(records, BOUND, path, settings, "python -m x")
    text = path.read_text()
    assert "- **Not the protocol: 2,000 generator steps, not 100,000.**" in text
    assert (
        "| ours, 2,000 steps, 3 seeds | DCGAN, 8x8 digits | NS-GAN (DCGAN) | 200.0 ± 100.0 ["
        in text
    )
    assert "| 2.00 ± 1.00 [" in text and "| 100, 200, 300 | 0.034 | 1.1 min |" in text
    assert "| WGAN-GP (lambda 10, n_critic 5) | 990.0 ± 0.0 [990.0, 990.0] |" in text
    assert "| real stacks of held-out digits | 26,000 samples | data | 1000 | 0.047 |" in text
    assert "| VEEGAN T2 | DCGAN, 28x28 | DCGAN | 99 | 3.4 |" in text
    assert "| PacGAN T2 | VEEGAN's | PacDCGAN2 | 1000.0 ± 0.00 | 0.06 ± 0.003 |" in text
    assert "98.9 % of the held-out digits" in text and "96.8 %" in text
    assert stacked_digits_report.departures(stacked_digits_protocol.Settings()) == []
    changed = stacked_digits_protocol.Settings(steps=20000, dcgan_lr=1e-4)
    assert stacked_digits_report.departures(changed) == [
        "20,000 generator steps, not 100,000",
        "the DCGAN rows' Adam rate 0.0001, not 0.0002",
    ]


def test_the_study_runs_on_stacked_mnist_with_a_narrower_critic():
    # PacGAN's Table 3: the critic at a quarter of the generator's width, on MNIST's stacks.
    settings = stacked_digits_protocol.Settings(
        dataset="stacked_mnist5k", image_size=16, width=64, critic_width=16, steps=2
    )
    run = stacked_digits_protocol.build_run("unrolled5", settings)
    assert run.dataset.name == "stacked_mnist5k" and run.dataset.element_shape == (16, 16, 3)
    assert (run.generator.width, run.critic.width) == (64, 16)
    assert stacked_digits_protocol.classifier(settings).source == "mnist5k"
    assert stacked_digits_report.departures(settings)[-1].startswith(
        "a critic of width 16 against the generator's 64"
    )
    # A record made before these settings existed was trained with their defaults.
    old = dataclasses.asdict(stacked_digits_protocol.Settings(steps=2))
    for name in ("dataset", "image_size", "critic_width"):
        del old[name]
    assert stacked_digits.same_settings(old, dataclasses.asdict(stacked_digits_protocol.Settings(steps=2)))
    assert not stacked_digits.same_settings(old, dataclasses.asdict(settings))
    with pytest.raises(ValueError, match="--dataset must be stacked_digits or stacked_mnist5k"):
        stacked_digits_protocol.Settings(dataset="digits")


def test_the_minibatch_std_row_scores_each_example_with_its_group_of_four():
    settings = stacked_digits_protocol.Settings(steps=2, seeds=1)
    run = stacked_digits_protocol.build_run("minibatch_std", settings)
    assert (run.critic.minibatch_std, run.critic.minibatch_std_group) == (True, 4)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
    variables = run.critic.init(jax.random.key(1), x, train=False)
    # Changing example 5 moves the scores of its group (4-7) and leaves the other group's.
    moved = x.at[5].multiply(3.0)
    before, after = (np.asarray(run.critic.apply(variables, v, train=False)) for v in (x, moved))
    np.testing.assert_array_equal(before[:4], after[:4])
    assert np.all(np.abs(before[[4, 6, 7]] - after[[4, 6, 7]]) > 0)


def test_rows_are_data_and_bad_names_are_one_sentence():
    assert stacked_digits_protocol.ROWS["pacgan2"].step_options() == {"pack": 2}
    assert stacked_digits_protocol.ROWS["unrolled5"].step_options() == {"unroll_steps": 5}
    assert stacked_digits_protocol.ROWS["ns_gan"].step_options() == {}
    with pytest.raises(ValueError, match="unknown row 'pacgan'; known rows: ns_gan, wgan_gp"):
        stacked_digits_protocol.check_rows(["pacgan"])
    with pytest.raises(ValueError, match="--steps must be >= 1, got 0"):
        stacked_digits_protocol.Settings(steps=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--rows=ns_gan,pacgan",), "unknown row 'pacgan'; known rows: ns_gan, wgan_gp, pacgan2"),
        (("--steps=0",), "--steps must be >= 1, got 0."),
        # With the flagfile: every flag it sets is the program's.
        (
            (f"--flagfile={FLAGS / 'paper_stacked_digits.cfg'}", "--redraw"),
            "results.json does not exist; train first",
        ),
    ],
)
def test_bad_input_to_the_study_is_one_sentence_and_touches_nothing(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("mine")
    table = tmp_path / "table.md"
    result = run_experiment(
        "paper.stacked_digits", f"--workdir={tmp_path}", f"--table={table}", *args, cwd=tmp_path
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_tiny_study_trains_scores_keeps_finished_rows_and_matches_the_runner(tmp_path, cache_dir):
    tiny = stacked_digits_protocol.Settings(
        steps=2,
        seeds=2,
        batch_size=16,
        z_dim=8,
        width=8,
        num_samples=600,
        log_every=1,
        checkpoint_every=0,
    )
    table, picture = tmp_path / "table.md", tmp_path / "samples.png"
    shown = stacked_digits.run_table(
        ["ns_gan"],
        tiny,
        workdir=tmp_path / "runs",
        table=table,
        picture=picture,
        log=lambda line: None,
    )
    record = shown["ns_gan"]
    assert record["seeds"] == [0, 1] and record["seconds_per_step"] > 0
    assert all(1 <= r["modes"] <= 600 and 0 <= r["kl"] <= math.log(1000) for r in record["runs"])
    saved = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert saved["rows"]["ns_gan"]["runs"] == record["runs"]
    # The bound is measured on as many real stacks: 600 draws cover 1000 (1 - e^-0.6) = 451.
    assert saved["bound"]["num_samples"] == 600 and 400 < saved["bound"]["real_modes"] < 500
    assert "| ours, 2 steps, 2 seeds | DCGAN, 8x8 digits | NS-GAN (DCGAN) |" in table.read_text()
    # The picture is drawn from the last checkpoints: redrawn, it is the same file.
    assert picture.read_bytes().startswith(b"\x89PNG")
    redrawn, repictured = tmp_path / "redrawn.md", tmp_path / "redrawn.png"
    stacked_digits.redraw(
        ["ns_gan"], tiny, workdir=tmp_path / "runs", table=redrawn, picture=repictured, command="c"
    )
    assert repictured.read_bytes() == picture.read_bytes()
    ours = [line for line in table.read_text().splitlines() if line.startswith("| ours")]
    assert ours and [line for line in redrawn.read_text().splitlines() if line in ours] == ours
    # Run again: the finished row is kept, not retrained.
    lines = []
    stacked_digits.run_table(
        ["ns_gan"], tiny, workdir=tmp_path / "runs", table=table, log=lines.append
    )
    assert lines == ["ns_gan: finished earlier, kept"]
    # The scores are those the classifier gives the run's samples (gans.evaluation's draw).
    run = stacked_digits_protocol.build_run("ns_gan", tiny)
    states, step = runner.restore(run, tmp_path / "runs" / "ns_gan")
    samples, _ = sampling.draw_samples(run.step, states[1], 600, jax.random.key(1 + 4))
    classifier = digits_classifier.load_digits_classifier(8, cache_dir)
    again = stacked_metrics.stacked_mode_scores(samples, classifier)
    assert step == 2 and again["modes"] == record["runs"][1]["modes"]
    assert again["kl"] == pytest.approx(record["runs"][1]["kl"])
