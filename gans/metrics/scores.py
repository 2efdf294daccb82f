"""Scores of generated samples from a classifier's outputs: Inception Score and class coverage."""

from __future__ import annotations

import numpy as np
import scipy.special


def inception_score(
    logits_or_probs: np.ndarray, num_splits: int = 10, *, from_logits: bool = True
) -> dict[str, float]:
    """Inception Score (Salimans et al., 2016, "Improved techniques for training GANs").

    IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of p(y|x) over the samples. As in the
    paper's code, the N samples are cut into ``num_splits`` consecutive splits; each split gets
    its own p(y) and score. Split ``i`` holds samples ``[i * N // num_splits, (i + 1) * N //
    num_splits)``, the slicing of openai/improved-gan (``inception_score/model.py``:
    ``preds[(i * preds.shape[0] // splits):((i + 1) * preds.shape[0] // splits), :]``) and of
    torch-fidelity (``metric_isc.py``, which shuffles the samples first by default), so when N
    is not a multiple of ``num_splits`` the longer splits come last (``np.array_split`` puts
    them first, and gives another score). It ranges from 1 (every sample has the same class
    distribution) to the number of classes (confident predictions, every class equally often).

    Args:
      logits_or_probs: ``[N, C]`` class logits (``from_logits=True``) or probabilities.
      num_splits: Number of splits; the paper uses 10 splits of 5,000 samples.
      from_logits: Whether the input holds logits (softmax is applied) or probabilities.

    Returns:
      ``is_mean`` and ``is_std``, the mean and standard deviation of the score over splits.
    """
    scores = np.asarray(logits_or_probs, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"logits_or_probs must be [N, C], got shape {scores.shape}.")
    if not 1 <= num_splits <= len(scores):
        raise ValueError(f"num_splits must be in [1, N] = [1, {len(scores)}], got {num_splits}.")
    if from_logits:
        probs = np.exp(scipy.special.log_softmax(scores, axis=1))
    else:
        if (scores < 0).any() or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(
                "probabilities must be non-negative and sum to 1 per row; pass "
                "from_logits=True for logits."
            )
        probs = scores
    n = len(probs)
    values = []
    for i in range(num_splits):
        split = probs[i * n // num_splits : (i + 1) * n // num_splits]
        marginal = split.mean(axis=0, keepdims=True)
        # rel_entr(p, q) = p log(p / q), with 0 log 0 = 0.
        kl = scipy.special.rel_entr(split, marginal).sum(axis=1).mean()
        values.append(np.exp(kl))
    return {"is_mean": float(np.mean(values)), "is_std": float(np.std(values))}


def class_coverage(
    predicted_labels: np.ndarray, num_classes: int, *, min_count: int = 1
) -> dict[str, float]:
    """How many classes a generator produces, and how evenly, judged by a classifier's labels.

    The class analogue of `gans.metrics.mixture.mode_coverage` (as used for stacked MNIST by
    Metz et al., 2017 and Lin et al., 2018): with p_hat the histogram of predicted labels,

        classes = #{c : count_c >= min_count},   KL(p_hat || U) = sum_c p_hat_c log(K p_hat_c),

    which is 0 for a uniform histogram and log K when every sample gets one label (a uniform
    training set is assumed, as for the digits).

    Args:
      predicted_labels: ``[N]`` integer labels in [0, num_classes).
      num_classes: K, the number of classes.
      min_count: Samples a class needs to count as produced.

    Returns:
      ``classes`` (an int in [0, K]) and ``kl_from_uniform`` (a float in [0, log K]).
    """
    labels = np.asarray(predicted_labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"predicted_labels must be a non-empty [N] integer array, got {labels!r}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"predicted labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]."
        )
    counts = np.bincount(labels, minlength=num_classes)
    p = counts[counts > 0] / len(labels)
    return {
        "classes": int(np.sum(counts >= min_count)),
        "kl_from_uniform": float(np.sum(p * np.log(p * num_classes))),
    }
