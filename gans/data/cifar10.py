"""CIFAR-10 from its python release, converted once into an ``.npz`` (no TensorFlow, no TFDS).

The release (Krizhevsky, *Learning Multiple Layers of Features from Tiny Images*, 2009) is one
tar.gz of pickled batches: ``data_batch_1`` .. ``data_batch_5`` (the 50,000 training images)
and ``test_batch`` (10,000). Each pickle holds ``b"data"``, uint8 ``[10000, 3072]`` whose rows
are an image's red, green and blue 32x32 planes in turn, and ``b"labels"``, 10,000 ints in
0..9. The ``.npz`` holds ``images``, uint8 ``[N, 32, 32, 3]``, and ``labels``, int64 ``[N]``,
which ``gans.data.get_dataset("npz:" + path)`` reads::

    path = cifar10.prepare("/content/data")  # Downloads 170 MB once, converts once.
    dataset = gans.data.get_dataset(f"npz:{path}", image_size=32)
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import tarfile
import tempfile
import urllib.request

import numpy as np

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
IMAGE_SIZE = 32
CHANNELS = 3
_FOLDER = "cifar-10-batches-py"
SPLITS = {
    "train": tuple(f"{_FOLDER}/data_batch_{i}" for i in range(1, 6)),
    "test": (f"{_FOLDER}/test_batch",),
}


def _md5(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(directory: str | os.PathLike) -> pathlib.Path:
    """Downloads the release archive into ``directory`` once and checks its MD5.

    The file arrives under a temporary name and takes its own only once its checksum matches,
    so an interrupted download never passes for the archive; an archive already there whose
    checksum matches is reused without downloading.

    Returns:
      The archive's path, ``directory/cifar-10-python.tar.gz``.

    Raises:
      ValueError: the downloaded file's checksum is not the release's.
    """
    directory = pathlib.Path(directory).expanduser()
    archive = directory / ARCHIVE
    if archive.is_file() and _md5(archive) == MD5:
        return archive
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=directory, prefix=f".{ARCHIVE}.", suffix=".part")
    os.close(handle)
    partial = pathlib.Path(name)
    try:
        urllib.request.urlretrieve(URL, partial)
        found = _md5(partial)
        if found != MD5:
            raise ValueError(
                f"the file downloaded from {URL} has MD5 {found}, not the release's {MD5}, so "
                f"it was cut short or altered; run again, or put a verified copy at {archive}."
            )
        os.chmod(partial, 0o644)  # mkstemp's files are private; the data need not be.
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    return archive


def load(archive: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Reads one split's images and labels straight out of the release archive.

    The batches are pickles, and unpickling can run code: pass the release's archive only
    (``download`` checks its MD5).

    Returns:
      Images, uint8 ``[N, 32, 32, 3]`` (rows, columns, RGB), and labels, int64 ``[N]``.

    Raises:
      ValueError: an unknown split, or an archive that is not the python release.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in SPLITS[split]:
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise ValueError(
                    f"{str(archive)!r} has no {member}, so it is not CIFAR-10's python release; "
                    f"download {URL}."
                )
            with f:
                batch = pickle.load(f, encoding="bytes")  # Written by Python 2: str is bytes.
            data = np.asarray(batch[b"data"], np.uint8)
            # Each row is channel-major: 1,024 red pixels, then green, then blue, row by row.
            planes = data.reshape(-1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
            images.append(planes.transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[b"labels"], np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def to_npz(
    archive: str | os.PathLike, out: str | os.PathLike, split: str = "train"
) -> pathlib.Path:
    """Writes one split of the release archive as an ``.npz`` of ``images`` and ``labels``.

    The file is written whole or not at all: under a temporary name beside ``out``, then
    renamed.

    Args:
      archive: the release's ``cifar-10-python.tar.gz`` (see ``download``).
      out: the ``.npz`` to write.
      split: ``"train"`` (50,000 images) or ``"test"`` (10,000).

    Returns:
      ``out``, holding ``images`` uint8 ``[N, 32, 32, 3]`` and ``labels`` int64 ``[N]``.
    """
    images, labels = load(archive, split)
    out = pathlib.Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, images=images, labels=labels)
        os.chmod(name, 0o644)
        os.replace(name, out)
    finally:
        pathlib.Path(name).unlink(missing_ok=True)  # Gone already, unless writing failed.
    return out


def prepare(directory: str | os.PathLike, split: str = "train") -> pathlib.Path:
    """``directory/cifar10_{split}.npz``, downloaded and converted on first use, else reused.

    The archive stays beside it, so the other split converts without downloading again.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
    out = pathlib.Path(directory).expanduser() / f"cifar10_{split}.npz"
    if out.is_file():
        return out
    return to_npz(download(directory), out, split)
