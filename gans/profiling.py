"""Where a compiled step's time goes: XLA operations timed from a profiler trace, by kind and phase.

XLA's CPU runtime records one trace event per operation it executes, named after the HLO
instruction. ``summarize`` sums each instruction's time and joins it with the optimised HLO
module (``compiled.as_text()``) for

- its **kind**: a matrix product (``dot``, the sub-pixel convolutions' form on CPU), a
  convolution, data movement (copies, transposes, pads, slices, concatenations and fusions of
  nothing else), a reduction, an elementwise fusion, or other;
- its **phase**, read from the JAX name stack the train step sets (``critic_update``,
  ``generate``, ``penalty``, ``generator_update``) and the autodiff transforms around it: the
  generator's pass for the fakes, the critic's scores and their backward pass, the penalty's
  critic pass on interpolates, its input gradient and its double backward pass, the generator
  update's forward and backward passes, random numbers, and the optimisers and losses;
- its bytes (operands and result) and, for matrix products, its FLOPs.

Times are thread-seconds: XLA:CPU runs independent operations on its threads at once, so their
sum can exceed the wall time. Shares are of that sum. ``experiments.profile_step`` is the
command.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Mapping

KINDS = ("dot", "convolution", "data movement", "reduction", "elementwise", "other")
# Operations that only move or reshape data; a fusion of nothing else is data movement.
MOVEMENT = frozenset(
    {
        "bitcast",
        "broadcast",
        "concatenate",
        "copy",
        "dynamic-slice",
        "dynamic-update-slice",
        "gather",
        "iota",
        "pad",
        "reshape",
        "reverse",
        "slice",
        "transpose",
    }
)
STRUCTURAL = frozenset({"parameter", "constant", "tuple", "get-tuple-element"})
# Operations that run other computations: their bodies' operations are timed themselves, so
# an event of the container would count that time twice.
CONTAINERS = frozenset({"while", "conditional", "call"})
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f16": 2, "bf16": 2, "s16": 2, "u16": 2}
_BYTES.update({"f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16})
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<shape>.+?) (?P<op>[\w\-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%(?P<name>[\w.\-]+) \(.*\{\s*$")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One HLO instruction of the optimised module, as the profile needs it."""

    name: str
    op: str
    shape: str
    operands: tuple[str, ...]
    calls: str | None
    op_name: str
    contracting: tuple[int, ...] = ()  # A dot's lhs contracting dimensions.


