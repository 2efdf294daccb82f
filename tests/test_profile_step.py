"""The step profiler: HLO parsed into kinds, bytes and product FLOPs, name stacks into phases,
trace events into per-instruction times, and a traced toy step whose parts add up."""

import json

import jax
import jax.numpy as jnp
import pytest
from cli import run_experiment

from gans import profiling


def compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def test_a_matrix_products_flops_and_bytes_come_from_its_shapes():
    m, k, n = 24, 40, 56
    x, w = jnp.ones((m, k)), jnp.ones((k, n))
    computations = profiling.parse_hlo(compiled_text(lambda x, w: x @ w, x, w))
    found = [
        (computation, instruction)
        for computation, body in computations.items()
        for instruction in body.values()
        if profiling.kind(computations, instruction) == "dot" and computation.startswith("main")
    ]
    assert found, computations
    computation, instruction = found[0]
    assert profiling.dot_flops(computations, instruction, computation) == 2 * m * k * n
    assert profiling.shape_bytes(instruction.shape) == 4 * m * n


def test_shapes_count_each_array_of_a_tuple_at_its_dtypes_size():
    assert profiling.shape_bytes("f32[2,3]{1,0}") == 24
    assert profiling.shape_bytes("(f32[4]{0}, bf16[8]{0}, pred[])") == 16 + 16 + 1
    assert profiling.shape_dims("s32[5,0,2]{2,1,0}") == [("s32", (5, 0, 2))]


def test_a_fusion_of_only_moves_is_data_movement_and_arithmetic_is_elementwise():
    x = jnp.ones((8, 16, 4))
    moves = profiling.parse_hlo(compiled_text(lambda x: jnp.transpose(x, (2, 0, 1)) * 1, x))
    arithmetic = profiling.parse_hlo(compiled_text(lambda x: jnp.tanh(x) * 3 + 1, x))
    entry = lambda comps: next(body for name, body in comps.items() if name.startswith("main"))
    root = lambda comps: list(entry(comps).values())[-1]
    assert profiling.kind(moves, root(moves)) == "data movement"
    assert profiling.kind(arithmetic, root(arithmetic)) == "elementwise"


@pytest.mark.parametrize(
    "op_name, expected",
    [
        (
            "jit(train_step)/closed_call/critic_update/generate/DCGANGenerator/Conv_0/dot_general",
            "critic update: generator pass for the fakes",
        ),
        (
            "jit(train_step)/closed_call/critic_update/jvp(DCGANCritic)/Conv_2/dot_general",
            "critic update: critic pass on real and fake",
        ),
        (
            "jit(train_step)/closed_call/critic_update/transpose(jvp(DCGANCritic))/Conv_2/dot",
            "critic update: scores' backward",
        ),
        (
            "jit(train_step)/closed_call/critic_update/jvp(penalty)/jvp(DCGANCritic)/Conv_0/dot",
            "penalty: critic pass on interpolates",
        ),
        (
            "jit(train_step)/critic_update/jvp(penalty)/transpose(jvp(DCGANCritic))/Conv_0/dot",
            "penalty: input gradient",
        ),
        (
            "jit(train_step)/critic_update/transpose(jvp(penalty))/transpose(jvp(MLPCritic))/dot",
            "penalty: double backward",
        ),
        (
            "jit(train_step)/critic_update/jvp(penalty)/jit(norm)/sqrt",
            "penalty: interpolation and norms",
        ),
        ("jit(train_step)/closed_call/critic_update/mul", "critic update: optimiser and loss"),
        (
            "jit(train_step)/generator_update/jvp(DCGANGenerator)/Conv_0/dot",
            "generator update: forward",
        ),
        (
            "jit(train_step)/generator_update/transpose(jvp(DCGANCritic))/Conv_1/dot",
            "generator update: backward",
        ),
        ("jit(train_step)/generator_update/add", "generator update: optimiser and loss"),
        ("jit(train_step)/critic_update/jit(_normal)/jit(_normal_real)/erf_inv", "random numbers"),
        ("reduce_sum", "unattributed"),
        ("", "unattributed"),
    ],
)
def test_the_name_stack_gives_the_phase(op_name, expected):
    assert profiling.phase(op_name) == expected


