"""TFDS image datasets behind the stateless `Dataset.batch`, read without TensorFlow.

A dataset prepared in TFDS's array_record format is a random-access sequence of examples
(`DatasetBuilder.as_data_source`, what `tfds.data_source` returns), so item i reads exactly
the examples `item_indices` names for it, on any host, after any restart. TFDS decodes them
with NumPy and PIL; this module crops, scales to [-1, 1] and resizes them with NumPy.

    dataset = get_dataset("celeb_a", data_dir="/data/tfds")  # x: [group, B, 64, 64, 3]
    dataset = get_dataset("tfds:svhn_cropped", image_size=16)  # Any TFDS image dataset.

Nothing here downloads. Prepare a dataset once, on a machine with internet access and
TensorFlow (TFDS's builders use it to read the raw files and encode images), with
`tfds build mnist --data_dir=DIR --file_format=array_record`, then pass data_dir=DIR.

Several processes (multi-host training) split every item: with P processes and a per-process
`batch_size` B, item i is the single-process item of batch size P * B, and process p reads
columns [p * B, (p + 1) * B) of each of its `group` batches. The processes' parts are disjoint
and, concatenated in process order along the batch axis, are that single-process item.
"""

import concurrent.futures
import os

import jax
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants

from gans.data.base import (
    TFDS_PREFIX,
    Dataset,
    Scoring,
    check_options,
    check_request,
    process_item_indices,
)
from gans.data.images import centre_crop, resize, to_model_range

# Options of the registered names; a caller's options override them.
NAMED_DATASETS: dict[str, dict] = {
    "mnist": {},
    "fashion_mnist": {},
    "cifar10": {},
    # The DCGAN CelebA setup of carpedm20/DCGAN-tensorflow (main.py: --input_height=108
    # --output_height=64 --crop; utils.py center_crop): the central 108x108 of the aligned
    # 178x218 faces, rows 55..162 and columns 35..142, resized to 64x64.
    "celeb_a": {"crop_size": 108, "image_size": 64},
}


def load(name: str, **options) -> "TFDSDataset":
    """Builds a registered TFDS set ("mnist", ...) or any TFDS image set ("tfds:NAME").

    Args:
      name: A key of `NAMED_DATASETS`, or TFDS_PREFIX + a TFDS name, which may carry a config
        and version as TFDS spells them ("tfds:svhn_cropped", "tfds:mnist:3.0.1").
      **options: `TFDSDataset` options; they override the registered name's defaults.
    """
    if name.startswith(TFDS_PREFIX):
        check_options(name, TFDSDataset, {"name": name, **options}, name)
        return TFDSDataset(name.removeprefix(TFDS_PREFIX), name=name, **options)
    if name not in NAMED_DATASETS:
        known = ", ".join(sorted(NAMED_DATASETS))
        raise ValueError(f"unknown TFDS dataset {name!r}; known: {known}, or {TFDS_PREFIX}NAME.")
    check_options(name, TFDSDataset, {"name": name, **options}, name)
    return TFDSDataset(name, name=name, **{**NAMED_DATASETS[name], **options})


