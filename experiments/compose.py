"""Composing a ``Run`` (or a ``VAERun``) from the shared flags: data, models, optimizers and
step settings, each checked with one sentence for the user's mistakes."""

from __future__ import annotations

import math

from absl import flags

from experiments import cli
from experiments.shared_flags import GAN_ONLY_FLAGS

FLAGS = flags.FLAGS


class UserError(ValueError):
    """A problem with the user's input, reported as one sentence."""


def learning_rate(kind: str, rate: float, steps: int):
    """``--lr_schedule`` ``kind``: ``rate`` constant, or decayed linearly to 0 over ``steps``
    updates (an optax schedule)."""
    import optax

    return optax.linear_schedule(rate, 0.0, steps) if kind == "linear" else rate


def player_rates(kind: str, critic_lr: float, generator_lr: float, steps: int, critic_updates):
    """The critic's and the generator's rates for ``--lr_schedule`` ``kind``, both laid out over
    ``steps`` generator steps: the critic's schedule is read per critic update
    (``gans.run.per_critic_update``; ``critic_updates(step)`` updates before 1-based ``step``)."""
    from gans import run as run_lib

    critic = learning_rate(kind, critic_lr, steps)
    if callable(critic):
        critic = run_lib.per_critic_update(critic, steps, critic_updates)
    return critic, learning_rate(kind, generator_lr, steps)


# The flag that gives each option of ``gans.data.get_dataset`` (``gans.data.OPTIONS``).
DATASET_OPTION_FLAGS = {
    "image_size": "image_size",
    "fraction": "data_fraction",
    "data_dir": "data_dir",
    "split": "split",
    "crop_size": "crop_size",
    "image_mode": "image_mode",
    "skip_bad": "skip_bad_images",
}


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def dataset_from_flags():
    """The dataset the flags name, with the options it takes; a flag of an option it does not
    take, given a value other than its default, is refused naming the data sets that take it."""
    from gans import data

    takes = data.options_of(FLAGS.dataset)
    options = {}
    for option, flag in DATASET_OPTION_FLAGS.items():
        value = FLAGS[flag].value
        if option in takes:
            if value is not None:
                options[option] = value
        elif value != FLAGS[flag].default:
            raise UserError(
                f"--{flag} applies to {_listed(data.takers(option))}, not {FLAGS.dataset}."
            )
    dataset = data.get_dataset(FLAGS.dataset, **options)
    skipped = getattr(dataset, "skipped", [])
    if skipped:
        path, reason = skipped[0]
        print(
            f"{FLAGS.dataset}: skipped {len(skipped)} file(s); the first, {path}, {reason}.",
            flush=True,
        )
    return dataset


