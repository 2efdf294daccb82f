"""The one way a command reports a user's mistake, and the checks every flag gets by its kind.

Every experiment and paper program imports this module: it defines no flags of its own and
imports neither JAX nor the library, so bad input is reported before anything slow starts.
Importing it gives every command JAX's own flags (``--jax_platforms=cpu``, ``--jax_enable_x64``,
...), importing JAX only where the command line gives one (``accept_jax_flags``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import math
import os
import pathlib
import sys
import tempfile
import traceback
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import NoReturn

from absl import flags

# Flags that name a file or a directory. Empty, they would silently mean the current directory
# (or the default), which is what an unset shell variable gives: --workdir=$RUN.
PATH_FLAGS = frozenset(
    {
        "workdir",
        "data_dir",
        "out",
        "table",
        "picture",
        "results",
        "inception_weights",
        "reference_dir",
        "samples",
        "compilation_cache",
    }
)
SEED_FLAGS = frozenset({"seed"})
# Seeds enter the data sets' jitted samplers as int32 (gans.data); jax.random.key would take
# larger ones but folds them to 32 bits (key(2**32) is key(0)), so two seeds would be one run.
SEED_LIMIT = 2**31
_FLAGFILE_DIRECTIVES = ("--flagfile", "-flagfile")


def fail(message: str) -> NoReturn:
    """Prints ``error: <message>`` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# What to do about an operating system's refusal, by its errno.
_OS_ERROR_FIXES = {
    errno.ENOENT: "check the path, or create what it names",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "the path is a folder where a file belongs: name a file",
    errno.EEXIST: "something is already there: move it away or choose another path",
    errno.ENAMETOOLONG: "use a shorter path (each name at most 255 bytes)",
    errno.EACCES: "choose a path you may write to, or change its permissions",
    errno.EPERM: "choose a path you may write to, or change its permissions",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOSPC: "the disk is full: free some space or choose another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another disk",
    errno.ENOMEM: "the machine is out of memory: use a smaller batch, model or --num_runs",
    errno.EFBIG: "the file is larger than the file size limit (ulimit -f) or the file system "
    "allows: raise the limit or choose another disk",
    errno.EMFILE: "the process may open no more files (ulimit -n): raise the limit",
}
# JAX's CPU runtime and the framework's imports need about 2 GiB of address space before a
# run allocates anything (a 2-step toy run fails at 1.9 GiB, in a thread pool's creation or a
# library's import, by an abort that no handler can turn into a sentence): a lower
# ``ulimit -v`` is refused before JAX starts.
MIN_ADDRESS_SPACE = 3 * 2**30
# A run writes checkpoints, logs and pictures; under a lower ``ulimit -f`` a write fails
# midway, in a writer's thread as often as not. 64 MiB holds a toy or digits run's files.
MIN_FILE_SIZE = 64 * 2**20
# Exit statuses: a user's mistake (2, as fail), an interrupt (128 + SIGINT), a bug (EX_SOFTWARE).
USER_STATUS, INTERRUPT_STATUS, BUG_STATUS = 2, 130, 70
BUG_REPORTS_ENV = "GANS_BUG_REPORTS"


def os_error_sentence(error: OSError) -> str:
    """One sentence for an operating system's refusal: what it refused, where, and the fix."""
    where = f" {error.filename}" if error.filename is not None else ""
    if error.filename2 is not None:
        where += f" -> {error.filename2}"
    reason = error.strerror or str(error) or type(error).__name__
    fix = _OS_ERROR_FIXES.get(error.errno, "check the path and the machine's resources")
    return f"{reason}:{where}; {fix}." if where else f"{reason}; {fix}."


def _platform_refused(error: BaseException) -> str | None:
    """JAX's refusal of a platform the host lacks (``JAX_PLATFORMS=tpu`` on a CPU machine) as
    one sentence, or None for any other error."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not text.startswith("Unable to initialize backend"):
        return None
    reason = text.split(":", 1)[0].removeprefix("Unable to initialize backend").strip()
    return (
        f"JAX cannot start the backend {reason} that JAX_PLATFORMS or --jax_platforms asks for "
        "on this machine; name one it has (cpu, or cuda where a GPU and its jax plugin are "
        "installed) or leave it unset."
    )


def _limits_refused() -> str | None:
    """A sentence refusing a resource limit too low for any run (``ulimit -v``, ``ulimit -f``),
    or None."""
    import resource

    def below(kind: int, floor: int) -> int | None:
        soft, _ = resource.getrlimit(kind)
        return None if soft == resource.RLIM_INFINITY or soft >= floor else soft

    space = below(resource.RLIMIT_AS, MIN_ADDRESS_SPACE)
    if space is not None:
        return (
            f"the address-space limit (ulimit -v) is {space / 2**20:,.0f} MiB, and JAX's "
            f"runtime needs about 2 GiB before training anything; raise it to at least "
            f"{MIN_ADDRESS_SPACE // 2**20:,} MiB (ulimit -v unlimited)."
        )
    size = below(resource.RLIMIT_FSIZE, MIN_FILE_SIZE)
    if size is not None:
        return (
            f"the file size limit (ulimit -f) is {size / 2**10:,.0f} KiB, too small for a run's "
            f"checkpoints, logs and pictures; raise it to at least {MIN_FILE_SIZE // 2**20} MiB "
            "(ulimit -f unlimited)."
        )
    return None


def _bug_report(error: BaseException) -> pathlib.Path | None:
    """Writes ``error``'s traceback to a file for a bug report; returns its path (None if no
    folder would take it)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"gans-bug-{stamp}-{os.getpid()}.txt"
    text = "".join(traceback.format_exception(error))
    command = " ".join(sys.argv)
    for folder in (os.environ.get(BUG_REPORTS_ENV), tempfile.gettempdir()):
        if not folder:
            continue
        try:
            path = pathlib.Path(folder) / name
            path.write_text(f"command: {command}\n\n{text}")
            return path
        except OSError:
            continue
    return None


