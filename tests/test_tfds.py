"""Property tests for the TFDS datasets, on TFDS's mocked examples: no files, no network.

`tfds.testing.mock_data` makes `as_data_source` return deterministic random examples with the
real feature specs (shapes, label classes); one test writes a tiny array_record dataset to
check the real read and decode path, which the mock skips, without TensorFlow.
"""

import io
import threading
import time
from unittest import mock

import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from gans import data
from gans.data import tfds as tfds_data

NUM_EXAMPLES = 24  # Mocked examples per split.
BATCH_SIZE, GROUP = 4, 2  # So an epoch of the mock is 24 // 8 = 3 items.

# name: (element_shape, num_classes) of the registered sets at their default options.
NAMED = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "celeb_a": ((64, 64, 3), None),
}


@pytest.fixture
def mocked_tfds():
    # mock_data makes `as_data_source` serve generated examples but leaves `is_prepared`
    # looking for files, which the loader checks first so that it never reaches a download.
    with (
        tfds.testing.mock_data(num_examples=NUM_EXAMPLES),
        mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True),
    ):
        yield


def _source_images(tfds_name: str) -> np.ndarray:
    """The mocked split's images, uint8 [N, H, W, C], read independently of gans.data."""
    source = tfds.data_source(tfds_name, split="train")
    return np.stack([source[i]["image"] for i in range(len(source))])


def _rows(x: np.ndarray) -> np.ndarray:
    """One row per example: [..., *element_shape] -> [n, prod(element_shape)]."""
    return x.reshape(-1, int(np.prod(x.shape[-3:])))


def test_registry_names_the_tfds_sets_of_the_module():
    assert set(data.TFDS_DATASETS) == set(tfds_data.NAMED_DATASETS) == set(NAMED)
    assert set(data.TFDS_DATASETS) <= set(data.DATASETS)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_sets_give_documented_items_in_minus_one_one(mocked_tfds, name):
    element_shape, num_classes = NAMED[name]
    dataset = data.get_dataset(name, data_dir="/unused/under/the/mock")
    assert dataset.name == name and dataset.mixture is None
    assert dataset.element_shape == element_shape and dataset.num_classes == num_classes
    assert dataset.num_examples == NUM_EXAMPLES
    item = dataset.batch(1, BATCH_SIZE, seed=0, group=GROUP)
    assert item["x"].shape == (GROUP, BATCH_SIZE) + element_shape
    assert item["x"].dtype == np.float32
    assert -1.0 <= item["x"].min() < item["x"].max() <= 1.0
    if num_classes is None:
        assert set(item) == {"x"}
    else:
        assert set(item) == {"x", "y"}
        assert item["y"].shape == (GROUP, BATCH_SIZE) and item["y"].dtype == np.int32
        assert 0 <= item["y"].min() and item["y"].max() < num_classes


@pytest.mark.parametrize("name", sorted(NAMED))
def test_items_are_a_pure_function_of_seed_and_index(mocked_tfds, name):
    first = data.get_dataset(name, read_threads=3).batch(5, BATCH_SIZE, seed=3, group=GROUP)
    # Another instance, reading on the calling thread: the threads only share out the work.
    again = data.get_dataset(name, read_threads=1).batch(5, BATCH_SIZE, seed=3, group=GROUP)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    dataset = data.get_dataset(name)
    assert not np.array_equal(first["x"], dataset.batch(5, BATCH_SIZE, seed=4, group=GROUP)["x"])
    assert not np.array_equal(first["x"], dataset.batch(6, BATCH_SIZE, seed=3, group=GROUP)["x"])


def test_an_epoch_is_every_example_once_with_its_label_and_the_next_reshuffles(mocked_tfds):
    dataset = data.get_dataset("mnist")
    source = tfds.data_source("mnist", split="train")
    images = _rows(tfds_data.to_model_range(_source_images("mnist")))
    label_of = {row.tobytes(): source[i]["label"] for i, row in enumerate(images)}
    assert len(label_of) == NUM_EXAMPLES  # Mocked images are distinct, so they name examples.
    items_per_epoch = NUM_EXAMPLES // (BATCH_SIZE * GROUP)

    def epoch(number):
        items = [
            dataset.batch(number * items_per_epoch + i, BATCH_SIZE, seed=7, group=GROUP)
            for i in range(items_per_epoch)
        ]
        return _rows(np.concatenate([item["x"] for item in items], axis=1)), np.concatenate(
            [item["y"] for item in items], axis=1
        ).reshape(-1)

    for rows, labels in (epoch(0), epoch(1)):
        assert sorted(row.tobytes() for row in rows) == sorted(label_of)
        assert [label_of[row.tobytes()] for row in rows] == labels.tolist()
    assert not np.array_equal(epoch(0)[0], epoch(1)[0])


