"""The Colab notebook is valid nbformat 4 and, shrunk to a CPU setting, trains end to end,
resumes, and refuses other settings; ``gans.data.cifar10`` reads the python release exactly.

The notebook's code cells run in order in one namespace, as a kernel would run them, with the
IPython-only lines (``%pip``, ``%matplotlib``, ``!...``) left out. tests/conftest.py gives the
process eight simulated CPU devices, so the run really goes through ``pmap``. CIFAR-10 is
never downloaded: ``urllib.request.urlretrieve`` writes a small archive in the release's layout.
"""

import hashlib
import io
import json
import pathlib
import pickle
import re
import sys
import tarfile
import types
import urllib.request

import jax
import numpy as np
import pytest

from gans.data import cifar10

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "wgan_gp_cifar10.ipynb"
PARAMETERS = {
    "REPOSITORY",
    "DATASET",
    "DATA_DIR",
    "IMAGE_SIZE",
    "STEPS",
    "BATCH_PER_DEVICE",
    "WIDTH",
    "Z_DIM",
    "LOG_EVERY",
    "SAMPLE_EVERY",
    "CHECKPOINT_EVERY",
    "WORKDIR",
    "INCEPTION_WEIGHTS",
    "FID_SAMPLES",
    "SEED",
}
# Seconds on two CPU cores, on the fake CIFAR-10 below.
TINY = {
    "REPOSITORY": "",
    "DATASET": "cifar10",
    "IMAGE_SIZE": 8,
    "STEPS": 2,
    "BATCH_PER_DEVICE": 2,
    "WIDTH": 8,
    "Z_DIM": 16,
    "LOG_EVERY": 1,
    "SAMPLE_EVERY": 1,
    "CHECKPOINT_EVERY": 1,
    "INCEPTION_WEIGHTS": "",
    "FID_SAMPLES": 16,
    "SEED": 0,
}
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PIP_LINE = re.compile(r"^(\s*)%pip install (.*)$")
IMAGES_PER_BATCH = 8  # In the fake release; the real one has 10,000.


def load_notebook() -> dict:
    """Returns the notebook file parsed as JSON."""
    return json.loads(NOTEBOOK.read_text())


def source_of(cell: dict) -> str:
    """Returns a cell's source as one string (nbformat allows a string or a list of lines)."""
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def without_magics(source: str) -> str:
    """Replaces IPython-only lines (``%magic``, ``!shell``) by ``pass`` at their indentation.

    ``pass`` rather than nothing, so that a magic alone in a block keeps the block valid.
    """
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines) + "\n"


def code_cells(notebook: dict) -> list[dict]:
    """Returns the notebook's code cells, in order."""
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def cell_named(cell_id: str) -> dict:
    return next(cell for cell in load_notebook()["cells"] if cell.get("id") == cell_id)


def run_cell(cell: dict, namespace: dict, source: str | None = None) -> None:
    """Executes a code cell's Python in ``namespace``, as a kernel would.

    Args:
      cell: a code cell of the notebook.
      namespace: the globals every cell shares; the cell's names land there.
      source: the code to run instead of the cell's own with its magics left out.
    """
    source = without_magics(source_of(cell)) if source is None else source
    code = compile(source, f"cell {cell.get('id', '?')}", "exec")
    exec(code, namespace)  # noqa: S102 - running the notebook's own code is the test.


def run_notebook(namespace: dict, settings: dict) -> None:
    """Runs every code cell, with ``settings`` injected after the parameters cell (as
    papermill injects them)."""
    for index, cell in enumerate(code_cells(load_notebook())):
        run_cell(cell, namespace)
        if index == 0:
            namespace.update(settings)


def channel_major_data(first: int, count: int) -> np.ndarray:
    """Rows as the release stores them, uint8 [count, 3072]: pixel (y, x) of channel c of image
    i at column c * 1024 + y * 32 + x, holding ``pixel_value(i, y, x, c)``."""
    i, c, y, x = np.meshgrid(
        np.arange(first, first + count), np.arange(3), np.arange(32), np.arange(32), indexing="ij"
    )
    return pixel_value(i, y, x, c).reshape(count, 3072)


