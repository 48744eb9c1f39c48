"""Inter-arrival gaps inside their bucket, learned per class (a bucket token is not one fixed gap).

The tokenizer writes a packet's gap to its flow's previous packet as one of 64 log-spaced buckets
(``Vocabulary.iat_edges_ns``); decoding alone gives a bucket one value, its geometric middle
(``Vocabulary.iat_values_ns``: every gap in [7430, 10378) ns comes back as 8781 ns). Real gaps are
spread inside their bucket, and how depends on the class (a SYN flood's 4–5 µs gaps sit low in
their bucket): summed over a flow, the fixed values bias its duration.

``IatFill`` is learned at tokenize time from the gaps of the training split's flows: per class and
bucket, ``QUANTILES + 1`` quantiles of the gaps (0, 1/32, …, 1) and how many gaps they summarise.
Decoding draws each bucket's gap from the piecewise-linear inverse CDF of those quantiles, seeded,
rounded to the captures' clock resolution (``resolution_ns``: 1000 when every training gap is whole
microseconds, as a µs pcap's are, so the draws keep their atoms: a flood's 4 and 5 µs gaps stay 4
and 5 µs rather than smeared between) and clipped to the bucket's edges. A class with fewer than ``MIN_CLASS_GAPS`` gaps in a bucket uses
all classes' gaps in that bucket; a bucket no training gap fell in keeps its fixed value. Only
gaps equal to their bucket's fixed value are drawn (what a token decodes to), so gaps a generator
drew itself (the gan's continuous ones) are left as they are.

Saved as ``iat_fill.json`` beside ``payload_fill.json``: in the dataset, copied into every
checkpoint trained on it, applied by the AR generator's ``sample`` and by the markov baseline's
(whose training records are decoded from tokens, so its emitted gaps are bucket values too). A checkpoint without it
decodes as before. ``pytrafgen learn-gaps`` adds one to an existing checkpoint
(``learn_from_captures`` / ``learn_from_dataset`` and ``add_to_checkpoint`` here).
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError
from pytrafgen.records import FieldRecords
from pytrafgen.tokenizer.layout import IAT_BUCKETS
from pytrafgen.tokenizer.vocab import IAT_MAX_NS, IAT_MIN_NS, Vocabulary

FORMAT = 1
FILE_NAME = "iat_fill.json"
QUANTILES = 32  # intervals of the stored inverse CDF: 33 gaps per class and bucket (KS error ≤ 1/32)
MIN_CLASS_GAPS = 5  # fewer gaps of a class in a bucket: all classes' gaps in it are the model
GAP_SAMPLE_PACKETS = 4096  # gaps per flow handed over for learning (a flood's first 4096)
US_NS = 1000  # a pcap with microsecond timestamps: every gap a multiple of it
_SEED_SALT = 0x1A7F111  # the gap draw's stream differs from the payload fill's under the same seed


@lru_cache(maxsize=1)
def bucket_edges() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower edges of buckets 1..63, (2, 64): each bucket's lowest and highest gap (int64 ns),
    each bucket's fixed value): the vocabulary's buckets, which depend only on the IAT constants
    (the same for every vocabulary of this version; the arrays are shared, not to be written)."""
    vocab = Vocabulary()
    edges = vocab.iat_edges_ns.astype(np.int64)
    low = np.concatenate([[0], edges])
    high = np.concatenate([edges - 1, [np.iinfo(np.int64).max]])
    return edges, np.stack([low, high]), vocab.iat_values_ns.astype(np.int64)