class TFDSDataset(Dataset):
    """A TFDS image dataset, in epochs drawn without replacement (see `item_indices`).

    Each image is centre-cropped to `crop_size` if given, else, when it must be resized and is
    not square, to its central square (so resizing keeps the aspect ratio); then scaled from
    uint8 to [-1, 1] and resized to `image_size` with an antialiased linear filter
    (`resize`). "y" is the dataset's `label` feature when that is a ClassLabel.

    Attributes:
      tfds_name: The TFDS name read, e.g. "svhn_cropped".
      num_examples: Examples in the split, shared by all processes.
      process_index: This process's part of every item.
      process_count: Number of parts every item is split into.
    """

    def __init__(
        self,
        tfds_name: str,
        *,
        name: str | None = None,
        split: str = "train",
        data_dir: str | None = None,
        image_size: int | None = None,
        crop_size: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        read_threads: int = min(8, os.cpu_count() or 1),
    ):
        """Opens the split for random access; raises ValueError if it is not prepared.

        Args:
          tfds_name: The TFDS name, with an optional config and version ("mnist:3.0.1").
          name: Registry name; defaults to tfds_name.
          split: A TFDS split, slices included ("train", "train[:90%]", "train+test").
          data_dir: The TFDS data directory; None means TFDS's default
            (TFDS_DATA_DIR, else ~/tensorflow_datasets).
          image_size: Side of the square output images; None keeps the (cropped) size.
          crop_size: Side of the central square crop taken before resizing; None for none.
          process_index: This process's part of each item; defaults to jax.process_index().
          process_count: Number of processes sharing each item; defaults to
            jax.process_count().
          read_threads: Threads reading and decoding the examples of an item (default: the
            CPU count, at most 8); 1 reads them on the calling thread.
        """
        self.tfds_name = tfds_name
        self.name = tfds_name if name is None else name
        for option, value in (("image_size", image_size), ("crop_size", crop_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{option} must be a positive integer or None, got {value!r}.")
        self.image_size, self.crop_size = image_size, crop_size
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index must be in [0, process_count), got {self.process_index} of "
                f"{self.process_count}."
            )
        if not isinstance(read_threads, int) or read_threads < 1:
            raise ValueError(f"read_threads must be a positive integer, got {read_threads!r}.")

        builder = _prepared_builder(tfds_name, data_dir)
        # A plain dict: TFDS's FeaturesDict has no `get`.
        features = dict(builder.info.features.items())
        image = features.get("image")
        if not isinstance(image, tfds.features.Image) or image.np_dtype != np.uint8:
            raise ValueError(
                f"{self.name!r} has no uint8 'image' feature to train on; its features are "
                f"{sorted(features)}."
            )
        label = features.get("label")
        # Only a ClassLabel says how many classes there are; other labels are not used.
        self.num_classes = (
            label.num_classes if isinstance(label, tfds.features.ClassLabel) else None
        )
        self.element_shape = self._output_shape(image.shape)
        if tfds_name.split(":")[0] == "mnist":
            # The pixels of --dataset=mnist5k (gans.data.mnist5k), so its classifier reads them.
            self.scoring = Scoring("mnist5k")
        try:
            self._source = builder.as_data_source(split=split)
        except NotImplementedError as error:  # Prepared as TFRecord, which has no random access.
            raise ValueError(
                f"{self.name!r} is prepared in {builder.info.file_format} files, which cannot be "
                f"read by index; rebuild it with `tfds build {tfds_name} "
                f"--data_dir={_data_root(data_dir)} --file_format=array_record`."
            ) from error
        except ValueError as error:  # TFDS says which splits exist; we say which dataset.
            raise ValueError(f"cannot read split {split!r} of {self.name!r}: {error}") from error
        self.num_examples = len(self._source)
        self._readers = None
        if read_threads > 1:  # Threads start on first use, so an unused dataset costs none.
            self._readers = concurrent.futures.ThreadPoolExecutor(
                read_threads, thread_name_prefix=f"read {self.name}"
            )

    def _output_shape(self, image_shape: tuple[int | None, ...]) -> tuple[int, int, int]:
        height, width, channels = image_shape
        smallest = None if height is None or width is None else min(height, width)
        if self.crop_size is not None and smallest is not None and self.crop_size > smallest:
            raise ValueError(
                f"crop_size {self.crop_size} exceeds the {height}x{width} images of {self.name!r}."
            )
        if self.image_size is not None:
            return (self.image_size, self.image_size, channels)
        if self.crop_size is not None:
            return (self.crop_size, self.crop_size, channels)
        if smallest is None:
            raise ValueError(
                f"the images of {self.name!r} vary in size; pass image_size to resize them."
            )
        return (height, width, channels)

    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        """Item `index` of the stream `seed`: this process's `batch_size` of each batch.

        Returns:
          {"x": float32 [group, batch_size, *element_shape] in [-1, 1]}, plus "y": int32
          [group, batch_size] when the dataset has class labels.
        """
        check_request(index, batch_size, seed, group)
        local = process_item_indices(
            index,
            batch_size,
            seed,
            group,
            self.num_examples,
            self.name,
            self.process_index,
            self.process_count,
        )
        indices = [int(i) for i in local]
        if self._readers is None:
            examples = [self._source[i] for i in indices]
        else:  # Decoding (PIL) releases the GIL, so threads decode a batch in parallel.
            examples = list(self._readers.map(self._source.__getitem__, indices))
        images = self._preprocess([example["image"] for example in examples])
        item = {"x": images.reshape((group, batch_size) + self.element_shape)}
        if self.num_classes is not None:
            labels = np.asarray([example["label"] for example in examples], dtype=np.int32)
            item["y"] = labels.reshape(group, batch_size)
        return item

    def _preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 [H, W, C] images (sizes may differ) -> float32 [n, *element_shape]."""
        cropped = [self._crop(np.asarray(image)) for image in images]
        if len({image.shape for image in cropped}) == 1:  # One resize for the whole batch.
            return resize(to_model_range(np.stack(cropped)), self.image_size)
        return np.stack(
            [resize(to_model_range(image[None]), self.image_size)[0] for image in cropped]
        )

    def _crop(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        side = self.crop_size
        if side is None and self.image_size is not None and height != width:
            side = min(height, width)
        if side is None:
            return image
        if side > min(height, width):
            raise ValueError(f"crop_size {side} exceeds a {height}x{width} image of {self.name!r}.")
        return centre_crop(image, side)


def _data_root(data_dir: str | None) -> str:
    return str(data_dir) if data_dir is not None else tfds_constants.DATA_DIR


def _prepared_builder(tfds_name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of a dataset prepared under data_dir; never downloads or builds."""
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    except tfds.core.DatasetNotFoundError as error:
        # TFDS's own message lists every dataset it knows: hundreds of lines.
        raise ValueError(
            f"TFDS has no dataset {tfds_name!r}, neither a builder nor prepared files in "
            f"{_data_root(data_dir)}; see https://www.tensorflow.org/datasets/catalog for names."
        ) from error
    if not builder.is_prepared():
        root = _data_root(data_dir)
        raise ValueError(
            f"TFDS dataset {tfds_name!r} is not prepared in {root}: on a machine with internet "
            f"access and TensorFlow installed (TFDS needs it to build), run `tfds build "
            f"{tfds_name} --data_dir={root} --file_format=array_record` and make that "
            "directory this data_dir."
        )
    return builder
