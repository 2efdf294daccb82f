"""The digits comparison's table and the tracking figure, on small fake workdirs with known answers."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments.paper import digits_comparison, tracks_quality

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOOR = 0.5
ADAM = {"optimizer": "adam", "critic_lr": 2e-4, "generator_lr": 2e-4, "beta1": 0.5}
ADAM.update(beta2=0.999, n_critic=1, clip=0.0)


def _write_lines(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _fake_gan(workdir, name, final_fids, steps=400, config=ADAM):
    """A GAN's workdir of several runs: an early line with a worse FID, then the final one."""
    (workdir / name).mkdir(parents=True)
    (workdir / name / "config.json").write_text(json.dumps(config))
    for k, fid in enumerate(final_fids):
        early = {"step": steps // 2, "eval/fid": 100.0 + fid, "eval/fid_real_vs_real": FLOOR}
        final = {"step": steps, "critic_loss": 0.3, "eval/fid": fid, "eval/classes": 10.0}
        final["eval/fid_real_vs_real"] = FLOOR
        _write_lines(workdir / name / f"run_{k}" / "metrics.jsonl", [early, final])


def _fake_vae(workdir, fids, steps=400):
    for k, fid in enumerate(fids):
        directory = workdir / "vae" / f"run_{k}"
        directory.mkdir(parents=True)
        config = {"optimizer": "adam", "generator_lr": 1e-3, "beta1": 0.9, "beta2": 0.999}
        (directory / "config.json").write_text(json.dumps(config))
        evaluation = {"step": steps, "fid": fid, "classes": 9, "fid_real_vs_real": FLOOR}
        (directory / "evaluation.json").write_text(json.dumps(evaluation))


def test_the_table_gives_the_distribution_over_seeds_best_median_first(tmp_path):
    _fake_gan(tmp_path, "ns_gan", [3.0, 1.0, 2.0])
    _fake_vae(tmp_path, [30.0, 10.0, 20.0])
    _fake_gan(tmp_path, "lsgan", [4.0, 5.0, 6.0])
    (tmp_path / "lsgan" / "run_2" / "metrics.jsonl").unlink()  # A seed still training.
    path = tmp_path / "table.md"
    rows = digits_comparison.write_table(tmp_path, ["vae", "ns_gan", "lsgan"], 3, path)

    assert [(r["min"], r["median"], r["max"]) for r in rows] == [(10, 20, 30), (1, 2, 3)]
    text = path.read_text()
    lines = text.splitlines()
    ns_gan = next(i for i, line in enumerate(lines) if line.startswith("| NS-GAN |"))
    vae = next(i for i, line in enumerate(lines) if line.startswith("| VAE |"))
    assert ns_gan < vae
    assert "| 1.00 | 2.00 | 3.00 | 3.00, 1.00, 2.00 | 10, 10, 10 |" in lines[ns_gan]
    # Mean, sample std (ddof 1) and the 95 % interval, [min, max] for 3 seeds (a resample of one
    # seed three times has probability 1/27 > 2.5 %).
    assert "| 2.00 ± 1.00 [1.00, 3.00] | 1.00 |" in lines[ns_gan]
    assert rows[1]["summary"].mean == 2.0 and rows[1]["summary"].std == 1.0
    assert "Adam 0.0002 (0.5, 0.999), n_critic 1" in lines[ns_gan]
    assert "| 10.00 | 20.00 | 30.00 |" in lines[vae] and "Adam 0.001 (0.9, 0.999) |" in lines[vae]
    assert "| LSGAN | (not finished) |" in text
    assert "| 0.50 | 0.50 | 0.50 | 0.50 |" in lines[-1]
    assert "after 400 generator steps, 3 seeds" in text
    assert "best of" not in text  # Three seeds: best-of-k would repeat the mean and the min.


def test_with_five_seeds_the_table_adds_the_expected_best_of_k_runs(tmp_path):
    _fake_gan(tmp_path, "ns_gan", [5.0, 1.0, 4.0, 2.0, 3.0])
    _fake_vae(tmp_path, [10.0, 10.0, 10.0, 10.0, 10.0])
    path = tmp_path / "table.md"
    digits_comparison.write_table(tmp_path, ["vae", "ns_gan"], 5, path)
    text = path.read_text()
    assert "Expected best digits-FID of k runs of the 5 (Lucic et al., 2018, Fig. 4)" in text
    assert "| model | best of 1 | best of 2 | best of 3 | best of 4 | best of 5 |" in text
    # Sorted 1..5, E[best of k] = sum_i i C(5 - i, k - 1) / C(5, k): 3, 20/10, 15/10, 6/5, 1.
    assert "| NS-GAN | 3.00 | 2.00 | 1.50 | 1.20 | 1.00 |" in text
    assert "| VAE | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 |" in text
    assert text.index("| NS-GAN | 3.00") < text.index("| VAE | 10.00")


def test_finished_means_every_seed_scored_at_the_last_step(tmp_path):
    _fake_gan(tmp_path, "ns_gan", [3.0, 1.0])
    assert digits_comparison.is_finished(tmp_path, "ns_gan", 2, steps=400)
    assert not digits_comparison.is_finished(tmp_path, "ns_gan", 2, steps=800)
    assert not digits_comparison.is_finished(tmp_path, "ns_gan", 3, steps=400)
    assert digits_comparison.final_quality(tmp_path / "ns_gan" / "run_1")["fid"] == 1.0


def test_commands_override_only_the_budget_and_the_scoring():
    workdir = pathlib.Path("/w")
    gan = digits_comparison.command("wgan", workdir, steps=7, seed=3, num_runs=3)
    flagfile = ROOT / "experiments" / "flags" / "wgan_digits.cfg"
    assert gan[1:] == [
        "-m",
        "experiments.wgan",
        f"--flagfile={flagfile}",
        "--workdir=/w",
        "--steps=7",
        "--seed=3",
        "--num_runs=3",
        "--eval_every=7",
    ]
    tracked = digits_comparison.command(
        "ns_gan", workdir, steps=7, seed=0, num_runs=2, eval_every=5
    )
    assert tracked[-2:] == ["--eval_every=5", "--log_every=5"]
    vae = digits_comparison.command("vae", workdir, steps=7, seed=1, num_runs=1)
    assert vae[-3:] == ["--workdir=/w", "--steps=7", "--seed=1"]
    with pytest.raises(ValueError, match="one run at a time"):
        digits_comparison.command("vae", workdir, steps=7, seed=1, num_runs=3)
    for name in digits_comparison.LABELS:
        assert (ROOT / "experiments" / "flags" / f"{name}_digits.cfg").is_file()
    with pytest.raises(ValueError, match="unknown experiment 'cgan'; known: mm_gan"):
        digits_comparison.check_names(["cgan"])


def test_the_mnist_comparison_trains_every_model_from_its_mnist_flagfile(tmp_path):
    gan = digits_comparison.command(
        "lsgan", tmp_path, steps=7, seed=0, num_runs=3, data="mnist", image_size=16
    )
    flagfile = ROOT / "experiments" / "flags" / "lsgan_mnist.cfg"
    assert gan[3] == f"--flagfile={flagfile}" and gan[7] == "--image_size=16"
    for name in digits_comparison.LABELS:
        flagfile = ROOT / "experiments" / "flags" / f"{name}_mnist.cfg"
        assert "--dataset=mnist5k" in flagfile.read_text().splitlines()
    _fake_gan(tmp_path, "ns_gan", [3.0, 1.0, 2.0])
    path = tmp_path / "table.md"
    digits_comparison.write_table(tmp_path, ["ns_gan"], 3, path, data="mnist")
    text = path.read_text()
    assert text.startswith("MNIST-FID (lower is better) after 400 generator steps, 3 seeds")
    assert "1,000 samples each" in text and "| MNIST-FID mean ± std" in text


def test_vae_samples_are_what_the_library_decodes_from_the_saved_run(tmp_path):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import serialization

    from gans import models, vae

    decoder = models.DCGANGenerator(image_size=16, channels=1, width=8, batch_norm=False)
    model = models.VAE(encoder=models.VAEEncoder(4, width=8, kind="conv"), decoder=decoder)
    # Random decoder weights from their shapes (compiling the VAE's init costs seconds); the
    # encoder plays no part in sampling.
    shapes = jax.eval_shape(decoder.init, jax.random.key(0), jnp.zeros((1, 4)))["params"]
    rng = np.random.default_rng(0)
    draw = lambda shape: rng.normal(0.0, 0.2, shape.shape).astype(np.float32)
    params = {"encoder": {"unused": np.zeros(1, np.float32)}, "decoder": jax.tree.map(draw, shapes)}
    ema = {"encoder": params["encoder"], "decoder": jax.tree.map(draw, shapes)}
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 16, "width": 8, "z_dim": 4}))
    z = jax.random.normal(jax.random.key(7), (5, 4))
    for ema_params in (ema, None):
        state = vae.VAEState(
            step=jnp.array(12, jnp.int32),
            params=params,
            opt_state=(),
            key=jax.random.key(1),
            model=model,
            tx=optax.identity(),
            ema_params=ema_params,
        )
        # As gans.runner.train_vae saves a finished run.
        saved = {"params": state.params, "ema_params": state.ema_params, "step": state.step}
        (tmp_path / "params.msgpack").write_bytes(serialization.to_bytes(saved))

        samples, step = digits_comparison.vae_samples(tmp_path, seed=3, num=5)

        np.testing.assert_allclose(samples, vae.vae_generate(state, z), atol=1e-6)
        assert step == 12 and samples.shape == (5, 16, 16, 1)