@pytest.mark.parametrize("index, group", [(4, GROUP), (0, 5)])  # 5 * 6 > 24: one draw per batch.
def test_processes_read_disjoint_parts_whose_union_is_the_single_process_item(
    mocked_tfds, index, group
):
    process_count, local_batch = 3, 2
    whole = data.get_dataset("cifar10", process_index=0, process_count=1).batch(
        index, process_count * local_batch, seed=1, group=group
    )
    parts = [
        data.get_dataset("cifar10", process_index=p, process_count=process_count).batch(
            index, local_batch, seed=1, group=group
        )
        for p in range(process_count)
    ]
    for part in parts:
        assert part["x"].shape == (group, local_batch, 32, 32, 3)
    for key in ("x", "y"):
        np.testing.assert_array_equal(np.concatenate([part[key] for part in parts], 1), whole[key])
    for batch in range(group):  # Within each batch the processes never share an example.
        rows = _rows(np.concatenate([part["x"][batch] for part in parts]))
        assert len(np.unique(rows, axis=0)) == process_count * local_batch


def test_processes_default_to_jax_and_must_be_in_range(mocked_tfds):
    dataset = data.get_dataset("mnist")
    assert (dataset.process_index, dataset.process_count) == (
        jax.process_index(),
        jax.process_count(),
    )
    with pytest.raises(ValueError, match="process_index"):
        data.get_dataset("mnist", process_index=2, process_count=2)


def test_celeb_a_is_the_central_108_square_resized_to_64(mocked_tfds):
    source = _source_images("celeb_a")
    assert source.shape[1:] == (218, 178, 3)
    item = data.get_dataset("celeb_a").batch(0, NUM_EXAMPLES, seed=0)
    expected = _rows(tfds_data.resize(tfds_data.to_model_range(source[:, 55:163, 35:143]), 64))
    # The item is the whole split in some order: each image must be one expected image.
    actual = _rows(item["x"])
    match = np.abs(actual[:, None] - expected[None]).sum(-1).argmin(1)
    assert sorted(match.tolist()) == list(range(NUM_EXAMPLES))
    np.testing.assert_allclose(actual, expected[match], atol=1e-6)


def test_any_tfds_image_set_by_name_with_resizing(mocked_tfds):
    svhn = data.get_dataset("tfds:svhn_cropped", image_size=16)
    assert svhn.name == "tfds:svhn_cropped" and svhn.tfds_name == "svhn_cropped"
    assert svhn.element_shape == (16, 16, 3) and svhn.num_classes == 10
    item = svhn.batch(0, BATCH_SIZE, seed=0, group=GROUP)
    assert item["x"].shape == (GROUP, BATCH_SIZE, 16, 16, 3) and item["y"].max() < 10
    # tf_flowers images vary in size (the mock draws 5 to 49 pixels a side): each is cut to
    # its central square and resized on its own, shrunk or enlarged.
    flowers = data.get_dataset("tfds:tf_flowers", image_size=12)
    item = flowers.batch(0, BATCH_SIZE, seed=0, group=GROUP)
    assert item["x"].shape == (GROUP, BATCH_SIZE, 12, 12, 3) and flowers.num_classes == 5
    assert -1.0 <= item["x"].min() and item["x"].max() <= 1.0
    with pytest.raises(ValueError, match="vary in size; pass image_size"):
        data.get_dataset("tfds:tf_flowers")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"crop_size": 40}, "crop_size 40 exceeds the 32x32 images"),
        ({"read_threads": 0}, "read_threads must be a positive integer"),
        ({"colour": True}, "rejected options"),
    ],
)
def test_bad_options_raise_value_error(mocked_tfds, options, message):
    with pytest.raises(ValueError, match=message):
        data.get_dataset("cifar10", **options)


def test_a_set_prepared_without_random_access_says_how_to_rebuild_it():
    def tfrecord_only(*args, **kwargs):
        raise NotImplementedError("Random access data source for file format tfrecord")

    with (
        tfds.testing.mock_data(as_data_source_fn=tfrecord_only),
        mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True),
        pytest.raises(ValueError, match="--file_format=array_record"),
    ):
        data.get_dataset("mnist")


@pytest.mark.parametrize(
    "name, tfds_name", [(n, n) for n in sorted(NAMED)] + [("tfds:svhn_cropped", "svhn_cropped")]
)
def test_an_unprepared_set_says_how_to_prepare_it_and_downloads_nothing(tmp_path, name, tfds_name):
    with pytest.raises(ValueError) as error:
        data.get_dataset(name, data_dir=str(tmp_path))
    message = str(error.value)
    command = f"tfds build {tfds_name} --data_dir={tmp_path} --file_format=array_record"
    assert command in message and "TensorFlow" in message
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_tfds_name_gets_a_short_message(tmp_path):
    with pytest.raises(ValueError, match="no dataset 'no_such_set'") as error:
        data.get_dataset("tfds:no_such_set", data_dir=str(tmp_path))
    assert len(str(error.value)) < 300  # Not TFDS's list of every dataset it knows.


