"""Draws samples from a run's latest checkpoint into a .npy file.

    python -m experiments.sample --workdir=runs/wgan_gp_digits --num=1000 --out=samples.npy

Images are ``[N, H, W, C]`` in [-1, 1]; 2-D runs give ``[N, 2]``. A conditional run draws
uniform labels, or ``--label=k`` for one class, and writes them beside the samples as
``FILE_labels.npy``; an InfoGAN run draws its codes from their priors, or ``--label=k`` fixes
the categorical code to category ``k`` (the continuous codes stay drawn). A workdir of several runs (``--num_runs``/``--sweep``) needs ``--run=K``.
"""

from absl import flags

from experiments import common

flags.DEFINE_integer("num", 64, "Number of samples.")
flags.DEFINE_string("out", None, "The .npy file to write (must not exist).")
flags.DEFINE_integer(
    "label",
    None,
    "Draw every sample for this class (conditional runs) or category of the categorical code "
    "(InfoGAN runs).",
)
flags.DEFINE_integer("run", 0, "Which run of a workdir holding several.")
flags.mark_flag_as_required("out")


def main():
    import pathlib

    import jax
    import jax.numpy as jnp
    import numpy as np

    from gans import sampling

    out = pathlib.Path(flags.FLAGS.out)
    if out.suffix != ".npy":
        common.fail(f"--out={out} must name a .npy file.")
    labels_out = out.with_name(out.stem + "_labels.npy")
    for path in (out, labels_out):
        if path.exists():
            common.fail(f"{path} exists; choose another --out (nothing is overwritten).")
    if flags.FLAGS.num < 1:
        common.fail(f"--num must be >= 1, got {flags.FLAGS.num}.")
    try:
        run, states, step = common.restore_from_workdir()
    except ValueError as e:
        common.fail(str(e))
    if not 0 <= flags.FLAGS.run < len(states):
        common.fail(f"--run={flags.FLAGS.run} but the workdir holds {len(states)} run(s).")
    labels = categories = None
    if flags.FLAGS.label is not None:
        info = run.step.info
        classes = info.num_categories if info is not None else run.step.num_classes
        if classes is None or not 0 <= flags.FLAGS.label < classes:
            common.fail(
                "--label needs a conditional or InfoGAN run and a class in [0, "
                f"{classes or 0}); this run has {classes or 'no'} classes."
            )
        chosen = jnp.full((flags.FLAGS.num,), flags.FLAGS.label, jnp.int32)
        labels, categories = (None, chosen) if info is not None else (chosen, None)
    key = jax.random.key(run.seed + 2)
    state = states[flags.FLAGS.run]
    samples, drawn = sampling.draw_samples(
        run.step, state, flags.FLAGS.num, key, labels, categories
    )
    if categories is not None:
        drawn = np.asarray(categories)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, samples)
    message = (
        f"wrote {samples.shape[0]} samples of shape {samples.shape[1:]} (step {step}) to {out}"
    )
    if drawn is not None:
        np.save(labels_out, drawn)
        message += f" and their labels to {labels_out}"
    print(message, flush=True)


if __name__ == "__main__":
    common.run_command(main)
