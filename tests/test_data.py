"""Property tests for the toy distributions, the digits and the stateless iterator."""

import functools
import math

import jax
import numpy as np
import pytest
import sklearn.datasets

from gans import data
from gans.data import toy


def _nearest_modes(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each point's nearest centre, and the point's offset from it."""
    modes = np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return modes, points - centres[modes]


@functools.partial(jax.jit, static_argnums=(0, 2))  # One compile beats op-by-op dispatch.
def _sample_jitted(distribution, key: jax.Array, n: int) -> jax.Array:
    return distribution.sample(key, n)


def _sample(distribution, n: int, seed: int = 0) -> np.ndarray:
    return np.asarray(_sample_jitted(distribution, jax.random.key(seed), n))


# ----------------------------------------------------------------------------- toy sets


def test_eight_gaussians_centres_lie_on_a_circle_45_degrees_apart():
    mixture = toy.eight_gaussians()
    assert mixture.num_modes == 8 and mixture.centres.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixture.centres, axis=1), 2 / 1.414, rtol=1e-6)
    angles = np.sort(np.degrees(np.arctan2(mixture.centres[:, 1], mixture.centres[:, 0])))
    np.testing.assert_allclose(np.diff(angles), 45.0, atol=1e-3)
    assert mixture.sigma == pytest.approx(0.02 / 1.414)


def test_eight_gaussians_samples_cover_every_mode_uniformly_and_tightly():
    mixture = toy.eight_gaussians()
    points = _sample(mixture, 4096)
    assert points.shape == (4096, 2) and points.dtype == np.float32
    modes, offsets = _nearest_modes(points, mixture.centres)
    assert np.abs(offsets).max() < 5 * mixture.sigma
    counts = np.bincount(modes, minlength=8)
    expected = 4096 / 8
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 7 degrees of freedom: P(chi2 > 40) ~ 1e-6, while a dropped mode alone adds ~512.
    assert counts.min() > 0 and chi_square < 40, counts


def test_twenty_five_gaussians_form_a_5x5_grid_at_spacing_2_over_2828():
    mixture = toy.twenty_five_gaussians()
    assert mixture.num_modes == 25
    assert mixture.sigma == pytest.approx(0.05 / 2.828)
    spacing = 2 / 2.828
    np.testing.assert_allclose(
        np.unique(mixture.centres[:, 0]), spacing * np.arange(-2, 3), rtol=1e-6
    )
    distances = np.linalg.norm(mixture.centres[:, None] - mixture.centres[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_allclose(distances.min(axis=1), spacing, rtol=1e-6)


@pytest.mark.parametrize(
    "mixture, sigma",
    [
        (toy.ring(num_modes=12, radius=2.0, sigma=0.03), 0.03),
        (toy.grid(side=3, spacing=1.5, sigma=0.07), 0.07),
        (toy.twenty_five_gaussians(), 0.05 / 2.828),
    ],
)
def test_samples_spread_around_their_centre_with_the_configured_sigma(mixture, sigma):
    modes, offsets = _nearest_modes(_sample(mixture, 20_000), mixture.centres)
    assert np.unique(modes).size == mixture.num_modes
    np.testing.assert_allclose(offsets.mean(axis=0), 0.0, atol=0.05 * sigma)
    np.testing.assert_allclose(offsets.std(axis=0), sigma, rtol=0.03)


def test_ring_and_grid_centres_are_as_configured():
    ring = toy.ring(num_modes=6, radius=3.0)
    np.testing.assert_allclose(np.linalg.norm(ring.centres, axis=1), 3.0, rtol=1e-6)
    second_centre = [3 * math.cos(math.pi / 3), 3 * math.sin(math.pi / 3)]
    np.testing.assert_allclose(ring.centres[1], second_centre, rtol=1e-6)
    assert ring.sigma == 0.01 and ring.name == "ring6"
    grid = toy.grid()
    assert grid.num_modes == 25 and grid.sigma == 0.05
    assert set(map(tuple, grid.centres.tolist())) == {
        (i, j) for i in (-4, -2, 0, 2, 4) for j in (-4, -2, 0, 2, 4)
    }


def test_mixture_rejects_malformed_centres_and_sigma():
    with pytest.raises(ValueError, match=r"\[K, 2\]"):
        toy.GaussianMixture("bad", np.zeros((3, 3)), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        toy.GaussianMixture("bad", np.zeros((3, 2)), 0.0)


def test_swiss_roll_matches_sklearn_statistics():
    ours = _sample(toy.SwissRoll(), 20_000)
    roll_3d, _ = sklearn.datasets.make_swiss_roll(20_000, noise=0.25, random_state=0)
    theirs = roll_3d[:, [0, 2]] / 7.5  # The WGAN-GP toy code's view of the roll.
    np.testing.assert_allclose(ours.mean(axis=0), theirs.mean(axis=0), atol=0.05 * theirs.std())
    np.testing.assert_allclose(ours.std(axis=0), theirs.std(axis=0), rtol=0.03)


def test_noiseless_swiss_roll_radius_is_the_uniform_angle():
    # Without noise, |(t cos t, t sin t)| = t, uniform on [1.5 pi, 4.5 pi].
    radius = np.linalg.norm(_sample(toy.SwissRoll(noise=0.0), 20_000), axis=1) * 7.5
    assert radius.min() >= 1.5 * np.pi - 1e-4 and radius.max() <= 4.5 * np.pi + 1e-4
    np.testing.assert_allclose(
        np.quantile(radius, [0.25, 0.5, 0.75]), np.pi * np.array([2.25, 3.0, 3.75]), rtol=0.02
    )


# ----------------------------------------------------------------------------- digits


def test_digits_are_real_images_scaled_to_minus_one_one():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert set(labels.tolist()) == set(range(10))
    np.testing.assert_array_equal(images[..., 0], sklearn.datasets.load_digits().images / 8 - 1)


def test_upsampled_digits_stay_in_range_and_are_cached():
    images, labels = data.load_digits(16)
    assert images.shape == (1797, 16, 16, 1) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert data.load_digits(image_size=16)[0] is images  # Computed once.
    assert not images.flags.writeable


@pytest.mark.parametrize("image_size", [7, 28, 64])
def test_digits_reject_unsupported_sizes(image_size):
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        data.load_digits(image_size)


# ----------------------------------------------------------------------------- iterator

# One item shape throughout, so each toy sampler compiles once for the whole file.
BATCH_SIZE, GROUP = 32, 2
# TFDS sets need prepared files; tests/test_tfds.py covers them on mocked TFDS data.
OFFLINE_DATASETS = sorted(set(data.DATASETS) - set(data.TFDS_DATASETS))


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_batches_are_a_pure_function_of_seed_and_index(name):
    dataset = data.get_dataset(name)
    first = dataset.batch(7, BATCH_SIZE, seed=3, group=GROUP)
    again = dataset.batch(7, BATCH_SIZE, seed=3, group=GROUP)
    other_seed = dataset.batch(7, BATCH_SIZE, seed=4, group=GROUP)
    other_index = dataset.batch(8, BATCH_SIZE, seed=3, group=GROUP)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["x"], other_seed["x"])
    assert not np.array_equal(first["x"], other_index["x"])


@pytest.mark.parametrize("name", OFFLINE_DATASETS)
def test_batches_have_the_documented_shapes_and_types(name):
    dataset = data.get_dataset(name)
    item = dataset.batch(0, BATCH_SIZE, seed=0, group=GROUP)
    assert item["x"].shape == (GROUP, BATCH_SIZE) + dataset.element_shape
    assert np.asarray(item["x"]).dtype == np.float32
    if dataset.num_classes is None:
        assert set(item) == {"x"}
    else:
        assert item["y"].shape == (GROUP, BATCH_SIZE) and item["y"].dtype == np.int32
    assert (dataset.mixture is None) == (
        name in ("swissroll", "digits", "stacked_digits", "mnist5k", "stacked_mnist5k")
    )
    # Every image set here is scored by a classifier of its own; the 2-D sets by their modes.
    assert (dataset.scoring is None) == (len(dataset.element_shape) == 1)


# Digits has 1797 // 64 = 28 items per epoch, so its case resumes mid-epoch and crosses one.
@pytest.mark.parametrize("name, num_items, start", [("8gaussians", 6, 3), ("digits", 60, 50)])
def test_resuming_at_step_k_continues_the_same_stream(name, num_items, start):
    dataset = data.get_dataset(name)
    stream = dataset.batches(BATCH_SIZE, seed=1, group=GROUP)
    from_zero = [next(stream) for _ in range(num_items)]
    resumed = dataset.batches(BATCH_SIZE, seed=1, group=GROUP, start=start)
    for expected in from_zero[start:]:
        actual = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key])


def test_toy_item_is_the_documented_sample():
    dataset = data.get_dataset("ring8")
    key = jax.random.fold_in(jax.random.key(5), 11)
    expected = np.asarray(_sample_jitted(dataset.mixture, key, GROUP * BATCH_SIZE))
    actual = dataset.batch(11, BATCH_SIZE, seed=5, group=GROUP)["x"]
    np.testing.assert_allclose(actual, expected.reshape(GROUP, BATCH_SIZE, 2), atol=1e-6)


def test_toy_sampler_compiles_once_per_shape_and_mixture():
    compiled_before = data._sample_item._cache_size()
    for index in range(20):  # Fresh datasets, seeds and indices: still one compile at most.
        data.get_dataset("8gaussians").batch(index, BATCH_SIZE, seed=index % 3, group=GROUP)
    assert data._sample_item._cache_size() - compiled_before <= 1


def test_digits_epoch_draws_without_replacement_and_reshuffles():
    images, _ = data.load_digits()
    dataset = data.get_dataset("digits")
    items_per_epoch = 1797 // (2 * 100)

    def epoch_images(epoch):
        items = [
            dataset.batch(epoch * items_per_epoch + i, batch_size=100, seed=0, group=2)
            for i in range(items_per_epoch)
        ]
        return np.concatenate([item["x"].reshape(-1, 64) for item in items])

    first, second = epoch_images(0), epoch_images(1)
    assert len(np.unique(images.reshape(-1, 64), axis=0)) == 1797  # So images identify examples.
    assert len(np.unique(first, axis=0)) == len(first) == items_per_epoch * 200
    assert len(np.unique(second, axis=0)) == len(second)
    assert not np.array_equal(first, second)


def test_digits_labels_travel_with_their_images():
    images, labels = data.load_digits()
    item = data.get_dataset("digits").batch(3, batch_size=50, seed=2)
    rows = {image.tobytes(): label for image, label in zip(images, labels)}
    assert [rows[image.tobytes()] for image in item["x"][0]] == item["y"][0].tolist()


def test_digits_items_larger_than_the_dataset_draw_each_batch_without_replacement():
    dataset = data.get_dataset("digits")
    item = dataset.batch(0, batch_size=600, seed=0, group=4)  # 2,400 > 1,797 examples
    assert item["x"].shape == (4, 600, 8, 8, 1)
    for batch in item["x"]:
        assert len(np.unique(batch.reshape(600, -1), axis=0)) == 600
    np.testing.assert_array_equal(item["x"], dataset.batch(0, batch_size=600, seed=0, group=4)["x"])
    with pytest.raises(ValueError, match="1797"):
        dataset.batch(0, batch_size=1800, seed=0)


def test_digits_accepts_image_size():
    dataset = data.get_dataset("digits", image_size=32)
    assert dataset.element_shape == (32, 32, 1)
    assert dataset.batch(0, batch_size=4, seed=0)["x"].shape == (1, 4, 32, 32, 1)


@pytest.mark.parametrize(
    "request_args",
    [
        dict(index=-1, batch_size=8, seed=0),
        dict(index=0, batch_size=0, seed=0),
        dict(index=0, batch_size=8, seed=-1),
        dict(index=0, batch_size=8, seed=0, group=0),
    ],
)
def test_invalid_requests_raise_value_error(request_args):
    with pytest.raises(ValueError):
        data.get_dataset("8gaussians").batch(**request_args)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        data.get_dataset("lsun")
    assert "'lsun'" in str(error.value) and "tfds:NAME" in str(error.value)
    assert ", ".join(sorted(data.DATASETS)) in str(error.value)
    assert set(data.DATASETS) == {
        "8gaussians",
        "25gaussians",
        "swissroll",
        "ring8",
        "grid25",
        "digits",
        "stacked_digits",
        "mnist5k",
        "stacked_mnist5k",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "celeb_a",
    }


def test_unknown_option_raises_value_error():
    with pytest.raises(ValueError, match="'8gaussians'"):
        data.get_dataset("8gaussians", sigma=0.1)


def test_a_digits_fraction_keeps_every_class_in_proportion_and_nests():
    _, labels = data.load_digits()
    quarter, tenth = data.digits_subset(0.25, labels), data.digits_subset(0.1, labels)
    for kept, fraction in ((quarter, 0.25), (tenth, 0.1)):
        counts, full = np.bincount(labels[kept], minlength=10), np.bincount(labels, minlength=10)
        np.testing.assert_array_equal(counts, np.maximum(1, np.round(fraction * full)))
    assert set(tenth) <= set(quarter)
    np.testing.assert_array_equal(data.digits_subset(1.0, labels), np.arange(len(labels)))
    dataset = data.get_dataset("digits", fraction=0.1)
    assert len(dataset.images) == len(tenth)
    assert set(dataset.batch(0, 64, seed=0)["y"].reshape(-1)) <= set(range(10))
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        data.digits_subset(0.0, labels)