def test_a_loop_is_timed_by_its_body_not_twice():
    def loop(x, w):
        return jax.lax.fori_loop(0, 3, lambda i, x: jnp.tanh(x @ w), x)

    x, w = jnp.ones((8, 8)), jnp.ones((8, 8))
    text = compiled_text(loop, x, w)
    computations = profiling.parse_hlo(text)
    body = {
        name: instruction
        for comp in computations.values()
        for name, instruction in comp.items()
        if instruction.op in ("while", "fusion", "dot")
    }
    (loop_name,) = [name for name, i in body.items() if i.op == "while"]
    inner = next(name for name, i in body.items() if i.op != "while")
    summary = profiling.summarize(
        text, {loop_name: 3.0, inner: 1.0}, {loop_name: 1, inner: 3}, 1, 5
    )
    assert summary["thread_ms_per_iter"] == pytest.approx(1000.0)
    assert [row["instruction"] for row in summary["top"]] == [inner]


def test_trace_events_sum_per_instruction():
    events = [
        {"ph": "X", "dur": 1500.0, "args": {"hlo_op": "fusion.1"}},
        {"ph": "X", "dur": 500.0, "args": {"hlo_op": "fusion.1"}},
        {"ph": "X", "dur": 250.0, "args": {"hlo_op": "copy.2"}},
        {"ph": "X", "dur": 9e9, "name": "PjitFunction(step)"},  # Not an operation.
        {"ph": "M", "args": {"name": "python"}},
    ]
    seconds, calls = profiling.thunk_times(events)
    assert seconds == pytest.approx({"fusion.1": 2e-3, "copy.2": 2.5e-4})
    assert calls == {"fusion.1": 2, "copy.2": 1}


@pytest.mark.slow
def test_a_traced_toy_step_adds_up(tmp_path):
    out = tmp_path / "profile.jsonl"
    result = run_experiment(
        "profile_step",
        "--settings=toy",
        "--batch_size=16",
        "--width=64",
        "--iters=2",
        "--warmup=1",
        "--peak_size=64",
        "--top=5",
        f"--profile_out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (profile,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert profile["bench"] == "toy" and profile["cpu"] and profile["iters"] == 2
    for table in ("by_kind", "by_phase"):
        parts = profile[table].values()
        assert sum(p["share"] for p in parts) == pytest.approx(1.0, abs=1e-3)
        # Each part and the total are rounded to 0.01 ms: on a 2 ms toy step the parts' sum may
        # stray from the total by half a unit each, more than 1 % of it.
        rounding = 0.005 * (len(parts) + 1)
        total = profile["thread_ms_per_iter"]
        assert sum(p["ms"] for p in parts) == pytest.approx(total, rel=0.01, abs=rounding)
    for part in (
        "penalty: double backward",
        "penalty: input gradient",
        "critic update: generator pass for the fakes",
        "generator update: backward",
    ):
        assert profile["by_phase"][part]["ms"] > 0, part
    assert profile["by_kind"]["dot"]["ms"] > 0
    assert len(profile["top"]) == 5
    assert profile["top"][0]["ms"] >= profile["top"][-1]["ms"]
    # The products' FLOPs, counted from their shapes, are within XLA's count for the step and
    # nearly all of it (93 % at width 64: the rest is activations, penalty and optimiser).
    total = profile["gflop_per_iter"]
    assert 0.9 * total < profile["dot_gflop_per_iter"] <= 1.001 * total
    for part, kinds in profile["phase_kind_ms"].items():
        assert sum(kinds.values()) == pytest.approx(profile["by_phase"][part]["ms"], abs=0.05)
    assert "| phase | ms | share | dot ms |" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--settings=dcgan64",), "unknown setting 'dcgan64'; known settings: toy, dcgan32"),
        (("--iters=0",), "--iters must be >= 1, got 0"),
        (("--top=-1",), "--top must be >= 0, got -1"),
        (("--num_devices=2",), "profile_step traces one device's step and no reference"),
    ],
)
def test_bad_input_is_one_sentence(args, message):
    result = run_experiment("profile_step", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
