"""The Colab TPU notebook is valid nbformat 4 and, shrunk to a CPU setting, trains end to end.

The notebook's code cells run in order in one namespace, as a kernel would run them, with the
IPython-only lines (``%pip``, ``%matplotlib``, ``!...``) left out. tests/conftest.py gives the
process eight simulated CPU devices, so the run really goes through ``pmap``.
"""

import json
import pathlib
import re

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "wgan_gp_cifar10_tpu.ipynb"
PARAMETERS = {
    "REPOSITORY",
    "DATASET",
    "DATA_DIR",
    "IMAGE_SIZE",
    "STEPS",
    "BATCH_SIZE",
    "WIDTH",
    "Z_DIM",
    "LOG_EVERY",
    "SAMPLE_EVERY",
    "WORKDIR",
    "SEED",
}
# Seconds on two CPU cores: digits ship with the project (16x16, as in its WGAN-GP flagfile).
TINY = {
    "REPOSITORY": "",
    "DATASET": "digits",
    "IMAGE_SIZE": 16,
    "STEPS": 2,
    "BATCH_SIZE": 16,
    "WIDTH": 8,
    "Z_DIM": 16,
    "LOG_EVERY": 1,
    "SAMPLE_EVERY": 1,
    "SEED": 0,
}
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


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


def run_cell(cell: dict, namespace: dict) -> None:
    """Executes a code cell's Python in ``namespace``, as a kernel would.

    Args:
      cell: a code cell of the notebook.
      namespace: the globals every cell shares; the cell's names land there.
    """
    code = compile(without_magics(source_of(cell)), f"cell {cell.get('id', '?')}", "exec")
    exec(code, namespace)  # noqa: S102 - running the notebook's own code is the test.


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


def test_first_code_cell_holds_the_parameters_for_cifar10_on_a_tpu():
    parameters_cell = code_cells(load_notebook())[0]
    assert parameters_cell["metadata"]["tags"] == ["parameters"]
    assert source_of(parameters_cell).startswith("# Parameters\n")
    namespace = {}
    run_cell(parameters_cell, namespace)
    assert PARAMETERS <= namespace.keys()
    assert namespace["DATASET"] == "cifar10" and namespace["IMAGE_SIZE"] == 32
    # The global batch splits evenly over a v2-8's 8 cores, and over 1, 2 or 4.
    assert namespace["BATCH_SIZE"] % 8 == 0


def test_install_cell_installs_only_when_given_a_repository():
    install = next(
        cell for cell in code_cells(load_notebook()) if "%pip install" in source_of(cell)
    )
    lines = source_of(install).splitlines()
    assert lines[0] == "if REPOSITORY:"
    assert lines[1].strip().startswith("%pip install") and "{REPOSITORY}" in lines[1]


def test_notebook_trains_on_eight_devices_and_draws_its_pictures(tmp_path, monkeypatch):
    # tests/conftest.py simulates them; with one device the run would skip pmap.
    assert jax.local_device_count() == 8
    import matplotlib

    # Files only, as in a headless kernel; no figure window.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    # An earlier run's directory: the notebook must pick the next one, not reuse it.
    (tmp_path / "runs" / "run-1").mkdir(parents=True)
    namespace = {"__name__": "__main__"}
    for index, cell in enumerate(code_cells(load_notebook())):
        run_cell(cell, namespace)
        if index == 0:  # Right after the parameters cell, as papermill would inject them.
            namespace.update(TINY, WORKDIR=str(tmp_path / "runs"))

    assert namespace["NUM_DEVICES"] == 8
    run_dir = namespace["RUN_DIR"]
    assert run_dir == tmp_path / "runs" / "run-2"
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
    assert json.loads((run_dir / "config.json").read_text())["num_devices"] == 8
