"""Experiments: one command per module (``python -m experiments.NAME``), each composing the
library from its flags.

Run as a command, the package first makes Ctrl-C (SIGINT) and SIGTERM (a scheduler's or
``kill``'s stop) end it from its first moment, with one sentence and status 128 + the signal
(130 for Ctrl-C): while Python imports, absl parses, JAX compiles and the run is
scored, at once (what was written stays: checkpoints are written whole or not at all, and the
same command resumes); while training, ``gans.loop`` replaces this handler and stops at the end
of a step with a checkpoint. Not a ``KeyboardInterrupt``: raised inside a garbage-collection
callback (JAX registers one), Python reports and drops it, and the command trained on. SIGINT
is honoured even where the command was started with it ignored, as a shell script's
background job is.
"""

import os
import signal
import sys


def _interrupted(number, frame):
    by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
    print(
        f"error: interrupted{by}; what was written so far is kept: run the same command again "
        "to resume, or give a new --workdir to start clean.",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + number)


def _started_as_a_command() -> bool:
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b.startswith("experiments.") for a, b in zip(argv, argv[1:]))


if _started_as_a_command():
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
