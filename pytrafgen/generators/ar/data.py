"""Training windows from a tokenized dataset split.

How flows become fixed-length windows (also in docs/training.md):

* **Continuation** (a model with continuation tokens, see ``continuation.py``): a flow longer
  than the context is split into segments, each later one prompted by ``BOS CLASS CONT
  BUCKET header`` and the last packets before it; nothing is cut. Otherwise:
* **Truncation, not chunking.** A flow longer than the context (``block_size`` tokens) is cut
  at the last packet boundary that fits and closed with EOS, so every training flow is a
  complete, grammatical ``BOS CLASS … EOS`` sequence that starts at its class token. Sampling
  emits at most ``block_size`` tokens per flow, so the model is trained on exactly the lengths it
  can produce. A flow whose first packet alone does not fit is left out (counted).
* **Packing.** The (truncated) flows of a split are concatenated in a seeded random order into
  one stream. A window is the ``block_size + 1`` tokens starting at a chosen flow's BOS: that
  flow, then the flows after it until the window is full. Every window therefore starts with a
  class token in view and no context is wasted on padding; attention may look across a BOS
  into the previous flow of the window, which the model learns to ignore.
* **Targets.** The token after BOS is the class token the user asks for at sampling time, so it
  is never a target (its target is set to −1, ignored by the loss).
* **Which flows.** Windows start at flows drawn with class-balanced weights: pre-training over
  the benign classes, fine-tuning over the malicious classes with a ``replay`` share of benign
  windows against forgetting. Draws come from an RNG seeded by (seed, rank, step), so a
  resumed or distributed run draws the same windows it would have without interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytrafgen.errors import DatasetError
from pytrafgen.generators.ar.continuation import ContinuationTokens, split_flows


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    pkt: int


def truncate_flows(tokens: np.ndarray, offsets: np.ndarray, block_size: int, special: SpecialTokens
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per flow: (start, kept length, whether it was cut) with ``kept ≤ block_size`` counting
    the EOS that closes a cut flow; ``kept == 0`` marks a flow that cannot fit at all."""
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    cut = lengths > block_size
    kept = lengths.copy()
    if cut.any():
        pkt_pos = np.flatnonzero(tokens == special.pkt).astype(np.int64)
        long_starts = starts[cut]
        # the last PKT at or before start + block_size - 1 leaves room for the closing EOS
        last = np.searchsorted(pkt_pos, long_starts + block_size - 1, side="right") - 1
        first = np.searchsorted(pkt_pos, long_starts, side="left")
        usable = last > first  # at least one whole packet before the cut
        cut_at = np.where(usable, pkt_pos[np.maximum(last, 0)], long_starts)
        kept[cut] = np.where(usable, cut_at - long_starts + 1, 0)
    return starts, kept, cut


