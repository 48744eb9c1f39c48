"""Class fidelity: does generated traffic of class c look like class c to a classifier trained
on real traffic? (DESIGN.md §7; TrafficLLM reports generation F1 0.9483.)

A random forest learns the flow class from standardised flow features of the real training
flows (the real test flows when no training split is given), then labels every generated
flow; the score is macro-F1 of its predictions against the class each flow was generated as,
over the requested classes, with the confusion matrix. The same classifier's macro-F1 on the
real test flows is the reference: generated traffic cannot be expected to beat it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix, f1_score
from threadpoolctl import threadpool_limits

from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.evaluate.features import Standardiser
from pytrafgen.evaluate.utility import cap_per_class


def class_fidelity(real: EvalSet, generated: EvalSet, max_train: int = 20000, seed: int = 0) -> dict[str, Any]:
    train = real.train if real.train is not None else real
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(train.labels >= 0)
    keep = keep[cap_per_class(train.labels[keep], max_train, rng)]
    scaler = Standardiser.fit(train.features().values)
    model = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    with threadpool_limits(1):  # oversubscribed thread pools crawl on a shared machine
        model.fit(scaler.transform(train.features().values[keep]), train.labels[keep])
    g = np.flatnonzero(generated.labels >= 0)
    requested = generated.labels[g]
    predicted = model.predict(scaler.transform(generated.features().values[g])) if len(g) else requested
    asked = sorted(set(requested.tolist()))
    all_labels = sorted(set(asked) | set(np.unique(predicted).tolist()))
    out: dict[str, Any] = {
        "macro_f1": float(f1_score(requested, predicted, labels=asked, average="macro", zero_division=0))
        if len(g) else None,
        "accuracy": float(np.mean(requested == predicted)) if len(g) else None,
        "per_class_recall": {
            generated.classes[c]: float(np.mean(predicted[requested == c] == c)) for c in asked
        },
        "confusion": {
            "classes": [generated.classes[c] for c in all_labels],
            "matrix": confusion_matrix(requested, predicted, labels=all_labels).tolist() if len(g) else [],
            "rows": "requested class", "columns": "predicted class",
        },
        "settings": {"classifier": "RandomForestClassifier(n_estimators=100)",
                     "trained_on": "real train split" if real.train is not None else "real test split",
                     "features": "features.FEATURE_NAMES, standardised on the real training flows",
                     "max_train_flows": max_train, "seed": seed, "generated_flows": len(g)},
    }
    if real.train is not None:
        t = np.flatnonzero(real.labels >= 0)
        pred_real = model.predict(scaler.transform(real.features().values[t]))
        out["real_test_macro_f1"] = float(f1_score(real.labels[t], pred_real, average="macro", zero_division=0))
    return out