def guarded(main):
    """``main`` with every way it may end early turned into one sentence and an exit status.

    A user's mistake (``ValueError``; absl's flag errors never reach here) and an operating
    system's refusal (``OSError``: a path too long, a file where a folder belongs, a full or
    read-only disk...) exit 2 with ``error: <sentence>``; a file that is not UTF-8 text names
    itself; Ctrl-C exits 130; anything else is a bug: one sentence that says so, exit 70, and
    the traceback in a file (``$GANS_BUG_REPORTS``, else the temporary folder) for a report.
    """

    def wrapped(argv):
        try:
            return main(argv)
        except KeyboardInterrupt:
            print(
                "error: interrupted; nothing was lost: checkpoints written so far are kept, and "
                "the same command resumes or starts clean.",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(INTERRUPT_STATUS)
        except UnicodeDecodeError as e:
            fail(
                f"a file is not UTF-8 text ({e.reason} at byte {e.start}); flagfiles and records "
                "must be UTF-8: check the file's encoding."
            )
        except OSError as e:
            fail(os_error_sentence(e))
        except MemoryError:
            fail(_OS_ERROR_FIXES[errno.ENOMEM].capitalize() + ".")
        except ValueError as e:
            fail(str(e))
        except Exception as e:  # noqa: BLE001 - the boundary of the whole command.
            if _platform_refused(e):
                fail(_platform_refused(e))
            path = _bug_report(e)
            kept = f"the traceback is in {path}" if path else "no folder would take the traceback"
            print(
                f"error: internal error ({type(e).__name__}: {e}); this is a bug, not your "
                f"input: {kept}; please include it in a report.",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(BUG_STATUS)

    return wrapped


def _undecodable_flagfile(argv: Sequence[str]) -> str | None:
    """The first ``--flagfile`` of ``argv`` that is not UTF-8 text, or None."""
    for arg in argv:
        for directive in _FLAGFILE_DIRECTIVES:
            if arg.startswith(directive + "="):
                path = arg.split("=", 1)[1]
                try:
                    pathlib.Path(path).read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    return path
                except OSError:
                    continue
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, its errors (a value a flag cannot hold, a flagfile that cannot be
    opened) as one sentence and status 2 like every other mistake."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        text = " ".join(str(e).removeprefix("ERROR:: ").split())
        fail(f"{text.rstrip('.')}; --helpshort lists the flags.")


def run(main) -> None:
    """``absl.app.run`` of ``guarded(main)``: every command's entry point.

    absl reads the flagfiles before ``main`` runs; one that is not UTF-8 is named here. After
    a failure's sentence, what the interpreter's shutdown prints (a file writer's exit hook or
    a thread meeting the same full disk or closed file) is not shown: the sentence said it.
    """
    from absl import app

    try:
        refused = _limits_refused()
        if refused:
            fail(refused)
        try:
            app.run(guarded(main), flags_parser=parse_flags)
        except UnicodeDecodeError as e:
            path = _undecodable_flagfile(sys.argv) or "a flagfile"
            fail(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8.")
    except SystemExit as e:
        if e.code not in (None, 0):
            sys.stderr.flush()
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 2)
        raise


@contextlib.contextmanager
def training_boundary(
    *user_errors: type[Exception], diverged: str = "training diverged: "
) -> Iterator[None]:
    """Around a command's training: each way it is expected to end early, as one sentence.

    A signal that the loop stopped on (``gans.loop.Interrupted``: its checkpoint is saved)
    exits with the signal's conventional status (130 for Ctrl-C); Ctrl-C outside a step
    (building, compiling, scoring) with 130 too; a non-finite loss, a workdir of other settings
    or in use, and ``user_errors`` (``ValueError`` unless given) with ``fail``. The library is
    imported here, once training is about to start, not with this module.
    """
    from gans import loop, workdir

    try:
        yield
    except loop.Interrupted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(128 + e.signal_number)
    except KeyboardInterrupt:
        print(
            "error: interrupted outside a training step; the latest checkpoint is kept: run "
            "the same command again to resume.",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
    except loop.NonFiniteError as e:
        fail(f"{diverged}{e}")
    except (workdir.ResumeError, workdir.WorkdirInUseError, *(user_errors or (ValueError,))) as e:
        fail(str(e))


def require_at_least(flag_values: flags.FlagValues, names: Iterable[str], bound: int = 1) -> None:
    """``fail``s on the first of the integer flags ``names`` below ``bound``."""
    for name in names:
        if flag_values[name].value < bound:
            fail(f"--{name} must be >= {bound}, got {flag_values[name].value}.")


def program_flags(*modules: ModuleType) -> list[flags.Flag]:
    """The flags ``modules`` define and those of the program being run (``__main__``)."""
    found: list[flags.Flag] = []
    for module in (*modules, sys.modules["__main__"]):
        found += [f for f in flags.FLAGS.get_key_flags_for_module(module) if f not in found]
    return found


def _empty_path_message(name: str) -> str:
    return f"--{name} is empty; give it a path (an unset shell variable expands to nothing)."


def _not_utf8(text: str) -> str | None:
    """The first byte of ``text`` that the command line did not give as UTF-8 (Python keeps
    it as a lone surrogate), as ``0xff``, or None."""
    for char in text:
        if 0xDC80 <= ord(char) <= 0xDCFF:
            return f"0x{ord(char) - 0xDC00:02x}"
    return None


def check_flags(flag_list: Iterable[flags.Flag], command_line: Sequence[str] = ()) -> None:
    """Checks what every flag of a kind must hold, whichever program defines it.

    Numbers must be finite (integer flags cannot parse otherwise), paths non-empty and seeds in
    ``[0, SEED_LIMIT)``. Bounds of one flag's meaning (``--steps >= 1``) are its program's.

    Args:
      flag_list: the flags to check.
      command_line: the arguments as given (``sys.argv[1:]``), where ``--flagfile`` is read,
        since absl keeps no flag of that name.

    Raises:
      ValueError: one sentence naming the first bad flag.
    """
    for k, arg in enumerate(command_line):
        name, equals, value = arg.partition("=")
        if name in _FLAGFILE_DIRECTIVES:
            given = value if equals else (command_line[k + 1] if k + 1 < len(command_line) else "")
            if not given.strip():
                raise ValueError(_empty_path_message("flagfile"))
    for flag in flag_list:
        value = flag.value
        if value is None:
            continue
        if isinstance(flag.parser, flags.FloatParser) and not math.isfinite(value):
            raise ValueError(f"--{flag.name} must be a finite number, got {value}.")
        if flag.name in PATH_FLAGS and isinstance(value, str) and not value.strip():
            raise ValueError(_empty_path_message(flag.name))
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and _not_utf8(text):
                raise ValueError(
                    f"--{flag.name} holds a byte that is not UTF-8 text ({_not_utf8(text)}); "
                    "run records and logs are UTF-8: rename the path or retype the value."
                )
        if flag.name in SEED_FLAGS and not 0 <= value < SEED_LIMIT:
            raise ValueError(
                f"--{flag.name} must be an integer from 0 to {SEED_LIMIT - 1}, got {value}."
            )


def check_command_line(argv: Sequence[str], flag_list: Iterable[flags.Flag] | None = None) -> None:
    """Exits with one sentence on stray arguments or a flag value no flag of its kind may hold.

    Args:
      argv: what absl left after parsing the flags, the program's name first.
      flag_list: the flags to check (default: ``program_flags()``).
    """
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])!r}; flags are written --name=value.")
    try:
        check_flags(program_flags() if flag_list is None else flag_list, sys.argv[1:])
    except ValueError as e:
        fail(str(e))


