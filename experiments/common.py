"""Flags shared by every experiment, defined once, and the code that turns them into a ``Run``.

An experiment module sets its paper's defaults (its loss and penalty among them)
with ``set_defaults`` and calls ``run``; everything else (data, models,
optimizers, logging) is composed here from the shared flags.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import sys
from typing import Any

from absl import app, flags, logging

from experiments import cli

FLAGS = flags.FLAGS

# Run.
flags.DEFINE_string("workdir", None, "Directory for metrics, samples and parameters (new).")
flags.DEFINE_integer("seed", 0, "Seed of every random stream.")
flags.DEFINE_integer("steps", 2000, "Generator updates (each after n_critic critic updates).")
flags.DEFINE_integer("batch_size", 64, "Examples per critic and generator update.")
flags.DEFINE_integer("log_every", 100, "Steps between metrics lines.")
flags.DEFINE_integer("sample_every", 0, "Steps between sample pictures (0: final only).")
flags.DEFINE_integer(
    "eval_every",
    0,
    "Score samples (digits-FID, or modes and W1 on 2-D mixtures) every this many steps, on "
    "logging steps, and at the end; 0: never (see experiments.evaluate).",
)
flags.DEFINE_integer(
    "diagnose_every",
    0,
    "Log critic input- and activation-gradient norms, the generator's gradient norm and "
    "critic weight histograms every this many steps, on logging steps; 0: never.",
)
flags.DEFINE_integer(
    "checkpoint_every",
    1000,
    "Steps between checkpoints (0: the last only); re-running on a workdir resumes from its latest.",
)
# Data.
flags.DEFINE_string(
    "dataset",
    "8gaussians",
    "8gaussians, 25gaussians, swissroll, ring8, grid25, digits, mnist, fashion_mnist, cifar10, "
    "celeb_a, or tfds:NAME for any TFDS image dataset (array_record files under --data_dir).",
)
flags.DEFINE_integer(
    "image_size",
    None,
    "Image side: digits 8 (default), 16 or 32; TFDS sets any side (default: native, celeb_a 64).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "TFDS data directory holding sets built with `tfds build NAME --data_dir=DIR "
    "--file_format=array_record` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).",
)
flags.DEFINE_integer(
    "crop_size", None, "TFDS sets: side of the central square cropped before resizing."
)
flags.DEFINE_string("split", "train", "TFDS split to train on, e.g. train or train[:90%].")
flags.DEFINE_float(
    "data_fraction",
    1.0,
    "Digits: train on this fraction of the 1,797 images (the same class-balanced subset for "
    "every seed), for data-efficiency studies.",
)
# Models.
flags.DEFINE_integer("z_dim", 128, "Latent size; z ~ N(0, I).")
flags.DEFINE_integer(
    "width", 512, "MLP hidden width (2-D data), DCGAN base channels or ResNet channels (images)."
)
flags.DEFINE_integer(
    "critic_width", None, "The critic's width when it differs from --width (SNGAN: 256 and 128)."
)
flags.DEFINE_integer("depth", 3, "MLP hidden layers (2-D data).")
flags.DEFINE_enum(
    "model",
    "auto",
    ["auto", "mlp", "dcgan", "resnet", "msg"],
    "Architecture: auto (MLP for 2-D data, DCGAN for images), mlp, dcgan, resnet (the WGAN-GP "
    "and SNGAN CIFAR ResNets) or msg (MSG-GAN).",
)
flags.DEFINE_enum(
    "critic_pooling",
    "mean",
    ["mean", "sum"],
    "ResNet critic: global mean pooling (WGAN-GP) or global sum pooling and a score without "
    "bias (SNGAN's released code).",
)
flags.DEFINE_integer(
    "attention_resolution",
    0,
    "ResNet: a self-attention block (SAGAN) after the blocks of this side in both players; "
    "0: none.",
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
flags.DEFINE_bool(
    "generator_spectral_norm", False, "Spectral normalisation of every generator layer (SAGAN)."
)
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
flags.DEFINE_string(
    "augment",
    "",
    "Differentiable augmentation of every critic input, real and generated (DiffAugment): "
    "comma-separated transforms of color, translation, cutout, flip; empty: off.",
)
flags.DEFINE_float(
    "augment_probability",
    1.0,
    "Chance of each augmentation per image (DiffAugment: 1); ADA's initial p with --ada_target.",
)
flags.DEFINE_float(
    "ada_target",
    0.0,
    "ADA: adapt the augmentation probability toward E[sign(D(real))] = this (the paper: 0.6); "
    "0: a fixed probability.",
)
flags.DEFINE_float("ada_kimg", 500.0, "ADA: thousands of real images for p to cross [0, 1].")
flags.DEFINE_float(
    "consistency_weight", 0.0, "Consistency regularisation on real images (CR-GAN: 10; 0: off)."
)
flags.DEFINE_float(
    "consistency_fake_weight", 0.0, "Balanced consistency regularisation on generated images."
)
flags.DEFINE_string(
    "consistency_augment", "translation", "Transforms of consistency regularisation."
)
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

# Devices and hosts.
flags.DEFINE_integer(
    "num_devices",
    None,
    "Local devices to train on with pmap (default: all); --batch_size is the global batch.",
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process run with jax.distributed.initialize (on a TPU pod slice nothing "
    "else is needed; elsewhere also give the three flags below).",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed.")
flags.DEFINE_integer("num_processes", None, "Processes in the run, for --distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 to num_processes - 1.")

# Several runs in one program.
flags.DEFINE_integer(
    "num_runs", 1, "Independent runs with seeds seed, seed + 1, ... trained as one vmapped program."
)
flags.DEFINE_string(
    "sweep",
    None,
    "Runs that differ in one hyper-parameter, trained as one vmapped program: NAME=V1,V2,... "
    "with NAME one of penalty_weight, critic_lr, generator_lr, clip.",
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


def _dataset():
    """The dataset the flags name, with its options."""
    from gans import data

    options = {} if FLAGS.image_size is None else {"image_size": FLAGS.image_size}
    if FLAGS.data_fraction != 1.0:
        if FLAGS.dataset != "digits":
            raise UserError(f"--data_fraction applies to the digits, not {FLAGS.dataset}.")
        options["fraction"] = FLAGS.data_fraction
    is_tfds = FLAGS.dataset in data.TFDS_DATASETS or FLAGS.dataset.startswith(data.TFDS_PREFIX)
    if is_tfds:
        options.update(data_dir=FLAGS.data_dir, split=FLAGS.split)
        if FLAGS.crop_size is not None:
            options["crop_size"] = FLAGS.crop_size
    else:
        for name in ("data_dir", "crop_size"):
            if FLAGS[name].value is not None:
                raise UserError(f"--{name} applies to TFDS datasets, not {FLAGS.dataset}.")
        if FLAGS.dataset in TOY_DATASETS and FLAGS.image_size is not None:
            raise UserError(f"--image_size applies to image datasets, not {FLAGS.dataset}.")
    return data.get_dataset(FLAGS.dataset, **options)


def _check_flags() -> None:
    # Bounds the library does not check, or checks only for the GANs (gans.runner.Run checks
    # --steps, --batch_size and --log_every, not VAERun); the rest are raised where they live.
    positive = ("steps", "batch_size", "log_every", "z_dim", "width", "depth")
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
    if FLAGS.seed + FLAGS.num_runs - 1 >= cli.SEED_LIMIT:
        raise UserError(
            f"--num_runs={FLAGS.num_runs} trains seeds {FLAGS.seed} to "
            f"{FLAGS.seed + FLAGS.num_runs - 1}, past the largest, {cli.SEED_LIMIT - 1}; "
            "give a smaller --seed."
        )
    for name in ("sample_every", "checkpoint_every"):
        if FLAGS[name].value < 0:
            raise UserError(f"--{name} must be >= 0, got {FLAGS[name].value}.")
    for name in ("beta1", "beta2"):
        if not 0 <= FLAGS[name].value < 1:
            raise UserError(f"--{name} must be in [0, 1), got {FLAGS[name].value}.")
    if not 0 < FLAGS.data_fraction <= 1:
        raise UserError(f"--data_fraction must be in (0, 1], got {FLAGS.data_fraction}.")
    if FLAGS.critic_width is not None and FLAGS.critic_width < 1:
        raise UserError(f"--critic_width must be >= 1, got {FLAGS.critic_width}.")
    if FLAGS.attention_resolution < 0:
        raise UserError(
            f"--attention_resolution must be >= 0 (0: none), got {FLAGS.attention_resolution}."
        )
    if FLAGS.clip and (FLAGS.spectral_norm or FLAGS.generator_spectral_norm):
        raise UserError(
            "spectral normalisation already bounds every layer's Lipschitz constant; drop --clip "
            "or --spectral_norm (weight clipping on normalised weights only shrinks them further)."
        )


def _models(dataset, penalty, axis_name=None):
    """The generator and critic the flags name, wrapped for conditioning or InfoGAN.

    ``axis_name`` is the pmap axis BatchNorm averages its statistics over, or None.
    """
    from gans import models

    kind = FLAGS.model
    if kind == "auto":
        kind = "mlp" if len(dataset.element_shape) == 1 else "dcgan"
    critic_width = FLAGS.critic_width or FLAGS.width
    if FLAGS.attention_resolution and kind != "resnet":
        raise UserError("--attention_resolution applies to --model=resnet only.")
    if kind != "resnet" and FLAGS.critic_pooling != "mean":
        raise UserError("--critic_pooling applies to --model=resnet only.")
    if kind == "mlp":
        hidden = (FLAGS.width,) * FLAGS.depth
        generator = models.MLPGenerator(
            out_dim=math.prod(dataset.element_shape),
            hidden=hidden,
            spectral_norm=FLAGS.generator_spectral_norm,
        )
        critic = models.MLPCritic(
            hidden=(critic_width,) * FLAGS.depth, spectral_norm=FLAGS.spectral_norm
        )
    elif kind == "resnet":
        if len(dataset.element_shape) != 3:
            raise UserError(f"--model=resnet needs image data; {FLAGS.dataset} is 2-D.")
        size, _, channels = dataset.element_shape
        norm = FLAGS.critic_norm or "none"
        if norm == "batch":
            raise UserError(
                "the ResNet critic has no BatchNorm (it would make the penalty batch-wide); use "
                "--critic_norm=layer or none."
            )
        attention = FLAGS.attention_resolution or None
        generator = models.ResNetGenerator(
            image_size=size,
            channels=channels,
            width=FLAGS.width,
            num_classes=dataset.num_classes if FLAGS.conditional else None,
            spectral_norm=FLAGS.generator_spectral_norm,
            attention_resolution=attention,
            axis_name=axis_name,
        )
        critic = models.ResNetCritic(
            width=critic_width,
            normalization=norm,
            spectral_norm=FLAGS.spectral_norm,
            pooling=FLAGS.critic_pooling,
            score_bias=FLAGS.critic_pooling == "mean",
            attention_resolution=attention,
            axis_name=axis_name,
        )
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
        generator = generator_class(
            image_size=size,
            channels=channels,
            width=FLAGS.width,
            spectral_norm=FLAGS.generator_spectral_norm,
            axis_name=axis_name,
        )
        critic = critic_class(
            width=critic_width,
            normalization=norm,
            spectral_norm=FLAGS.spectral_norm,
            downsampling=FLAGS.downsampling,
            axis_name=axis_name,
        )
    if FLAGS.conditional:
        if dataset.num_classes is None:
            raise UserError(
                f"--conditional needs labelled data; {FLAGS.dataset} has none (use digits or a "
                "Gaussian mixture, whose labels are the modes)."
            )
        if kind != "resnet":  # The ResNet generator takes labels itself (conditional BatchNorm).
            generator = models.ConditionalGenerator(generator, dataset.num_classes)
        critic = models.ConditionalCritic(critic, dataset.num_classes, mode=FLAGS.conditioning)
    if FLAGS.info_categories:
        critic = models.InfoGANCritic(
            critic, num_categories=FLAGS.info_categories, num_continuous=FLAGS.info_continuous
        )
    return kind, generator, critic


def _num_devices() -> int:
    """The local devices to train on, checked against the host and the batch size."""
    from gans import parallel

    return len(parallel.devices(FLAGS.num_devices, FLAGS.batch_size))


def _sweep():
    """The --sweep flag as a gans.sweep.Sweep, or None."""
    from gans import sweep

    if FLAGS.sweep is None:
        return None
    name, sep, listed = FLAGS.sweep.partition("=")
    try:
        values = tuple(float(v) for v in listed.split(","))
    except ValueError:
        values = ()
    if not sep or not values:
        raise UserError(
            f"--sweep={FLAGS.sweep} is not NAME=V1,V2,...; e.g. --sweep=penalty_weight=1,10,100."
        )
    if not all(math.isfinite(value) for value in values):
        raise UserError(f"--sweep={FLAGS.sweep} must list finite numbers only.")
    if FLAGS.num_runs > 1:
        raise UserError("give either --num_runs or --sweep, not both.")
    if name == "clip" and not FLAGS.clip:
        raise UserError("--sweep=clip=... needs weight clipping on: run it with experiments.wgan.")
    if name == "penalty_weight" and FLAGS.penalty == "none":
        raise UserError("--sweep=penalty_weight=... needs a --penalty.")
    base = {"critic_lr": FLAGS.critic_lr, "generator_lr": FLAGS.generator_lr}.get(name)
    try:
        return sweep.Sweep(name, values, base)
    except ValueError as e:
        raise UserError(str(e)) from None


def _policy(spec: str) -> tuple[str, ...]:
    """An augmentation flag as a checked tuple of transform names (empty: off)."""
    from gans import augment

    return augment.parse_policy(spec) if spec.strip() else ()


def build_run():
    """Composes data, models, optimizers and step settings from the flags."""
    _check_flags()  # Before importing JAX: a typo is reported at once.
    import jax

    from gans import models, parallel, penalties, runner, train

    penalty = None if FLAGS.penalty == "none" else FLAGS.penalty
    sweep = _sweep()
    try:
        num_devices = _num_devices()
        sharded = num_devices > 1 or jax.process_count() > 1
        dataset = _dataset()
        kind, generator, critic = _models(dataset, penalty, parallel.AXIS if sharded else None)
    except ValueError as e:
        raise UserError(str(e)) from None

    penalty_options = {}
    if penalty == "gradient_penalty":
        penalty_options["one_sided"] = FLAGS.one_sided
    if penalty == "dragan":
        penalty_options["symmetric"] = FLAGS.dragan_symmetric
    if FLAGS.one_sided and penalty != "gradient_penalty":
        raise UserError("--one_sided applies to --penalty=gradient_penalty only.")
    if FLAGS.dragan_symmetric and penalty != "dragan":
        raise UserError("--dragan_symmetric applies to --penalty=dragan only.")
    real_transform = None
    if kind == "msg":
        scales = models.num_scales_for(dataset.element_shape[0])
        real_transform = functools.partial(models.image_pyramid, num_scales=scales)
    if FLAGS.augment and len(dataset.element_shape) != 3:
        raise UserError(f"--augment transforms images; {FLAGS.dataset} is 2-D.")
    if FLAGS.consistency_weight or FLAGS.consistency_fake_weight:
        if len(dataset.element_shape) != 3:
            raise UserError(
                f"consistency regularisation transforms images; {FLAGS.dataset} is 2-D."
            )
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
            penalty=(
                None
                if penalty is None
                else penalties.make_penalty(penalty, weight=FLAGS.penalty_weight, **penalty_options)
            ),
            label_smoothing=FLAGS.label_smoothing,
            flip_probability=FLAGS.flip_probability,
            flip_anneal_steps=FLAGS.flip_anneal_steps,
            instance_noise=FLAGS.instance_noise,
            noise_anneal_steps=FLAGS.noise_anneal_steps,
            num_classes=dataset.num_classes if FLAGS.conditional else None,
            info=info,
            ema_decay=FLAGS.ema_decay or None,
            real_transform=real_transform,
            augment=_policy(FLAGS.augment),
            augment_probability=FLAGS.augment_probability,
            ada_target=FLAGS.ada_target or None,
            ada_kimg=FLAGS.ada_kimg,
            consistency_weight=FLAGS.consistency_weight,
            consistency_fake_weight=FLAGS.consistency_fake_weight,
            consistency_policy=_policy(FLAGS.consistency_augment),
        )
        optimizer = lambda lr, clip=None: train.make_optimizer(
            FLAGS.optimizer,
            _schedule(lr),
            b1=FLAGS.beta1,
            b2=FLAGS.beta2,
            clip=clip,
            optimistic=FLAGS.optimistic,
            sweepable=sweep is not None,
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
            num_devices=num_devices,
            num_runs=FLAGS.num_runs,
            sweep=sweep,
            checkpoint_every=FLAGS.checkpoint_every,
            eval_every=FLAGS.eval_every,
            diagnose_every=FLAGS.diagnose_every,
            clip=FLAGS.clip or None,
        )
    except ValueError as e:
        raise UserError(str(e)) from None


# Flags of the two-player game, which a VAE has no use for: it has no critic and one loss.
GAN_ONLY_FLAGS = (
    "eval_every",
    "diagnose_every",
    "loss",
    "penalty",
    "n_critic",
    "penalty_weight",
    "one_sided",
    "clip",
    "label_smoothing",
    "flip_probability",
    "flip_anneal_steps",
    "instance_noise",
    "noise_anneal_steps",
    "dragan_symmetric",
    "warmup_critic_steps",
    "conditional",
    "conditioning",
    "info_categories",
    "info_continuous",
    "info_weight",
    "info_continuous_weight",
    "spectral_norm",
    "generator_spectral_norm",
    "critic_width",
    "critic_pooling",
    "attention_resolution",
    "augment",
    "augment_probability",
    "ada_target",
    "ada_kimg",
    "consistency_weight",
    "consistency_fake_weight",
    "consistency_augment",
    "downsampling",
    "critic_norm",
    "critic_lr",
)


def build_vae_run(*, beta: float, variance: float):
    """The VAE baseline on the same data, with the GAN's generator as its decoder."""
    given = [name for name in GAN_ONLY_FLAGS if FLAGS[name].present]
    if given:
        raise UserError(
            f"--{given[0]} is a GAN flag and the VAE has no critic to apply it to; drop it "
            "(the VAE takes --generator_lr, --optimizer, --optimistic and --ema_decay)."
        )
    if FLAGS.num_devices not in (None, 1) or FLAGS.distributed:
        raise UserError("the VAE trains on one device; drop --num_devices and --distributed.")
    if FLAGS.num_runs != 1 or FLAGS.sweep is not None:
        raise UserError("the VAE trains one run at a time; drop --num_runs and --sweep.")
    _check_flags()
    from gans import models, runner, train, vae

    try:
        dataset = _dataset()
        kind = "mlp" if len(dataset.element_shape) == 1 else "dcgan"
        if FLAGS.model not in ("auto", kind):
            raise UserError(
                f"the VAE on {FLAGS.dataset} is built with --model={kind} (or auto), not "
                f"--model={FLAGS.model}."
            )
        if kind == "mlp":
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
            FLAGS.optimizer,
            _schedule(FLAGS.generator_lr),
            b1=FLAGS.beta1,
            b2=FLAGS.beta2,
            optimistic=FLAGS.optimistic,
        )
        return runner.VAERun(
            dataset=dataset,
            model=models.VAE(encoder=encoder, decoder=decoder),
            tx=tx,
            config=vae.VAEConfig(beta=beta, variance=variance, ema_decay=FLAGS.ema_decay or None),
            latent_dim=FLAGS.z_dim,
            batch_size=FLAGS.batch_size,
            steps=FLAGS.steps,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            sample_every=FLAGS.sample_every,
            checkpoint_every=FLAGS.checkpoint_every,
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
    if "augment_probability" in m:
        parts.append(f"augment p {m['augment_probability']:.3f}")
    if len(progress.runs) > 1:
        parts.append(f"(run 0 of {len(progress.runs)}; each run logs into its run_K directory)")
    print("  ".join(parts), flush=True)


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
    """Every flag of the experiment: the shared ones here and its own module's."""
    return cli.program_flags(sys.modules[__name__])


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


def main(build=build_run) -> None:
    """Builds the run from the flags, trains it, and reports; user errors exit non-zero."""
    try:
        _initialize_distributed()
        run = build()
        from gans import runner

        workdir = runner.check_workdir(FLAGS.workdir)
    except ValueError as e:
        fail(str(e))
    config = record(run.config if isinstance(run, runner.VAERun) else run.step)
    if isinstance(run, runner.VAERun):
        what, train = "the VAE", runner.train_vae
    else:
        penalty = run.step.penalty
        what = run.step.loss + (f" + {penalty}" if penalty else "")
        train = runner.train_and_evaluate
    from gans import checkpoints

    resumed = checkpoints.latest_step(workdir)
    print(
        f"training {what} on {FLAGS.dataset} for {FLAGS.steps} steps into {workdir}"
        + (f", resuming from the checkpoint of step {resumed}" if resumed else ""),
        flush=True,
    )
    try:
        summary = train(run, workdir, config=config, on_progress=_print_progress)
    except (runner.NonFiniteError, runner.ResumeError, runner.WorkdirInUseError) as e:
        fail(str(e))
    except runner.Interrupted as e:
        # The conventional status of a process ended by a signal, after a clean stop.
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(128 + e.signal_number)
    except KeyboardInterrupt:
        # Outside the loop (building, compiling, final pictures): the checkpoints stand.
        print(
            "error: interrupted outside a training step; the latest checkpoint is kept: run "
            "the same command again to resume.",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
    print(
        f"done in {_format_duration(summary['wall_seconds'])}; samples: {workdir / 'samples.png'}"
        if "runs" not in summary
        else f"done in {_format_duration(summary['wall_seconds'])}; runs: {workdir}/run_*",
        flush=True,
    )
    for k, result in enumerate(summary.get("runs", [summary])):
        prefix = f"run {k}: " if "runs" in summary else ""
        if "code_purity" in result:
            print(
                f"{prefix}categorical code vs nearest real digit: purity "
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

    workdir = pathlib.Path(FLAGS.workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise UserError(
            f"--workdir {str(workdir)!r} holds no run (no config.json); give the --workdir of "
            "a training run."
        )
    with open(config_path) as f:
        saved = json.load(f)
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
    except runner.ResumeError as e:
        raise UserError(str(e)) from None
    return run, states, step


def run_command(command) -> None:
    """The entry point of a command on a finished run (sample, evaluate): flags, then ``command``."""

    def _main(argv):
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        cli.check_command_line(argv, experiment_flags())
        command()

    app.run(_main)


def run(build=build_run) -> None:
    """The entry point of an experiment module: parses flags, then ``main``."""

    def _main(argv):
        # Libraries (Orbax, TFDS) log every checkpoint and file at INFO; the run prints its own
        # progress. --verbosity=0 brings them back.
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        cli.check_command_line(argv, experiment_flags())
        main(build)

    app.run(_main)
