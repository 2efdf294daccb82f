"""The test session's environment, set before JAX is imported.

- Eight simulated CPU devices for the data-parallel tests.
- A persistent XLA compilation cache for the commands the tests run in subprocesses
  (``tests/cli.py``), made empty for the session and removed at its end. Each such command
  starts a fresh JAX whose programs (the toy step, the samplers, the evaluators) other commands
  of the session compiled already; a cached executable is the one XLA compiled, so no result
  changes. The tests that run in this process keep JAX's in-memory caches only: writing every
  small program to disk cost them more than it saved.
"""

import os
import pathlib
import shutil
import tempfile

import pytest
from cli import COMPILATION_CACHE_ENV, TRAINED, CommandServer, run_experiment

_DEVICES = "--xla_force_host_platform_device_count=8"
if _DEVICES not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES}".strip()


def pytest_configure(config):
    # The controller makes the commands' compilation cache; the test workers, started after
    # this, inherit the environment.
    if not hasattr(config, "workerinput"):
        os.environ[COMPILATION_CACHE_ENV] = tempfile.mkdtemp(prefix="gans-tests-xla-cache-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(COMPILATION_CACHE_ENV), ignore_errors=True)


@pytest.fixture(scope="session")
def commands():
    """Runs an experiment command as ``cli.run_experiment`` does, in a process of its own forked
    from one that imported JAX and the library once per device count
    (``tests/command_server.py``): for the tables of short commands, where importing would be
    most of each one's time."""
    servers: dict[int, CommandServer] = {}

    def run(module, *args, cwd=None, devices=1):
        if devices not in servers:
            servers[devices] = CommandServer(devices)
        return servers[devices].run(module, *args, cwd=cwd)

    yield run
    for server in servers.values():
        server.close()


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> pathlib.Path:
    """A finished toy run (``cli.TRAINED``) that the bad-input tables copy and damage."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = run_experiment("wgan_gp", *TRAINED, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    return workdir
