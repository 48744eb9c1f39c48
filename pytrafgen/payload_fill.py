"""Payload bytes beyond the cap, learned per class (never zero-filled).

A dataset stores each payload's first ``payload_cap`` bytes as tokens and its true length; a
generated packet whose length is above the bytes its generator produced (``payload_len >
payload_stored``) needs the rest. ``PayloadFill`` is learned at tokenize time from the bytes
past the cap of the training split's payloads, per class and direction: an order-1 byte model
(the next byte given the previous one, its 32 likeliest successors kept per byte, the rest of
its successors drawn by the overall distribution) and the bytes' overall distribution. Filling continues each payload from its last stored byte, so
text stays text and binary stays binary, and a class whose real payloads are zeros past the
cap gets zeros from the same model. Where a class and direction had no bytes past the cap, its
bytes within the cap are the model, then the other direction's, then all classes'.

Saved as ``payload_fill.json`` beside ``address_plan.json``: in the dataset, copied into every
checkpoint trained on it, read by ``pytrafgen generate`` and ``compare`` before building.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen import _core
from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError
from pytrafgen.records import FieldRecords

FORMAT = 1
FILE_NAME = "payload_fill.json"
SUCCESSORS_KEPT = 32
TAIL_SAMPLE_BYTES = 2048  # per flow and direction: what tokenize hands over for learning
DRAW_BATCH_BYTES = 1 << 24
COUNT_BLOCK_GROUPS = 64  # groups counted per C++ call: 64 bigram tables of 512 KiB


@dataclass
class ByteModel:
    """Counts of one class and direction: ``unigram`` (256,), ``bigram`` (256, 256) and, per
    previous byte, ``rest`` (256,): the successor counts pruning dropped, drawn by the unigram
    (so pruning a near-uniform row does not favour the bytes that survive its ties)."""

    unigram: np.ndarray
    bigram: np.ndarray
    rest: np.ndarray

    @classmethod
    def empty(cls) -> ByteModel:
        return cls(np.zeros(256, np.int64), np.zeros((256, 256), np.int64), np.zeros(256, np.int64))

    def add(self, data: bytes) -> None:
        if not data:
            return
        arr = np.frombuffer(data, np.uint8).astype(np.int64)
        self.unigram += np.bincount(arr, minlength=256)
        if len(arr) > 1:
            np.add.at(self.bigram, (arr[:-1], arr[1:]), 1)

    @property
    def total(self) -> int:
        return int(self.unigram.sum())

    def pruned(self) -> ByteModel:
        """Only each byte's SUCCESSORS_KEPT likeliest successors (what is saved)."""
        bigram = self.bigram.copy()
        if SUCCESSORS_KEPT < 256:
            cut = np.argsort(-bigram, axis=1, kind="stable")[:, SUCCESSORS_KEPT:]
            np.put_along_axis(bigram, cut, 0, axis=1)
        return ByteModel(self.unigram.copy(), bigram, self.rest + self.bigram.sum(axis=1) - bigram.sum(axis=1))

    def to_json(self) -> dict[str, Any]:
        rows = {str(prev): np.column_stack([nz, self.bigram[prev, nz]]).tolist()  # [[next, count], ...]
                for prev in np.flatnonzero(self.bigram.sum(axis=1)).tolist()
                for nz in (np.flatnonzero(self.bigram[prev]),)}
        rest = {str(prev): int(self.rest[prev]) for prev in np.flatnonzero(self.rest)}
        return {"unigram": [int(v) for v in self.unigram], "bigram": rows, "rest": rest}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ByteModel:
        model = cls.empty()
        model.unigram[:] = np.asarray(body["unigram"], np.int64)
        for prev, pairs in body["bigram"].items():
            for nxt, count in pairs:
                model.bigram[int(prev), int(nxt)] = int(count)
        for prev, count in body["rest"].items():
            model.rest[int(prev)] = int(count)
        return model

    def cdf_table(self) -> np.ndarray:
        """(257, 256) float64 cumulative distributions: rows 0..255 the successors of a byte
        (its unigram where the byte has none), row 256 the unigram (no previous byte)."""
        uni = self.unigram / max(self.total, 1)
        rows = self.bigram.astype(np.float64) + self.rest[:, None] * uni[None, :]
        sums = rows.sum(axis=1, keepdims=True)
        probs = np.where(sums > 0, rows / np.maximum(sums, 1), uni[None, :])
        table = np.cumsum(np.vstack([probs, uni[None, :]]), axis=1)
        table[:, -1] = 1.0  # rounding must not leave u > the last step
        return table


