"""Flags shared by every experiment, defined once, and the code that turns them into a ``Run``.

An experiment module sets its paper's defaults (its loss and penalty among them)
with ``set_defaults`` and calls ``run``; everything else (data, models,
optimizers, logging) is composed here from the shared flags.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS

# Run.
flags.DEFINE_string("workdir", None, "Directory for metrics, samples and parameters (new).")
flags.DEFINE_integer("seed", 0, "Seed of every random stream.")
flags.DEFINE_integer("steps", 2000, "Generator updates (each after n_critic critic updates).")
flags.DEFINE_integer("batch_size", 64, "Examples per critic and generator update.")
flags.DEFINE_integer("log_every", 100, "Steps between metrics lines.")
flags.DEFINE_integer("sample_every", 0, "Steps between sample pictures (0: final only).")
# Data.
flags.DEFINE_string(
    "dataset", "8gaussians", "8gaussians, 25gaussians, swissroll, ring8, grid25 or digits."
)
flags.DEFINE_integer("image_size", 8, "Digits side length: 8 (native), 16 or 32.")
# Models.
flags.DEFINE_integer("z_dim", 128, "Latent size; z ~ N(0, I).")
flags.DEFINE_integer("width", 512, "MLP hidden width (2-D data) or DCGAN base channels (images).")
flags.DEFINE_integer("depth", 3, "MLP hidden layers (2-D data).")
flags.DEFINE_enum(
    "model",
    "auto",
    ["auto", "mlp", "dcgan", "msg"],
    "Architecture: auto (MLP for 2-D data, DCGAN for images), mlp, dcgan or msg (MSG-GAN).",
)
flags.DEFINE_bool("conditional", False, "Conditional GAN: labels into both players.")
flags.DEFINE_enum(
    "conditioning",
    "concat",
    ["concat", "projection"],
    "How the conditional critic sees the label: concatenated channels or a projection.",
)
flags.DEFINE_integer("info_categories", 0, "InfoGAN categorical code size (0: no InfoGAN).")
flags.DEFINE_integer("info_continuous", 2, "InfoGAN continuous codes, each U[-1, 1].")
flags.DEFINE_float("info_weight", 1.0, "InfoGAN lambda of the categorical code.")
flags.DEFINE_float("info_continuous_weight", 0.1, "InfoGAN lambda of the continuous codes.")
flags.DEFINE_bool("spectral_norm", False, "Spectral normalisation of every critic layer.")
flags.DEFINE_enum(
    "downsampling",
    "strided",
    ["strided", "avgpool"],
    "DCGAN critic down-sampling: strided convolutions or average pooling (never max pooling).",
)
flags.DEFINE_enum(
    "critic_norm",
    None,
    ["none", "layer", "batch"],
    "DCGAN critic normalisation (default: none under a penalty, batch otherwise).",
)
# Game.
flags.DEFINE_string(
    "loss", "wasserstein", "minimax, non_saturating, wasserstein, least_squares or hinge."
)
flags.DEFINE_string("penalty", "none", "gradient_penalty, dragan, r1 or none.")
flags.DEFINE_integer("n_critic", 5, "Critic updates per generator update.")
flags.DEFINE_float("penalty_weight", 10.0, "Penalty weight lambda.")
flags.DEFINE_bool("one_sided", False, "Penalise only gradient norms above 1.")
flags.DEFINE_float("clip", 0.0, "WGAN weight clipping bound c (0: off).")
flags.DEFINE_float("label_smoothing", 0.0, "One-sided label smoothing (real target 1 - s).")
flags.DEFINE_float("flip_probability", 0.0, "Noisy labels: chance of flipping a target.")
flags.DEFINE_integer("flip_anneal_steps", 0, "Steps over which the flip chance decays to 0.")
flags.DEFINE_float("instance_noise", 0.0, "Std of Gaussian noise on every critic input.")
flags.DEFINE_integer("noise_anneal_steps", 0, "Steps over which instance noise decays to 0.")
flags.DEFINE_float("ema_decay", 0.0, "Generator weight EMA decay for samples (0: off).")
flags.DEFINE_bool("dragan_symmetric", False, "DRAGAN: perturb with U[-1, 1] instead of U[0, 1].")
flags.DEFINE_integer(
    "warmup_critic_steps",
    0,
    "WGAN's schedule: this many critic updates for the first 25 generator steps and every "
    "500th (100 in the original code; 0: off).",
)
# Optimizers.
flags.DEFINE_enum("optimizer", "adam", ["adam", "rmsprop", "sgd"], "Optimizer of both players.")
flags.DEFINE_bool("optimistic", False, "Optimistic updates (optimistic Adam / gradient descent).")
flags.DEFINE_float("critic_lr", 1e-4, "Critic learning rate.")
flags.DEFINE_float("generator_lr", 1e-4, "Generator learning rate.")
flags.DEFINE_float("beta1", 0.0, "Adam beta1.")
flags.DEFINE_float("beta2", 0.9, "Adam beta2.")
flags.DEFINE_enum(
    "lr_schedule",
    "constant",
    ["constant", "linear"],
    "Learning-rate schedule: constant, or linear decay to 0 (WGAN-GP).",
)

flags.mark_flag_as_required("workdir")

TOY_DATASETS = ("8gaussians", "25gaussians", "swissroll", "ring8", "grid25")


class UserError(ValueError):
    """A problem with the user's input, reported as one sentence."""