def shape_dims(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """The (dtype, dims) of every array in an HLO shape string (a tuple has several)."""
    return [
        (m["dtype"], tuple(int(d) for d in m["dims"].split(",") if d))
        for m in _ARRAY.finditer(shape.split("{")[0] if "(" not in shape else shape)
    ]


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string: 4 per element unless its dtype says otherwise."""
    return sum(_BYTES.get(dtype, 4) * math.prod(dims) for dtype, dims in shape_dims(shape))


def _operand_text(rest: str) -> str:
    """The operand list at the start of ``rest`` (the text after the op's opening bracket)."""
    depth = 0
    for i, char in enumerate(rest):
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                return rest[:i]
            depth -= 1
    return rest


def parse_hlo(text: str) -> dict[str, dict[str, Instruction]]:
    """The module's computations: ``{computation: {instruction name: Instruction}}``."""
    computations: dict[str, dict[str, Instruction]] = {}
    current: dict[str, Instruction] | None = None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = computations.setdefault(header["name"], {})
            continue
        match = _INSTRUCTION.match(line)
        if match is None or current is None:
            continue
        rest = line[match.end() :]
        operands = tuple(_OPERAND.findall(_operand_text(rest)))
        calls = re.search(r"\bcalls=%([\w.\-]+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
        current[match["name"]] = Instruction(
            name=match["name"],
            op=match["op"],
            shape=match["shape"],
            operands=operands,
            calls=calls[1] if calls else None,
            op_name=op_name[1] if op_name else "",
            contracting=tuple(int(d) for d in contracting[1].split(",") if d)
            if contracting
            else (),
        )
    return computations


def _ops(computations, name: str, seen: frozenset = frozenset()) -> set[str]:
    """Every op in computation ``name`` and the computations it calls."""
    ops = set()
    for instruction in computations.get(name, {}).values():
        ops.add(instruction.op)
        if instruction.calls and instruction.calls not in seen:
            ops |= _ops(computations, instruction.calls, seen | {name})
    return ops


def kind(computations, instruction: Instruction) -> str:
    """What an instruction spends its time on (one of ``KINDS``)."""
    ops = {instruction.op}
    if instruction.op == "fusion" and instruction.calls:
        ops = _ops(computations, instruction.calls) - STRUCTURAL
    if "convolution" in ops:
        return "convolution"
    if "dot" in ops:
        return "dot"
    if ops <= MOVEMENT:
        return "data movement"
    if ops & {"reduce", "reduce-window"}:
        return "reduction"
    if ops & {"custom-call", "rng-bit-generator", "sort", "scatter"}:
        return "other"
    return "elementwise"


def dot_flops(computations, instruction: Instruction, computation: str) -> int:
    """FLOPs of the matrix products an instruction computes (2 per multiply-add)."""
    if instruction.op == "fusion" and instruction.calls:
        return sum(
            dot_flops(computations, inner, instruction.calls)
            for inner in computations.get(instruction.calls, {}).values()
        )
    if instruction.op != "dot":
        return 0
    lhs = computations[computation].get(instruction.operands[0])
    if lhs is None:
        return 0
    (_, lhs_dims), *_ = shape_dims(lhs.shape)
    (_, out_dims), *_ = shape_dims(instruction.shape)
    return 2 * math.prod(out_dims) * math.prod(lhs_dims[d] for d in instruction.contracting)


def phase(op_name: str) -> str:
    """The part of the train step an operation belongs to, from its JAX name stack."""
    name = op_name.replace("jit(train_step)/", "").replace("closed_call/", "")
    if not name or "/" not in name and "_update" not in name:
        return "unattributed"
    if re.search(r"_threefry|_normal|_uniform|_bernoulli|random_", name):
        return "random numbers"
    model = re.search(r"jvp\([A-Z]\w*\)", name)
    if "generator_update" in name:
        if model is None:
            return "generator update: optimiser and loss"
        return "generator update: " + ("backward" if "transpose(jvp(" in name else "forward")
    if "critic_update" not in name:
        return "unattributed"
    if "/generate/" in name:
        return "critic update: generator pass for the fakes"
    if "transpose(jvp(penalty))" in name:
        return "penalty: double backward"
    if "jvp(penalty)" in name:
        if model is None:
            return "penalty: interpolation and norms"
        if "transpose(jvp(" in name:
            return "penalty: input gradient"
        return "penalty: critic pass on interpolates"
    if model is None:
        return "critic update: optimiser and loss"
    return "critic update: " + (
        "scores' backward" if "transpose(jvp(" in name else "critic pass on real and fake"
    )


def thunk_times(trace_events: Iterable[Mapping]) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and call counts per HLO instruction, from a Chrome/Perfetto trace's events."""
    seconds: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for event in trace_events:
        args = event.get("args") or {}
        if event.get("ph") == "X" and "hlo_op" in args:
            seconds[args["hlo_op"]] += event["dur"] * 1e-6
            calls[args["hlo_op"]] += 1
    return dict(seconds), dict(calls)


def read_trace(directory: str) -> list[dict]:
    """The events of the Perfetto trace ``jax.profiler.trace`` wrote under ``directory``."""
    paths = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {directory}")
    with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def summarize(
    hlo_text: str, seconds: Mapping[str, float], calls: Mapping[str, int], iters: int, top: int
) -> dict:
    """Per-iteration time by kind, by phase and by instruction, with bytes and dot FLOPs."""
    computations = parse_hlo(hlo_text)
    where = {name: comp for comp, body in computations.items() for name in body}
    by_kind: dict[str, float] = collections.defaultdict(float)
    by_phase: dict[str, float] = collections.defaultdict(float)
    cross: dict[str, dict[str, float]] = collections.defaultdict(lambda: dict.fromkeys(KINDS, 0.0))
    rows = []
    dot_seconds = dot_total = 0.0
    for name, total in seconds.items():
        computation = where.get(name)
        if computation is None:  # Runtime bookkeeping, not an instruction of the module.
            continue
        instruction = computations[computation][name]
        if instruction.op in CONTAINERS:
            continue
        per_iter = total / iters
        operation_kind = kind(computations, instruction)
        operation_phase = phase(instruction.op_name)
        by_kind[operation_kind] += per_iter
        by_phase[operation_phase] += per_iter
        cross[operation_phase][operation_kind] += per_iter
        flops = dot_flops(computations, instruction, computation) * calls[name] / iters
        if flops:
            dot_seconds += per_iter
            dot_total += flops
        operand_bytes = sum(
            shape_bytes(computations[computation][o].shape)
            for o in instruction.operands
            if o in computations[computation]
        )
        rows.append(
            {
                "instruction": name,
                "kind": operation_kind,
                "phase": operation_phase,
                "ms": per_iter * 1e3,
                "calls": calls[name] / iters,
                "mb": (operand_bytes + shape_bytes(instruction.shape))
                * calls[name]
                / iters
                / 2**20,
                "gflop": flops / 1e9,
                "shape": instruction.shape.split("{")[0],
                "op_name": instruction.op_name,
            }
        )
    total = sum(by_kind.values())
    rows.sort(key=lambda row: -row["ms"])
    share = lambda parts: {
        k: {"ms": round(v * 1e3, 2), "share": round(v / total, 4)}
        for k, v in sorted(parts.items(), key=lambda item: -item[1])
    }
    return {
        "thread_ms_per_iter": round(total * 1e3, 2),
        "instructions": len(rows),
        "by_kind": share(by_kind),
        "by_phase": share(by_phase),
        "phase_kind_ms": {
            part: {k: round(v * 1e3, 2) for k, v in cross[part].items()} for part in by_phase
        },
        "dot_gflop_per_iter": round(dot_total / 1e9, 4),
        "dot_gflops": round(dot_total / dot_seconds / 1e9, 1) if dot_seconds else None,
        "top": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            for row in rows[:top]
        ],
    }


def markdown(profile: Mapping) -> str:
    """A profile as markdown: time by phase and by kind, then the slowest instructions."""
    lines = [
        (
            f"{profile['bench']} (batch {profile['batch']}), {profile['cpu']}: "
            f"{profile['wall_ms_per_iter']:.0f} ms a step, {profile['thread_ms_per_iter']:.0f} "
            f"thread-ms in {profile['instructions']} operations; matrix products "
            f"{profile['dot_gflop_per_iter']} GFLOP at {profile['dot_gflops']} GFLOP/s "
            f"(peak {profile['peak_gflops']})"
        ),
        "",
    ]
    header = " | ".join(f"{kind} ms" for kind in KINDS)
    lines += [f"| phase | ms | share | {header} |", "|---" * (3 + len(KINDS)) + "|"]
    for part, value in profile["by_phase"].items():
        kinds = " | ".join(f"{profile['phase_kind_ms'][part][kind]:.1f}" for kind in KINDS)
        lines.append(f"| {part} | {value['ms']:.1f} | {100 * value['share']:.1f} % | {kinds} |")
    lines += ["", "| kind | ms | share |", "|---|---|---|"]
    lines += [
        f"| {part} | {value['ms']:.1f} | {100 * value['share']:.1f} % |"
        for part, value in profile["by_kind"].items()
    ]
    lines.append("")
    lines += [
        "| instruction | kind | phase | ms | MB | GFLOP | shape |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['instruction']} | {r['kind']} | {r['phase']} | {r['ms']:.1f} | {r['mb']:.0f} | "
        f"{r['gflop']:.2f} | {r['shape']} |"
        for r in profile["top"]
    ]
    return "\n".join(lines)