def iat_bucket_of(gaps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The vocabulary bucket of each gap (the encoder's upper_bound over the edges)."""
    return np.searchsorted(edges, np.asarray(gaps, np.int64), side="right")


@dataclass
class BucketGaps:
    """One class's (or all classes') gaps in one bucket: ``quantiles`` (QUANTILES + 1,) int64, from
    the smallest gap to the largest, and ``count`` gaps they summarise."""

    quantiles: np.ndarray
    count: int


class IatFill:
    """Per class (name) and per bucket: BucketGaps; ``pooled``: all classes' per bucket."""

    def __init__(self, classes: dict[str, dict[int, BucketGaps]], pooled: dict[int, BucketGaps],
                 resolution_ns: int = 1) -> None:
        self.classes = classes
        self.pooled = pooled
        self.resolution_ns = resolution_ns  # drawn gaps are multiples of it (the training gaps were)

    @classmethod
    def learn(cls, gaps: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str]) -> IatFill:
        """From each training flow's gaps (ns, one array per flow), labelled by class index."""
        return cls.learn_samples(FlowGapSamples.from_arrays(gaps), labels, classes)

    @classmethod
    def learn_samples(cls, samples: FlowGapSamples, labels: np.ndarray, classes: Sequence[str]) -> IatFill:
        edges, _, _ = bucket_edges()
        labels = np.asarray(labels, np.int64)
        gaps = samples.data.astype(np.int64)
        label_of_gap = np.repeat(labels, np.diff(samples.offsets))
        bucket = iat_bucket_of(gaps, edges)
        probs = np.linspace(0.0, 1.0, QUANTILES + 1)

        def table(select: np.ndarray) -> dict[int, BucketGaps]:
            g, b = gaps[select], bucket[select]
            if len(g) == 0:  # a class whose flows are single packets has no gaps
                return {}
            order = np.lexsort((g, b))
            g, b = g[order], b[order]
            present, starts = np.unique(b, return_index=True)
            ends = np.append(starts[1:], len(b))
            return {int(k): BucketGaps(np.round(np.quantile(g[s:e], probs)).astype(np.int64), int(e - s))
                    for k, s, e in zip(present.tolist(), starts.tolist(), ends.tolist(), strict=True)}

        per_class = {name: table(label_of_gap == c) for c, name in enumerate(classes)}
        resolution = US_NS if len(gaps) and not np.any(gaps % US_NS) else 1
        return cls({name: t for name, t in per_class.items() if t}, table(np.ones(len(gaps), bool)), resolution)

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def rows(t: dict[int, BucketGaps]) -> dict[str, Any]:
            return {str(k): {"count": v.count, "quantiles": v.quantiles.tolist()} for k, v in sorted(t.items())}

        return {"format": FORMAT, "iat": {"buckets": IAT_BUCKETS, "min_ns": IAT_MIN_NS, "max_ns": IAT_MAX_NS},
                "quantiles": QUANTILES, "resolution_ns": self.resolution_ns, "classes": {name: rows(t) for name, t in self.classes.items()},
                "pooled": rows(self.pooled)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> IatFill:
        """The table in ``body``; PytrafgenError, saying what is wrong, unless it is one this
        version's buckets can use (same IAT buckets, quantiles ordered and inside their bucket)."""
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise PytrafgenError(f"format {body.get('format') if isinstance(body, dict) else None!r} is not {FORMAT}")
        iat = body.get("iat")
        if iat != {"buckets": IAT_BUCKETS, "min_ns": IAT_MIN_NS, "max_ns": IAT_MAX_NS}:
            raise PytrafgenError(f"its IAT buckets {iat} are not this vocabulary's ({IAT_BUCKETS} buckets, "
                                 f"{IAT_MIN_NS}..{IAT_MAX_NS} ns)")
        if body.get("quantiles") != QUANTILES:
            raise PytrafgenError(f"{body.get('quantiles')!r} quantile intervals, not {QUANTILES}")
        _, bounds, _ = bucket_edges()

        def rows(t: Any, where: str) -> dict[int, BucketGaps]:
            out: dict[int, BucketGaps] = {}
            for key, row in dict(t).items():
                k = int(key)
                q = np.asarray(row["quantiles"], np.int64)
                count = int(row["count"])
                if not 0 <= k < IAT_BUCKETS or q.shape != (QUANTILES + 1,) or count < 1:
                    raise PytrafgenError(f"{where}, bucket {key}: not a bucket with {QUANTILES + 1} quantiles "
                                         "and a positive count")
                if np.any(np.diff(q) < 0) or q[0] < bounds[0, k] or q[-1] > bounds[1, k]:
                    raise PytrafgenError(f"{where}, bucket {k}: quantiles {q.tolist()} are not ordered inside "
                                         f"the bucket [{bounds[0, k]}, {bounds[1, k]}] ns")
                out[k] = BucketGaps(q, count)
            return out

        resolution = body.get("resolution_ns")
        if resolution not in (1, US_NS):
            raise PytrafgenError(f"resolution_ns {resolution!r} is neither 1 nor {US_NS}")
        classes = {str(name): rows(t, f"class {name}") for name, t in dict(body["classes"]).items()}
        return cls(classes, rows(body["pooled"], "pooled"), int(resolution))

    def save(self, path: Path) -> None:
        with atomic_file(path, "w") as fh:
            json.dump(self.to_json(), fh, separators=(",", ":"))

    @classmethod
    def load(cls, path: Path) -> IatFill | None:
        """The table saved at ``path``, or None where there is none (made before it)."""
        if not path.is_file():
            return None
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, PytrafgenError) as exc:
            raise PytrafgenError(f"{path}: not a usable inter-arrival gap table ({exc})") from None

    def check_classes(self, known: Sequence[str], where: str) -> None:
        """PytrafgenError unless every class of the table is one of ``known`` (a table learned
        for other classes than a checkpoint's is a mistake, not a fallback)."""
        foreign = sorted(set(self.classes) - set(known))
        if foreign:
            raise PytrafgenError(f"{where}: the inter-arrival gap table has classes {', '.join(foreign)} that "
                                 f"are not the checkpoint's ({', '.join(known)})")

    # -- drawing ----------------------------------------------------------------------------
    def _rows(self, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(quantile rows, row index per (class index, bucket)): the class's own gaps where it had
        MIN_CLASS_GAPS, else all classes', else the bucket's fixed value; one more index row, all
        classes', for a label outside ``classes``."""
        _, _, values = bucket_edges()
        rows = [np.repeat(values[:, None], QUANTILES + 1, axis=1)]  # rows 0..63: fixed values
        pooled_row = np.arange(IAT_BUCKETS)
        for k, v in self.pooled.items():
            pooled_row[k] = IAT_BUCKETS + len(rows) - 1
            rows.append(v.quantiles[None, :])
        index = np.tile(pooled_row, (len(classes) + 1, 1))
        for c, name in enumerate(classes):
            for k, v in self.classes.get(name, {}).items():
                if v.count >= MIN_CLASS_GAPS:
                    index[c, k] = IAT_BUCKETS + len(rows) - 1
                    rows.append(v.quantiles[None, :])
        return np.concatenate(rows).astype(np.float64), index

    def fill(self, records: FieldRecords, seed: int = 0) -> tuple[FieldRecords, int]:
        """``records`` with every decoded gap (a flow's packet after its first whose gap to the
        one before is its bucket's fixed value) drawn from its class and bucket's gaps, and the
        gaps drawn. Packet order, counts and every other field stay as they are."""
        p = records.packets
        flow = p["flow"].astype(np.int64)
        ts = p["ts_ns"].astype(np.int64)
        order = np.lexsort((np.arange(len(flow)), ts, flow))  # by flow, then time
        f, t = flow[order], ts[order]
        later = np.flatnonzero(f[1:] == f[:-1]) + 1  # positions of every packet after its flow's first
        gap = t[later] - t[later - 1]
        edges, bounds, values = bucket_edges()
        bucket = iat_bucket_of(gap, edges)
        decoded = np.flatnonzero(gap == values[bucket])
        if len(decoded) == 0:
            return records, 0
        quantiles, index = self._rows(records.classes)
        labels = np.asarray(records.flows["label"], np.int64)[f[later[decoded]]]
        labels = np.where((labels >= 0) & (labels < len(records.classes)), labels, len(records.classes))
        b = bucket[decoded]
        row = index[labels, b]
        rng = np.random.default_rng([int(seed), _SEED_SALT])
        u = rng.random(len(decoded)) * QUANTILES
        j = np.minimum(u.astype(np.int64), QUANTILES - 1)
        lo, hi = quantiles[row, j], quantiles[row, j + 1]
        # rounded to the clock's resolution: the quantiles are multiples of it, so the draw stays
        # between the two it fell between
        res = self.resolution_ns
        drawn = (np.rint((lo + (u - j) * (hi - lo)) / res) * res).astype(np.int64)
        new_gap = gap.copy()
        new_gap[decoded] = np.clip(drawn, bounds[0, b], bounds[1, b])
        shift = np.zeros(len(t), np.int64)
        shift[later] = new_gap - gap
        shift = np.cumsum(shift)
        first = np.searchsorted(f, f, side="left")  # each position's flow's first position
        new_ts = ts.copy()
        new_ts[order] = t + shift - shift[first]
        packets = {**p, "ts_ns": new_ts.astype(p["ts_ns"].dtype)}
        return replace(records, packets=packets), len(decoded)


@dataclass
class FlowGapSamples:
    """Per flow, its gaps (int64 ns): flow ``k``'s are ``data[offsets[k]:offsets[k + 1]]``."""

    data: np.ndarray
    offsets: np.ndarray  # int64, F + 1

    @classmethod
    def from_arrays(cls, gaps: Sequence[np.ndarray]) -> FlowGapSamples:
        offsets = np.zeros(len(gaps) + 1, np.int64)
        offsets[1:] = np.cumsum([len(g) for g in gaps])
        data = np.concatenate([np.asarray(g, np.int64) for g in gaps]) if gaps else np.zeros(0, np.int64)
        return cls(data, offsets)

    @classmethod
    def concat(cls, parts: Sequence[FlowGapSamples]) -> FlowGapSamples:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(1, np.int64))
        base = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [p.offsets[1:] + b for p, b in zip(parts, base, strict=True)])
        return cls(np.concatenate([p.data for p in parts]), offsets)

    def take(self, flows: np.ndarray) -> FlowGapSamples:
        """The samples of ``flows`` (indices), in that order."""
        flows = np.asarray(flows, np.int64)
        lo, hi = self.offsets[flows], self.offsets[flows + 1]
        offsets = np.zeros(len(flows) + 1, np.int64)
        offsets[1:] = np.cumsum(hi - lo)
        pick = np.repeat(lo - offsets[:-1], hi - lo) + np.arange(offsets[-1])
        return FlowGapSamples(self.data[pick], offsets)