def _fake_tracked(workdir, name, estimates, fids, key):
    """Runs logging ``key`` and the FID at steps 100, 200, ...; the FID's last is the final one."""
    for k, (estimate, fid) in enumerate(zip(estimates, fids)):
        records = [{"step": 50, key: 99.0}]  # A line without a FID is left out.
        records += [
            {"step": 100 * (i + 1), key: e, "eval/fid": f, "eval/fid_real_vs_real": FLOOR}
            for i, (e, f) in enumerate(zip(estimate, fid))
        ]
        _write_lines(workdir / name / f"run_{k}" / "metrics.jsonl", records)


def test_correlations_of_fake_runs_have_their_closed_forms(tmp_path):
    fid = [5.0, 4.0, 3.0, 2.0, 1.0]
    # Affine in the FID: r = rho = 1. A permutation of its ranks, d = (-4, -1, -1, 3, 3):
    # rho = 1 - 6 * 36 / (5 * 24) = -0.8, and r is the same for ranks 1..5 themselves.
    _fake_tracked(tmp_path, "wgan", [[2 * f + 1 for f in fid]], [fid], "wasserstein_estimate")
    _fake_tracked(tmp_path, "ns_gan", [[1.0, 3.0, 2.0, 5.0, 4.0]], [fid], "critic_loss")
    panels = tracks_quality.read_panels(tmp_path, ["wgan", "ns_gan"])

    (wgan,), (ns_gan,) = panels["wgan"], panels["ns_gan"]
    np.testing.assert_allclose([wgan.pearson, wgan.spearman], [1.0, 1.0])
    np.testing.assert_allclose([ns_gan.pearson, ns_gan.spearman], [-0.8, -0.8])
    np.testing.assert_array_equal(wgan.steps, [100, 200, 300, 400, 500])
    assert "Spearman rho -0.80" in tracks_quality.title("ns_gan", panels["ns_gan"])
    skipped = tracks_quality.read_panels(tmp_path, ["wgan"], skip=200)["wgan"][0]
    np.testing.assert_array_equal(skipped.steps, [300, 400, 500])
    with pytest.raises(ValueError, match="2 steps after 300"):
        tracks_quality.read_panels(tmp_path, ["wgan"], skip=300)


