"""The benchmark's named settings: each one training step's networks, losses and batch.

``experiments.benchmark`` times them and ``experiments.profile_step`` traces them; both pass
what their flags override (``Overrides``), so a setting is the same program in either.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Overrides:
    """What a command may change in every setting.

    Attributes:
      width: the networks' width (the toy MLPs' hidden units, the CNNs' base channels); 0
        keeps the setting's own.
      conv_implementation: how the CNNs compute their convolutions
        (``gans.models.layers.IMPLEMENTATIONS``).
      run_axis: how several runs share the program (``gans.sweep.resolve_run_axis``).
    """

    width: int = 0
    conv_implementation: str = "auto"
    run_axis: str = "auto"


# name: (reference script or None, batch, description)
SETTINGS = {
    "toy": ("torch_toy.py", 256, "WGAN-GP toy: 3x512 ReLU MLPs, lambda 0.1, n_critic 5"),
    "dcgan32": ("torch_dcgan.py", 64, "WGAN-GP DCGAN 32x32x3, width 64, lambda 10, n_critic 5"),
    # A CPU iteration at batch 64 takes tens of seconds: time it at --batch_size=16 or so.
    "resnet32": (
        "torch_resnet.py",
        64,
        "WGAN-GP CIFAR ResNet 32x32x3, width 128, lambda 10, n_critic 5, Adam 2e-4",
    ),
    "mode": (
        None,
        512,
        "Mode-coverage protocol NS-GAN: z 256, 2x128 tanh MLPs, batch 512, n_critic 1",
    ),
    # The MNIST baselines study's networks (experiments/paper/baselines.py), 16x16x1.
    "dcgan16": (None, 64, "WGAN-GP DCGAN 16x16x1, width 32, z 64, lambda 10, n_critic 5"),
    "resnet16": (None, 64, "WGAN-GP ResNet 16x16x1, width 32, z 64, lambda 10, n_critic 5"),
    "sngan_resnet16": (
        None,
        64,
        "SNGAN ResNet 16x16x1, widths 64 / 32, hinge, spectral norm, n_critic 5",
    ),
    "cnn16": (None, 64, "SNGAN standard CNN 16x16x1, width 32, hinge, spectral norm, n_critic 1"),
}
N_CRITIC = 5
# Settings whose protocol trains another number of critic updates a step.
SETTING_N_CRITIC = {"cnn16": 1}


def default_n_critic(name: str) -> int:
    """The critic updates a step of setting ``name`` (``N_CRITIC`` unless it says otherwise)."""
    return SETTING_N_CRITIC.get(name, N_CRITIC)


def build_setting(
    name: str,
    batch: int,
    n_critic: int | None = None,
    num_runs: int = 1,
    axis_name=None,
    overrides: Overrides = Overrides(),
):
    """The setting's step configuration, its initial state and ``n_critic`` real batches.

    With ``num_runs > 1`` the state holds that many runs (seeds 0, 1, ...), stacked, and the
    batches are ``[num_runs, n_critic, batch, ...]``. ``axis_name``: the BatchNorm axis of
    a generator trained under ``pmap``.
    """
    import jax
    import jax.numpy as jnp

    from gans import models, step_config, sweep
    from gans import state as state_lib

    if name == "mode":
        return _build_mode(batch, n_critic, num_runs, overrides.run_axis)
    n_critic = default_n_critic(name) if n_critic is None else n_critic
    learning_rate, b2 = 1e-4, 0.9
    width = overrides.width or None
    loss, penalty = "wasserstein", "gradient_penalty"
    implementation = {"conv_implementation": overrides.conv_implementation}
    if name == "toy":
        hidden = (width,) * 3 if width else (512, 512, 512)
        generator = models.MLPGenerator(out_dim=2, hidden=hidden)
        critic = models.MLPCritic(hidden=hidden)
        z_dim, shape, weight, b1 = 2, (2,), 0.1, 0.5
    elif name == "resnet32":
        generator, critic = models.wgan_gp_cifar_resnet(
            conv_implementation=overrides.conv_implementation, axis_name=axis_name
        )
        z_dim, shape, weight, b1, learning_rate = 128, (32, 32, 3), 10.0, 0.0, 2e-4
    elif name in ("dcgan16", "resnet16"):  # wgan_gp_mnist_quick.cfg, --model=resnet or not.
        kind = "DCGAN" if name == "dcgan16" else "ResNet"
        generator = getattr(models, f"{kind}Generator")(
            image_size=16, channels=1, width=width or 32, axis_name=axis_name, **implementation
        )
        critic = getattr(models, f"{kind}Critic")(
            width=width or 32, normalization="none", **implementation
        )
        z_dim, shape, weight, b1, learning_rate = 64, (16, 16, 1), 10.0, 0.0, 3e-4
    elif name in ("sngan_resnet16", "cnn16"):  # sngan_mnist.cfg at 16, sngan_cnn_mnist.cfg.
        if name == "cnn16":
            generator = models.StandardGenerator(
                16, 1, width=width or 32, axis_name=axis_name, **implementation
            )
            critic = models.StandardCritic(width=width or 32, spectral_norm=True, **implementation)
            b1, b2 = 0.5, 0.999
        else:
            generator = models.ResNetGenerator(
                16, 1, width=width or 64, axis_name=axis_name, **implementation
            )
            critic = models.ResNetCritic(
                width=width or 32,
                spectral_norm=True,
                pooling="sum",
                score_bias=False,
                **implementation,
            )
            b1 = 0.0
        z_dim, shape, weight, learning_rate = 128, (16, 16, 1), 0.0, 2e-4
        loss, penalty = "hinge", None
    else:
        implementation = overrides.conv_implementation
        generator = models.DCGANGenerator(
            image_size=32,
            channels=3,
            width=width or 64,
            conv_implementation=implementation,
            axis_name=axis_name,
        )
        critic = models.DCGANCritic(
            width=width or 64, normalization="none", conv_implementation=implementation
        )
        z_dim, shape, weight, b1 = 128, (32, 32, 3), 10.0, 0.0
    config = step_config.StepConfig(
        loss=loss,
        z_dim=z_dim,
        penalty=penalty,
        penalty_options=(("weight", weight),) if penalty else (),
    )
    # One optimizer object for every run: it is static in the state, so the states stack.
    tx = state_lib.make_optimizer("adam", learning_rate, b1=b1, b2=b2)
    states = [
        state_lib.create_state(
            generator=generator,
            critic=critic,
            generator_tx=tx,
            critic_tx=tx,
            config=config,
            example=jnp.zeros((batch,) + shape),
            key=jax.random.key(k),
        )
        for k in range(num_runs)
    ]
    real = jax.random.uniform(jax.random.key(1), (num_runs, n_critic, batch) + shape, minval=-1.0)
    if num_runs == 1:
        return config, states[0], {"x": real[0]}
    return config, sweep.stack(states), {"x": real}


def _build_mode(batch: int, n_critic: int | None, num_runs: int, run_axis: str):
    """The mode-coverage protocol's NS-GAN program (``experiments.paper.mode_coverage``)."""
    import dataclasses

    import jax.numpy as jnp
    import numpy as np

    from experiments.paper import mode_coverage, mode_coverage_protocol
    from gans import run as run_lib

    settings = mode_coverage_protocol.Settings(batch_size=batch)
    run = mode_coverage.build_run("ns_gan", "ring8", settings, num_runs=num_runs)
    run = dataclasses.replace(run, n_critic=n_critic or run.n_critic, run_axis=run_axis)
    items = [run.dataset.batch(0, batch, seed, group=run.n_critic)["x"] for seed in run.seeds()]
    real = jnp.asarray(np.stack([np.asarray(x) for x in items]))
    state = run_lib.initial_state(run)
    return run.step, state, {"x": real[0] if num_runs == 1 else real}


def _flops(lowered) -> float:
    analysis = lowered.cost_analysis()
    if isinstance(analysis, list | tuple):  # One entry per program on some versions.
        analysis = analysis[0]
    return float(analysis["flops"])


def flops_per_iteration(
    name: str, batch: int, n_critic: int, num_runs: int = 1, overrides: Overrides = Overrides()
) -> float:
    """XLA's FLOP count of one iteration, each of the ``n_critic`` critic updates counted.

    ``f(n) = f(1) + (n - 1) (f(2) - f(1))`` from the (unoptimised) step of one run with one and
    two critic updates, which the train step lays out straight (no loop for XLA to count once);
    ``num_runs`` runs do ``num_runs`` times that work, however they are laid out.
    """
    import jax

    from gans import train

    counts = []
    for n in (1, 2):
        config, state, batches = build_setting(name, batch, n, overrides=overrides)
        step = train.make_train_step(config)
        counts.append(_flops(jax.jit(step).lower(state, batches)))
    return num_runs * (counts[0] + (n_critic - 1) * (counts[1] - counts[0]))