def pixel_value(i, y, x, c):
    """A value that differs when any one of the four indices does (within the fake's range)."""
    return ((i * 37 + y * 5 + x * 3 + c * 101) % 256).astype(np.uint8)


def release_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """One batch as the release pickles it: bytes keys (Python 2 strings), protocol 2, and
    numpy's array reconstructor under the module name numpy 1 wrote (numpy 2 still reads it)."""
    batch = {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"image_{k}.png".encode() for k in range(len(labels))],
    }
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def write_fake_release(path: pathlib.Path, per_batch: int = IMAGES_PER_BATCH) -> None:
    """A real tar.gz holding the release's members, ``per_batch`` images in each batch."""
    members = {"cifar-10-batches-py/readme.html": b"<html></html>"}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072}, protocol=2
    )
    for b in range(6):
        name = f"data_batch_{b + 1}" if b < 5 else "test_batch"
        labels = [(b * per_batch + k) % 10 for k in range(per_batch)]
        data = channel_major_data(b * per_batch, per_batch)
        members[f"cifar-10-batches-py/{name}"] = release_pickle(data, labels)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """``urlretrieve`` of CIFAR-10 writes the fake release (and counts its calls); the
    checksum expected is the fake's."""
    source = tmp_path / "release.tar.gz"
    write_fake_release(source)
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(source.read_bytes()).hexdigest())
    calls = []

    def urlretrieve(url, filename):
        assert url == cifar10.URL
        calls.append(filename)
        pathlib.Path(filename).write_bytes(source.read_bytes())
        return filename, None

    monkeypatch.setattr(urllib.request, "urlretrieve", urlretrieve)
    return calls


def test_notebook_is_valid_nbformat_4_without_outputs():
    notebook = load_notebook()
    assert notebook["nbformat"] == 4
    assert isinstance(notebook["nbformat_minor"], int)
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = []
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code", "raw")
        assert isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], (str, list))
        if notebook["nbformat_minor"] >= 5:  # Cell ids are required from 4.5 on.
            assert CELL_ID.match(cell["id"]), cell["id"]
            ids.append(cell["id"])
        if cell["cell_type"] == "code":
            # Committed clean: outputs belong to a run, not to the repository.
            assert cell["outputs"] == [] and cell["execution_count"] is None
        else:
            assert "outputs" not in cell and "execution_count" not in cell
    assert len(ids) == len(set(ids)), "cell ids must be unique"
    assert notebook["cells"][0]["cell_type"] == "markdown"


def test_every_code_cell_compiles():
    for cell in code_cells(load_notebook()):
        compile(without_magics(source_of(cell)), cell.get("id", "cell"), "exec")


def test_first_code_cell_holds_the_parameters_for_cifar10():
    parameters_cell = code_cells(load_notebook())[0]
    assert parameters_cell["metadata"]["tags"] == ["parameters"]
    assert source_of(parameters_cell).startswith("# Parameters\n")
    namespace = {}
    run_cell(parameters_cell, namespace)
    assert PARAMETERS <= namespace.keys()
    assert namespace["DATASET"] == "cifar10" and namespace["IMAGE_SIZE"] == 32
    # Per device, so that one chip, a v2-8's 8 cores or anything else divides the batch.
    assert namespace["BATCH_PER_DEVICE"] == 64
    assert namespace["REPOSITORY"] == "" and namespace["INCEPTION_WEIGHTS"] == ""
    # On Drive, which outlives the runtime: re-running the notebook resumes the run.
    assert namespace["WORKDIR"].startswith("/content/drive/")


def test_no_cell_installs_or_imports_tensorflow():
    for cell in code_cells(load_notebook()):
        source = source_of(cell)
        assert "tensorflow" not in source and "tfds" not in source, cell["id"]


def pip_calls(namespace: dict, repository: str) -> list[str]:
    """What the install cell asks pip for, with ``REPOSITORY = repository``: each ``%pip``
    line's arguments, expanded as IPython expands ``{NAME}`` (like an f-string)."""
    cell = cell_named("install")
    lines = []
    for line in source_of(cell).splitlines():
        match = PIP_LINE.match(line)
        if match:
            indent, arguments = match.groups()
            line = f"{indent}PIP_CALLS.append(f{arguments!r})"
        lines.append(line)
    namespace.update(REPOSITORY=repository, PIP_CALLS=[])
    run_cell(cell, namespace, "\n".join(lines) + "\n")
    return namespace["PIP_CALLS"]