def flow_gap_samples(table: Any, flows: Any, flow_rows: np.ndarray) -> FlowGapSamples:
    """Per flow of ``flow_rows``: the gap of each of its packets after the first to the one before
    it (capture order, as the encoder buckets them; a timestamp going back counts as 0), its first
    GAP_SAMPLE_PACKETS; in bulk, not per packet."""
    flow_id = np.asarray(flows.flow_id, np.int64)
    n_flows = len(flow_rows)
    where = np.full(max(len(flows), 1), -1, np.int64)  # flow -> its position in flow_rows
    where[np.asarray(flow_rows, np.int64)] = np.arange(n_flows)
    rows = np.flatnonzero(flow_id >= 0)
    rows = rows[where[flow_id[rows]] >= 0]
    pos = where[flow_id[rows]]
    order = np.argsort(pos, kind="stable")  # by flow, capture order within
    rows, pos = rows[order], pos[order]
    ts = np.asarray(table.ts_ns, np.int64)[rows]
    later = np.flatnonzero(pos[1:] == pos[:-1]) + 1
    gaps = np.maximum(ts[later] - ts[later - 1], 0)
    owner = pos[later]
    rank = later - np.searchsorted(pos, owner, side="left") - 1  # 0 for a flow's second packet
    keep = rank < GAP_SAMPLE_PACKETS
    counts = np.bincount(owner[keep], minlength=n_flows)
    offsets = np.zeros(n_flows + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    return FlowGapSamples(gaps[keep], offsets)


# -- adding a table to an existing checkpoint ----------------------------------------------------

def learn_from_captures(inputs: Sequence[str | Path], labels_csv: str | Path | Sequence[str | Path], *,
                        payload_cap: int = 16, seed: int = 0, idle_timeout_s: float = 120.0,
                        max_flow_packets: int = 0, max_app_tokens: int = 512,
                        protocols: Mapping[str, Any] | None = None) -> IatFill:
    """The table of captures as ``tokenize_captures`` with these settings learns it: the same
    flows and the same training split as the dataset a checkpoint was trained on, when the
    settings are that dataset's (tokenized into a temporary directory, then dropped)."""
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    with tempfile.TemporaryDirectory(prefix="pytrafgen-gaps-") as tmp:
        out = Path(tmp) / "dataset"
        tokenize_captures(inputs, labels_csv, out, payload_cap=payload_cap, seed=seed, idle_timeout_s=idle_timeout_s,
                          max_flow_packets=max_flow_packets, max_app_tokens=max_app_tokens, protocols=protocols)
        fill = IatFill.load(out / FILE_NAME)
    assert fill is not None  # tokenize_captures always writes it
    return fill


def learn_from_dataset(dataset: str | Path, protocols: Mapping[str, Any] | None = None) -> IatFill:
    """A dataset's table: its own ``iat_fill.json``, or, for a dataset made before it, learned
    again from the captures it was tokenized from (its manifest's sources, classes, settings and
    seed: the same training split)."""
    dataset = Path(dataset)
    own = IatFill.load(dataset / FILE_NAME)
    if own is not None:
        return own
    try:
        manifest = json.loads((dataset / "manifest.json").read_text())
        sources = [(Path(s["file"]), str(s["class"])) for s in manifest["sources"]]
        kinds = dict(manifest.get("class_kinds", {}))
        settings = dict(manifest["settings"])
        seed = int(manifest["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PytrafgenError(f"{dataset}: not a dataset manifest that names its captures ({exc})") from None
    missing = [str(f) for f, _ in sources if not f.is_file()]
    if not sources or missing:
        raise PytrafgenError(f"{dataset}: the captures it was tokenized from are not there "
                             f"({', '.join(missing) or 'none named'}); use --captures and --labels")
    with tempfile.TemporaryDirectory(prefix="pytrafgen-gaps-labels-") as tmp:
        labels = Path(tmp) / "labels.csv"
        with labels.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "class", "label"])
            for f, name in sources:
                kind = kinds.get(name, "unknown")
                writer.writerow([str(f.resolve()), name, "" if kind == "unknown" else kind])
        return learn_from_captures([f for f, _ in sources], labels, payload_cap=int(settings.get("payload_cap", 16)),
                                   seed=seed, idle_timeout_s=float(settings.get("idle_timeout_s", 120.0)),
                                   max_flow_packets=int(settings.get("max_flow_packets", 0)),
                                   max_app_tokens=int(settings.get("max_app_tokens", 512)), protocols=protocols)


def add_to_checkpoint(checkpoint: str | Path, fill: IatFill) -> dict[str, Any]:
    """Write ``fill`` as the checkpoint's ``iat_fill.json`` (replacing a gap table there, nothing
    else); its classes must be the checkpoint's. Returns what was written: path, replaced, the checkpoint's classes
    that fall back to all classes' gaps (no gaps of their own)."""
    checkpoint = Path(checkpoint)
    try:
        config = json.loads((checkpoint / "config.json").read_text())
        classes = [str(c) for c in config["classes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PytrafgenError(f"{checkpoint}: not a checkpoint directory with classes ({exc})") from None
    fill.check_classes(classes, str(checkpoint))
    path = checkpoint / FILE_NAME
    replaced = path.exists()
    if replaced:
        try:  # only a table pytrafgen wrote is replaced, never some other file of that name
            IatFill.load(path)
        except PytrafgenError:
            raise PytrafgenError(f"{path} is there and is not a gap table pytrafgen wrote; move it away first") from None
    fill.save(path)
    return {"path": str(path), "replaced": replaced,
            "classes_with_gaps": sorted(fill.classes),
            "classes_without_gaps": [c for c in classes if c not in fill.classes]}


__all__ = ["FILE_NAME", "BucketGaps", "FlowGapSamples", "IatFill", "add_to_checkpoint", "flow_gap_samples",
           "learn_from_captures", "learn_from_dataset"]
