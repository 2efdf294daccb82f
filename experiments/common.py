"""The program around an experiment: parsing its flags, training the run ``experiments.compose``
builds from them, printing progress, and the record of a run.

An experiment module sets its paper's defaults with ``shared_flags.set_defaults`` and calls
``run``; the flags every experiment shares live in ``experiments.shared_flags``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import sys
from typing import Any

from absl import flags, logging

from experiments import cli, shared_flags
from experiments.compose import UserError, build_run

FLAGS = flags.FLAGS


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _print_progress(progress) -> None:
    m = progress.metrics
    parts = [
        f"step {progress.step}/{progress.steps}",
        f"{progress.steps_per_second:.1f} it/s"
        if math.isfinite(progress.steps_per_second)
        else "compiling",
        f"ETA {_format_duration(progress.eta_seconds)}",
    ]
    # Each model's headline numbers, in this order, where it reports them.
    shown = {
        "critic_loss": "critic",
        "generator_loss": "generator",
        "loss": "loss",
        "reconstruction": "reconstruction",
        "kl": "KL",
        "information_categorical": "L_I(categorical)",
    }
    parts += [f"{label} {m[name]:.4f}" for name, label in shown.items() if name in m]
    if "wasserstein_estimate" in m:
        parts.append(f"W {m['wasserstein_estimate']:.4f}")
    if m.get("penalty"):
        parts.append(f"penalty {m['penalty']:.4f}")
    if "augment_probability" in m:
        parts.append(f"augment p {m['augment_probability']:.3f}")
    if len(progress.runs) > 1:
        parts.append(f"(run 0 of {len(progress.runs)}; each run logs into its run_K directory)")
    print("  ".join(parts), flush=True)


def use_compilation_cache() -> None:
    """Keeps compiled programs in ``--compilation_cache`` (JAX's persistent cache), unless
    ``JAX_COMPILATION_CACHE_DIR`` names a cache already or the flag is ``none``.

    A cached executable is the one XLA compiled for the same program, options and machine, so
    nothing a run computes changes; a resumed or repeated run skips the compile. Every program
    is kept, however short its compile (JAX's default keeps those over a second only): the
    many small ones are most of what a command compiles, and a second start of the digits
    DCGAN took 7.7 s with them against 13.6 s without (BUILD_NOTES); the least recently used
    are dropped beyond 1 GiB.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or FLAGS.compilation_cache == "none":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", 2**30)


def _initialize_distributed() -> None:
    """Connects the processes of a multi-host run before JAX touches a device."""
    explicit = ("coordinator_address", "num_processes", "process_id")
    given = [name for name in explicit if FLAGS[name].value is not None]
    if not FLAGS.distributed:
        if given:
            raise UserError(f"--{given[0]} needs --distributed.")
        return
    if given and len(given) < len(explicit):
        raise UserError(
            "--distributed outside a TPU pod needs all of --coordinator_address, "
            "--num_processes and --process_id."
        )
    import jax

    # CPU processes exchange gradients through gloo (the default CPU backend has no
    # cross-process collectives); accelerators use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


# Re-exported: the commands built on this module (sample, evaluate, track) report through it.
fail = cli.fail


def experiment_flags() -> list[flags.Flag]:
    """Every flag of the experiment: the shared ones (``experiments.shared_flags``) and its own
    module's."""
    return cli.program_flags(shared_flags)


def _settings(value: Any) -> Any:
    """``value`` as JSON: dataclasses as dicts, functions by name (never an address)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _settings(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, functools.partial):
        bound = {name: _settings(v) for name, v in value.keywords.items()}
        return {"function": _settings(value.func), "args": _settings(value.args), **bound}
    if callable(value):
        named = value if hasattr(value, "__qualname__") else type(value)
        return f"{named.__module__}.{named.__qualname__}"
    if isinstance(value, (tuple, list)):
        return [_settings(v) for v in value]
    if isinstance(value, dict):
        return {str(name): _settings(v) for name, v in value.items()}
    return value


def record(step_settings: Any) -> dict[str, Any]:
    """The record of a run (``config.json``), which resuming compares whole: every flag of the
    experiment and ``step_settings``, the step's settings built from them (a ``StepConfig``)."""
    config = {flag.name: flag.value for flag in experiment_flags()}
    config["experiment"] = _experiment_name()
    # The pmap axis is how the step runs, not what it trains: --num_devices may change on resume.
    step = {name: v for name, v in _settings(step_settings).items() if name != "axis_name"}
    config["step_config"] = step
    return config


def main(build=build_run, actions=None) -> None:
    """Builds the run from the flags, trains it, and reports; user errors exit non-zero.

    ``actions(run, workdir)``, if given, returns periodic actions of the experiment's own
    (``gans.loop.Action``; see ``runner.train_and_evaluate``), built from its flags.
    """
    try:
        use_compilation_cache()
        _initialize_distributed()
        run = build()
        from gans import runner
        from gans import workdir as workdir_lib

        workdir = workdir_lib.check_workdir(FLAGS.workdir)
        own = [] if actions is None else list(actions(run, workdir))
        if own and isinstance(run, runner.VAERun):
            raise ValueError("the VAE's loop takes no actions of an experiment's own.")
    except ValueError as e:
        fail(str(e))
    config = record(run.config if isinstance(run, runner.VAERun) else run.step)
    if isinstance(run, runner.VAERun):
        what, train = "the VAE", runner.train_vae
    else:
        penalty = run.step.penalty
        what = run.step.loss + (f" + {penalty}" if penalty else "")
        train = functools.partial(runner.train_and_evaluate, actions=own)
    from gans import checkpoints
    from gans import run as run_lib

    resumed = checkpoints.latest_step(workdir)
    # The machine is named because a run repeats to the bit on one machine only (the vector
    # code XLA compiles differs between CPUs), and a resumed run's log shows each session's.
    print(
        f"training {what} on {FLAGS.dataset} for {FLAGS.steps} steps into {workdir} on "
        f"{run_lib.device_name()}"
        + (f", resuming from the checkpoint of step {resumed}" if resumed else ""),
        flush=True,
    )
    with cli.training_boundary(diverged=""):
        summary = train(run, workdir, config=config, on_progress=_print_progress)
    print(
        f"done in {_format_duration(summary['wall_seconds'])}; samples: {workdir / 'samples.png'}"
        if "runs" not in summary
        else f"done in {_format_duration(summary['wall_seconds'])}; runs: {workdir}/run_*",
        flush=True,
    )
    for k, result in enumerate(summary.get("runs", [summary])):
        prefix = f"run {k}: " if "runs" in summary else ""
        scores = {name[5:]: v for name, v in result.items() if name.startswith("eval/")}
        if "fid" in scores:  # The last step was scored (--eval_every).
            label = features_label(run.dataset.scoring)
            print(f"{prefix}step {result['step']}: {describe(scores, features=label)}", flush=True)
        if "code_purity" in result:
            print(
                f"{prefix}categorical code vs the classes its samples are read as: purity "
                f"{result['code_purity']:.3f} (chance about 0.1), "
                f"{result['code_distinct_classes']} distinct digits",
                flush=True,
            )
        if "modes" in result:
            print(
                f"{prefix}modes captured: {result['modes']}/{run.dataset.mixture.num_modes}  "
                f"high-quality samples: {100 * result['high_quality']:.1f}%  "
                f"reverse KL: {result['reverse_kl']:.3f}",
                flush=True,
            )


def features_label(scoring) -> str:
    """How FIDs on a data set's scoring network are named (``"MNIST"``: MNIST-FID), or ""."""
    if scoring is None:
        return ""
    from gans.metrics import digits_classifier

    return digits_classifier.source(scoring.classifier).label


def describe(result: dict[str, Any], modes: int | None = None, features: str = "") -> str:
    """One line of a sample-quality result (``gans.evaluation``), as the commands print it.

    Args:
      result: the scores, without the ``eval/`` prefix of a metrics line.
      modes: a 2-D mixture's mode count.
      features: whose features the FID is on (``features_label``; "" for Inception's).
    """
    if "fid" in result:
        name = f"{features}-FID" if features else "FID"
        text = (
            f"{name} {result['fid']:.2f} (real vs real {result['fid_real_vs_real']:.2f})  "
            f"KID {result['kid_mean']:.4f}  precision {result['precision']:.3f}  "
            f"recall {result['recall']:.3f}"
        )
        if "classes" in result:
            text += (
                f"  classes {result['classes']:g}/10  "
                f"KL from uniform {result['kl_from_uniform']:.3f}"
            )
        return text + f"  IS {result['is_mean']:.2f}"
    if "high_quality" not in result:  # Stacked digits.
        return f"modes {result['modes']}/1000  KL from uniform {result['kl']:.3f}"
    return (
        f"modes {result['modes']}/{modes}  high-quality {100 * result['high_quality']:.1f}%  "
        f"reverse KL {result['reverse_kl']:.3f}  W1 {result['wasserstein_1']:.4f} "
        f"(real vs real {result['wasserstein_1_real_vs_real']:.4f})"
    )


def _experiment_name() -> str:
    """The experiment module being run, e.g. ``experiments.wgan_gp``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None else pathlib.Path(sys.argv[0]).stem


def restore_from_workdir():
    """The run recorded in ``--workdir`` (its config.json) and every run's latest state.

    Returns:
      ``(run, states, step)``: the rebuilt ``Run`` (on one device), one state per run, and the
      step of the checkpoint they come from.
    """
    from gans import runner
    from gans import workdir as workdir_lib

    workdir = pathlib.Path(FLAGS.workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise UserError(
            f"--workdir {str(workdir)!r} holds no run (no config.json); give the --workdir of "
            "a training run."
        )
    saved = workdir_lib.read_record(workdir)
    workdir_lib.check_kinds(
        workdir, saved, {name: FLAGS[name].value for name in saved if name in FLAGS}
    )
    if saved.get("experiment") == "experiments.vae":
        raise UserError("sampling and evaluating the VAE from its workdir is not supported yet.")
    for name, value in saved.items():
        if name in FLAGS and name != "workdir":
            FLAGS[name].value = value
    # Restored on this host's first device, whatever trained it.
    FLAGS.num_devices, FLAGS.distributed = 1, False
    FLAGS.coordinator_address = FLAGS.num_processes = FLAGS.process_id = None
    run = build_run()
    try:
        states, step = runner.restore(run, workdir)
    except workdir_lib.ResumeError as e:
        raise UserError(str(e)) from None
    return run, states, step


def _require_workdir() -> None:
    if FLAGS.workdir is None:
        cli.fail("--workdir is required: the directory of the run.")


def run_command(command, needs_workdir: bool = True) -> None:
    """The entry point of a command on a finished run (sample, evaluate): flags, then ``command``.

    ``needs_workdir=False``: the command checks ``--workdir`` itself (evaluate's ``--samples``).
    """

    def _main(argv):
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        cli.check_command_line(argv, experiment_flags())
        if needs_workdir:
            _require_workdir()
        use_compilation_cache()
        command()

    cli.run(_main)


def run(build=build_run, actions=None) -> None:
    """The entry point of an experiment module: parses flags, then ``main(build, actions)``."""

    def _main(argv):
        # Libraries (Orbax, TFDS) log every checkpoint and file at INFO; the run prints its own
        # progress. --verbosity=0 brings them back.
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        cli.check_command_line(argv, experiment_flags())
        _require_workdir()
        main(build, actions)

    cli.run(_main)
