"""Scores a run's latest checkpoint and writes ``evaluation.json`` beside it.

    python -m experiments.evaluate --workdir=runs/wgan_gp_digits

Digits: digits-FID, KID, precision and recall (k = 3) on the features of a small classifier the
framework trains on the digits' training split (cached after the first use), class coverage
(digits produced of 10, KL of the class histogram from uniform) and the Inception-style score,
beside the real-vs-real floor (train split against the held-out split, 360 images). Gaussian
mixtures: modes captured, high-quality samples, reverse KL (2,500 samples) and the exact
Wasserstein-1 distance to 2,500 real samples by optimal transport. Stacked digits: the modes
covered of 1,000 and the KL of their histogram from uniform (26,000 samples, each channel read
by the same classifier). Works on a running run too: it reads the latest complete checkpoint.
"""

from absl import flags

from experiments import common

flags.DEFINE_integer(
    "num",
    None,
    "Samples to score (default: 360 for digits, 26,000 for stacked digits, 2,500 for 2-D, "
    "10,000 otherwise).",
)
flags.DEFINE_string(
    "inception_weights",
    None,
    "The FID Inception-v3 weights as .npz, for datasets other than digits and 2-D mixtures "
    "(gans/metrics/inception.py says where to get them).",
)


def describe(result, modes=None):
    if "fid" in result:
        text = (
            f"FID {result['fid']:.2f} (real vs real {result['fid_real_vs_real']:.2f})  "
            f"KID {result['kid_mean']:.4f}  precision {result['precision']:.3f}  "
            f"recall {result['recall']:.3f}"
        )
        if "classes" in result:
            text = (
                "digits-"
                + text
                + (
                    f"  classes {result['classes']}/10  "
                    f"KL from uniform {result['kl_from_uniform']:.3f}"
                )
            )
        return text + f"  IS {result['is_mean']:.2f}"
    if "high_quality" not in result:  # Stacked digits.
        return f"modes {result['modes']}/1000  KL from uniform {result['kl']:.3f}"
    return (
        f"modes {result['modes']}/{modes}  high-quality {100 * result['high_quality']:.1f}%  "
        f"reverse KL {result['reverse_kl']:.3f}  W1 {result['wasserstein_1']:.4f} "
        f"(real vs real {result['wasserstein_1_real_vs_real']:.4f})"
    )


def main():
    import json
    import pathlib

    from gans import evaluation, runner
    from gans import workdir as workdir_lib

    if flags.FLAGS.num is not None and flags.FLAGS.num < 4:
        common.fail(f"--num must be >= 4, got {flags.FLAGS.num}.")
    try:
        run, states, step = common.restore_from_workdir()
        workdir = pathlib.Path(flags.FLAGS.workdir)
        directories = runner.run_directories(run, workdir)
        modes = run.dataset.mixture.num_modes if run.dataset.mixture is not None else None
        inception = None
        if flags.FLAGS.inception_weights:
            from gans.metrics.inception import InceptionExtractor

            inception = InceptionExtractor.from_file(flags.FLAGS.inception_weights)
        for k, (state, directory) in enumerate(zip(states, directories)):
            seed = run.seeds()[k]
            result = evaluation.sample_quality(
                run, state, num=flags.FLAGS.num, inception=inception, seed=seed
            )
            result = {"step": step, **result}
            text = json.dumps(result, indent=2, default=float)
            workdir_lib.write_atomically(directory / "evaluation.json", text)
            prefix = f"run {k}: " if len(states) > 1 else ""
            print(f"{prefix}step {step}: {describe(result, modes)}", flush=True)
    except ValueError as e:
        common.fail(str(e))


if __name__ == "__main__":
    common.run_command(main)
