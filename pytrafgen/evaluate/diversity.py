"""Diversity and memorisation (DESIGN.md §7).

Coverage and density follow Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for
Generative Models") on standardised flow features (``features.py``, standardiser fitted on
the real flows): each real flow X_i has the radius r_i = distance to its k-th nearest other
real flow (k = 5); coverage = share of real flows whose ball holds at least one generated
flow, density = (1 / kM) Σ_j #{i : Y_j in ball(X_i)}. Balls are closed (distance ≤ r_i) so
that duplicate real flows (radius 0, common in floods) are covered by an identical copy.

Memorisation: the share of generated flows whose *signature* — protocol, server port and the
ordered (direction, TCP flags, payload length, payload bytes) of every packet — equals that of
a training flow (addresses, ports on the client side, ISNs and timestamps are excluded: the
builder re-draws them); and the nearest-neighbour distance ratio d1/d2 (distance to the
nearest and second-nearest training flow in feature space) of generated flows, beside the
same ratio of the real test flows as the reference a non-copying generator should match.
Near copies (same packet sizes and directions, payloads within a small edit distance:
``copies.py``) are counted beside the exact ones. Both are reported for the real test flows
too: the rate at which real flows the generator never saw copy the training flows is the floor
(floods repeat identical packets by nature), not zero. With ``evaluate --real B --train A``
this is one recording (B) against another (A).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from pytrafgen.evaluate.copies import EDIT_SHARE, NearCopyIndex, copy_shares, flow_shapes, near_copies
from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.evaluate.features import Standardiser

_CHUNK = 1024


def _subsample(values: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= cap:
        return values
    return values[np.sort(rng.choice(len(values), cap, replace=False))]


def coverage_density(real: np.ndarray, generated: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Naeem et al. coverage and density of ``generated`` against ``real`` (feature rows)."""
    if len(real) <= k or len(generated) == 0:
        return float("nan"), float("nan")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(real)
    radii = nn.kneighbors(real)[0][:, k]  # column 0 is the point itself
    covered = np.zeros(len(real), bool)
    inside_count = 0
    for start in range(0, len(generated), _CHUNK):
        block = generated[start : start + _CHUNK]
        d = cdist(block, real)
        within = d <= radii[None, :] + 1e-12
        inside_count += int(within.sum())
        covered |= within.any(axis=0)
    return float(covered.mean()), float(inside_count / (k * len(generated)))


def flow_signatures(es: EvalSet) -> np.ndarray:
    """A 16-byte digest per flow of what a generator chose (see the module docstring)."""
    order = np.flatnonzero(es.flow_id >= 0)
    order = order[np.argsort(es.flow_id[order], kind="stable")]
    bounds = np.searchsorted(es.flow_id[order], np.arange(es.n_flows + 1))
    p = es.packets
    digests = []
    for f in range(es.n_flows):
        h = hashlib.blake2b(digest_size=16)
        h.update(bytes([int(es.flows.proto[f])]) + int(es.flows.server_port[f]).to_bytes(2, "big"))
        for i in order[bounds[f] : bounds[f + 1]]:
            h.update(bytes([int(es.direction[i])]) + int(p.tcp_flags[i]).to_bytes(2, "big")
                     + int(p.payload_wirelen[i]).to_bytes(4, "big"))
            h.update(p.payload(int(i)))
        digests.append(h.digest())
    return np.array(digests, dtype="S16") if digests else np.zeros(0, "S16")


def _nn_ratio(train: np.ndarray, query: np.ndarray) -> np.ndarray:
    if len(train) < 2 or len(query) == 0:
        return np.zeros(0)
    d = NearestNeighbors(n_neighbors=2).fit(train).kneighbors(query)[0]
    return np.where(d[:, 1] > 0, d[:, 0] / np.maximum(d[:, 1], 1e-12), 1.0)


def _summary(x: np.ndarray) -> dict[str, float | None]:
    if len(x) == 0:
        return {"mean": None, "median": None}
    return {"mean": float(np.mean(x)), "median": float(np.median(x))}