def _command(module, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", f"experiments.paper.{module}", *args],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_both_commands_on_finished_runs_write_the_table_and_the_figure(tmp_path):
    fid = [[5.0, 4.0, 3.0, 2.0, 1.0], [6.0, 5.0, 3.0, 4.0, 2.0], [9.0, 8.0, 7.0, 6.0, 5.0]]
    for name in ("wgan", "wgan_gp"):
        estimates = [[0.1 * f for f in seed] for seed in fid]
        _fake_tracked(tmp_path, name, estimates, fid, "wasserstein_estimate")
    _fake_tracked(tmp_path, "ns_gan", [[1.0, 3.0, 2.0, 5.0, 4.0]] * 3, fid, "critic_loss")
    (tmp_path / "ns_gan" / "config.json").write_text(json.dumps(ADAM))
    table, figure = tmp_path / "table.md", tmp_path / "figure.png"

    # Every seed of NS-GAN is finished, so nothing trains: the table is written at once.
    compared = _command(
        "digits_comparison",
        f"--workdir={tmp_path}",
        "--experiments=ns_gan",
        "--steps=500",
        f"--table={table}",
    )
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "ns_gan: finished earlier, kept" in compared.stdout
    # The last FIDs of the three seeds are 1, 2 and 5.
    assert "| NS-GAN |" in table.read_text() and "| 1.00 | 2.00 | 5.00 |" in table.read_text()

    tracked = _command("tracks_quality", f"--workdir={tmp_path}", f"--out={figure}")
    assert tracked.returncode == 0, tracked.stderr[-2000:]
    assert figure.stat().st_size > 10_000
    assert "WGAN-GP, seed 2: wasserstein_estimate vs digits-FID over 5 steps" in tracked.stdout
    assert "NS-GAN, seed 0: critic_loss vs digits-FID over 5 steps (100 to 500): " in tracked.stdout
    assert "Pearson r = -0.80, Spearman rho = -0.80" in tracked.stdout

    wrong = _command("digits_comparison", f"--workdir={tmp_path}", "--experiments=cgan")
    assert wrong.returncode == 2 and "unknown experiment 'cgan'" in wrong.stderr
