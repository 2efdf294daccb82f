"""Scores a run's latest checkpoint (writing ``evaluation.json`` beside it), or a set of samples.

    python -m experiments.evaluate --workdir=runs/wgan_gp_digits
    python -m experiments.evaluate --samples=samples.npy --dataset=digits --image_size=16
    python -m experiments.evaluate --samples=generated/ --dataset=folder:faces --image_size=64 \
        --inception_weights=pt_inception.npz --out=scores.json

A run:
Digits: digits-FID, KID, precision and recall (k = 3) on the features of a small classifier the
framework trains on the digits' training split (cached after the first use), class coverage
(digits produced of 10, KL of the class histogram from uniform) and the Inception-style score,
beside the real-vs-real floor (train split against the held-out split, 360 images). Gaussian
mixtures: modes captured, high-quality samples, reverse KL (2,500 samples) and the exact
Wasserstein-1 distance to 2,500 real samples by optimal transport. Stacked digits: the modes
covered of 1,000 and the KL of their histogram from uniform (26,000 samples, each channel read
by the same classifier). Works on a running run too: it reads the latest complete checkpoint.

Samples (``--samples``: a ``.npy`` of ``[N, H, W, C]`` in [-1, 1] as ``experiments.sample``
writes, an ``.npz`` with ``images``, or a folder of PNG or JPEG images) against the reference
``--dataset`` (any training data set, with ``--data_dir``, ``--split``, ``--image_size``): FID,
KID, precision and recall (k = 3) and the Inception Score, on the Inception network's features
when ``--inception_weights`` is given and on the digits classifier's for one-channel 8, 16 or
32 pixel images otherwise, beside the FID between two halves of the reference. Samples are read
at the reference's size and channels; up to ``--num`` reference images (default 10,000) are used.
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
    "samples",
    None,
    "Score these samples against --dataset instead of a run: a .npy, an .npz holding 'images', "
    "or a folder of PNG or JPEG images.",
)
flags.DEFINE_string("out", None, "--samples: also write the scores to this JSON (must not exist).")
flags.DEFINE_string(
    "inception_weights",
    None,
    "The FID Inception-v3 weights as .npz, for datasets other than digits and 2-D mixtures "
    "(gans/metrics/inception.py says where to get them).",
)


def _extractor():
    if not flags.FLAGS.inception_weights:
        return None
    from gans.metrics.inception import InceptionExtractor

    return InceptionExtractor.from_file(flags.FLAGS.inception_weights)


def evaluate_run():
    import json
    import pathlib

    from gans import evaluation
    from gans import run as run_lib
    from gans import workdir as workdir_lib

    run, states, step = common.restore_from_workdir()
    workdir = pathlib.Path(flags.FLAGS.workdir)
    directories = run_lib.run_directories(run, workdir)
    modes = run.dataset.mixture.num_modes if run.dataset.mixture is not None else None
    inception = _extractor()
    for k, (state, directory) in enumerate(zip(states, directories)):
        seed = run.seeds()[k]
        result = evaluation.sample_quality(
            run, state, num=flags.FLAGS.num, inception=inception, seed=seed
        )
        result = {"step": step, **result}
        text = json.dumps(result, indent=2, default=float)
        workdir_lib.write_atomically(directory / "evaluation.json", text)
        prefix = f"run {k}: " if len(states) > 1 else ""
        label = common.features_label(run.dataset.scoring)
        print(f"{prefix}step {step}: {common.describe(result, modes, label)}", flush=True)


def read_samples(path, element_shape):
    """The images at ``path`` as float32 ``[N, *element_shape]`` in [-1, 1]."""
    import pathlib

    import numpy as np

    from gans.data import files
    from gans.data.images import to_model_range

    file = pathlib.Path(path).expanduser()
    size, _, channels = element_shape
    options = {"image_size": size, "image_mode": "grayscale" if channels == 1 else "rgb"}
    if file.is_dir():
        dataset = files.load_folder(file, name=f"--samples={path}", **options)
    elif file.suffix == ".npz":
        dataset = files.load_npz(file, name=f"--samples={path}", **options)
    elif file.suffix == ".npy" and file.is_file():
        images = np.load(file, allow_pickle=False)
        if images.dtype == np.uint8:
            images = to_model_range(images)
        if images.ndim != 4 or images.shape[1:] != tuple(element_shape):
            raise common.UserError(
                f"--samples={path} holds {images.dtype} {images.shape}; the reference's images are "
                f"{list(element_shape)}: draw them at that size, or save them as PNGs or an .npz "
                "to be resized."
            )
        if images.size and (not np.isfinite(images).all() or np.abs(images).max() > 1.0):
            raise common.UserError(f"--samples={path} must lie in [-1, 1], a generator's range.")
        return images.astype(np.float32)
    else:
        raise common.UserError(
            f"--samples={path} is neither a folder, an .npz nor an existing .npy file."
        )
    return dataset.images if dataset.images.dtype != np.uint8 else to_model_range(dataset.images)


def evaluate_samples():
    import json
    import pathlib

    import numpy as np

    from experiments import compose
    from gans import evaluation
    from gans import workdir as workdir_lib

    FLAGS = flags.FLAGS
    out = pathlib.Path(FLAGS.out) if FLAGS.out else None
    if out is not None and out.exists():
        common.fail(f"{out} exists; choose another --out (nothing is overwritten).")
    reference_set = compose.dataset_from_flags()
    if len(reference_set.element_shape) != 3:
        raise common.UserError(f"--samples are scored against images; {FLAGS.dataset} is 2-D.")
    samples = read_samples(FLAGS.samples, reference_set.element_shape)
    if len(samples) < 4:
        raise common.UserError(f"--samples={FLAGS.samples} holds {len(samples)} images; give >= 4.")
    total = _num_examples(reference_set)
    num = min(FLAGS.num or 10_000, total)
    if num < 4:
        raise common.UserError(
            f"--dataset={FLAGS.dataset} holds {num} images; precision and recall compare each "
            "reference image with its 3 nearest neighbours, so give a reference of >= 4."
        )
    reference = np.asarray(reference_set.batch(0, num, FLAGS.seed)["x"][0])
    extractor = evaluation.extractor_for(
        reference_set.element_shape, _extractor(), reference_set.scoring
    )
    result = evaluation.set_quality(samples, reference, extractor)
    network = "Inception" if FLAGS.inception_weights else f"{extractor.source} classifier"
    label = "" if FLAGS.inception_weights else common.features_label(reference_set.scoring)
    result = {"samples": len(samples), "reference": num, "features": network, **result}
    print(
        f"{len(samples)} samples against {num} images of {FLAGS.dataset} ({network} features): "
        f"{common.describe(result, features=label)}",
        flush=True,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        workdir_lib.write_atomically(out, json.dumps(result, indent=2, default=float))


def _num_examples(dataset) -> int:
    """How many distinct examples a finite data set holds."""
    for name in ("num_examples", "images", "digit_images"):
        if hasattr(dataset, name):
            value = getattr(dataset, name)
            return value if isinstance(value, int) else len(value)
    return 10_000  # Infinite (toy) sets; not reached for images.


def main():
    FLAGS = flags.FLAGS
    if FLAGS.num is not None and FLAGS.num < 4:
        common.fail(f"--num must be >= 4, got {FLAGS.num}.")
    if FLAGS.samples is None and FLAGS.out is not None:
        common.fail("--out applies to --samples; a run's scores go into its evaluation.json.")
    if FLAGS.samples is not None and FLAGS["workdir"].present:
        common.fail("give --samples or --workdir, not both.")
    if FLAGS.samples is None and FLAGS.workdir is None:
        common.fail("give the --workdir of a run, or --samples to score against --dataset.")
    try:
        evaluate_samples() if FLAGS.samples is not None else evaluate_run()
    except ValueError as e:
        common.fail(str(e))


if __name__ == "__main__":
    common.run_command(main, needs_workdir=False)