def diversity(real: EvalSet, generated: EvalSet, k: int = 5, max_flows: int = 4000,
              seed: int = 0) -> dict[str, Any]:
    """Coverage/density per class and pooled, on at most ``max_flows`` flows a side."""
    rng = np.random.default_rng(seed)
    scaler = Standardiser.fit(real.features().values)
    rx = scaler.transform(real.features().values)
    gx = scaler.transform(generated.features().values)
    per_class: dict[str, Any] = {}
    for c, name in enumerate(real.classes):
        r, g = rx[real.labels == c], gx[generated.labels == c]
        if len(g) == 0 or len(r) <= k:
            continue
        cov, den = coverage_density(_subsample(r, max_flows, rng), _subsample(g, max_flows, rng), k)
        per_class[name] = {"coverage": cov, "density": den, "real_flows": len(r), "generated_flows": len(g)}
    cov, den = coverage_density(_subsample(rx, max_flows, rng), _subsample(gx, max_flows, rng), k)
    covs = [v["coverage"] for v in per_class.values()]
    dens = [v["density"] for v in per_class.values()]
    return {
        "coverage_mean": float(np.mean(covs)) if covs else None,
        "density_mean": float(np.mean(dens)) if dens else None,
        "pooled": {"coverage": cov, "density": den},
        "per_class": per_class,
        "settings": {"k": k, "features": "features.FEATURE_NAMES, standardised on the real flows",
                     "ball": "closed (distance <= k-th neighbour distance)",
                     "max_flows_per_side": max_flows, "seed": seed,
                     "reference": "real test flows (Naeem et al. 2020)"},
    }


def memorisation(train: EvalSet, generated: EvalSet, real_test: EvalSet | None = None,
                 max_flows: int = 4000, seed: int = 0, edit_share: float = EDIT_SHARE) -> dict[str, Any]:
    """Exact- and near-copy shares and nearest-neighbour distance ratios against the training
    flows, for the generated flows and (the floor) the real test flows."""
    rng = np.random.default_rng(seed)
    train_sigs = set(flow_signatures(train).tolist())
    near_index = NearCopyIndex(flow_shapes(train), edit_share=edit_share, seed=seed)

    def shares(es: EvalSet) -> tuple[float | None, dict[str, float], float | None, dict[str, float]]:
        exact = np.array([s in train_sigs for s in flow_signatures(es).tolist()], bool)
        near = near_copies(near_index, flow_shapes(es)) | exact
        return (*copy_shares(exact, es.labels, es.classes), *copy_shares(near, es.labels, es.classes))

    exact_share, exact_per_class, near_share, near_per_class = shares(generated)
    scaler = Standardiser.fit(train.features().values)
    tx = _subsample(scaler.transform(train.features().values), 4 * max_flows, rng)
    gen_ratio = _nn_ratio(tx, _subsample(scaler.transform(generated.features().values), max_flows, rng))
    out: dict[str, Any] = {
        "exact_copy_share": exact_share,
        "exact_copy_share_per_class": exact_per_class,
        "near_copy_share": near_share,
        "near_copy_share_per_class": near_per_class,
        "nn_distance_ratio_generated": _summary(gen_ratio),
        "settings": {"signature": "proto, server port, per packet (direction, TCP flags, payload "
                                  "length, payload bytes); addresses, client port, ISNs, times excluded",
                     "near_copy": "proto, server port, per packet (direction, payload length) equal; payloads "
                                  f"(concatenated) within max(1, ceil({edit_share} x bytes)) edits (Levenshtein)",
                     "floor": "the same shares for the real test flows against the training flows",
                     "nn_ratio": "d(nearest training flow) / d(second nearest), standardised flow features",
                     "max_flows": max_flows, "seed": seed, "edit_share": edit_share},
    }
    if real_test is not None:
        floor_exact, floor_exact_pc, floor_near, floor_near_pc = shares(real_test)
        out["exact_copy_share_real_test"] = floor_exact
        out["exact_copy_share_real_test_per_class"] = floor_exact_pc
        out["near_copy_share_real_test"] = floor_near
        out["near_copy_share_real_test_per_class"] = floor_near_pc
        ratio = _nn_ratio(tx, _subsample(scaler.transform(real_test.features().values), max_flows, rng))
        out["nn_distance_ratio_real_test"] = _summary(ratio)
    return out
