"""Train a detector on labeled real flows (optionally plus generated flows) with a held-out,
flow-level stratified split of the real flows for validation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytrafgen.detect.data import LabeledFlows
from pytrafgen.detect.metrics import classification_metrics
from pytrafgen.detect.model import Detector, DetectorHeader, new_detector
from pytrafgen.errors import PytrafgenError


@dataclass
class TrainResult:
    detector: Detector
    validation: dict[str, Any]  # metrics on the held-out real flows
    validation_flows: np.ndarray  # their indices among the real flows (LabeledFlows order)


def _class_index(labels: list[str | None], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] if c is not None else -1 for c in labels], np.int64)


def _encode(detector: Detector, flows: LabeledFlows) -> np.ndarray:
    rows = [detector.encode(cap.packets, cap.flows) for cap in flows.captures]
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def cap_per_class(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping at most ``limit`` rows of each class (a seeded random choice)."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, limit, replace=False) if limit and len(idx) > limit else idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def train_detector(kind: str, real: LabeledFlows, generated: LabeledFlows | None = None, *,
                   val_share: float = 0.2, seed: int = 0, max_flows_per_class: int = 5000,
                   train_fraction: float = 1.0, transformer_steps: int | None = None,
                   max_val_flows_per_class: int = 0, generated_weight: float = 1.0) -> TrainResult:
    """Fit a ``kind`` detector on the training part of ``real`` plus every flow of
    ``generated``; validate on the held-out real flows. ``train_fraction`` < 1 keeps that share
    of the real training flows per class (the scarce-data experiment), at least one each;
    ``transformer_steps`` sets a transformer's fine-tuning steps; ``max_val_flows_per_class``
    (0: all) validates on a seeded subset per class (the transformer predicts a few hundred
    flows per CPU-second); ``generated_weight`` is the training weight of a generated flow
    next to a real flow's 1."""
    from pytrafgen.evaluate.evalset import stratified_split

    if not 0 < val_share < 1:
        raise PytrafgenError(f"the validation share must be between 0 and 1, got {val_share}")
    if not 0 < generated_weight <= 1e6:
        raise PytrafgenError(f"the generated flows' weight must be positive (at most 1e6), got {generated_weight}")
    real_labels = real.labels()
    gen_labels = generated.labels() if generated is not None else []
    classes = list(dict.fromkeys(c for c in [*real_labels, *gen_labels] if c is not None))
    if len(classes) < 2:
        raise PytrafgenError(f"a detector needs at least two classes, the labels give {len(classes)}")
    kinds = dict(real.class_kinds)
    if generated is not None:
        kinds.update({k: v for k, v in generated.class_kinds.items() if k not in kinds})
    header = DetectorHeader(kind=kind, classes=classes, class_kinds=kinds, settings=real.settings)
    detector = new_detector(kind, header, transformer_steps)

    y_real = _class_index(real_labels, classes)
    labeled = np.flatnonzero(y_real >= 0)
    train_rel, val_rel = stratified_split(y_real[labeled], val_share, seed)
    train_idx, val_idx = labeled[train_rel], labeled[val_rel]
    rng = np.random.default_rng(seed)
    if train_fraction < 1:
        keep = []
        for c in np.unique(y_real[train_idx]):
            idx = train_idx[y_real[train_idx] == c]
            keep.append(rng.choice(idx, max(1, round(len(idx) * train_fraction)), replace=False))
        train_idx = np.sort(np.concatenate(keep))
    train_idx = train_idx[cap_per_class(y_real[train_idx], max_flows_per_class, rng)]
    val_idx = val_idx[cap_per_class(y_real[val_idx], max_val_flows_per_class, rng)]

    x_real = _encode(detector, real)
    x_parts, y_parts = [x_real[train_idx]], [y_real[train_idx]]
    n_generated = 0
    if generated is not None:
        y_gen = _class_index(gen_labels, classes)
        sel = np.flatnonzero(y_gen >= 0)
        sel = sel[cap_per_class(y_gen[sel], max_flows_per_class, rng)]
        x_parts.append(_encode(detector, generated)[sel])
        y_parts.append(y_gen[sel])
        n_generated = len(sel)
    weights = None
    if n_generated and generated_weight != 1.0:
        weights = np.r_[np.ones(len(train_idx)), np.full(n_generated, generated_weight)]
    started = time.perf_counter()
    detector.fit(np.concatenate(x_parts), np.concatenate(y_parts), seed, weights)
    fit_s = time.perf_counter() - started

    proba = detector.predict_proba(x_real[val_idx])
    validation = classification_metrics(y_real[val_idx], proba.argmax(axis=1) if len(proba) else
                                        np.zeros(0, np.int64), classes)
    header.training = {
        "real_flows_train": len(train_idx), "real_flows_validation": len(val_idx),
        "generated_flows": n_generated, "generated_weight": generated_weight, "validation_share": val_share,
        "train_fraction": train_fraction,
        "max_flows_per_class": max_flows_per_class, "seed": seed, "fit_seconds": round(fit_s, 2),
        "real_sources": [str(c.path) for c in real.captures],
        "generated_sources": [str(c.path) for c in generated.captures] if generated is not None else [],
        "validation_macro_f1": validation["macro_f1"],
    }
    return TrainResult(detector, validation, val_idx)


__all__ = ["TrainResult", "cap_per_class", "train_detector"]
