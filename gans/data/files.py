"""Your own images as a data set: a folder of PNG or JPEG files, or arrays in an ``.npz``.

    get_dataset("folder:/data/faces", image_size=64)        # labels from sub-folder names
    get_dataset("npz:/data/cifar10_train.npz", image_size=32)

Both are read once, when the data set is built, into memory at the training size, and then
served like every finite data set (`item_indices`: epochs drawn without replacement, item i a
pure function of the seed and i, split across processes like the TFDS sets), so a resumed or
multi-host run reads exactly the images it would have read. Memory is ``N * S * S * C`` bytes
for uint8 arrays kept at their size, four times that once resized (100,000 RGB images at 64x64:
1.2 GB, or 4.9 GB resized).

A folder is searched recursively in sorted order; files and folders whose names start with a
dot are ignored. When its top level holds sub-folders with images, each such sub-folder is one
class (classes numbered in sorted order of their names), and every image must be inside one.
Each image is centre-cropped to a square and resized to ``image_size`` (with `images.resize`);
without ``image_size`` every image must have one size, and its shorter side is kept.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from gans.data.base import FOLDER_PREFIX, NPZ_PREFIX, Dataset, check_request, process_item_indices
from gans.data.images import centre_crop, resize, to_model_range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# "auto" keeps the images' own channel count, which must then be the same for all of them.
IMAGE_MODES = ("auto", "rgb", "grayscale")
# PIL modes with one channel of intensity (an alpha channel is dropped); every other mode is
# read as RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_RESIZE_CHUNK = 512  # Images resized at once: bounds the float32 copy of a large array.


class ArrayDataset(Dataset):
    """Images held in memory, in epochs drawn without replacement (see `item_indices`).

    Attributes:
      images: uint8 [N, S, S, C] (pixels 0..255) or float32 in [-1, 1].
      labels: int32 [N], or None for unlabelled data.
      class_names: the name of each class (a folder's sub-folders), or None.
      skipped: ``(path, reason)`` of every file left out (``skip_bad=True``).
    """

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        class_names: Sequence[str] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        self.name = name
        self.images, self.labels = images, labels
        self.element_shape = tuple(images.shape[1:])
        self.class_names = None if class_names is None else list(class_names)
        if labels is None:
            self.num_classes = None
        elif class_names is not None:
            self.num_classes = len(class_names)
        else:
            self.num_classes = int(labels.max()) + 1
        self.skipped = list(skipped)
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count

    def batch(
        self, index: int, batch_size: int, seed: int, group: int = 1
    ) -> dict[str, np.ndarray]:
        """Item `index` of the stream `seed`: this process's `batch_size` of each batch.

        Returns:
          {"x": float32 [group, batch_size, *element_shape] in [-1, 1]}, plus "y": int32
          [group, batch_size] for labelled data.
        """
        check_request(index, batch_size, seed, group)
        taken = process_item_indices(
            index,
            batch_size,
            seed,
            group,
            len(self.images),
            self.name,
            self.process_index,
            self.process_count,
        )
        images = self.images[taken]
        if images.dtype == np.uint8:
            images = to_model_range(images)
        item = {"x": images.reshape((group, batch_size) + self.element_shape)}
        if self.labels is not None:
            item["y"] = self.labels[taken].reshape(group, batch_size)
        return item


def load_folder(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    image_size: int | None = None,
    image_mode: str = "auto",
    skip_bad: bool = False,
    read_threads: int = min(8, os.cpu_count() or 1),
    **process,
) -> ArrayDataset:
    """Reads every PNG and JPEG image under ``path`` (see the module's docstring).

    Args:
      path: the folder.
      name: registry name (default ``folder:PATH``).
      image_size: side of the square images trained on; None keeps the images' shorter side.
      image_mode: "rgb" or "grayscale" converts every image; "auto" keeps their channels.
      skip_bad: leave out (and list in ``skipped``) files that are not images, cannot be
        read, are outside the class sub-folders, or have other channels than the first
        image; otherwise the first such file is an error.
      read_threads: threads decoding the images (PIL releases the GIL while decoding).
      **process: ``process_index`` and ``process_count`` (default: JAX's).

    Raises:
      ValueError: one sentence naming the folder or the first bad file.
    """
    root = pathlib.Path(path).expanduser()
    name = name or f"{FOLDER_PREFIX}{path}"
    _check_image_options(image_size, image_mode)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"{name}: {str(root)!r} {what}; give a folder of PNG or JPEG images.")
    files = _visible_files(root)
    classes = sorted(
        {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    )
    skipped: list[tuple[str, str]] = []

    def refuse(file: pathlib.Path, reason: str, remedy: str) -> None:
        if not skip_bad:
            raise ValueError(f"{name}: {file} {reason}; {remedy}, or pass --skip_bad_images.")
        skipped.append((str(file), reason))

    images = []
    for file in files:
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            refuse(file, "is not a PNG or JPEG image", "remove it")
        elif classes and len(file.relative_to(root).parts) == 1:
            refuse(
                file,
                "lies outside the class sub-folders",
                "move it into one (each sub-folder is a class)",
            )
        else:
            images.append(file)
    if classes:  # Only sub-folders that hold images are classes.
        classes = sorted({f.relative_to(root).parts[0] for f in images})
    if not images:
        raise ValueError(f"{name}: {str(root)!r} holds no PNG or JPEG images.")

    from PIL import Image  # Matplotlib's dependency; imported only to read image files.

    def decode(file: pathlib.Path) -> np.ndarray | str:
        try:
            return _decode(file, image_mode)
        except Image.DecompressionBombError as error:
            del error  # Its message reads as an attack; the sentence says what to do.
            limit = 2 * Image.MAX_IMAGE_PIXELS
            return f"is too large to decode safely (over {limit:,} pixels, Pillow's limit)"
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for bad files.
            return f"cannot be read as an image ({error})"

    with concurrent.futures.ThreadPoolExecutor(read_threads) as pool:
        decoded = list(pool.map(decode, images))
    kept, arrays = [], []
    for file, array in zip(images, decoded):
        if isinstance(array, str):
            refuse(file, array, "remove or replace it")
        elif arrays and array.shape[-1] != arrays[0].shape[-1]:
            first = kept[0]
            refuse(
                file,
                f"has {array.shape[-1]} channel(s) where {first} has {arrays[0].shape[-1]}",
                "pass --image_mode=rgb or --image_mode=grayscale to convert every image",
            )
        else:
            kept.append(file)
            arrays.append(array)
    if not arrays:
        raise ValueError(f"{name}: none of the {len(images)} images of {str(root)!r} can be read.")
    side = image_size or _common_side(arrays, kept, name)
    if all(a.shape[:2] == (side, side) for a in arrays):  # Kept as uint8: a quarter the memory.
        stacked = np.stack(arrays)
    else:
        stacked = np.stack([_square_batch(a[None], side)[0] for a in arrays])
    labels = None
    if classes:
        index = {c: k for k, c in enumerate(classes)}
        labels = np.array([index[f.relative_to(root).parts[0]] for f in kept], np.int32)
    return ArrayDataset(
        name,
        stacked,
        labels,
        class_names=classes or None,
        skipped=skipped,
        **process,
    )


def load_npz(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    image_size: int | None = None,
    image_mode: str = "auto",
    **process,
) -> ArrayDataset:
    """Reads ``images`` ([N, H, W, C], C 1 or 3; uint8, or float in [-1, 1]) and, if present,
    ``labels`` (integers >= 0, [N]) from an ``.npz`` file.

    Images that are not square are centre-cropped; with ``image_size`` they are resized.

    Raises:
      ValueError: one sentence naming the file and what is wrong with it.
    """
    file = pathlib.Path(path).expanduser()
    name = name or f"{NPZ_PREFIX}{path}"
    _check_image_options(image_size, image_mode)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ValueError(f"{name}: {str(file)!r} {what}; give an .npz file holding 'images'.")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{name}: {str(file)!r} cannot be read as an .npz file ({error}).")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{name}: {str(file)!r} is an .npy file (one array), not an .npz; save the images "
            "with np.savez(FILE, images=...), or name the file .npy where a .npy is taken."
        )
    with loaded as arrays:
        contents = {key: arrays[key] for key in arrays.files}
    if "images" not in contents:
        raise ValueError(
            f"{name}: {str(file)!r} has no 'images' array (it holds {sorted(contents)}); save "
            "them with np.savez(FILE, images=..., labels=...)."
        )
    images = contents["images"]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise ValueError(
            f"{name}: 'images' must be [N, H, W, C] with N >= 1 and C 1 or 3, got shape "
            f"{images.shape}."
        )
    if np.issubdtype(images.dtype, np.floating):
        low, high = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(low) and np.isfinite(high)) or low < -1.0 or high > 1.0:
            raise ValueError(
                f"{name}: float 'images' must lie in [-1, 1], a generator's range; these lie in "
                f"[{low:.4g}, {high:.4g}] (save pixels 0..255 as uint8 instead)."
            )
        images = images.astype(np.float32)
    elif images.dtype != np.uint8:
        raise ValueError(
            f"{name}: 'images' must be uint8 (0..255) or float in [-1, 1], got {images.dtype}."
        )
    labels = contents.get("labels")
    if labels is not None:
        if (
            labels.shape != (len(images),)
            or not np.issubdtype(labels.dtype, np.integer)
            or labels.min() < 0
        ):
            raise ValueError(
                f"{name}: 'labels' must be {len(images)} integers >= 0, one per image, got "
                f"{labels.dtype} of shape {labels.shape}."
            )
        labels = labels.astype(np.int32)
    images = _convert_channels(images, image_mode)
    height, width = images.shape[1:3]
    side = image_size or min(height, width)
    if (height, width) != (side, side):
        images = np.concatenate(
            [
                _square_batch(images[k : k + _RESIZE_CHUNK], side)
                for k in range(0, len(images), _RESIZE_CHUNK)
            ]
        )
    return ArrayDataset(name, images, labels, **process)


def _check_image_options(image_size: int | None, image_mode: str) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}.")
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {', '.join(IMAGE_MODES)}, got {image_mode!r}.")


def _visible_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every file under ``root`` in sorted order, leaving out names that start with a dot."""
    found = []
    for directory, folders, names in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [pathlib.Path(directory, n) for n in sorted(names) if not n.startswith(".")]
    return found


def _decode(file: pathlib.Path, image_mode: str) -> np.ndarray:
    """uint8 [H, W, C] pixels of an image file, C 1 or 3 as ``image_mode`` says, upright as
    its EXIF orientation says (a phone's portrait photo is stored on its side)."""
    from PIL import Image, ImageOps

    with Image.open(file) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
        gray = image.mode in _GRAY_MODES if image_mode == "auto" else image_mode == "grayscale"
        if gray:
            if image.mode.startswith("I") or image.mode == "F":  # 16-bit or float grey.
                pixels = np.asarray(image, np.float64)
                top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
                return np.round(np.clip(pixels / top, 0, 1) * 255).astype(np.uint8)[..., None]
            return np.asarray(image.convert("L"))[..., None]
        return np.asarray(image.convert("RGB"))


def _common_side(arrays: list[np.ndarray], files: list[pathlib.Path], name: str) -> int:
    first = arrays[0].shape[:2]
    for array, file in zip(arrays, files):
        if array.shape[:2] != first:
            raise ValueError(
                f"{name}: {file} is {array.shape[0]}x{array.shape[1]} where {files[0]} is "
                f"{first[0]}x{first[1]}; pass --image_size to resize every image to one size."
            )
    return min(first)


def _square_batch(images: np.ndarray, side: int) -> np.ndarray:
    """[n, H, W, C] uint8 or float in [-1, 1] -> float32 [n, side, side, C] in [-1, 1]."""
    images = centre_crop(images, min(images.shape[1:3]))
    if images.dtype == np.uint8:
        images = to_model_range(images)
    return resize(images, side)


def _convert_channels(images: np.ndarray, image_mode: str) -> np.ndarray:
    """Grey to RGB by repeating the channel; RGB to grey by ITU-R 601-2 luma (PIL's "L")."""
    channels = images.shape[-1]
    if image_mode == "rgb" and channels == 1:
        return np.repeat(images, 3, axis=-1)
    if image_mode == "grayscale" and channels == 3:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if images.dtype == np.uint8:
            return np.round(luma).astype(np.uint8)[..., None]
        return luma[..., None]
    return images


__all__ = [
    "IMAGE_MODES",
    "IMAGE_SUFFIXES",
    "ArrayDataset",
    "load_folder",
    "load_npz",
]
