"""Running experiment commands in subprocesses, as a user would, for the command-line tests."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = ROOT / "experiments" / "flags"
# Shrunk so that a run is seconds: the flagfile still sets everything else.
# The session's compilation cache directory for commands, set by tests/conftest.py.
COMPILATION_CACHE_ENV = "GANS_TESTS_COMPILATION_CACHE"
TINY = ["--steps=2", "--log_every=1", "--width=16", "--batch_size=16", "--sample_every=0"]
TOY = [
    f"--flagfile={FLAGS / 'wgan_gp_8gaussians.cfg'}",
    "--log_every=1",
    "--width=16",
    "--batch_size=16",
    "--sample_every=0",
]
# The finished run the tables of bad input start from (the ``trained`` fixture): checkpoints
# at steps 2 and 4.
TRAINED = [*TOY, "--steps=4", "--checkpoint_every=2"]
LOCK_FILE = ".lock"  # gans.workdir.LOCK_FILE, whose content is the process holding it.


def environment(devices: int = 1, **extra: str) -> dict[str, str]:
    """The subprocess environment: ``devices`` CPU devices, most XLA optimisations off."""
    # One CPU device unless a test asks for more (tests/conftest.py simulates eight here).
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    flags += f" --xla_force_host_platform_device_count={devices}"
    # Most XLA optimisations off: these runs check behaviour, not speed, and compile in about
    # half the time (16.6 s -> 9.5 s for a digits run); the library tests keep them on.
    # The session's compilation cache (tests/conftest.py), every program in it however short
    # its compile: the many small op-by-op programs are most of what recurs between commands.
    cache = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if os.environ.get(COMPILATION_CACHE_ENV):
        cache["JAX_COMPILATION_CACHE_DIR"] = os.environ[COMPILATION_CACHE_ENV]
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": flags.strip(),
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
        **cache,
        **extra,
    }


def run_experiment(module, *args, cwd=ROOT, devices=1, wait=True, env=None):
    """Runs ``python -m experiments.MODULE ARGS``; ``wait=False`` returns the running process."""
    command = [sys.executable, "-m", f"experiments.{module}", *args]
    env = env or environment(devices)
    if not wait:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every file and directory under ``root`` with its content's hash (the lock aside)."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(root.rglob("*"))
        if path.name != LOCK_FILE
    }


def metric_lines(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [line["step"] for line in a] == [line["step"] for line in b]
    for x, y in zip(a, b):
        for name, value in x.items():
            assert value == pytest.approx(y[name], rel=1e-4, abs=1e-5), name


class CommandServer:
    """Runs experiment commands as ``run_experiment`` does, each in a process forked from one
    that imported JAX and the library once (``tests/command_server.py``): for tables of commands
    that fail in their first second, where importing would be most of each one's time."""

    def __init__(self, devices: int = 1):
        self.env = environment(devices)
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).with_name("command_server.py"))],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, module, *args, cwd=None) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as outputs:
            stdout, stderr = pathlib.Path(outputs, "stdout"), pathlib.Path(outputs, "stderr")
            request = {
                "module": module,
                "args": [str(arg) for arg in args],
                "cwd": str(ROOT if cwd is None else cwd),
                "env": self.env,
                "stdout": str(stdout),
                "stderr": str(stderr),
            }
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            assert answer, "the command server stopped"
            return subprocess.CompletedProcess(
                [module, *args],
                json.loads(answer)["returncode"],
                stdout.read_text(),
                stderr.read_text(),
            )

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