# The DCGAN paper's optimiser (Radford et al., 2016), shared by the cross-entropy GANs.
DCGAN_ADAM = dict(optimizer="adam", critic_lr=2e-4, generator_lr=2e-4, beta1=0.5, beta2=0.999)


def set_defaults(**defaults: Any) -> None:
    """Sets an experiment's paper defaults; flagfiles and the command line override them."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)


def _schedule(learning_rate: float):
    import optax

    if FLAGS.lr_schedule == "linear":
        return optax.linear_schedule(learning_rate, 0.0, FLAGS.steps)
    return learning_rate


def _check_flags() -> None:
    positive = ("steps", "batch_size", "log_every", "n_critic", "z_dim", "width", "depth")
    for name in (
        "flip_anneal_steps",
        "noise_anneal_steps",
        "warmup_critic_steps",
        "info_categories",
        "info_continuous",
    ):
        if FLAGS[name].value < 0:
            raise UserError(f"--{name} must be >= 0, got {FLAGS[name].value}.")
    if FLAGS.info_categories == 1:
        raise UserError("--info_categories must be 0 (off) or >= 2.")
    for name in positive:
        if FLAGS[name].value < 1:
            raise UserError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    for name in ("critic_lr", "generator_lr"):
        if not FLAGS[name].value > 0:
            raise UserError(f"--{name} must be > 0, got {FLAGS[name].value}.")
    if FLAGS.penalty_weight < 0:
        raise UserError(
            f"--penalty_weight must be >= 0, got {FLAGS.penalty_weight}; WGAN-GP uses 10 "
            "(0.1 on 2-D data)."
        )
    if FLAGS.clip < 0:
        raise UserError(f"--clip must be >= 0, got {FLAGS.clip}; WGAN uses 0.01.")
    if FLAGS.sample_every < 0:
        raise UserError(f"--sample_every must be >= 0, got {FLAGS.sample_every}.")
    for name in ("beta1", "beta2"):
        if not 0 <= FLAGS[name].value < 1:
            raise UserError(f"--{name} must be in [0, 1), got {FLAGS[name].value}.")


def _models(dataset, penalty):
    """The generator and critic the flags name, wrapped for conditioning or InfoGAN."""
    from gans import models

    kind = FLAGS.model
    if kind == "auto":
        kind = "mlp" if len(dataset.element_shape) == 1 else "dcgan"
    if kind == "mlp":
        hidden = (FLAGS.width,) * FLAGS.depth
        generator = models.MLPGenerator(out_dim=math.prod(dataset.element_shape), hidden=hidden)
        critic = models.MLPCritic(hidden=hidden, spectral_norm=FLAGS.spectral_norm)
    else:
        if len(dataset.element_shape) != 3:
            raise UserError(f"--model={kind} needs image data; {FLAGS.dataset} is 2-D.")
        size, _, channels = dataset.element_shape
        norm = FLAGS.critic_norm or ("none" if penalty else "batch")
        if penalty and norm == "batch":
            raise UserError(
                "--critic_norm=batch makes the gradient penalty batch-wide instead of per "
                "example; use --critic_norm=layer (the WGAN-GP paper's drop-in) or none."
            )
        image_models = {
            "dcgan": (models.DCGANGenerator, models.DCGANCritic),
            "msg": (models.MSGGenerator, models.MSGCritic),
        }
        generator_class, critic_class = image_models[kind]
        generator = generator_class(image_size=size, channels=channels, width=FLAGS.width)
        critic = critic_class(
            width=FLAGS.width,
            normalization=norm,
            spectral_norm=FLAGS.spectral_norm,
            downsampling=FLAGS.downsampling,
        )
    if FLAGS.conditional:
        if dataset.num_classes is None:
            raise UserError(
                f"--conditional needs labelled data; {FLAGS.dataset} has none (use digits or a "
                "Gaussian mixture, whose labels are the modes)."
            )
        generator = models.ConditionalGenerator(generator, dataset.num_classes)
        critic = models.ConditionalCritic(critic, dataset.num_classes, mode=FLAGS.conditioning)
    if FLAGS.info_categories:
        critic = models.InfoGANCritic(
            critic, num_categories=FLAGS.info_categories, num_continuous=FLAGS.info_continuous
        )
    return kind, generator, critic


def build_run():
    """Composes data, models, optimizers and step settings from the flags."""
    from gans import data, models, runner, train

    _check_flags()
    penalty = None if FLAGS.penalty == "none" else FLAGS.penalty
    try:
        options = {"image_size": FLAGS.image_size} if FLAGS.dataset == "digits" else {}
        dataset = data.get_dataset(FLAGS.dataset, **options)
        kind, generator, critic = _models(dataset, penalty)
    except ValueError as e:
        raise UserError(str(e)) from None

    penalty_options = ()
    if penalty is not None:
        penalty_options = (("weight", FLAGS.penalty_weight),)
        if penalty == "gradient_penalty":
            penalty_options += (("one_sided", FLAGS.one_sided),)
        if penalty == "dragan":
            penalty_options += (("symmetric", FLAGS.dragan_symmetric),)
    if FLAGS.one_sided and penalty != "gradient_penalty":
        raise UserError("--one_sided applies to --penalty=gradient_penalty only.")
    if FLAGS.dragan_symmetric and penalty != "dragan":
        raise UserError("--dragan_symmetric applies to --penalty=dragan only.")
    real_transform = None
    if kind == "msg":
        scales = models.num_scales_for(dataset.element_shape[0])
        real_transform = functools.partial(models.image_pyramid, num_scales=scales)
    info = None
    if FLAGS.info_categories:
        info = train.InfoCodes(
            num_categories=FLAGS.info_categories,
            num_continuous=FLAGS.info_continuous,
            categorical_weight=FLAGS.info_weight,
            continuous_weight=FLAGS.info_continuous_weight,
        )
    try:
        step = train.StepConfig(
            loss=FLAGS.loss,
            z_dim=FLAGS.z_dim,
            penalty=penalty,
            penalty_options=penalty_options,
            label_smoothing=FLAGS.label_smoothing,
            flip_probability=FLAGS.flip_probability,
            flip_anneal_steps=FLAGS.flip_anneal_steps,
            instance_noise=FLAGS.instance_noise,
            noise_anneal_steps=FLAGS.noise_anneal_steps,
            num_classes=dataset.num_classes if FLAGS.conditional else None,
            info=info,
            ema_decay=FLAGS.ema_decay or None,
            real_transform=real_transform,
        )
        optimizer = lambda lr, clip=None: train.make_optimizer(
            FLAGS.optimizer,
            _schedule(lr),
            b1=FLAGS.beta1,
            b2=FLAGS.beta2,
            clip=clip,
            optimistic=FLAGS.optimistic,
        )
        critic_tx = optimizer(FLAGS.critic_lr, FLAGS.clip or None)
        generator_tx = optimizer(FLAGS.generator_lr)
        warmup = FLAGS.warmup_critic_steps
        return runner.Run(
            dataset=dataset,
            generator=generator,
            critic=critic,
            generator_tx=generator_tx,
            critic_tx=critic_tx,
            step=step,
            n_critic=FLAGS.n_critic,
            batch_size=FLAGS.batch_size,
            steps=FLAGS.steps,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            sample_every=FLAGS.sample_every,
            critic_schedule=(
                runner.wgan_critic_schedule(warmup, FLAGS.n_critic) if warmup else None
            ),
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def build_vae_run(*, beta: float, variance: float):
    """The VAE baseline on the same data, with the GAN's generator as its decoder."""
    from gans import data, models, runner, train, vae

    _check_flags()
    try:
        options = {"image_size": FLAGS.image_size} if FLAGS.dataset == "digits" else {}
        dataset = data.get_dataset(FLAGS.dataset, **options)
        if len(dataset.element_shape) == 1:
            hidden = (FLAGS.width,) * FLAGS.depth
            encoder = models.VAEEncoder(FLAGS.z_dim, kind="mlp", hidden=hidden)
            decoder = models.MLPGenerator(out_dim=dataset.element_shape[0], hidden=hidden)
        else:
            size, _, channels = dataset.element_shape
            encoder = models.VAEEncoder(FLAGS.z_dim, width=FLAGS.width, kind="conv")
            decoder = models.DCGANGenerator(
                image_size=size, channels=channels, width=FLAGS.width, batch_norm=False
            )
        tx = train.make_optimizer(
            FLAGS.optimizer, _schedule(FLAGS.generator_lr), b1=FLAGS.beta1, b2=FLAGS.beta2
        )
        return runner.VAERun(
            dataset=dataset,
            model=models.VAE(encoder=encoder, decoder=decoder),
            tx=tx,
            config=vae.VAEConfig(beta=beta, variance=variance),
            latent_dim=FLAGS.z_dim,
            batch_size=FLAGS.batch_size,
            steps=FLAGS.steps,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            sample_every=FLAGS.sample_every,
        )
    except ValueError as e:
        raise UserError(str(e)) from None


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
    print("  ".join(parts), flush=True)


