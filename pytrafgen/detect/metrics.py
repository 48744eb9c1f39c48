"""Classification figures of a detector: per-class precision/recall/F1, macro-F1, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support over class indices into ``classes``;
    macro-F1 averages the classes present in ``y_true`` (a class the set does not hold has no
    recall to measure, and its false positives already lower the other classes' figures)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    n = len(classes)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    present = support > 0
    return {
        "classes": list(classes),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "flows": len(y_true),
        "confusion": confusion.tolist(),
    }


__all__ = ["classification_metrics"]
