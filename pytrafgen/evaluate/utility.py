"""Utility: does generated traffic help detectors? (DESIGN.md §7)

Five detectors learn the flow class from standardised flow features (``features.py``) under
five training regimes and are scored by macro-F1 on the real test flows:

* ``real``: the real training flows;
* ``real+generated``: real training flows plus the generated flows;
* ``generated`` (TSTR, train synthetic / test real): the generated flows only;
* ``scarce``: all benign training flows but only ``scarce_share`` (10 %) of each malicious
  class's training flows (at least one) — the setting where generation should help most;
* ``scarce+generated``: the scarce set plus the generated flows.

Gradient boosting is scikit-learn's histogram implementation (same model family, much faster
on these sizes), with L2 regularisation: without it a class with a single training flow makes
the leaf values blow up and macro-F1 collapses to chance. Training sets above ``max_train`` flows are subsampled per class.

Each detector is reported on its own: one that cannot train on a regime's set (gradient
boosting's stratified early-stopping split needs two flows per class once a set exceeds 10,000
flows, so a class with a single training flow stops it) gets None there and its reason under
``unavailable``; the others are still scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.evaluate.features import Standardiser


def detectors(seed: int) -> dict[str, Callable[[], Any]]:
    """Factories of the five detectors with the settings reported beside their scores."""
    return {
        "random_forest": lambda: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=100, l2_regularization=1.0,
                                                                      random_state=seed),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=300, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
        "logistic_regression": lambda: LogisticRegression(max_iter=2000),
    }


DETECTOR_SETTINGS = {
    "random_forest": "RandomForestClassifier(n_estimators=100)",
    "gradient_boosting": "HistGradientBoostingClassifier(max_iter=100, l2_regularization=1.0)",
    "mlp": "MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=300)",
    "knn": "KNeighborsClassifier(n_neighbors=5)",
    "logistic_regression": "LogisticRegression(max_iter=2000)",
}


def malicious_classes(es: EvalSet) -> list[int]:
    """Class indices marked malicious (by the manifest's label column, else by name)."""
    out = []
    for i, c in enumerate(es.classes):
        kind = es.class_kinds.get(c)
        if kind == "malicious" or (kind is None and "benign" not in c.lower()):
            out.append(i)
    return out


def cap_per_class(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` rows, kept in proportion per class (each class keeps ≥ 1)."""
    if len(labels) <= cap:
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, round(len(idx) * cap / len(labels)))
        keep.append(rng.choice(idx, min(n, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def scarce_subset(labels: np.ndarray, malicious: list[int], share: float,
                  rng: np.random.Generator) -> np.ndarray:
    keep = [np.flatnonzero(~np.isin(labels, malicious))]
    for c in malicious:
        idx = np.flatnonzero(labels == c)
        if len(idx):
            keep.append(rng.choice(idx, max(1, round(len(idx) * share)), replace=False))
    return np.sort(np.concatenate(keep))


def _score(factory: Callable[[], Any], x: np.ndarray, y: np.ndarray, tx: np.ndarray, ty: np.ndarray,
           labels: list[int]) -> tuple[float | None, str | None]:
    """(macro-F1, None), or (None, why this detector cannot run on this training set): one
    detector failing (e.g. gradient boosting's stratified early-stopping split on a class with
    a single training flow) must not blank the others."""
    if len(np.unique(y)) < 2:
        return None, "a one-class training set cannot train a classifier"
    model = factory()
    try:
        # One BLAS/OpenMP thread: on a shared machine oversubscribed thread pools run 10x slower.
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
    except ValueError as exc:
        counts = np.bincount(y - y.min()) if len(y) else np.zeros(0, np.int64)
        smallest = int(counts[counts > 0].min()) if len(counts) else 0
        return None, f"cannot train (smallest class: {smallest} flow(s)): {exc}"
    return float(f1_score(ty, model.predict(tx), labels=labels, average="macro", zero_division=0)), None


def utility(real: EvalSet, generated: EvalSet, scarce_share: float = 0.1, max_train: int = 20000,
            seed: int = 0) -> dict[str, Any]:
    """Macro-F1 of the five detectors on ``real`` (the test split) in every regime."""
    if real.train is None:
        return {"skipped": "no real training split (pass --train or let evaluate split --real)"}
    # separate streams: the real subsets must not depend on the generated set's size
    rng_real, rng_gen = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    train = real.train
    scaler = Standardiser.fit(train.features().values)
    tr_keep = np.flatnonzero(train.labels >= 0)
    tr_keep = tr_keep[cap_per_class(train.labels[tr_keep], max_train, rng_real)]
    x_real, y_real = scaler.transform(train.features().values[tr_keep]), train.labels[tr_keep]
    g_keep = np.flatnonzero(generated.labels >= 0)
    g_keep = g_keep[cap_per_class(generated.labels[g_keep], max_train, rng_gen)]
    x_gen, y_gen = scaler.transform(generated.features().values[g_keep]), generated.labels[g_keep]
    te = np.flatnonzero(real.labels >= 0)
    x_test, y_test = scaler.transform(real.features().values[te]), real.labels[te]
    labels = sorted(set(np.unique(y_test).tolist()))
    scarce = scarce_subset(y_real, malicious_classes(train), scarce_share, rng_real)
    regimes = {
        "real": (x_real, y_real),
        "real+generated": (np.vstack([x_real, x_gen]), np.concatenate([y_real, y_gen])),
        "generated": (x_gen, y_gen),
        "scarce": (x_real[scarce], y_real[scarce]),
        "scarce+generated": (np.vstack([x_real[scarce], x_gen]), np.concatenate([y_real[scarce], y_gen])),
    }
    # The real-only regimes do not depend on the generated set: computed once per real set.
    # (The class list is part of the key: aligning a generated set may append classes.)
    key = ("utility", seed, scarce_share, max_train, tuple(real.classes))
    cached = real.cache.get(key, {})
    scores: dict[str, dict[str, float | None]] = {}
    unavailable: dict[str, dict[str, str]] = {}
    for det_name, factory in detectors(seed).items():
        scores[det_name] = {}
        for r, (x, y) in regimes.items():
            if r in ("real", "scarce") and (det_name, r) in cached:
                score, why = cached[(det_name, r)]
            else:
                score, why = _score(factory, x, y, x_test, y_test, labels)
                if r in ("real", "scarce"):
                    cached[(det_name, r)] = (score, why)
            scores[det_name][r] = score
            if why is not None:
                unavailable.setdefault(det_name, {})[r] = why
    real.cache[key] = cached
    improved = sum(1 for s in scores.values() if s["real"] is not None and s["real+generated"] is not None
                   and s["real+generated"] > s["real"])
    improved_scarce = sum(1 for s in scores.values() if s["scarce"] is not None
                          and s["scarce+generated"] is not None and s["scarce+generated"] > s["scarce"])
    return {
        "macro_f1": scores,  # None where a detector could not run: see "unavailable"
        "unavailable": unavailable,
        "detectors_improved_by_generated": improved,
        "detectors_improved_by_generated_scarce": improved_scarce,
        "settings": {
            "detectors": DETECTOR_SETTINGS, "features": "features.FEATURE_NAMES, standardised on real train",
            "target": "flow class (multi-class), macro-F1 over the classes in the real test set",
            "scarce_share": scarce_share, "max_train_flows": max_train, "seed": seed,
            "train_flows": {r: len(y) for r, (_, y) in regimes.items()}, "test_flows": len(y_test),
            "malicious_classes": [train.classes[c] for c in malicious_classes(train)],
        },
    }