def start_training_program(argv: Sequence[str]) -> None:
    """A paper program's first lines: Orbax's INFO line per checkpoint silenced (unless
    ``--verbosity`` is given), then ``check_command_line``."""
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    check_command_line(argv)


def training_command(module: str) -> str:
    """This command line without ``--redraw``: the command whose results a redraw shows."""
    given = [arg for arg in sys.argv[1:] if arg not in ("--redraw", "--redraw=true")]
    return " ".join(["python -m", module, *given])


def accept_jax_flags(argv: Sequence[str]) -> None:
    """Defines JAX's own flags for absl where ``argv`` gives one, in a flagfile or not.

    ``app.run`` then parses them with the command's flags and JAX applies them before ``main``
    (``jax.config.config_with_absl``). Every other command line parses without importing JAX.
    They are JAX's flags, not the program's: ``program_flags`` and the run's record leave them
    out, so a run may resume under other ones.

    Args:
      argv: the command line, the program's name first (``sys.argv``).
    """
    try:
        args = flags.FLAGS.read_flags_from_files(list(argv[1:]))
    except (flags.Error, UnicodeDecodeError):  # An unreadable flagfile: reported at parsing.
        args = list(argv[1:])
    names = [arg.lstrip("-").partition("=")[0] for arg in args if arg.startswith("-")]
    given = any(name.startswith(("jax_", "nojax_")) for name in names)
    if given and "jax_platforms" not in flags.FLAGS:  # Not defined yet, by this or by JAX.
        import jax

        jax.config.config_with_absl()


# Here, since every command imports this module before it parses its command line.
accept_jax_flags(sys.argv)
