"""The baselines study's rows, commands and tables, on fake workdirs with known answers."""

import json

import pytest
from cli import FLAGS

from experiments.paper import baselines


def _fake_row(workdir, name, fids, steps=1000):
    for k, fid in enumerate(fids):
        directory = workdir / name / f"run_{k}"
        directory.mkdir(parents=True)
        line = {"step": steps, "eval/fid": fid, "eval/precision": 0.5 + k / 10}
        line.update({"eval/recall": 0.9, "eval/fid_real_vs_real": 0.8})
        (directory / "metrics.jsonl").write_text(json.dumps(line) + "\n")


def test_every_row_names_a_committed_flagfile_and_every_table_known_rows():
    for row in baselines.ROWS.values():
        assert (FLAGS / row.flagfile).is_file(), row.flagfile
    for members in baselines.TABLES.values():
        baselines.check_rows(members)
    listed = (FLAGS / "paper_baselines.cfg").read_text().split("--rows=")[1].split()[0]
    assert set(listed.split(",")) == set(baselines.ROWS)


def test_a_rows_command_is_its_flagfile_its_flags_and_the_budget(tmp_path):
    args = baselines.command("sngan_10_ada", tmp_path, steps=7, seed=3, num_seeds=2)
    assert args[1:3] == ["-m", "experiments.sngan"]
    assert args[3].endswith("sngan_digits.cfg")
    for flag in ("--data_fraction=0.1", "--ada_target=0.6", "--augment_probability=0"):
        assert flag in args
    assert args[-5:] == [
        f"--workdir={tmp_path / 'sngan_10_ada'}",
        "--steps=7",
        "--seed=3",
        "--num_runs=2",
        "--eval_every=7",
    ]


def test_tables_give_medians_and_intervals_over_seeds_and_mark_unfinished_rows(tmp_path):
    _fake_row(tmp_path, "sngan", [3.0, 1.0, 2.0])
    _fake_row(tmp_path, "sngan_augment", [5.0, 4.0, 6.0])
    (tmp_path / "sngan_augment" / "run_1" / "metrics.jsonl").unlink()  # Still training.
    path = tmp_path / "table.md"
    finished = baselines.write_tables(tmp_path, ["sngan", "sngan_augment"], 3, path)
    assert set(finished) == {"sngan"}
    assert finished["sngan"]["fid_median"] == 2.0
    assert finished["sngan"]["precision_median"] == pytest.approx(0.6)
    fid = finished["sngan"]["fid_summary"]
    assert (fid.mean, fid.std, fid.n) == (2.0, 1.0, 3)  # The sample std (ddof 1).
    text = path.read_text()
    # Resampling one seed three times has probability 1/27 > 2.5 %: the interval is [min, max].
    assert (
        "| SNGAN (hinge, SN ResNet) | 2.00 | 2.00 ± 1.00 [1.00, 3.00] | 3.00, 1.00, 2.00 "
        "| 0.60 ± 0.10 [0.50, 0.70] | 0.90 ± 0.00 [0.90, 0.90] |"
    ) in text
    assert "| SNGAN + DiffAugment | (not finished) |" in text
    assert "### data" in text and "### architectures" in text and "### components" in text
    assert "digits-FID 0.80" in text


def test_unknown_rows_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown row 'sngan_5'; known rows: wgan_gp_dcgan"):
        baselines.check_rows(["sngan_5"])