def test_install_cell_installs_only_a_given_repository_not_installed_yet(monkeypatch):
    source = source_of(cell_named("install"))
    assert source.count("%pip install") == 1
    assert pip_calls({}, "") == []
    # In this environment gans is importable, as on a second run in one Colab session.
    assert pip_calls({}, "git+https://github.com/OWNER/REPO.git") == []

    import importlib.metadata
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gans" else find_spec(name)
    )
    assert pip_calls({}, "/content/drive/MyDrive/REPO") == ["--quiet /content/drive/MyDrive/REPO"]

    # A TPU runtime: Colab's jax[tpu] is named again, so libtpu stays matched to JAX.
    def version(name):
        if name == "libtpu":
            return "0.0.20"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert pip_calls({}, "git+https://github.com/OWNER/REPO.git") == [
        "--quiet git+https://github.com/OWNER/REPO.git 'jax[tpu]'"
    ]


def test_drive_is_mounted_only_in_colab_for_paths_on_it(monkeypatch, capsys):
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    google = types.ModuleType("google")
    google.colab = colab
    cell = cell_named("drive")
    defaults = {}
    run_cell(code_cells(load_notebook())[0], defaults)
    off_drive = {**defaults, "WORKDIR": "/tmp/run", "DATA_DIR": "/tmp/data"}

    run_cell(cell, dict(defaults))  # Not Colab (no google.colab): a note, nothing else.
    assert "not mounted" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    run_cell(cell, dict(off_drive))
    assert mounted == []
    run_cell(cell, dict(defaults))
    assert mounted == ["/content/drive"]


class FakeExtractor:
    """Stands in for the Inception network (299x299, minutes on a CPU): a few pixels as
    features, which is all the FID cell's plumbing needs."""

    def outputs(self, images):
        flat = np.asarray(images, np.float32).reshape(len(images), -1)
        return flat[:, :6], flat[:, :4]

    def features(self, images):
        return self.outputs(images)[0]


