"""Does the critic's loss track sample quality? Correlates two logged quantities of a run.

    python -m experiments.track --workdir=runs/wgan_gp_digits --out=tracking.png

By default the Wasserstein estimate ``E[f(real)] - E[f(fake)]`` against the digits-FID logged by
``--eval_every`` (or W1 on 2-D mixtures), over the logging steps where both exist; prints
Pearson's r and Spearman's rho and draws both curves and their scatter.
"""

from absl import flags

from experiments import cli, common

flags.DEFINE_string("out", None, "The PNG to write (must not exist).")
flags.DEFINE_string("estimate", "wasserstein_estimate", "The critic-side quantity.")
flags.DEFINE_string(
    "quality", None, "The quality metric (default: eval/fid or eval/wasserstein_1)."
)
flags.DEFINE_integer("skip", 0, "Ignore logging steps up to this one (the first, chaotic ones).")
flags.mark_flag_as_required("out")


def main():
    import json
    import pathlib

    import numpy as np
    from scipy import stats

    from gans import visualize

    FLAGS = flags.FLAGS
    log = pathlib.Path(FLAGS.workdir) / "metrics.jsonl"
    out = pathlib.Path(FLAGS.out)
    if not log.is_file():
        cli.fail(f"{log} does not exist; give the --workdir of a training run.")
    if out.exists():
        cli.fail(f"{out} exists; choose another --out (nothing is overwritten).")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    quality = FLAGS.quality or next(
        (name for name in ("eval/fid", "eval/wasserstein_1") if any(name in r for r in records)),
        None,
    )
    if quality is None:
        cli.fail(f"{log} logs no sample quality; train with --eval_every.")
    rows = [
        (r["step"], r[FLAGS.estimate], r[quality])
        for r in records
        if FLAGS.estimate in r and quality in r and r["step"] > FLAGS.skip
    ]
    if len(rows) < 3:
        cli.fail(f"{log} has {len(rows)} steps logging both {FLAGS.estimate} and {quality}.")
    steps, estimate, measured = (np.array(column, np.float64) for column in zip(*rows))
    pearson = stats.pearsonr(estimate, measured).statistic
    spearman = stats.spearmanr(estimate, measured).statistic
    title = f"{len(rows)} steps: Pearson r = {pearson:.2f}, Spearman rho = {spearman:.2f}"
    visualize.save_tracking(
        steps,
        estimate,
        measured,
        out,
        estimate_label=FLAGS.estimate,
        quality_label=quality,
        title=title,
    )
    print(f"{FLAGS.estimate} vs {quality} over {title}; picture: {out}", flush=True)


if __name__ == "__main__":
    common.run_command(main)