class FlowWindows:
    """Windows of ``block_size + 1`` tokens starting at the flows of one split (see module doc)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray, block_size: int,
                 special: SpecialTokens, seed: int = 0, continuation: ContinuationTokens | None = None) -> None:
        self.block_size = block_size
        self.special = special
        self.truncated = 0  # flows cut at the context (without continuation)
        self.continued = 0  # flows split into continuation segments (with it)
        self.no_target: np.ndarray | None = None  # per stream position: its target is ignored
        if continuation is not None:
            self._segments(tokens, offsets, labels, seed, continuation)
            return
        starts, kept, cut = truncate_flows(tokens, offsets, block_size, special)
        self.dropped = int(np.count_nonzero(kept == 0))
        self.truncated = int(np.count_nonzero(cut & (kept > 0)))
        order = np.random.default_rng(seed).permutation(len(kept))
        order = order[kept[order] > 0]
        self.flow_ids = order  # flows in stream order
        self.labels = labels[order].astype(np.int64)
        lens = kept[order]
        ends = np.cumsum(lens)
        self.flow_starts = ends - lens  # where each flow begins in the stream
        total = int(ends[-1]) if len(ends) else 0
        # gather the kept tokens of each flow into one stream, then close the cut flows with EOS
        within = np.arange(total, dtype=np.int64) - np.repeat(self.flow_starts, lens)
        stream = tokens[np.repeat(starts[order], lens) + within].astype(np.int64)
        was_cut = cut[order]
        stream[ends[was_cut] - 1] = special.eos
        # wrap around so a window that starts near the end still has block_size + 1 tokens
        self.stream = np.concatenate([stream, np.resize(stream, block_size + 1)]) if total else stream
        self.n_tokens = total

    def _segments(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray, seed: int,
                  continuation: ContinuationTokens) -> None:
        """Continuation segments instead of truncated flows; a window starts at a segment."""
        segs = split_flows(tokens, offsets, self.block_size, self.special.pkt, self.special.eos, continuation)
        self.dropped, self.continued = segs.dropped, segs.continued
        order = np.random.default_rng(seed).permutation(len(segs.tokens))
        flows = np.asarray(segs.flow, dtype=np.int64)
        self.flow_ids = flows[order] if len(order) else flows
        self.labels = labels[self.flow_ids].astype(np.int64)
        lens = np.array([len(segs.tokens[i]) for i in order], dtype=np.int64)
        ends = np.cumsum(lens)
        self.flow_starts = ends - lens
        self.n_tokens = int(ends[-1]) if len(ends) else 0
        if not len(order):
            self.stream, self.no_target = np.zeros(0, np.int64), np.zeros(0, bool)
            return
        stream = np.concatenate([segs.tokens[i] for i in order]).astype(np.int64)
        no_target = np.concatenate([segs.no_target[i] for i in order])
        self.stream = np.concatenate([stream, np.resize(stream, self.block_size + 1)])
        self.no_target = np.concatenate([no_target, np.resize(no_target, self.block_size + 1)])

    def __len__(self) -> int:
        return len(self.flow_ids)

    def class_balanced_weights(self, class_share: dict[int, float]) -> np.ndarray:
        """Per-flow draw probability: each class index in ``class_share`` gets its share, split
        evenly over its flows; flows of other classes are never drawn."""
        weights = np.zeros(len(self.labels))
        for label, share in class_share.items():
            members = self.labels == label
            n = int(np.count_nonzero(members))
            if n and share > 0:
                weights[members] = share / n
        if weights.sum() <= 0:
            raise DatasetError("no flows of the requested classes in this split")
        return weights / weights.sum()

    def batch(self, flow_weights: np.ndarray, batch_size: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) int64 arrays (batch_size, block_size); ignored targets are −1."""
        chosen = rng.choice(len(self.labels), size=batch_size, p=flow_weights)
        idx = self.flow_starts[chosen][:, None] + np.arange(self.block_size + 1)[None, :]
        window = self.stream[idx]
        x, y = window[:, :-1], window[:, 1:].copy()
        y[x == self.special.bos] = -1
        if self.no_target is not None:
            y[self.no_target[idx[:, :-1]]] = -1
        return x, y


def class_shares(class_kinds: Sequence[str], stage: str, replay: float) -> dict[int, float]:
    """Share of windows per class index for a training stage ("pretrain" or "finetune")."""
    benign = [i for i, kind in enumerate(class_kinds) if kind == "benign"]
    malicious = [i for i, kind in enumerate(class_kinds) if kind == "malicious"]
    if stage == "pretrain":
        if not benign:
            raise DatasetError("pre-training needs benign flows; the dataset has no benign class")
        return {i: 1.0 / len(benign) for i in benign}
    if not malicious:
        raise DatasetError("fine-tuning needs malicious flows; the dataset has no malicious class")
    replay = replay if benign else 0.0
    shares = {i: (1.0 - replay) / len(malicious) for i in malicious}
    shares.update({i: replay / len(benign) for i in benign})
    return shares


__all__ = ["FlowWindows", "SpecialTokens", "class_shares", "truncate_flows"]