@pytest.mark.slow
def test_notebook_trains_on_eight_devices_resumes_and_refuses_other_settings(
    tmp_path, monkeypatch, capsys, fake_release
):
    # tests/conftest.py simulates them; with one device the run would skip pmap.
    assert jax.local_device_count() == 8
    import matplotlib

    from gans import workdir as workdir_lib
    from gans.metrics import inception

    # Files only, as in a headless kernel; no figure window.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "drive" / "wgan_gp_cifar10"
    tiny = {**TINY, "WORKDIR": str(run_dir), "DATA_DIR": str(tmp_path / "data")}
    namespace = {"__name__": "__main__"}
    run_notebook(namespace, tiny)

    assert namespace["NUM_DEVICES"] == 8 and namespace["BATCH_SIZE"] == 16
    assert namespace["RUN_DIR"] == run_dir
    assert len(fake_release) == 1
    assert len(namespace["dataset"].images) == 5 * IMAGES_PER_BATCH
    assert namespace["dataset"].element_shape == (8, 8, 3)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    for name in ("critic_loss", "generator_loss", "wasserstein_estimate"):
        assert name in json.loads(lines[-1])
    for name in ("samples.png", "curves.png", "params.msgpack", "config.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert sorted(path.name for path in (run_dir / "samples").iterdir()) == [
        "step_0000001.png",
        "step_0000002.png",
    ]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_devices"] == 8 and config["batch_size"] == 16
    assert "FID needs the Inception weights" in capsys.readouterr().out

    # A reconnected runtime: a fresh kernel runs every cell again, with more steps. The data
    # are read from DATA_DIR, training goes on from step 2's checkpoint, and FID is scored.
    monkeypatch.setattr(
        inception.InceptionExtractor, "from_file", classmethod(lambda cls, path: FakeExtractor())
    )
    namespace = {"__name__": "__main__"}
    weights = str(tmp_path / "inception.npz")
    run_notebook(namespace, {**tiny, "STEPS": 3, "INCEPTION_WEIGHTS": weights})
    out = capsys.readouterr().out
    assert "holds a run at step 2: resuming it" in out
    assert len(fake_release) == 1, "the archive and the .npz are reused"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert (run_dir / "samples" / "step_0000003.png").exists()
    assert "step 3, 16 samples" in out
    for name in ("fid", "kid_mean", "precision", "recall"):
        assert re.search(rf"^\s+{name} -?\d", out, re.MULTILINE), name

    # Other settings in the same directory: refused, with a note on starting a new run.
    namespace = {"__name__": "__main__"}
    with pytest.raises(workdir_lib.ResumeError, match="width"):
        run_notebook(namespace, {**tiny, "STEPS": 3, "WIDTH": 16})
    assert "set WORKDIR to a new directory" in capsys.readouterr().out
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_to_npz_keeps_the_release_pixel_layout(tmp_path):
    archive = tmp_path / cifar10.ARCHIVE
    write_fake_release(archive, per_batch=3)

    out = cifar10.to_npz(archive, tmp_path / "out" / "train.npz")
    assert out == tmp_path / "out" / "train.npz"
    with np.load(out) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    assert images.dtype == np.uint8 and images.shape == (15, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.tolist() == [k % 10 for k in range(15)]
    # images[i, y, x, c] is column c * 1024 + y * 32 + x of row i, batches in order 1..5.
    i, y, x, c = np.meshgrid(*(np.arange(n) for n in images.shape), indexing="ij")
    np.testing.assert_array_equal(images, pixel_value(i, y, x, c))
    assert images[4, 7, 2, 1] == channel_major_data(4, 1)[0, 1 * 1024 + 7 * 32 + 2]
    assert [p.name for p in out.parent.iterdir()] == ["train.npz"]  # No temporary file left.

    test = cifar10.to_npz(archive, tmp_path / "test.npz", split="test")
    with np.load(test) as arrays:
        np.testing.assert_array_equal(arrays["images"][0], pixel_value(15, y[0], x[0], c[0]))
    with pytest.raises(ValueError, match="split must be one of"):
        cifar10.to_npz(archive, tmp_path / "x.npz", split="validation")


def test_to_npz_refuses_an_archive_that_is_not_the_release(tmp_path):
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="not CIFAR-10's python release"):
        cifar10.to_npz(archive, tmp_path / "train.npz")


def test_download_refuses_a_wrong_checksum_and_keeps_nothing(tmp_path, monkeypatch):
    def urlretrieve(url, filename):
        pathlib.Path(filename).write_bytes(b"an error page, not the archive")
        return filename, None

    monkeypatch.setattr(urllib.request, "urlretrieve", urlretrieve)
    with pytest.raises(ValueError, match=r"has MD5 [0-9a-f]{32}, not the release's") as error:
        cifar10.download(tmp_path / "data")
    assert str(error.value).count(". ") == 0, "one sentence"
    assert list((tmp_path / "data").iterdir()) == []


def test_download_reuses_a_verified_archive_and_replaces_a_bad_one(tmp_path, fake_release):
    directory = tmp_path / "data"
    archive = cifar10.download(directory)
    assert archive == directory / cifar10.ARCHIVE and len(fake_release) == 1
    assert hashlib.md5(archive.read_bytes()).hexdigest() == cifar10.MD5
    assert [p.name for p in directory.iterdir()] == [cifar10.ARCHIVE]

    assert cifar10.download(directory) == archive
    assert len(fake_release) == 1, "a verified archive is not downloaded again"

    archive.write_bytes(b"cut short")
    assert cifar10.download(directory) == archive
    assert len(fake_release) == 2
    assert hashlib.md5(archive.read_bytes()).hexdigest() == cifar10.MD5


def test_prepare_converts_once_and_reuses_the_npz(tmp_path, fake_release):
    path = cifar10.prepare(tmp_path / "data")
    assert path == tmp_path / "data" / "cifar10_train.npz"
    with np.load(path) as arrays:
        assert arrays["images"].shape == (5 * IMAGES_PER_BATCH, 32, 32, 3)
    (tmp_path / "data" / cifar10.ARCHIVE).unlink()
    assert cifar10.prepare(tmp_path / "data") == path
    assert len(fake_release) == 1