class TinyDigits(tfds.core.GeneratorBasedBuilder):
    """Seven 6x5 grey images of value 30 * i, label i % 3, stored as TFDS stores real sets."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(6, 5, 1)),
            "label": tfds.features.ClassLabel(num_classes=3),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(7):
            # PNG bytes: encoding a NumPy image would need TensorFlow.
            png = io.BytesIO()
            PIL.Image.fromarray(np.full((6, 5), 30 * i, np.uint8)).save(png, format="png")
            yield i, {"image": png.getvalue(), "label": i % 3}


def test_real_array_record_files_are_read_and_decoded_without_tensorflow(tmp_path):
    TinyDigits(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    dataset = data.get_dataset("tfds:tiny_digits", data_dir=str(tmp_path), image_size=4)
    assert dataset.element_shape == (4, 4, 1) and dataset.num_examples == 7
    item = dataset.batch(0, 3, seed=0, group=2)
    # Constant images stay constant through the resize and identify their example.
    example = np.rint((item["x"][..., 0, 0, 0] + 1) * 127.5 / 30).astype(int)
    expected = np.broadcast_to((example * 30 / 127.5 - 1)[..., None, None, None], item["x"].shape)
    np.testing.assert_allclose(item["x"], expected, atol=1e-6)
    assert len(set(example.reshape(-1).tolist())) == 6
    np.testing.assert_array_equal(item["y"], example % 3)
    with pytest.raises(ValueError, match="cannot read split 'test'"):
        data.get_dataset("tfds:tiny_digits", data_dir=str(tmp_path), split="test")


@pytest.mark.parametrize(
    "shape, size", [((28, 28), 16), ((108, 108), 64), ((8, 8), 32), ((50, 37), 20)]
)
def test_resize_is_jax_linear_antialiased_resize(shape, size):
    images = np.random.default_rng(0).uniform(-1, 1, (2, *shape, 3)).astype(np.float32)
    expected = jax.image.resize(images, (2, size, size, 3), method="linear", antialias=True)
    np.testing.assert_allclose(tfds_data.resize(images, size), expected, atol=2e-6)


# ----------------------------------------------------------------------------- prefetch


class _Recorder(data.Dataset):
    """Items that name their index; records every call and fails on `fail_at`."""

    name, element_shape = "recorder", (1,)

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = [], fail_at

    def batch(self, index, batch_size, seed, group=1):
        self.calls.append((index, batch_size, seed, group, threading.current_thread().name))
        if index == self.fail_at:
            raise ValueError(f"unreadable item {index}")
        return {"x": np.full((group, batch_size, 1), index + seed, np.float32)}


def test_prefetch_yields_exactly_the_items_of_batches():
    digits = data.get_dataset("digits")
    stream = data.prefetch(digits, 16, seed=3, group=2, start=27, size=3)
    for index in range(27, 33):  # Crosses digits' epoch boundary at item 28.
        item, expected = next(stream), digits.batch(index, 16, seed=3, group=2)
        for key in expected:
            np.testing.assert_array_equal(item[key], expected[key])
    stream.close()


def test_prefetch_reads_ahead_in_order_on_one_thread_and_stops_when_closed():
    recorder = _Recorder()
    stream = data.prefetch(recorder, 2, seed=10, group=3, start=5, size=2)
    assert [next(stream)["x"][0, 0, 0] for _ in range(3)] == [15.0, 16.0, 17.0]
    stream.close()  # Returns once the item being read is done; the rest are cancelled.
    calls_at_close = list(recorder.calls)
    indices = [call[0] for call in calls_at_close]
    assert indices == list(range(5, 5 + len(indices))) and 3 <= len(indices) <= 5
    assert {call[1:4] for call in calls_at_close} == {(2, 10, 3)}
    assert threading.current_thread().name not in {call[4] for call in calls_at_close}
    time.sleep(0.05)
    assert recorder.calls == calls_at_close


def test_prefetch_raises_a_read_error_at_its_item():
    stream = data.prefetch(_Recorder(fail_at=2), 1, seed=0)
    assert [next(stream)["x"].item() for _ in range(2)] == [0.0, 1.0]
    with pytest.raises(ValueError, match="unreadable item 2"):
        next(stream)


def test_prefetch_checks_its_arguments():
    with pytest.raises(ValueError, match="prefetch size"):
        data.prefetch(_Recorder(), 1, seed=0, size=0)  # Checked at the call, not on first use.
    with pytest.raises(ValueError, match="batch index"):
        data.prefetch(_Recorder(), 1, seed=0, start=-1)