def fail(message: str) -> None:
    """Prints one sentence to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def main(build=build_run) -> None:
    """Builds the run from the flags, trains it, and reports; user errors exit non-zero."""
    from gans import runner

    try:
        run = build()
        workdir = runner.check_workdir(FLAGS.workdir)
    except ValueError as e:
        fail(str(e))
    config = {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    if isinstance(run, runner.VAERun):
        what, train = "the VAE", runner.train_vae
    else:
        penalty = run.step.penalty
        what = run.step.loss + (f" + {penalty}" if penalty else "")
        train = runner.train_and_evaluate
    print(
        f"training {what} on {FLAGS.dataset} for {FLAGS.steps} steps into {workdir}",
        flush=True,
    )
    try:
        summary = train(run, workdir, config=config, on_progress=_print_progress)
    except runner.NonFiniteError as e:
        fail(str(e))
    print(
        f"done in {_format_duration(summary['wall_seconds'])}; samples: {workdir / 'samples.png'}",
        flush=True,
    )
    if "code_purity" in summary:
        print(
            f"categorical code vs nearest real digit: purity {summary['code_purity']:.3f} "
            f"(chance about 0.1), {summary['code_distinct_classes']} distinct digits",
            flush=True,
        )
    if "modes" in summary:
        print(
            f"modes captured: {summary['modes']}/{run.dataset.mixture.num_modes}  "
            f"high-quality samples: {100 * summary['high_quality']:.1f}%  "
            f"reverse KL: {summary['reverse_kl']:.3f}",
            flush=True,
        )


def run(build=build_run) -> None:
    """The entry point of an experiment module: parses flags, then ``main``."""

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {' '.join(argv[1:])!r}; flags are written --name=value.")
        main(build)

    app.run(_main)
