"""Classification metrics as pure functions of (logits, targets), named as LAION's CLIP_benchmark names them.

`logits` is [n_samples, n_classes] (any monotone score: class scores or
probabilities), `targets` is [n_samples] class indices. scikit-learn does the
counting; this module only chooses what to count. No model, file or plot here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from explain.scoring import softmax

ECE_BINS = 15
SCALAR_METRICS = ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece")


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best classes per sample, best first. # [n, k]

    Exact ties go to the lower class index, the same rule as `argmax`, so
    that the top-1 class, `acc1` and the predicted class always agree.
    """
    k = min(k, logits.shape[1])
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :k]


def accuracy_at(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k best (k=1: top-1 accuracy).

    NaN when there are no samples, or fewer than k classes (then every
    sample would count as right), as CLIP_benchmark reports acc5 then.
    """
    if len(targets) == 0 or k > logits.shape[1]:
        return float("nan")
    return float((top_k(logits, k) == targets[:, None]).any(axis=1).mean())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by bin size."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def classification_metrics(
    logits: np.ndarray, targets: np.ndarray, class_names: list[str], probabilities_of: Callable = softmax
) -> dict:
    """acc1, acc5, mean_per_class_recall, mean_confidence, ece, per-class scores and the confusion matrix.

    acc5 is NaN (null in JSON) with fewer than five classes. `probabilities_of` turns class scores into
    the probabilities that confidence and ECE are computed on (softmax unless told otherwise).
    """
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = probabilities_of(logits)
    predictions = logits.argmax(axis=1)  # ties: the lower index, as in top_k
    confidence = probabilities.max(axis=1)
    correct = predictions == targets
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=labels, zero_division=0
    )
    present = support > 0  # classes with no samples have no recall to average
    return {
        "acc1": accuracy_at(logits, targets, 1),
        "acc5": accuracy_at(logits, targets, 5),
        "mean_per_class_recall": float(recall[present].mean()) if present.any() else float("nan"),
        "mean_confidence": float(confidence.mean()) if len(confidence) else float("nan"),
        "ece": expected_calibration_error(confidence, correct),
        "n_samples": int(len(targets)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(targets, predictions, labels=labels).tolist(),
    }