def _check_flags() -> None:
    # Bounds the library does not check, or checks only for the GANs (gans.run.Run checks
    # --steps, --batch_size and --log_every, not VAERun); the rest are raised where they live.
    positive = ("steps", "batch_size", "log_every", "z_dim", "width", "pack")
    for name in (
        "flip_anneal_steps",
        "noise_anneal_steps",
        "warmup_critic_steps",
        "info_categories",
        "info_continuous",
        "unroll_steps",
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
    if FLAGS.power_iterations != "per_update" and not FLAGS.spectral_norm:
        raise UserError(
            f"--power_iterations={FLAGS.power_iterations} sets when the critic's spectral "
            "normalisation advances; give --spectral_norm too, or drop it."
        )
    if FLAGS.clip and (FLAGS.spectral_norm or FLAGS.generator_spectral_norm):
        raise UserError(
            "spectral normalisation already bounds every layer's Lipschitz constant; drop --clip "
            "or --spectral_norm (weight clipping on normalised weights only shrinks them further)."
        )


def _model_options(name: str, builder):
    """Model ``name``'s options from the flags of its fields' names (a field without a flag keeps
    its default); a given flag that only other models take is refused, naming them."""
    import dataclasses

    from gans.models import registry

    taken = builder.option_names()
    for option in registry.option_names():
        if option not in taken and option in FLAGS and FLAGS[option].present:
            raise UserError(
                f"--{option} applies to {registry.describe_owners(option)}, not {name}."
            )
    fields = [f.name for f in dataclasses.fields(builder.options)]
    return builder.options(**{name: FLAGS[name].value for name in fields if name in FLAGS})


def _models(dataset, penalty, axis_name=None):
    """The generator and critic the flags name, wrapped for conditioning or InfoGAN, and the
    model's ``Builder``.

    ``axis_name`` is the pmap axis BatchNorm averages its statistics over, or None.
    """
    from gans import models
    from gans.models import registry

    name = FLAGS.model
    if name == "auto":
        name = registry.default_for(dataset.element_shape)
    builder = registry.get(name)
    spec = registry.Spec(
        element_shape=tuple(dataset.element_shape),
        data_name=FLAGS.dataset,
        width=FLAGS.width,
        critic_width=FLAGS.critic_width or FLAGS.width,
        spectral_norm=FLAGS.spectral_norm,
        generator_spectral_norm=FLAGS.generator_spectral_norm,
        num_classes=(
            dataset.num_classes if FLAGS.conditional and builder.conditions_itself else None
        ),
        penalty=penalty is not None,
        axis_name=axis_name,
    )
    generator, critic = builder.build(spec, _model_options(name, builder))
    if FLAGS.conditional:
        if dataset.num_classes is None:
            raise UserError(
                f"--conditional needs labelled data; {FLAGS.dataset} has none (use digits or a "
                "Gaussian mixture, whose labels are the modes)."
            )
        if not builder.conditions_itself:
            generator = models.ConditionalGenerator(generator, dataset.num_classes)
        critic = models.ConditionalCritic(critic, dataset.num_classes, mode=FLAGS.conditioning)
    if FLAGS.info_categories:
        critic = models.InfoGANCritic(
            critic, num_categories=FLAGS.info_categories, num_continuous=FLAGS.info_continuous
        )
    real_transform = None if builder.real_transform is None else builder.real_transform(spec)
    return generator, critic, real_transform


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

    from gans import parallel, penalties, step_config, unrolled
    from gans import run as run_lib
    from gans import state as state_lib

    penalty = None if FLAGS.penalty == "none" else FLAGS.penalty
    sweep = _sweep()
    try:
        num_devices = _num_devices()
        sharded = num_devices > 1 or jax.process_count() > 1
        dataset = dataset_from_flags()
        generator, critic, real_transform = _models(
            dataset, penalty, parallel.AXIS if sharded else None
        )
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
    if FLAGS.augment and len(dataset.element_shape) != 3:
        raise UserError(f"--augment transforms images; {FLAGS.dataset} is 2-D.")
    if FLAGS.consistency_weight or FLAGS.consistency_fake_weight:
        if len(dataset.element_shape) != 3:
            raise UserError(
                f"consistency regularisation transforms images; {FLAGS.dataset} is 2-D."
            )
    info = None
    if FLAGS.info_categories:
        info = step_config.InfoCodes(
            num_categories=FLAGS.info_categories,
            num_continuous=FLAGS.info_continuous,
            categorical_weight=FLAGS.info_weight,
            continuous_weight=FLAGS.info_continuous_weight,
        )
    try:
        step = step_config.StepConfig(
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
            pack=FLAGS.pack,
            unroll_steps=FLAGS.unroll_steps,
            power_iterations=FLAGS.power_iterations,
        )
        warmup = FLAGS.warmup_critic_steps
        critic_schedule = run_lib.wgan_critic_schedule(warmup, FLAGS.n_critic) if warmup else None

        def optimizer(rate, clip=None):
            return state_lib.make_optimizer(
                FLAGS.optimizer,
                rate,
                b1=FLAGS.beta1,
                b2=FLAGS.beta2,
                clip=clip,
                optimistic=FLAGS.optimistic,
                sweepable=sweep is not None,
                # The look-ahead differentiates through the critic's Adam: sqrt(nu) at nu = 0
                # has an infinite derivative (dead ReLU units); gans.unrolled says why this
                # fixes it.
                eps_root=unrolled.EPS_ROOT if FLAGS.unroll_steps else 0.0,
            )

        critic_rate, generator_rate = player_rates(
            FLAGS.lr_schedule,
            FLAGS.critic_lr,
            FLAGS.generator_lr,
            FLAGS.steps,
            critic_schedule or (lambda step: FLAGS.n_critic),
        )
        critic_tx = optimizer(critic_rate, FLAGS.clip or None)
        generator_tx = optimizer(generator_rate)
        return run_lib.Run(
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
            critic_schedule=critic_schedule,
            num_devices=num_devices,
            num_runs=FLAGS.num_runs,
            sweep=sweep,
            checkpoint_every=FLAGS.checkpoint_every,
            eval_every=FLAGS.eval_every,
            diagnose_every=FLAGS.diagnose_every,
            clip=FLAGS.clip or None,
            run_axis=FLAGS.run_axis,
            parallel=FLAGS.parallel,
        )
    except ValueError as e:
        raise UserError(str(e)) from None


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
    from gans import models, runner, vae
    from gans import state as state_lib

    try:
        dataset = dataset_from_flags()
        kind = "mlp" if len(dataset.element_shape) == 1 else "dcgan"
        if FLAGS.model not in ("auto", kind):
            raise UserError(
                f"the VAE on {FLAGS.dataset} is built with --model={kind} (or auto), not "
                f"--model={FLAGS.model}."
            )
        if kind == "mlp":
            hidden = (FLAGS.width,) * models.MLPOptions(depth=FLAGS.depth).depth
            encoder = models.VAEEncoder(FLAGS.z_dim, kind="mlp", hidden=hidden)
            decoder = models.MLPGenerator(out_dim=dataset.element_shape[0], hidden=hidden)
        else:
            size, _, channels = dataset.element_shape
            encoder = models.VAEEncoder(FLAGS.z_dim, width=FLAGS.width, kind="conv")
            decoder = models.DCGANGenerator(
                image_size=size, channels=channels, width=FLAGS.width, batch_norm=False
            )
        tx = state_lib.make_optimizer(
            FLAGS.optimizer,
            learning_rate(FLAGS.lr_schedule, FLAGS.generator_lr, FLAGS.steps),
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
