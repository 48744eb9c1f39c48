"""Near copies of training flows (memorisation beyond exact copies).

A flow is a *near copy* of a training flow when both have the same protocol, server port and
the same ordered (direction, payload length) of every packet — the same packet sizes and
directions — and their payloads, concatenated in packet order, lie within a small edit
distance: at most ``max(1, ceil(edit_share × payload bytes))`` single-byte insertions,
deletions or substitutions (Levenshtein). Flows without payload that match in shape are near
copies at distance 0. Every exact copy (``diversity.flow_signatures``) is a near copy.

How it is computed: training flows are grouped by shape; within a group, the distinct payloads
are compared to the query's at once by Hamming distance (substitutions only, an upper bound
of the edit distance for payloads of equal lengths): at or under the budget it is a near copy.
Otherwise the edit distance proper, banded to the budget, is computed against the
``levenshtein_candidates`` payloads nearest in Hamming distance (a shifted copy is close in
edit distance but far in Hamming distance; its nearest Hamming neighbours are where it is
found in practice). A group holding more than ``max_candidates`` distinct payloads is
subsampled (seeded), which can only miss copies, never invent them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pytrafgen.evaluate.evalset import EvalSet

EDIT_SHARE = 0.02
MAX_CANDIDATES = 2000
LEVENSHTEIN_CANDIDATES = 3


@dataclass(frozen=True)
class FlowShapes:
    """Per flow: its shape key and its payload bytes (packets in capture order, concatenated)."""

    keys: list[bytes]
    payloads: list[bytes]


def flow_shapes(es: EvalSet) -> FlowShapes:
    order = np.flatnonzero(es.flow_id >= 0)
    order = order[np.argsort(es.flow_id[order], kind="stable")]
    bounds = np.searchsorted(es.flow_id[order], np.arange(es.n_flows + 1))
    p = es.packets
    wirelen = np.asarray(p.payload_wirelen, np.int64)
    keys: list[bytes] = []
    payloads: list[bytes] = []
    for f in range(es.n_flows):
        rows = order[bounds[f]:bounds[f + 1]]
        key = bytearray([int(es.flows.proto[f])]) + int(es.flows.server_port[f]).to_bytes(2, "big")
        for i in rows.tolist():
            key += bytes([int(es.direction[i])]) + int(wirelen[i]).to_bytes(4, "big")
        keys.append(bytes(key))
        payloads.append(b"".join(p.payload(int(i)) for i in rows.tolist()))
    return FlowShapes(keys, payloads)


def edit_budget(n_bytes: int, edit_share: float = EDIT_SHARE) -> int:
    """Edits a payload of ``n_bytes`` may differ by and still be a near copy (0 without payload)."""
    return max(1, math.ceil(edit_share * n_bytes)) if n_bytes else 0


def bounded_levenshtein(a: bytes, b: bytes, budget: int) -> int:
    """The edit distance of ``a`` and ``b`` if it is at most ``budget``, else ``budget + 1``
    (Ukkonen's band: only cells within ``budget`` of the diagonal can stay within it)."""
    if abs(len(a) - len(b)) > budget:
        return budget + 1
    big = budget + 1
    prev = {j: j for j in range(min(len(b), budget) + 1)}
    for i in range(1, len(a) + 1):
        lo, hi = max(0, i - budget), min(len(b), i + budget)
        cur: dict[int, int] = {}
        for j in range(lo, hi + 1):
            if j == 0:
                cur[j] = i
                continue
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev.get(j - 1, big) + cost, prev.get(j, big) + 1, cur.get(j - 1, big) + 1)
        if min(cur.values()) > budget:
            return big
        prev = cur
    return min(prev.get(len(b), big), big)


class NearCopyIndex:
    """The training flows, grouped by shape, to ask whether a flow nearly copies one of them."""

    def __init__(self, train: FlowShapes, edit_share: float = EDIT_SHARE, max_candidates: int = MAX_CANDIDATES,
                 levenshtein_candidates: int = LEVENSHTEIN_CANDIDATES, seed: int = 0) -> None:
        self.edit_share = edit_share
        self.levenshtein_candidates = levenshtein_candidates
        groups: dict[bytes, set[bytes]] = defaultdict(set)
        for key, payload in zip(train.keys, train.payloads, strict=True):
            groups[key].add(payload)
        rng = np.random.default_rng(seed)
        self.groups: dict[bytes, tuple[set[bytes], np.ndarray, np.ndarray]] = {}
        for key, distinct in groups.items():
            ordered = sorted(distinct)
            if len(ordered) > max_candidates:
                ordered = [ordered[i] for i in np.sort(rng.choice(len(ordered), max_candidates, replace=False))]
            width = max((len(x) for x in ordered), default=0)
            stacked = np.zeros((len(ordered), width), np.uint8)
            for r, x in enumerate(ordered):  # equal shapes, but a capture may have stored less
                stacked[r, :len(x)] = np.frombuffer(x, np.uint8)
            lengths = np.array([len(x) for x in ordered], np.int64)
            self.groups[key] = (set(ordered), stacked, lengths)

    def is_near_copy(self, key: bytes, payload: bytes) -> bool:
        group = self.groups.get(key)
        if group is None:
            return False
        exact, stacked, lengths = group
        if payload in exact:
            return True
        budget = edit_budget(len(payload), self.edit_share)
        same = np.flatnonzero(lengths == len(payload))  # a capture may have stored a payload in part
        if len(same) == 0:
            return False
        stacked = stacked[same, :len(payload)]
        hamming = np.count_nonzero(stacked != np.frombuffer(payload, np.uint8)[None, :], axis=1)
        if int(hamming.min()) <= budget:
            return True
        nearest = np.argsort(hamming, kind="stable")[:self.levenshtein_candidates]
        return any(bounded_levenshtein(payload, stacked[r].tobytes(), budget) <= budget for r in nearest.tolist())


def near_copies(index: NearCopyIndex, query: FlowShapes) -> np.ndarray:
    """Per query flow: whether it nearly copies a training flow."""
    return np.array([index.is_near_copy(k, p) for k, p in zip(query.keys, query.payloads, strict=True)], bool)


def copy_shares(copied: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[float | None, dict[str, float]]:
    """The overall share and the share per class (classes with flows only)."""
    per_class = {name: float(copied[labels == c].mean()) for c, name in enumerate(classes) if np.any(labels == c)}
    return (float(copied.mean()) if len(copied) else None), per_class
