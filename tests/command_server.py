"""Runs commands as ``python -m experiments.MODULE`` would, each in a child forked from a process
that imported JAX and the library once (``tests/cli.py``'s ``CommandServer`` starts it).

The bad-input table runs about a hundred commands that fail within their first second, most of
which is importing JAX and the library. Each child is still a process of its own: its exit
status, its own stdout and stderr, and a fresh ``__main__`` with fresh flags, because nothing of
``experiments`` is imported here, only in the child. Forking is safe because nothing here
starts a thread or a JAX backend: a child initialises its own.

Protocol: one JSON request per line on stdin, ``{"module", "args", "cwd", "env", "stdout",
"stderr"}`` (the last two: files the child writes), answered by one line, ``{"returncode"}``.
"""

import atexit
import json
import os
import runpy
import sys
import traceback


def _child(request: dict) -> int:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.path[0] = os.getcwd()  # As for ``python -m``: the current directory first.
    sys.argv = [f"experiments.{request['module']}", *request["args"]]
    try:
        runpy.run_module(f"experiments.{request['module']}", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:  # As the interpreter exits on SystemExit.
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 (as the interpreter reports an uncaught exception)
        traceback.print_exc()
        return 1


def serve() -> None:
    # What every command imports before it parses its flags: JAX, the library and its
    # dependencies; never ``experiments``, whose modules define the flags.
    import jax  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

    import gans.evaluation
    import gans.runner
    import gans.vae  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
                atexit._run_exitfuncs()  # As the interpreter does before it exits.
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
