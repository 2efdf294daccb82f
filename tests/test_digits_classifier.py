"""The digits classifier: held-out accuracy, the cache, and the metrics built on its features.

It trains once (a few seconds on a CPU) into a temporary cache shared by this module's tests.
"""

import shutil

import jax
import numpy as np
import pytest

from gans.metrics import digits_classifier as dc


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gans_cache")


@pytest.fixture(scope="module")
def classifier(cache_dir):
    return dc.load_digits_classifier(8, cache_dir)


def sorted_rows(images):
    rows = images.reshape(len(images), -1)
    return rows[np.lexsort(rows.T[::-1])]


def test_split_is_fixed_disjoint_and_80_20():
    split, again = dc.digits_split(8), dc.digits_split(8)
    assert len(split.train_images) == 1438 and len(split.held_out_images) == 359
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)
    # A partition: together the two splits hold every image exactly once (as a multiset).
    images, _ = dc.load_digits(8)
    both = np.concatenate([split.train_images, split.held_out_images])
    np.testing.assert_array_equal(sorted_rows(both), sorted_rows(images))
    assert set(split.held_out_labels.tolist()) == set(range(10))


def test_held_out_accuracy_is_at_least_95_percent(classifier):
    split = dc.digits_split(8)
    assert classifier.accuracy(split.held_out_images, split.held_out_labels) >= 0.95


def test_second_load_reads_the_cache_and_does_not_retrain(classifier, cache_dir, monkeypatch):
    assert dc.cache_path(8, cache_dir).exists()

    def fail(image_size, source_name):
        raise AssertionError("retrained although the cache holds valid parameters")

    monkeypatch.setattr(dc, "train_digits_classifier", fail)
    cached = dc.load_digits_classifier(8, cache_dir)
    images = dc.digits_split(8).held_out_images
    np.testing.assert_array_equal(cached.features(images), classifier.features(images))
    np.testing.assert_array_equal(cached.predict(images), classifier.predict(images))


def test_another_version_is_retrained_into_the_same_parameters(
    classifier, cache_dir, tmp_path, monkeypatch
):
    shutil.copy(dc.cache_path(8, cache_dir), dc.cache_path(8, tmp_path))
    train, calls = dc.train_digits_classifier, []

    def spy(image_size, source_name):
        calls.append(image_size)
        return train(image_size, source_name)

    monkeypatch.setattr(dc, "train_digits_classifier", spy)
    monkeypatch.setattr(dc, "VERSION", dc.VERSION + "-next")
    retrained = dc.load_digits_classifier(8, tmp_path)
    dc.load_digits_classifier(8, tmp_path)  # Rewritten under the new version: read back.
    assert calls == [8]
    # Training is deterministic: the same seeds give the same parameters, bit for bit.
    for a, b in zip(jax.tree.leaves(retrained.params), jax.tree.leaves(classifier.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(retrained.feature_std, classifier.feature_std)


def test_a_cache_file_missing_fields_is_retrained(classifier, tmp_path, monkeypatch):
    # As written before the feature statistics joined the file.
    stale = {"version": dc.VERSION, "image_size": 8, "params": classifier.params}
    dc.cache_path(8, tmp_path).write_bytes(dc.flax.serialization.msgpack_serialize(stale))
    monkeypatch.setattr(dc, "train_digits_classifier", lambda image_size, source_name: classifier)
    assert dc.load_digits_classifier(8, tmp_path) is classifier


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(dc.CACHE_ENV, str(tmp_path))
    assert dc.cache_path(16) == tmp_path / "digits_classifier_16.msgpack"
    monkeypatch.delenv(dc.CACHE_ENV)
    assert dc.cache_path(8).parts[-3:] == (".cache", "gans", "digits_classifier_8.msgpack")


def test_outputs_have_the_documented_shapes(classifier):
    images = dc.digits_split(8).held_out_images[:3]
    assert classifier.features(images).shape == (3, dc.NUM_FEATURES)
    assert classifier.logits(images[..., 0]).shape == (3, 10)  # A missing channel axis is added.
    assert classifier.predict(images).dtype == np.int32
    with pytest.raises(ValueError, match=r"\[N, 8, 8, 1\]"):
        classifier.features(np.zeros((2, 16, 16, 1)))


def test_fid_floor_is_small_next_to_broken_generators(classifier, cache_dir):
    floor = dc.digits_fid_floor(8, cache_dir)
    split = dc.digits_split(8)
    real = classifier.features(split.train_images)
    noise = np.random.default_rng(0).uniform(-1, 1, split.held_out_images.shape)
    one_class = split.held_out_images[split.held_out_labels == 3]
    assert 0 < floor < 0.2 * dc.frechet.frechet_distance(real, classifier.features(one_class))
    assert floor < 0.05 * dc.frechet.frechet_distance(real, classifier.features(noise))


def test_digits_sample_quality_of_held_out_images_is_near_perfect(classifier, cache_dir):
    split = dc.digits_split(8)
    result = dc.digits_sample_quality(split.held_out_images, cache_dir=cache_dir, kid_subsets=10)
    assert result["fid"] == pytest.approx(dc.digits_fid_floor(8, cache_dir))
    assert result["classes"] == 10 and result["kl_from_uniform"] < 0.05
    assert result["precision"] > 0.8 and result["recall"] > 0.8
    assert abs(result["kid_mean"]) < 3.0 * result["kid_std"]
    assert result["is_mean"] > 8.0
