"""The baselines study's rows, commands, tables and pictures, on fake workdirs with known
answers; and (slow) two rows trained for two steps and scored, as README's quick check runs."""

import json
import pathlib
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from cli import FLAGS

from experiments.paper import baselines, baselines_protocol, baselines_report, records
from gans import run as run_lib


def _fake_row(workdir, name, fids, steps=1000, p=None):
    for k, fid in enumerate(fids):
        directory = workdir / name / f"run_{k}"
        directory.mkdir(parents=True)
        lines = []
        if p is not None:  # ADA logs its probability at every logging step.
            lines.append({"step": steps // 2, "augment_probability": p[k] / 2})
        line = {"step": steps, "eval/fid": fid, "eval/precision": 0.5 + k / 10}
        line.update({"eval/recall": 0.9, "eval/fid_real_vs_real": 0.3})
        if p is not None:
            line["augment_probability"] = p[k]
        lines.append(line)
        (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        image = np.full((20, 20, 3), 0.1 * k + 0.2, np.float32)
        matplotlib.image.imsave(directory / "samples.png", image)


def test_every_row_names_a_committed_flagfile_and_every_table_known_rows():
    for row in baselines_protocol.ROWS.values():
        text = (FLAGS / row.flagfile).read_text()
        assert "--dataset=mnist5k" in text, row.flagfile
    for members in baselines_protocol.TABLES.values():
        baselines_protocol.check_rows(members)
    listed = (FLAGS / "paper_baselines.cfg").read_text().split("--rows=")[1].split()[0]
    assert set(listed.split(",")) == set(baselines_protocol.ROWS)
    # Every row is in a table, and a table compares rows at one budget.
    assert set().union(*baselines_protocol.TABLES.values()) == set(baselines_protocol.ROWS)
    for title, members in baselines_protocol.TABLES.items():
        if title != "components":  # Two comparisons, each at its own budget.
            assert len({baselines_protocol.ROWS[n].steps for n in members}) == 1, title


def test_a_rows_command_is_its_flagfile_its_flags_and_its_budget(tmp_path):
    args = baselines_protocol.command("cnn_sn_10_ada", tmp_path, steps=0, seed=3, num_seeds=2)
    assert args[1:3] == ["-m", "experiments.sngan"]
    assert args[3].endswith("sngan_cnn_mnist.cfg")
    for flag in ("--data_fraction=0.1", "--ada_target=0.6", "--augment_probability=0"):
        assert flag in args
    assert args[-7:] == [
        f"--workdir={tmp_path / 'cnn_sn_10_ada'}",
        "--steps=2000",
        "--seed=3",
        "--num_runs=2",
        "--eval_every=2000",
        "--sample_every=2000",
        "--checkpoint_every=500",
    ]
    # --steps overrides every row's budget; the ResNet rows run at 16 pixels, half the steps.
    assert "--steps=7" in baselines_protocol.command(
        "resnet_sn", tmp_path, steps=7, seed=0, num_seeds=1
    )
    resnet = baselines_protocol.command(
        "resnet_sn_attention", tmp_path, steps=0, seed=0, num_seeds=1
    )
    assert {"--image_size=16", "--attention_resolution=8", "--steps=1000"} <= set(resnet)


def test_tables_give_medians_intervals_and_adas_p_and_mark_unfinished_rows(tmp_path):
    _fake_row(tmp_path, "cnn_sn", [3.0, 1.0, 2.0], steps=2000)
    _fake_row(tmp_path, "cnn_sn_augment", [5.0, 4.0, 6.0], steps=2000)
    _fake_row(tmp_path, "cnn_sn_10_ada", [7.0, 8.0, 9.0], steps=2000, p=[0.2, 0.3, 0.4])
    (tmp_path / "cnn_sn_augment" / "run_1" / "metrics.jsonl").unlink()  # Still training.
    (tmp_path / "cnn_sn" / baselines.WALL_FILE).write_text("125.0")
    (tmp_path / "cnn_sn" / baselines.CPU_FILE).write_text("119.6")
    path = tmp_path / "table.md"
    names = ["cnn_sn", "cnn_sn_augment", "cnn_sn_10_ada"]
    protocols = {n: baselines_protocol.protocol(n, steps=0, seed=0, num_seeds=3) for n in names}
    records = {n: baselines.record_of(tmp_path, n, protocols[n]) for n in names}
    assert records.pop("cnn_sn_augment") is None
    finished = baselines_report.write_tables(records, names, 3, path)
    assert set(finished) == {"cnn_sn", "cnn_sn_10_ada"}
    assert finished["cnn_sn"]["fid_median"] == 2.0
    assert finished["cnn_sn"]["precision_median"] == pytest.approx(0.6)
    fid = finished["cnn_sn"]["fid_summary"]
    assert (fid.mean, fid.std, fid.n) == (2.0, 1.0, 3)  # The sample std (ddof 1).
    assert finished["cnn_sn_10_ada"]["final_p"] == [0.2, 0.3, 0.4]
    assert "final_p" not in finished["cnn_sn"]
    # DiffAugment logs its fixed p too; only ADA's is a result.
    _fake_row(tmp_path, "cnn_sn_25_augment", [5.0, 4.0, 6.0], steps=2000, p=[1.0, 1.0, 1.0])
    fixed = baselines_protocol.protocol("cnn_sn_25_augment", steps=0, seed=0, num_seeds=3)
    assert "final_p" not in baselines.record_of(tmp_path, "cnn_sn_25_augment", fixed)
    text = path.read_text()
    # Resampling one seed three times has probability 1/27 > 2.5 %: the interval is [min, max].
    assert (
        "| SNGAN: hinge, SN standard CNN | 2,000 | 2.00 | 2.00 ± 1.00 [1.00, 3.00] "
        "| 3.00, 1.00, 2.00 | 0.60 ± 0.10 [0.50, 0.70] | 0.90 ± 0.00 [0.90, 0.90] | 2 min 05 s "
        "| 2 min 00 s |"
    ) in text
    assert "| SNGAN + DiffAugment | (not finished) |" in text
    # Every row of every table has the header's cells.
    assert len({line.count("|") for line in text.splitlines() if line.startswith("|")}) == 1
    assert "### data" in text and "### normalisation" in text and "### components" in text
    assert "### architectures" not in text  # No row of it was asked for.
    assert "ADA's p at the last step, per seed: 0.200, 0.300, 0.400." in text
    assert "MNIST-FID 0.30" in text and "digits-FID" not in text
    # One picture per table with a finished row, seed 0's samples of each.
    pictured = {n: baselines.picture_of(tmp_path, n, 3) for n in finished}
    assert pictured["cnn_sn"].shape == (20, 20, 3)
    written = baselines_report.save_pictures(finished, pictured, tmp_path / "pictures")
    assert sorted(p.name for p in written) == [
        "baselines_components.png",
        "baselines_data.png",
        "baselines_normalisation.png",
    ]
    assert all(p.stat().st_size > 1000 for p in written)


def test_rows_with_a_record_of_the_same_protocol_are_kept_and_the_rest_trained(
    tmp_path, monkeypatch
):
    from experiments.paper import digits_comparison

    trained = []

    def fake_training(args, log):  # Writes the row's three finished seeds.
        name = pathlib.Path(next(a for a in args if a.startswith("--workdir=")).split("=")[1])
        trained.append(name.name)
        _fake_row(tmp_path / "runs", name.name, [1.0, 2.0, 3.0], steps=2000)
        subprocess.run([sys.executable, "-c", "sum(range(3 * 10**7))"], check=True)

    monkeypatch.setattr(digits_comparison, "_run_logged", fake_training)
    results = tmp_path / "results.json"
    study = dict(
        steps=0,
        seed=0,
        num_seeds=3,
        results=results,
        table_path=tmp_path / "table.md",
        pictures=tmp_path / "pictures",
    )
    baselines.run_study(tmp_path / "runs", ["cnn_sn"], **study)
    assert trained == ["cnn_sn"]
    saved = json.loads(results.read_text())
    assert [(r["loss"], r["fid"], r["protocol"]["steps"]) for r in saved] == [
        ("cnn_sn", [1.0, 2.0, 3.0], 2000)
    ]
    # The child's CPU time, which sum(range(3 * 10**7)) makes at least a tenth of a second.
    assert 0.1 < saved[0]["cpu_seconds"] and 0.1 < saved[0]["wall_seconds"]
    # The run folders gone (a new session): the record is kept, only the new row trains, and
    # the table has both.
    shutil.rmtree(tmp_path / "runs")
    finished = baselines.run_study(tmp_path / "runs", ["cnn_sn", "cnn"], **study)
    assert trained == ["cnn_sn", "cnn"] and set(finished) == {"cnn_sn", "cnn"}
    assert "| SNGAN: hinge, SN standard CNN | 2,000 | 2.00 |" in (tmp_path / "table.md").read_text()
    # Another protocol (other seeds) does not reuse the records; a redraw trains nothing.
    shutil.rmtree(tmp_path / "runs")
    baselines.run_study(tmp_path / "runs", ["cnn"], **dict(study, seed=5))
    assert trained == ["cnn_sn", "cnn", "cnn"]
    (tmp_path / "table.md").unlink()
    redrawn = baselines_report.redraw(["cnn_sn", "cnn"], **{k: v for k, v in study.items()})
    assert set(redrawn) == {"cnn_sn", "cnn"} and (tmp_path / "table.md").is_file()
    assert (tmp_path / "pictures" / "baselines_normalisation.png").is_file()


def test_unknown_rows_and_bad_budgets_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="unknown row 'sngan_5'; known rows: wgan_gp_dcgan"):
        baselines_protocol.check_rows(["sngan_5"])
    for flag, message in [
        ("--steps=-1", "--steps must be >= 0, got -1"),
        ("--rows=sngan_5", "unknown row 'sngan_5'"),
        ("--num_seeds=0", "--num_seeds must be >= 1, got 0"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "experiments.paper.baselines", f"--workdir={tmp_path}", flag],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert message in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())  # Nothing written.


@pytest.mark.slow
def test_two_rows_train_two_steps_are_scored_and_drawn(tmp_path):
    # README's quick check of the baseline flags: ADA on 10 % and the DCGAN, two seeds each.
    table = tmp_path / "table.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.paper.baselines",
            f"--workdir={tmp_path / 'runs'}",
            "--rows=cnn_sn_10_ada,wgan_gp_dcgan",
            "--steps=2",
            "--num_seeds=2",
            f"--table={table}",
            f"--pictures={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = table.read_text()
    assert "| SNGAN + ADA (p from 0, target 0.6), 10 % | 2 |" in text
    assert "| WGAN-GP, DCGAN | 2 |" in text
    assert "ADA's p at the last step, per seed:" in text
    assert (tmp_path / "baselines_data.png").is_file()
    assert (tmp_path / "baselines_architectures.png").is_file()


def test_a_row_stopped_by_a_signal_is_an_interrupt_and_a_failed_one_an_error(tmp_path):
    from experiments.paper import digits_comparison

    log = tmp_path / "train.log"
    stopped = [sys.executable, "-c", "import sys; sys.exit(130)"]
    with pytest.raises(KeyboardInterrupt):  # The study then exits 130: the same command resumes.
        digits_comparison._run_logged(stopped, log)
    failed = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\); see .*train.log"):
        digits_comparison._run_logged(failed, log)


def test_two_processes_adding_records_to_one_file_keep_all_of_them(tmp_path):
    # One process per core shares the study's results file.
    results = tmp_path / "results.json"
    program = (
        "import pathlib, sys, numpy as np\n"
        "from experiments.paper import records\n"
        "for k in range(15):\n"
        "    record = {'loss': f'{sys.argv[1]}{k}', 'dataset': 'mnist5k', 'protocol': {}}\n"
        "    records.save_result(pathlib.Path(sys.argv[2]), record, np.zeros((4, 4, 3)))\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", program, name, str(results)]) for name in "ab"
    ]
    assert [writer.wait() for writer in writers] == [0, 0]
    saved, pictured = records.load_results(results)
    expected = {f"{name}{k}" for name in "ab" for k in range(15)}
    assert {r["loss"] for r in saved} == expected
    assert {key.split("@")[0] for key in pictured} == expected
    # Each record names the machine it was finished on: the CPU, on a CPU backend.
    assert {r["machine"] for r in saved} == {run_lib.cpu_model()}


def test_a_record_that_names_its_machine_keeps_it(tmp_path):
    results = tmp_path / "results.json"
    record = {"loss": "a", "dataset": "mnist5k", "protocol": {}, "machine": "Intel Xeon"}
    records.save_result(results, record, np.zeros((4, 4, 3)))
    assert records.load_results(results)[0][0]["machine"] == "Intel Xeon"
