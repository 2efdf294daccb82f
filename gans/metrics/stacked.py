"""Mode coverage on stacked digits: the Stacked-MNIST count of modes and KL, and its bound.

Srivastava et al. (2017, VEEGAN, Sec. 5.2 and Table 2) and Lin et al. (2018, PacGAN, Tables
2-3) classify each of a sample's three channels with a pretrained digit classifier, so that the
sample's mode is ``100 d0 + 10 d1 + d2``, and report over 26,000 samples

    modes = #{m : count_m >= 1},    KL = KL(p_hat || U) = sum_m p_hat_m log(1000 p_hat_m),

with ``p_hat`` the histogram of modes and ``U`` uniform over the 1,000. PacGAN's released code
(``stacked_MNIST_experiments/*/model.py``, ``log_metrics``) counts a mode with one sample and
sums the KL over the non-empty bins only (``0 log 0 = 0``), in nats; so does this module
(``gans.metrics.scores.class_coverage`` with 1,000 classes). A generator that puts every sample
on one mode scores 1 mode and KL log 1000 = 6.91; a uniform one 1,000 and 0.

The count is only as good as the classifier: `stacked_accuracy_bound` measures how often real
stacks of held-out digits are read right, and what real data itself scores.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from gans.data import stacked
from gans.metrics import scores
from gans.metrics.digits_classifier import DigitsClassifier

NUM_MODES = stacked.NUM_MODES
NUM_SAMPLES = 26_000  # VEEGAN's and PacGAN's: "a total of 26000 samples for all the models".


def stacked_modes(images: np.ndarray, classifier: DigitsClassifier) -> np.ndarray:
    """The mode of each ``[N, S, S, 3]`` image in [-1, 1]: int32 ``[N]`` in [0, 1000).

    Each channel is classified on its own, as a one-channel digit ``[N, S, S, 1]``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != stacked.NUM_CHANNELS or len(images) == 0:
        raise ValueError(
            f"images must be [N, S, S, {stacked.NUM_CHANNELS}] stacked digits, got shape "
            f"{images.shape}."
        )
    # One batch of 3N single digits, channel-major: [3, N, S, S] -> [3N, S, S, 1].
    channels = np.moveaxis(images, -1, 0)[..., None].reshape(-1, *images.shape[1:3], 1)
    digits = classifier.predict(channels).reshape(stacked.NUM_CHANNELS, len(images)).T
    return stacked.modes_of(digits)


def mode_scores(modes: np.ndarray) -> dict:
    """``modes`` covered (>= 1 sample), ``kl`` from uniform (nats) and the ``histogram [1000]``."""
    coverage = scores.class_coverage(np.asarray(modes), NUM_MODES)
    return {
        "modes": coverage["classes"],
        "kl": coverage["kl_from_uniform"],
        "histogram": np.bincount(modes, minlength=NUM_MODES),
    }


def stacked_mode_scores(images: np.ndarray, classifier: DigitsClassifier) -> dict:
    """Modes covered and KL from uniform of generated stacked digits (see the module's note).

    Args:
      images: ``[N, S, S, 3]`` samples in [-1, 1]; the papers use N = 26,000.
      classifier: The digits classifier for side S (``load_digits_classifier(S)``).

    Returns:
      ``modes`` (an int in [0, 1000]), ``kl`` (a float in [0, log 1000]) and ``histogram``
      (int ``[1000]``, samples per mode).
    """
    return mode_scores(stacked_modes(images, classifier))


def data_kl(labels: np.ndarray) -> float:
    """KL(p_data || U) of real stacks: the modes' true law, the channels' label law cubed.

    sklearn's digits are not exactly balanced (174 to 183 per class), so the data themselves sit
    a little above 0; the 5,000 MNIST digits are (500 each), so theirs is 0.
    """
    frequencies = np.bincount(labels, minlength=10) / len(labels)
    law = np.einsum("i,j,k->ijk", frequencies, frequencies, frequencies).ravel()
    return float(scipy.stats.entropy(law, np.full(NUM_MODES, 1.0 / NUM_MODES)))


def stacked_accuracy_bound(
    classifier: DigitsClassifier, num_stacks: int = NUM_SAMPLES, seed: int = 0
) -> dict[str, float]:
    """How far the mode count can be trusted: the classifier on real stacks of held-out digits.

    Args:
      classifier: The digits classifier (trained on its split's train part only).
      num_stacks: Real stacks to score, drawn as ``StackedDigitsDataset`` draws them but from
        the held-out digits (359 of sklearn's, 1,000 of MNIST's).
      seed: Their stream.

    Returns:
      ``digit_accuracy`` on the held-out digits; ``independent_stack_accuracy`` its cube (all
      three channels right, were errors independent); ``stack_accuracy`` measured on the real
      stacks; ``real_modes`` and ``real_kl``, what those real stacks score (the best a
      generator can expect from as many samples); ``data_kl``, KL(p_data || U) exactly.
    """
    split = classifier.split
    accuracy = classifier.accuracy(split.held_out_images, split.held_out_labels)
    indices = stacked.stack_indices(seed, 0, num_stacks, len(split.held_out_images))
    images, modes = stacked.stack(split.held_out_images, split.held_out_labels, indices)
    predicted = stacked_modes(images, classifier)
    real = mode_scores(predicted)
    return {
        "digit_accuracy": accuracy,
        "independent_stack_accuracy": accuracy**stacked.NUM_CHANNELS,
        "stack_accuracy": float(np.mean(predicted == modes)),
        "real_modes": real["modes"],
        "real_kl": real["kl"],
        "data_kl": data_kl(np.concatenate([split.train_labels, split.held_out_labels])),
    }