class PayloadFill:
    """Per class (name) and direction (0 client→server, 1 server→client): a ByteModel."""

    def __init__(self, models: dict[str, dict[int, ByteModel]], pooled: ByteModel, payload_cap: int,
                 sources: dict[str, dict[int, str]]) -> None:
        self.models = models
        self.pooled = pooled
        self.payload_cap = payload_cap
        self.sources = sources  # class -> direction -> "tail" | "head" | "other direction" | "all classes"
        self._tables: dict[tuple[str, int], np.ndarray] = {}

    @classmethod
    def learn(cls, tails: Sequence[tuple[bytes, bytes]], heads: Sequence[tuple[bytes, bytes]],
              labels: np.ndarray, classes: Sequence[str], payload_cap: int) -> PayloadFill:
        """From each training flow's bytes past the cap (``tails``) and within it (``heads``),
        per direction, labelled by class index."""
        return cls.learn_samples(FlowByteSamples.from_pairs(tails), FlowByteSamples.from_pairs(heads),
                                 labels, classes, payload_cap)

    @classmethod
    def learn_samples(cls, tails: FlowByteSamples, heads: FlowByteSamples, labels: np.ndarray,
                      classes: Sequence[str], payload_cap: int) -> PayloadFill:
        """``learn`` from the flows' samples in bulk: counted per class and direction in one
        numpy pass each, not per flow."""
        return cls.from_counts(count_samples(tails, heads, labels, len(classes)), classes, payload_cap)

    @classmethod
    def from_counts(cls, counts: SampleCounts, classes: Sequence[str], payload_cap: int) -> PayloadFill:
        """The model from the byte counts of the training flows' samples (``count_samples``,
        summed over as many batches of flows as were counted)."""
        tail, head = counts
        pooled = ByteModel.empty()
        for m in tail:
            pooled.unigram += m.unigram
            pooled.bigram += m.bigram
        if pooled.total == 0:
            for m in head:
                pooled.unigram += m.unigram
                pooled.bigram += m.bigram
        models: dict[str, dict[int, ByteModel]] = {}
        sources: dict[str, dict[int, str]] = {}
        for c, name in enumerate(classes):
            models[name], sources[name] = {}, {}
            for d in (0, 1):
                for source, model in (("tail", tail[2 * c + d]), ("head", head[2 * c + d]),
                                      ("other direction", tail[2 * c + 1 - d]), ("all classes", pooled)):
                    if model.total:
                        models[name][d], sources[name][d] = model.pruned(), source
                        break
        return cls(models, pooled.pruned(), payload_cap, sources)

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "payload_cap": self.payload_cap, "successors_kept": SUCCESSORS_KEPT,
                "classes": {name: {str(d): {"source": self.sources[name][d], **m.to_json()} for d, m in dirs.items()}
                            for name, dirs in self.models.items()},
                "pooled": self.pooled.to_json()}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PayloadFill:
        if body.get("format") != FORMAT:
            raise PytrafgenError(f"payload fill model format {body.get('format')!r} is not {FORMAT}")
        models = {name: {int(d): ByteModel.from_json(m) for d, m in dirs.items()} for name, dirs in body["classes"].items()}
        sources = {name: {int(d): str(m["source"]) for d, m in dirs.items()} for name, dirs in body["classes"].items()}
        return cls(models, ByteModel.from_json(body["pooled"]), int(body["payload_cap"]), sources)

    def save(self, path: Path) -> None:
        with atomic_file(path, "w") as fh:
            json.dump(self.to_json(), fh, separators=(",", ":"))

    @classmethod
    def load(cls, path: Path) -> PayloadFill | None:
        """The model saved at ``path``, or None where there is none (a checkpoint made before it)."""
        if not path.is_file():
            return None
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PytrafgenError(f"{path}: not a payload fill model ({exc})") from None

    # -- filling ----------------------------------------------------------------------------
    def _table(self, name: str, direction: int) -> np.ndarray:
        key = (name, direction)
        if key not in self._tables:
            model = self.models.get(name, {}).get(direction, self.pooled)
            if model.total == 0:
                model = self.pooled
            if model.total == 0:
                raise PytrafgenError("the payload fill model holds no bytes (no training payload had any)")
            self._tables[key] = model.cdf_table()
        return self._tables[key]

    def fill(self, records: FieldRecords, seed: int = 0) -> tuple[FieldRecords, int]:
        """``records`` with every payload's missing bytes (``payload_stored`` up to
        ``payload_len``) drawn from its class and direction's model; and the bytes drawn."""
        p = records.packets
        missing = p["payload_len"].astype(np.int64) - p["payload_stored"].astype(np.int64)
        rows = np.flatnonzero(missing > 0)
        if len(rows) == 0:
            return records, 0
        rng = np.random.default_rng(seed)
        stored = p["payload_stored"].astype(np.int64)
        off = p["payload_off"].astype(np.int64)
        last = np.where(stored[rows] > 0, records.blob[np.maximum(off[rows] + stored[rows] - 1, 0)].astype(np.int64),
                        256)  # 256: no byte yet, draw from the unigram
        labels = records.flows["label"][p["flow"][rows]].astype(np.int64)
        direction = p["direction"][rows].astype(np.int64)
        tails: dict[int, np.ndarray] = {}
        for label in np.unique(labels).tolist():
            name = records.classes[label] if 0 <= label < len(records.classes) else ""
            for d in (0, 1):
                sel = np.flatnonzero((labels == label) & (direction == d))
                if len(sel):
                    for k, data in zip(sel.tolist(), self._draw(self._table(name, d), last[sel], missing[rows[sel]], rng),
                                       strict=True):
                        tails[k] = data
        return _with_tails(records, rows, tails), int(missing[rows].sum())

    @staticmethod
    def _draw(table: np.ndarray, last: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Byte chains of ``lengths``, each continuing from its ``last`` byte: the chains of a
        batch advance together, one position a step (a flattened inverse-CDF lookup per step);
        batches of similar lengths bound the memory to about DRAW_BATCH_BYTES."""
        flat = (table + np.arange(len(table))[:, None]).ravel()  # row r's CDF shifted into [r, r + 1]
        below_one = np.nextafter(1.0, 0.0)
        out: list[np.ndarray] = [np.zeros(0, np.uint8)] * len(lengths)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            stop = min(len(order), start + max(1, DRAW_BATCH_BYTES // max(width, 1)))
            batch = order[start:stop]
            chains = np.zeros((len(batch), width), np.uint8)
            prev = last[batch].astype(np.int64)
            n = lengths[batch]
            for t in range(width):
                active = np.flatnonzero(n > t)
                u = np.minimum(rng.random(len(active)), below_one)
                nxt = np.searchsorted(flat, prev[active] + u, side="right") - prev[active] * 256
                nxt = np.clip(nxt, 0, 255)
                chains[active, t] = nxt
                prev[active] = nxt
            for row, i in enumerate(batch.tolist()):
                out[i] = chains[row, :int(lengths[i])]
            start = stop
        return out


def fill_payloads(records: FieldRecords, model_dir: Path, seed: int = 0) -> tuple[FieldRecords, str]:
    """``records`` filled past their stored bytes with the ``payload_fill.json`` of ``model_dir``
    (a checkpoint or a dataset) and a note: empty when the model filled them, else one line that
    says the bytes past the cap stay zeros because ``model_dir`` has no model (made before it)."""
    fill = PayloadFill.load(Path(model_dir) / FILE_NAME)
    if fill is None:
        missing = int(np.sum(records.packets["payload_len"].astype(np.int64)
                             - records.packets["payload_stored"].astype(np.int64)))
        if missing == 0:
            return records, ""
        return records, (f"note: {model_dir} has no {FILE_NAME} (made before payload fill), so {missing} payload bytes "
                         "past the generated ones are zeros; retokenize and retrain to learn them")
    return fill.fill(records, seed)[0], ""


def _with_tails(records: FieldRecords, rows: np.ndarray, tails: dict[int, np.ndarray]) -> FieldRecords:
    """A new blob in which each of ``rows`` holds its stored bytes then its tail."""
    p = records.packets
    off, stored = p["payload_off"].astype(np.int64), p["payload_stored"].astype(np.int64)
    new_off = off.copy()
    new_stored = stored.copy()
    parts = [records.blob]
    cursor = len(records.blob)
    for k, i in enumerate(rows.tolist()):
        head = records.blob[off[i]:off[i] + stored[i]]
        parts += [head, tails[k]]
        new_off[i] = cursor
        new_stored[i] = stored[i] + len(tails[k])
        cursor += len(head) + len(tails[k])
    blob = np.concatenate(parts).astype(np.uint8)
    packets = {**p, "payload_off": new_off.astype(p["payload_off"].dtype),
               "payload_stored": new_stored.astype(p["payload_stored"].dtype)}
    return replace(records, packets=packets, blob=blob)


# per class and direction (group 2 * class + direction): the counts of the tails, then of the heads
SampleCounts = tuple[list[ByteModel], list[ByteModel]]


def count_samples(tails: FlowByteSamples, heads: FlowByteSamples, labels: np.ndarray, n_classes: int,
                  into: SampleCounts | None = None) -> SampleCounts:
    """The unigram and bigram counts of the flows' samples per class and direction, added to
    ``into`` when given (counts are sums: flows counted in batches give the same model)."""
    labels = np.asarray(labels, np.int64)
    got = (tails.count_by_group(labels * 2, 2 * n_classes), heads.count_by_group(labels * 2, 2 * n_classes))
    if into is None:
        return got
    for mine, more in zip(into, got, strict=True):
        for m, extra in zip(mine, more, strict=True):
            m.unigram += extra.unigram
            m.bigram += extra.bigram
    return into


@dataclass
class FlowByteSamples:
    """Per flow and direction, a byte sample: flow ``k``'s direction ``d`` is
    ``data[offsets[2k + d]:offsets[2k + d + 1]]`` (what ``PayloadFill.learn_samples`` reads)."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, 2F + 1

    @property
    def n_flows(self) -> int:
        return (len(self.offsets) - 1) // 2

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[bytes, bytes]]) -> FlowByteSamples:
        chunks = [part for pair in pairs for part in pair]
        offsets = np.zeros(len(chunks) + 1, np.int64)
        offsets[1:] = np.cumsum([len(c) for c in chunks])
        return cls(np.frombuffer(b"".join(chunks), np.uint8), offsets)

    def pairs(self) -> list[tuple[bytes, bytes]]:
        raw, o = self.data.tobytes(), self.offsets.tolist()
        return [(raw[o[2 * k]:o[2 * k + 1]], raw[o[2 * k + 1]:o[2 * k + 2]]) for k in range(self.n_flows)]

    @classmethod
    def concat(cls, parts: Sequence[FlowByteSamples]) -> FlowByteSamples:
        if not parts:
            return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        if len(parts) == 1:  # no copy: a large capture's samples are held once
            return parts[0]
        base = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [p.offsets[1:] + b for p, b in zip(parts, base, strict=True)])
        return cls(np.concatenate([p.data for p in parts]), offsets)

    def take(self, flows: np.ndarray) -> FlowByteSamples:
        """The samples of ``flows`` (indices), in that order."""
        seg = (2 * np.asarray(flows, np.int64)[:, None] + np.arange(2)).reshape(-1)
        lens = (self.offsets[seg + 1] - self.offsets[seg]).astype(np.uint32)
        data, _ = _core.gather_frames(self.data, self.offsets[seg].astype(np.uint64), lens)
        offsets = np.zeros(len(seg) + 1, np.int64)
        offsets[1:] = np.cumsum(lens)
        return FlowByteSamples(data, offsets)

    def per_flow(self, other: FlowByteSamples) -> tuple[np.ndarray, np.ndarray]:
        """This and ``other``'s samples of the same flows as one byte string, flow after flow
        (this's two directions, then other's), and each flow's four sample lengths (F, 4): how
        a capture's samples are spilled to disk (``from_per_flow`` reads them back)."""
        n = self.n_flows
        starts = np.stack([self.offsets[0:2 * n:2], self.offsets[1:2 * n:2],
                           other.offsets[0:2 * n:2] + len(self.data), other.offsets[1:2 * n:2] + len(self.data)], axis=1)
        lens = np.stack([np.diff(self.offsets)[0::2], np.diff(self.offsets)[1::2],
                         np.diff(other.offsets)[0::2], np.diff(other.offsets)[1::2]], axis=1)
        data, _ = _core.gather_frames(np.concatenate([self.data, other.data]), starts.reshape(-1).astype(np.uint64),
                                      lens.reshape(-1).astype(np.uint32))
        return data, lens.astype(np.uint16 if TAIL_SAMPLE_BYTES < 1 << 16 else np.uint32)  # ≤ TAIL_SAMPLE_BYTES each

    @staticmethod
    def from_per_flow(data: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[FlowByteSamples, FlowByteSamples]:
        """The two samples (``per_flow``'s) of the flows that start at ``starts`` in ``data``
        with lengths ``lens`` (F, 4)."""
        lens = np.asarray(lens, np.int64)
        seg_starts = np.asarray(starts, np.int64)[:, None] + np.cumsum(lens, axis=1) - lens
        out = []
        for cols in (slice(0, 2), slice(2, 4)):
            got, _ = _core.gather_frames(np.asarray(data, np.uint8), seg_starts[:, cols].reshape(-1).astype(np.uint64),
                                         lens[:, cols].reshape(-1).astype(np.uint32))
            offsets = np.zeros(2 * len(lens) + 1, np.int64)
            offsets[1:] = np.cumsum(lens[:, cols].reshape(-1))
            out.append(FlowByteSamples(got, offsets))
        return out[0], out[1]

    def count_by_group(self, flow_group: np.ndarray, n_groups: int) -> list[ByteModel]:
        """Unigram and bigram counts of the samples, summed per group: flow k's direction d
        counts in group ``flow_group[k] + d`` (bigrams stay within one sample; C++, in blocks of
        groups so the bigram tables stay small)."""
        seg_group = (np.asarray(flow_group, np.int64)[:, None] + np.arange(2)).reshape(-1)
        models: list[ByteModel] = []
        for first in range(0, n_groups, COUNT_BLOCK_GROUPS):
            n = min(COUNT_BLOCK_GROUPS, n_groups - first)
            uni, pair = _core.count_bytes(self.data, self.offsets, seg_group, first, n)
            models += [ByteModel(uni[g], pair[g], np.zeros(256, np.int64)) for g in range(n)]
        return models


def flow_payload_samples(table: Any, flows: Any, flow_rows: np.ndarray, payload_cap: int
                         ) -> tuple[FlowByteSamples, FlowByteSamples]:
    """Per flow of ``flow_rows``: its bytes past ``payload_cap`` (tails) and within it (heads),
    per direction, each the first TAIL_SAMPLE_BYTES of its payloads' parts glued in capture
    order (what ``PayloadFill.learn_samples`` reads); in bulk, not per packet."""
    flow_id = np.asarray(flows.flow_id, np.int64)
    lengths = np.asarray(table.payload_len, np.int64)
    n_flows = len(flow_rows)
    where = np.full(max(len(flows), 1), -1, np.int64)  # flow -> its position in flow_rows
    where[np.asarray(flow_rows, np.int64)] = np.arange(n_flows)
    rows = np.flatnonzero((flow_id >= 0) & (lengths > 0))
    rows = rows[where[flow_id[rows]] >= 0]
    seg = where[flow_id[rows]] * 2 + np.asarray(flows.direction, np.int64)[rows]
    order = np.argsort(seg, kind="stable")  # by flow and direction, capture order within
    rows, seg = rows[order], seg[order]
    start = np.asarray(table.frame_off, np.int64)[rows] + np.asarray(table.payload_off, np.int64)[rows]
    head_len = np.minimum(lengths[rows], payload_cap)
    return (_capped_samples(table.data, start + head_len, lengths[rows] - head_len, seg, n_flows),
            _capped_samples(table.data, start, head_len, seg, n_flows))


def _capped_samples(data: np.ndarray, start: np.ndarray, length: np.ndarray, seg: np.ndarray,
                    n_flows: int) -> FlowByteSamples:
    """The byte ranges of each segment (``seg`` sorted) glued, cut at TAIL_SAMPLE_BYTES."""
    cum = np.cumsum(length)
    seg_first = np.searchsorted(seg, seg, side="left")  # first row of each row's segment
    before = cum - length - np.where(seg_first > 0, cum[np.maximum(seg_first - 1, 0)], 0)
    take = np.clip(TAIL_SAMPLE_BYTES - before, 0, length)
    out, _ = _core.gather_frames(np.ascontiguousarray(data, np.uint8), start.astype(np.uint64),
                                 take.astype(np.uint32))
    per_seg = np.bincount(seg, weights=take, minlength=2 * n_flows).astype(np.int64)
    offsets = np.zeros(2 * n_flows + 1, np.int64)
    offsets[1:] = np.cumsum(per_seg)
    return FlowByteSamples(out, offsets)
