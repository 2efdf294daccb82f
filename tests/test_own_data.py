"""Training on your own images: ``folder:PATH`` and ``npz:PATH`` data, and scoring sample sets.

The folders are written by the tests: PNG and JPEG files made from known arrays, so what the
data set serves can be checked against the arrays themselves.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
from cli import run_experiment
from PIL import Image

from gans import data
from gans.data import files, images, load_digits


def write_png(path: pathlib.Path, pixels: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)
    return path


def constant(value: int, shape=(6, 6, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_sub_folders_are_classes_and_every_image_is_served_once_per_epoch(tmp_path):
    values = {"cats": [10, 20, 30], "dogs": [40, 50], "owls": [60]}
    for name, levels in values.items():
        for k, value in enumerate(levels):
            write_png(tmp_path / name / "deeper" / f"{k}.png", constant(value))
    dataset = data.get_dataset(f"folder:{tmp_path}")
    assert dataset.name == f"folder:{tmp_path}"
    assert dataset.class_names == ["cats", "dogs", "owls"] and dataset.num_classes == 3
    assert dataset.element_shape == (6, 6, 3) and dataset.images.dtype == np.uint8
    # One epoch (6 images, batches of 3, 2 items): every image once, its label with it.
    seen = [dataset.batch(i, 3, seed=7) for i in range(2)]
    x = np.concatenate([item["x"][0] for item in seen])
    y = np.concatenate([item["y"][0] for item in seen])
    level = np.round((x[:, 0, 0, 0] + 1) * 127.5).astype(int)
    assert sorted(level) == [10, 20, 30, 40, 50, 60]
    expected_class = {v: c for c, name in enumerate(values) for v in values[name]}
    assert [expected_class[v] for v in level] == list(y)
    assert np.all(x == x[:, :1, :1, :1])  # Constant images stay constant.


def test_a_flat_folder_is_unlabelled_and_is_cropped_to_its_centre_and_resized(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 12, 20, 3), dtype=np.uint8)
    for k, image in enumerate(pixels):
        write_png(tmp_path / f"{k}.png", image)
    dataset = data.get_dataset(f"folder:{tmp_path}", image_size=8)
    assert dataset.num_classes is None and dataset.element_shape == (8, 8, 3)
    expected = images.resize(images.to_model_range(pixels[:, :, 4:16]), 8)
    np.testing.assert_allclose(dataset.images, expected, atol=1e-6)
    assert "y" not in dataset.batch(0, 3, seed=0)
    # Without --image_size the shorter side is kept.
    assert data.get_dataset(f"folder:{tmp_path}").element_shape == (12, 12, 3)


def test_image_mode_converts_every_image_and_jpeg_is_read(tmp_path):
    write_png(tmp_path / "grey.png", constant(100, (4, 4, 1)))
    Image.fromarray(constant(200, (4, 4, 3))).save(tmp_path / "rgb.jpg", quality=100)
    rgb = data.get_dataset(f"folder:{tmp_path}", image_mode="rgb")
    assert rgb.element_shape == (4, 4, 3)
    grey = data.get_dataset(f"folder:{tmp_path}", image_mode="grayscale")
    assert grey.element_shape == (4, 4, 1)
    levels = sorted(int(v) for v in grey.images[:, 0, 0, 0])
    assert levels[0] == 100 and abs(levels[1] - 200) <= 2  # JPEG rounds.


@pytest.mark.parametrize("orientation, turned", [(1, 0), (3, 2), (6, 3), (8, 1)])
def test_photos_are_read_upright_as_their_exif_orientation_says(tmp_path, orientation, turned):
    # A camera stores a portrait photo on its side and says in EXIF tag 274 how to turn it:
    # 3 half a turn, 6 a quarter clockwise (np.rot90 turns anticlockwise: 3 times), 8 anticlockwise.
    upright = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1) * 40
    stored = np.rot90(upright, -turned)
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(stored.squeeze(-1)).save(tmp_path / "photo.png", exif=exif)
    pixels = files._decode(tmp_path / "photo.png", "auto")
    np.testing.assert_array_equal(pixels, upright)


def bad_folder(kind: str, root: pathlib.Path) -> pathlib.Path:
    """A folder with two good images and the one problem ``kind`` names; returns the bad file."""
    write_png(root / "a" / "0.png", constant(10))
    write_png(root / "a" / "1.png", constant(20))
    if kind == "not an image":
        bad = root / "a" / "notes.txt"
        bad.write_text("not pixels")
    elif kind == "unreadable":
        bad = root / "a" / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    elif kind == "mixed channels":
        bad = write_png(root / "a" / "2.png", constant(30, (6, 6, 1)))
    else:  # Outside the class folders.
        bad = write_png(root / "stray.png", constant(40))
    return bad


@pytest.mark.parametrize(
    "kind, words",
    [
        ("not an image", "is not a PNG or JPEG image; remove it"),
        ("unreadable", "cannot be read as an image"),
        ("mixed channels", "has 1 channel(s) where"),
        ("outside", "lies outside the class sub-folders"),
    ],
)
def test_a_bad_file_is_named_or_skipped_and_counted(tmp_path, kind, words):
    bad = bad_folder(kind, tmp_path)
    with pytest.raises(ValueError, match="--skip_bad_images") as error:
        data.get_dataset(f"folder:{tmp_path}")
    assert str(bad) in str(error.value) and words in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    dataset = data.get_dataset(f"folder:{tmp_path}", skip_bad=True)
    assert len(dataset.images) == 2 and [path for path, _ in dataset.skipped] == [str(bad)]


def test_empty_missing_and_unevenly_sized_folders_are_refused(tmp_path):
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".DS_Store").write_text("")
    with pytest.raises(ValueError, match="holds no PNG or JPEG images"):
        data.get_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="does not exist"):
        data.get_dataset(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="names no path"):
        data.get_dataset("folder:")
    write_png(tmp_path / "sizes" / "0.png", constant(1, (6, 6, 3)))
    write_png(tmp_path / "sizes" / "1.png", constant(1, (8, 8, 3)))
    with pytest.raises(ValueError, match="pass --image_size"):
        data.get_dataset(f"folder:{tmp_path / 'sizes'}")
    assert data.get_dataset(f"folder:{tmp_path / 'sizes'}", image_size=4).element_shape[0] == 4


def test_npz_with_and_without_labels_uint8_and_float(tmp_path):
    levels = np.arange(10, dtype=np.uint8) * 20
    pixels = np.broadcast_to(levels[:, None, None, None], (10, 8, 8, 1)).copy()
    np.savez(tmp_path / "labelled.npz", images=pixels, labels=np.arange(10) % 4)
    labelled = data.get_dataset(f"npz:{tmp_path / 'labelled.npz'}")
    assert labelled.num_classes == 4 and labelled.element_shape == (8, 8, 1)
    item = labelled.batch(0, 10, seed=3)
    served = np.round((item["x"][0, :, 0, 0, 0] + 1) * 127.5).astype(int) // 20
    assert sorted(served) == list(range(10))
    np.testing.assert_array_equal(item["y"][0], served % 4)  # Each label with its image.
    floats = images.to_model_range(np.random.default_rng(1).integers(0, 256, (10, 8, 8, 1)))
    np.savez(tmp_path / "floats.npz", images=floats)
    unlabelled = data.get_dataset(f"npz:{tmp_path / 'floats.npz'}", image_size=4)
    assert unlabelled.num_classes is None and unlabelled.element_shape == (4, 4, 1)
    np.testing.assert_allclose(unlabelled.images, images.resize(floats, 4), atol=1e-6)
    rgb = data.get_dataset(f"npz:{tmp_path / 'labelled.npz'}", image_mode="rgb")
    assert rgb.element_shape == (8, 8, 3)


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"pixels": np.zeros((2, 4, 4, 1), np.uint8)}, "has no 'images' array"),
        ({"images": np.zeros((2, 4, 4), np.uint8)}, "must be [N, H, W, C]"),
        ({"images": np.full((2, 4, 4, 1), 2.0)}, "must lie in [-1, 1]"),
        ({"images": np.zeros((2, 4, 4, 1), np.int16)}, "must be uint8"),
        (
            {"images": np.zeros((2, 4, 4, 1), np.uint8), "labels": np.array([0, -1])},
            "'labels' must be 2 integers >= 0",
        ),
    ],
)
def test_a_bad_npz_is_one_sentence(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as error:
        data.get_dataset(f"npz:{tmp_path / 'bad.npz'}")
    assert words in str(error.value) and len(str(error.value).splitlines()) == 1
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot be read as an .npz"):
        data.get_dataset(f"npz:{tmp_path / 'text.npz'}")


def test_processes_split_every_item_and_together_are_the_single_process_item(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.arange(24, dtype=np.uint8).reshape(24, 1, 1, 1))
    path = f"npz:{tmp_path / 'x.npz'}"
    whole = data.get_dataset(path).batch(5, 6, seed=2, group=2)["x"]
    parts = [
        data.get_dataset(path, process_index=p, process_count=3).batch(5, 2, seed=2, group=2)["x"]
        for p in range(3)
    ]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> pathlib.Path:
    """300 of the digits at 16 px as grey PNGs, one sub-folder per digit."""
    root = tmp_path_factory.mktemp("digits_png")
    pictures, labels = load_digits(16)
    pixels = np.round((pictures[:300] + 1) * 127.5).astype(np.uint8)
    for k, (image, label) in enumerate(zip(pixels, labels[:300])):
        write_png(root / f"digit_{label}" / f"{k:04d}.png", image)
    return root


@pytest.mark.slow
def test_a_folder_trains_resumes_exactly_and_is_evaluated(tmp_path, digits_folder):
    args = [
        f"--dataset=folder:{digits_folder}",
        "--steps=4",
        "--checkpoint_every=2",
        "--log_every=1",
        "--width=8",
        "--batch_size=16",
        "--z_dim=16",
        "--conditional",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for workdir in (straight, resumed):
        result = run_experiment("wgan_gp", *args, f"--workdir={workdir}")
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((straight / "config.json").read_text())["dataset"].startswith("folder:")
    # As if killed after step 2's checkpoint: the run resumes there and trains steps 3 and 4.
    shutil.rmtree(resumed / "checkpoints" / "4")
    again = run_experiment("wgan_gp", *args, f"--workdir={resumed}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from the checkpoint of step 2" in again.stdout
    assert (resumed / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()

    scored = run_experiment("evaluate", f"--workdir={straight}", "--num=64")
    assert scored.returncode == 0, scored.stderr[-3000:]
    evaluation = json.loads((straight / "evaluation.json").read_text())
    assert evaluation["step"] == 4 and evaluation["fid"] > evaluation["fid_real_vs_real"] >= 0

    out = tmp_path / "samples.npy"
    sampled = run_experiment("sample", f"--workdir={straight}", "--num=40", f"--out={out}")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    report = tmp_path / "scores.json"
    compared = run_experiment(
        "evaluate",
        f"--samples={out}",
        f"--dataset=folder:{digits_folder}",
        f"--out={report}",
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "40 samples against 300 images" in compared.stdout
    scores = json.loads(report.read_text())
    assert scores["features"] == "digits classifier" and scores["fid"] > 0


@pytest.mark.slow
def test_sample_sets_score_as_the_metrics_say(tmp_path, digits_folder):
    # The reference's own images as PNG samples: precision and recall near 1, FID near the
    # floor; the same set as an .npz gives the same scores.
    generated = tmp_path / "generated"
    shutil.copytree(digits_folder, generated)
    by_folder = run_experiment(
        "evaluate",
        f"--samples={generated}",
        "--dataset=digits",
        "--image_size=16",
        f"--out={tmp_path / 'a.json'}",
    )
    assert by_folder.returncode == 0, by_folder.stderr[-3000:]
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["samples"] == 300 and a["reference"] == 1797
    assert a["precision"] > 0.95 and a["recall"] > 0.5
    real = files.load_folder(generated, image_mode="grayscale").images
    np.savez(tmp_path / "same.npz", images=real)
    by_npz = run_experiment(
        "evaluate",
        f"--samples={tmp_path / 'same.npz'}",
        "--dataset=digits",
        "--image_size=16",
        f"--out={tmp_path / 'b.json'}",
    )
    assert by_npz.returncode == 0, by_npz.stderr[-3000:]
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["fid"] == pytest.approx(a["fid"], rel=1e-6)
    # RGB samples without Inception weights: one sentence saying what to pass.
    np.savez(tmp_path / "rgb.npz", images=np.zeros((8, 16, 16, 3), np.uint8))
    refused = run_experiment(
        "evaluate", f"--samples={tmp_path / 'rgb.npz'}", f"--dataset=npz:{tmp_path / 'rgb.npz'}"
    )
    assert refused.returncode != 0 and "pass --inception_weights" in refused.stderr
    assert "Traceback" not in refused.stderr
