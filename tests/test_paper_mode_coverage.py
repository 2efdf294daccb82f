"""The mode-coverage reproduction: end to end on tiny settings, and the properties it rests on."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.paper import mode_coverage, mode_coverage_protocol, mode_coverage_report
from gans import runner

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = mode_coverage_protocol.Settings(
    steps=2, seeds=2, batch_size=16, log_every=1, checkpoint_every=0
)


def _kernels(params) -> list[np.ndarray]:
    return [np.asarray(params[f"Dense_{i}"]["kernel"]) for i in range(len(params))]


def _is_scaled_orthogonal(kernel: np.ndarray, scale: float) -> bool:
    """W^T W = scale^2 I for a square or tall kernel, W W^T = scale^2 I for a wide one."""
    w = kernel / scale
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return np.allclose(gram, np.eye(len(gram)), atol=1e-5)


def test_both_players_have_the_protocols_architecture():
    generator, critic = mode_coverage.models(init_scale=1.4)
    key = jax.random.key(0)
    g_params = generator.init(key, jnp.zeros((1, mode_coverage_protocol.Z_DIM)))["params"]
    d_params = critic.init(key, jnp.zeros((1, 2)))["params"]
    g_kernels, d_kernels = _kernels(g_params), _kernels(d_params)
    assert [k.shape for k in g_kernels] == [(256, 128), (128, 128), (128, 2)]
    assert [k.shape for k in d_kernels] == [(2, 128), (128, 128), (128, 1)]
    for kernel in g_kernels + d_kernels:
        assert _is_scaled_orthogonal(kernel, 1.4), kernel.shape
        assert not _is_scaled_orthogonal(kernel, 1.0), kernel.shape  # The gain is applied.
    assert generator.activation is nn.tanh and critic.activation is nn.tanh
    biases = [np.asarray(p["bias"]) for p in (*g_params.values(), *d_params.values())]
    assert all(not b.any() for b in biases)
    # Tanh hidden units: a large input saturates, so the output stays within |W_out|_1 + |b|.
    out = generator.apply({"params": g_params}, 1e3 * jnp.ones((1, mode_coverage_protocol.Z_DIM)))
    assert np.all(np.abs(out) <= np.abs(g_kernels[-1]).sum(0) + 1e-4)


def _ours(table: pathlib.Path) -> list[str]:
    return [line for line in table.read_text().splitlines() if line.startswith("| ours")]


def _redraw_from_the_command_line(results: pathlib.Path, out: pathlib.Path, *flags: str):
    xla = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla)
    command = [
        sys.executable,
        "-m",
        "experiments.paper.mode_coverage",
        *flags,  # First: a flagfile's outputs are overridden by the ones below.
        f"--workdir={out / 'runs'}",
        f"--results={results}",
        f"--table={out / 'table.md'}",
        f"--picture={out / 'picture.png'}",
        "--redraw",
    ]
    return subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# One test for the costly part: under pytest-xdist a shared fixture would train once per worker.
@pytest.mark.slow
def test_end_to_end_and_seed_k_of_the_vmapped_program_is_the_single_run_of_seed_k(tmp_path):
    # The whole table on tiny settings: DRAGAN on ring-8, 2 seeds as one vmapped program.
    results = tmp_path / "results.json"
    outputs = {
        "workdir": tmp_path / "runs",
        "results": results,
        "table": tmp_path / "table.md",
        "picture": tmp_path / "picture.png",
    }
    mode_coverage.run_table(["dragan"], ["ring8"], TINY, log=lambda line: None, **outputs)
    text = (tmp_path / "table.md").read_text()
    assert f"- **Not the protocol: {TINY.steps} generator steps, not 25,000.**" in text
    assert "- **Not the protocol: batch 16, not 512.**" in text
    ours = _ours(tmp_path / "table.md")
    assert len(ours) == 1 and "| DRAGAN (lambda 10) |" in ours[0], ours
    assert f"{TINY.steps} steps, 2 seeds" in ours[0]
    assert "| VEEGAN T1 | Unrolled GAN | 7.6 |" in text and "| GDPP T1 | WGAN-GP | 6.8 |" in text
    assert "grid25" not in text  # Only the dataset asked for.
    records = json.loads(results.read_text())
    assert [r["seeds"] for r in records] == [[0, 1]]
    assert records[0]["protocol"] == mode_coverage.protocol(TINY)
    # A second call keeps the recorded pair instead of training it again.
    lines = []
    mode_coverage.run_table(["dragan"], ["ring8"], TINY, log=lines.append, **outputs)
    assert lines == [f"kept dragan on ring8 from {results}"]
    assert json.loads(results.read_text()) == records
    assert all(0 <= r["modes"] <= r["modes_any"] <= 8 for r in records[0]["runs"])
    assert (tmp_path / "picture.png").stat().st_size > 1000

    # The program reads a flagfile and redraws the table from the records, training nothing;
    # the command line's settings (TINY's) pick the records.
    flagfile = ROOT / "experiments" / "flags" / "paper_mode_coverage_quick.cfg"
    redrawn = tmp_path / "redrawn"
    tiny = ("--steps=2", "--seeds=2", "--batch_size=16", "--critic_lr=1e-4", "--wgan_lr=5e-5")
    result = _redraw_from_the_command_line(
        results, redrawn, f"--flagfile={flagfile}", *tiny, "--losses=dragan", "--datasets=ring8"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (redrawn / "table.md").read_text()
    assert f"--flagfile={flagfile}" in text and "--redraw" not in text
    assert _ours(redrawn / "table.md") == ours
    assert (redrawn / "picture.png").stat().st_size > 1000
    # Under the quick variant's own settings there is nothing to redraw.
    missing = _redraw_from_the_command_line(results, redrawn, f"--flagfile={flagfile}")
    assert missing.returncode == 2 and "train first" in missing.stderr

    # Seed 1 of the vmapped program is the run of seed 1 alone.
    together = mode_coverage.build_run("dragan", "ring8", TINY)
    vmapped = mode_coverage.final_samples(together, tmp_path / "runs" / "dragan_ring8")
    alone = mode_coverage.build_run("dragan", "ring8", TINY, seed=1, num_runs=1)
    summary = runner.train_and_evaluate(alone, tmp_path / "alone")
    (single,) = mode_coverage.final_samples(alone, tmp_path / "alone")
    assert [s.shape for s in vmapped] == [(2500, 2)] * 2
    np.testing.assert_allclose(vmapped[1], single, rtol=1e-5, atol=1e-5)
    assert not np.allclose(vmapped[0], vmapped[1], atol=1e-3)  # Each run has its own seed.
    # The samples the table scores are the ones the runner scored.
    scores = mode_coverage.score(single, "ring8")
    for name in ("modes", "high_quality", "reverse_kl"):
        assert scores[name] == summary[name], name
    assert records[0]["runs"][1] == mode_coverage.score(vmapped[1], "ring8")


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'wgan-gp'; known: ns_gan, mm_gan"):
        mode_coverage_protocol.check_names(["wgan-gp"], ["ring8"])
    with pytest.raises(ValueError, match="unknown dataset 'ring'; known: ring8, grid25"):
        mode_coverage_protocol.check_names(["wgan"], ["ring"])
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        mode_coverage_protocol.Settings(steps=0)


def test_a_row_adds_remedies_to_a_loss():
    packed = mode_coverage_protocol.row("ns_gan+pack2")
    assert (packed.loss, packed.pack, packed.unroll_steps) == ("non_saturating", 2, 0)
    assert packed.label == "NS-GAN + PacGAN2"
    both = mode_coverage_protocol.row("wgan_gp+unroll5+mbstd")
    assert (both.penalty, both.n_critic, both.unroll_steps, both.minibatch_std) == (
        "gradient_penalty",
        5,
        5,
        True,
    )
    assert mode_coverage_protocol.row("ns_gan") == mode_coverage_protocol.LOSSES["ns_gan"]
    for bad in ("ns_gan+pack1", "ns_gan+unroll0", "ns_gan+pacgan"):
        with pytest.raises(ValueError, match="unknown remedy"):
            mode_coverage_protocol.row(bad)
    run = mode_coverage.build_run("ns_gan+pack2+mbstd", "ring8", TINY)
    assert run.step.pack == 2 and run.critic.minibatch_std and run.critic.minibatch_std_group == 4


def test_departures_from_the_protocol_are_named():
    assert mode_coverage_report.departures(mode_coverage_protocol.Settings()) == []
    shortened = mode_coverage_protocol.Settings(steps=1500, critic_lr=1e-3)
    assert mode_coverage_report.departures(shortened) == [
        "1,500 generator steps, not 25,000",
        "the discriminator's Adam rate 0.001, not 0.0001",
    ]


def test_pacgan_networks_are_its_released_toy_protocol():
    settings = dataclasses.replace(mode_coverage_protocol.PUBLISHED["pacgan"], steps=2, seeds=2)
    assert mode_coverage_report.departures(settings) == [
        "2 generator steps, not 400,000",
        "2 seeds, not 10",
    ]
    generator, critic = mode_coverage.models(networks="pacgan")
    assert generator.hidden == (400,) * 4 and generator.batch_norm is not None
    assert (critic.hidden, critic.maxout_pieces) == ((200,) * 3, 5)
    params = critic.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    kernels = np.concatenate([np.ravel(params[name]["kernel"]) for name in params])
    assert abs(kernels.std() - mode_coverage_protocol.PACGAN_INIT_STD) < 0.001  # N(0, 0.02^2).
    for loss, pack in (("ns_gan", 1), ("ns_gan+pack2", 2), ("ns_gan+pack4", 4)):
        run = mode_coverage.build_run(loss, "grid25", settings)
        # PacGAN's batch is 100 packs: 100 m samples of each kind.
        assert (run.batch_size, run.step.pack, run.step.z_dim) == (100 * pack, pack, 2)

    # The critic's optimizer is Adam at 1e-4 with beta1 0.8: two updates of opposite gradients
    # equal optax's Adam with those settings, and not the unrolled protocol's beta1 0.5.
    def two_updates(tx):
        first, second = {"w": jnp.array([3.0, -0.5])}, {"w": jnp.array([-1.0, 2.0])}
        _, opt_state = tx.update(first, tx.init(first), first)
        return tx.update(second, opt_state, second)[0]["w"]

    ours = two_updates(run.critic_tx)
    np.testing.assert_allclose(ours, two_updates(optax.adam(1e-4, b1=0.8)), rtol=1e-5)
    assert not np.allclose(ours, two_updates(optax.adam(1e-4, b1=0.5)), rtol=1e-3)


def test_the_two_protocols_keep_their_records_apart():
    unrolled, pacgan = mode_coverage_protocol.Settings(), mode_coverage_protocol.PUBLISHED["pacgan"]
    assert mode_coverage.protocol(unrolled)["networks"] == "unrolled"
    assert mode_coverage.protocol(unrolled) != mode_coverage.protocol(pacgan)
    assert mode_coverage.output_path("unrolled", "json").endswith("paper_mode_coverage.json")
    assert mode_coverage.output_path("pacgan", "json").endswith("paper_mode_coverage_pacgan.json")
    with pytest.raises(ValueError, match="unknown --networks 'veegan'; known: unrolled, pacgan"):
        mode_coverage_protocol.Settings(networks="veegan")
    # A table shows the published rows of its own protocol only.
    rows = "\n".join(mode_coverage_report.table_rows([], "ring8", "pacgan"))
    assert "PacGAN T1" in rows and "VEEGAN T1" not in rows
    rows = "\n".join(mode_coverage_report.table_rows([], "ring8", "unrolled"))
    assert "VEEGAN T1" in rows and "PacGAN T1" not in rows


@pytest.mark.slow
def test_the_pacgan_flagfile_trains_packed_batch_norm_networks_end_to_end(tmp_path):
    # Two steps of PacGAN2 on the ring with PacGAN's networks, from the flagfile: the
    # BatchNorm generator trains as vmapped seeds and its samples read the running averages.
    flagfile = ROOT / "experiments" / "flags" / "paper_mode_coverage_pacgan.cfg"
    xla = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    command = [
        sys.executable,
        "-m",
        "experiments.paper.mode_coverage",
        f"--flagfile={flagfile}",
        "--steps=2",
        "--seeds=2",
        "--batch_size=8",
        "--log_every=1",
        "--losses=ns_gan+pack2",
        "--datasets=ring8",
        f"--workdir={tmp_path / 'runs'}",
        f"--results={tmp_path / 'results.json'}",
        f"--table={tmp_path / 'table.md'}",
        f"--picture={tmp_path / 'picture.png'}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla)
    result = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads((tmp_path / "results.json").read_text())
    assert record["protocol"]["networks"] == "pacgan" and len(record["runs"]) == 2
    text = (tmp_path / "table.md").read_text()
    assert "PacGAN: G 4 x 400 BatchNorm ReLU" in text and "PacGAN T1 | PacGAN2" in text
    assert "**Not the protocol: 2 generator steps, not 400,000.**" in text
    checkpoint = tmp_path / "runs" / "ns_gan+pack2_ring8"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["networks"] == "pacgan"
