"""Shared pieces of the baseline generators (markov, gan, diffusion); plugins import them through
``pytrafgen.generators.baseline`` (the ``BaselineGenerator`` base class and its parts).

* :class:`FlowSet` — training flows as flat numpy arrays (packets sorted by flow, then time),
  with the inter-arrival time of each packet inside its flow.
* :class:`ByteLibrary` — real byte strings (payload prefixes, TCP option blocks) keyed by
  class and direction, so a header-level model can fill payload with *real payload prefixes*
  of the same class and direction and the nearest length.
* :class:`EmpiricalParts` — what every baseline samples empirically rather than learns: payload
  and TCP-option libraries, inter-flow start gaps and client ports per class.
* :class:`TrainingSet` — where every baseline's ``fit`` starts: the train split's records and
  flows, the dataset's classes and the empirical parts.
* :func:`assemble_records` — turns per-packet header fields a model produced into
  :class:`~pytrafgen.records.FieldRecords`: timestamps from IATs, TCP seq/ack made continuous
  from payload lengths and SYN/FIN, IP ids counting per direction, payload and options filled.

Everything is vectorised over packets except the per-packet byte copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.errors import DatasetError
from pytrafgen.generators.baseline_ckpt import dataset_classes, dataset_dir
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords

TCP_SYN = 2
TCP_FIN = 1
TCP_ACK = 16
PROTO_TCP = 6
ICMP_ECHO_TYPES = (0, 8, 128, 129)
# An arbitrary fixed epoch (2026-01-01T00:00:00Z) for generated timestamps: reproducible output.
GENERATED_EPOCH_NS = 1_767_225_600 * 10**9

# Header fields a baseline models per packet (everything else is derived by assemble_records).
MODELLED_PACKET_FIELDS = ("direction", "iat_ns", "ttl", "tos", "ip_flags", "tcp_flags", "window",
                          "payload_len", "icmp_type", "icmp_code")

#: The setting for the bytes of each real payload a baseline keeps in its payload library. It was
#: called ``payload_cap`` before issue 17, a name that means the tokenizer's per-packet cap
#: (``CodecLayout.payload_cap``); ``renamed_settings`` reads old checkpoints and settings.
PAYLOAD_PREFIX_SETTING = "payload_prefix_bytes"
_RENAMED_SETTINGS = {"payload_cap": PAYLOAD_PREFIX_SETTING}


def renamed_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` with the names of before issue 17 replaced by today's (a value given under
    the new name wins)."""
    out = dict(settings or {})
    for old, new in _RENAMED_SETTINGS.items():
        if old in out:
            out.setdefault(new, out.pop(old))
    return out


def length_bucket(length: np.ndarray) -> np.ndarray:
    """0 for empty, else 1 + floor(log2(length)), capped at 17 (log-spaced payload sizes)."""
    x = np.asarray(length, np.int64)
    return np.where(x > 0, np.floor(np.log2(np.maximum(x, 1))).astype(np.int64) + 1, 0).clip(0, 17)


def iat_bucket(iat_ns: np.ndarray) -> np.ndarray:
    """0 below 1 µs, else 1 + floor(log2(µs)), capped at 40 (log-spaced inter-arrival times)."""
    us = np.asarray(iat_ns, np.float64) / 1e3
    return np.where(us >= 1, np.floor(np.log2(np.maximum(us, 1))).astype(np.int64) + 1, 0).clip(0, 40)


def _exclusive_group_cumsum(values: np.ndarray, group_starts: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Per element, the sum of ``values`` before it within its group (groups contiguous)."""
    total = np.cumsum(values, dtype=np.int64)
    base = np.concatenate([[0], total])[group_starts][group_of]
    return total - values - base


@dataclass
class FlowSet:
    """Flows of a FieldRecords table as arrays; packet arrays are in (flow, time) order."""

    classes: list[str]
    label: np.ndarray
    ip_version: np.ndarray
    proto: np.ndarray
    client_port: np.ndarray
    server_port: np.ndarray
    start_ns: np.ndarray
    offsets: np.ndarray  # int64 (F+1,): packets of flow f are offsets[f]:offsets[f+1]
    packets: dict[str, np.ndarray]  # MODELLED_PACKET_FIELDS + seq, ack, flow, row (index in records)

    @classmethod
    def from_records(cls, records: FieldRecords) -> FlowSet:
        pk = records.packets
        order = np.lexsort((pk["ts_ns"], pk["flow"]))
        flow = pk["flow"][order].astype(np.int64)
        counts = np.bincount(flow, minlength=records.n_flows)
        keep = counts > 0  # flows without packets carry nothing to learn from
        remap = np.cumsum(keep) - 1
        offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        ts = pk["ts_ns"][order]
        group_of = remap[flow]
        first_ts = ts[offsets[:-1]]
        iat = np.diff(ts, prepend=ts[:1]).clip(0)
        iat[offsets[:-1]] = 0  # a flow's first packet has no predecessor in the flow
        packets = {name: pk[name][order] for name in MODELLED_PACKET_FIELDS if name != "iat_ns"}
        packets["iat_ns"] = iat.astype(np.int64)
        packets["seq"] = pk["seq"][order]
        packets["ack"] = pk["ack"][order]
        packets["row"] = order.astype(np.int64)
        packets["flow"] = group_of.astype(np.int64)
        fl = records.flows
        return cls(list(records.classes), fl["label"][keep], fl["ip_version"][keep], fl["proto"][keep],
                   fl["client_port"][keep], fl["server_port"][keep], first_ts, offsets, packets)

    @property
    def n_flows(self) -> int:
        return len(self.label)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def position_in_flow(self) -> np.ndarray:
        flow = self.packets["flow"]
        return np.arange(len(flow)) - self.offsets[flow]


class ByteLibrary:
    """Real byte strings by integer key, each with the length it stood for (its true length).

    ``choose`` returns, per request, the bytes of a random one among the ``spread`` entries
    of the same key whose length is nearest the requested one.
    """

    def __init__(self, keys: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, blob: np.ndarray) -> None:
        order = np.lexsort((lengths, keys))
        self.keys = keys[order].astype(np.int64)
        self.lengths = lengths[order].astype(np.int64)
        self.offsets = offsets[order].astype(np.int64)  # (n, 2): start, stored length in blob
        self.blob = blob.astype(np.uint8)

    @classmethod
    def collect(cls, keys: np.ndarray, lengths: np.ndarray, starts: np.ndarray, stored: np.ndarray,
                source_blob: np.ndarray, per_key: int, cap: int, rng: np.random.Generator) -> ByteLibrary:
        """Keep up to ``per_key`` random entries per key, each stored up to ``cap`` bytes."""
        chosen: list[int] = []
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            if len(idx) > per_key:
                idx = rng.choice(idx, per_key, replace=False)
            chosen.extend(idx.tolist())
        sel = np.array(sorted(chosen), dtype=np.int64)
        take = np.minimum(stored[sel].astype(np.int64), cap)
        pieces = [source_blob[int(s):int(s) + int(n)] for s, n in zip(starts[sel], take, strict=True)]
        blob = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
        offs = np.stack([np.concatenate([[0], np.cumsum(take)[:-1]]), take], axis=1) if len(sel) else np.zeros((0, 2))
        return cls(keys[sel], lengths[sel], offs.astype(np.int64), blob)

    def choose(self, keys: np.ndarray, lengths: np.ndarray | None,
               rng: np.random.Generator) -> list[np.ndarray]:
        """Per request, a random entry of the key with exactly the requested length if there is
        one, else the nearest length; with ``lengths`` None, a uniformly random entry of the key."""
        empty = np.zeros(0, np.uint8)
        out: list[np.ndarray] = []
        if len(self.keys) == 0:
            return [empty] * len(keys)
        key_lo = np.searchsorted(self.keys, keys, side="left")
        key_hi = np.searchsorted(self.keys, keys, side="right")
        uniform = rng.random(len(keys))
        for i, (key_start, key_end) in enumerate(zip(key_lo, key_hi, strict=True)):
            if key_start == key_end:
                out.append(empty)
                continue
            lo, hi = int(key_start), int(key_end)
            if lengths is not None:
                mine = self.lengths[lo:hi]
                exact_lo = int(np.searchsorted(mine, lengths[i], side="left"))
                exact_hi = int(np.searchsorted(mine, lengths[i], side="right"))
                if exact_hi > exact_lo:
                    lo, hi = lo + exact_lo, lo + exact_hi
                else:
                    below, above = max(exact_lo - 1, 0), min(exact_lo, len(mine) - 1)
                    near = below if abs(int(mine[below]) - lengths[i]) <= abs(int(mine[above]) - lengths[i]) else above
                    lo, hi = lo + near, lo + near + 1
            start, n = self.offsets[lo + int(uniform[i] * (hi - lo))]
            out.append(self.blob[start:start + n])
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.keys": self.keys, f"{prefix}.lengths": self.lengths,
                f"{prefix}.offsets": self.offsets, f"{prefix}.blob": self.blob}

    @classmethod
    def from_arrays(cls, tensors: Mapping[str, np.ndarray], prefix: str) -> ByteLibrary:
        return cls(tensors[f"{prefix}.keys"], tensors[f"{prefix}.lengths"],
                   tensors[f"{prefix}.offsets"], tensors[f"{prefix}.blob"])


def payload_key(label: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return label.astype(np.int64) * 2 + direction.astype(np.int64)


def options_key(label: np.ndarray, direction: np.ndarray, tcp_flags: np.ndarray) -> np.ndarray:
    # SYN segments carry different options (MSS, window scale) from the rest.
    return payload_key(label, direction) * 2 + ((tcp_flags & TCP_SYN) > 0)


@dataclass
class EmpiricalParts:
    """Parts every baseline samples from the training data instead of learning them."""

    payloads: ByteLibrary
    tcp_options: ByteLibrary
    start_gaps: np.ndarray  # float64 ns between consecutive flow starts of a class
    start_gap_label: np.ndarray
    client_ports: np.ndarray
    client_port_label: np.ndarray

    @classmethod
    def fit(cls, records: FieldRecords, flows: FlowSet, seed: int, payload_prefix_bytes: int = 512,
            per_key: int = 256) -> EmpiricalParts:
        rng = np.random.default_rng(seed)
        pk = records.packets
        rows = flows.packets["row"]
        label = flows.label[flows.packets["flow"]]
        direction = flows.packets["direction"]
        has_payload = pk["payload_stored"][rows] > 0
        sel = rows[has_payload]
        payloads = ByteLibrary.collect(payload_key(label[has_payload], direction[has_payload]),
                                       pk["payload_len"][sel], pk["payload_off"][sel], pk["payload_stored"][sel],
                                       records.blob, per_key, payload_prefix_bytes, rng)
        # Every TCP segment is a candidate, option-less ones too, so option presence keeps its share.
        has_opt = records.flows["proto"][pk["flow"][rows]] == PROTO_TCP
        sel = rows[has_opt]
        options = ByteLibrary.collect(options_key(label[has_opt], direction[has_opt], pk["tcp_flags"][sel]),
                                      pk["l4_opt_len"][sel], pk["l4_opt_off"][sel], pk["l4_opt_len"][sel],
                                      records.blob, per_key, 40, rng)
        gaps, gap_label, ports, port_label = [], [], [], []
        for c in np.unique(flows.label):
            mine = flows.label == c
            starts = np.sort(flows.start_ns[mine])
            g = np.diff(starts).astype(np.float64) if len(starts) > 1 else np.zeros(1)
            g = rng.choice(g, min(len(g), 2048), replace=False)
            gaps.append(g)
            gap_label.append(np.full(len(g), c, np.int16))
            p = flows.client_port[mine]
            p = rng.choice(p, min(len(p), 2048), replace=False)
            ports.append(p)
            port_label.append(np.full(len(p), c, np.int16))
        return cls(payloads, options, np.concatenate(gaps), np.concatenate(gap_label),
                   np.concatenate(ports).astype(np.uint16), np.concatenate(port_label))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {**self.payloads.arrays("payloads"), **self.tcp_options.arrays("tcp_options")}
        out.update({"start_gaps": self.start_gaps, "start_gap_label": self.start_gap_label,
                    "client_ports": self.client_ports, "client_port_label": self.client_port_label})
        return out

    @classmethod
    def from_arrays(cls, tensors: Mapping[str, np.ndarray]) -> EmpiricalParts:
        return cls(ByteLibrary.from_arrays(tensors, "payloads"), ByteLibrary.from_arrays(tensors, "tcp_options"),
                   tensors["start_gaps"], tensors["start_gap_label"], tensors["client_ports"],
                   tensors["client_port_label"])

    def _pick(self, values: np.ndarray, value_label: np.ndarray, labels: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(len(labels), values.dtype)
        for c in np.unique(labels):
            pool = values[value_label == c]
            mine = labels == c
            out[mine] = rng.choice(pool, int(mine.sum())) if len(pool) else 0
        return out

    def sample_client_ports(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform in the range of the class's training client ports (ephemeral ports; drawing
        only seen values would make many generated flows share one 5-tuple); a class that
        always used one port keeps it."""
        out = np.zeros(len(labels), np.uint16)
        for c in np.unique(labels):
            pool = self.client_ports[self.client_port_label == c].astype(np.int64)
            mine = labels == c
            low, high = (int(pool.min()), int(pool.max())) if len(pool) else (1024, 65535)
            out[mine] = rng.integers(low, high + 1, size=int(mine.sum()))
        return out

    def sample_starts(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flow start times: per class, cumulative empirical inter-flow gaps from a fixed epoch."""
        gaps = self._pick(self.start_gaps, self.start_gap_label, labels, rng)
        starts = np.zeros(len(labels), np.int64)
        for c in np.unique(labels):
            mine = np.flatnonzero(labels == c)
            starts[mine] = GENERATED_EPOCH_NS + np.concatenate([[0], np.cumsum(gaps[mine][1:])]).astype(np.int64)
        return starts


@dataclass(frozen=True)
class TrainingSet:
    """What a baseline learns from: the train split's records and flows, the dataset's classes
    (and the directory it came from, whose side files a checkpoint keeps) and the empirical
    parts that fill in what a header-level model does not generate."""

    records: FieldRecords
    flows: FlowSet
    classes: list[str]
    class_kinds: list[str]
    source_dir: Path | None
    parts: EmpiricalParts

    @property
    def trained(self) -> list[str]:
        """Classes that have training flows."""
        return [self.classes[int(c)] for c in np.unique(self.flows.label)]

    @classmethod
    def from_dataset(cls, generator: str, dataset: Any, settings: Mapping[str, Any]) -> TrainingSet:
        """From a dataset's train split; ``settings`` gives seed, payload_prefix_bytes and payload_per_key."""
        records: FieldRecords = dataset.records("train")
        if records.n_flows == 0:
            raise DatasetError(f"{generator}: the training split has no flows")
        classes, kinds = dataset_classes(dataset, records.classes)
        flows = FlowSet.from_records(records)
        parts = EmpiricalParts.fit(records, flows, int(settings["seed"]), int(settings[PAYLOAD_PREFIX_SETTING]),
                                   int(settings["payload_per_key"]))
        return cls(records, flows, classes, kinds, dataset_dir(dataset), parts)


def assemble_records(classes: list[str], flows: Mapping[str, np.ndarray], packets: Mapping[str, np.ndarray],
                     parts: EmpiricalParts, rng: np.random.Generator,
                     overrides: Mapping[str, np.ndarray] | None = None,
                     options_mask: np.ndarray | None = None,
                     raw_derived: Mapping[str, np.ndarray] | None = None) -> FieldRecords:
    """FieldRecords from per-flow attributes and per-packet modelled fields.

    ``flows`` holds label, ip_version, proto, server_port and optionally client_port (else
    sampled, like start times); ``packets`` holds ``flow`` (non-decreasing) and
    MODELLED_PACKET_FIELDS. ``overrides`` replaces computed packet columns (seq, ack, ip_id,
    ...) for a generator that emits them itself; ``options_mask`` limits which TCP packets
    get real option blocks (default: all TCP packets draw from the class's library).
    """
    n_flows = len(flows["label"])
    label = np.asarray(flows["label"], np.int16)
    flow = np.asarray(packets["flow"], np.int64)
    n = len(flow)
    counts = np.bincount(flow, minlength=n_flows)
    flow_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    direction = np.asarray(packets["direction"], np.uint8)
    tcp_flags = np.asarray(packets["tcp_flags"], np.uint16)
    payload_len = np.asarray(packets["payload_len"], np.int64).clip(0, 65_000)
    is_tcp = np.asarray(flows["proto"])[flow] == PROTO_TCP
    tcp_flags = np.where(is_tcp, tcp_flags, 0).astype(np.uint16)

    starts = parts.sample_starts(label, rng)
    iat = np.asarray(packets["iat_ns"], np.int64).clip(0)
    ts = starts[flow] + _exclusive_group_cumsum(iat, flow_start, flow) + iat
    ts = ts - iat[flow_start][flow]  # the first packet of a flow is at the flow's start

    advance = (payload_len + ((tcp_flags & TCP_SYN) > 0) + ((tcp_flags & TCP_FIN) > 0)) * is_tcp
    sent = [np.where(direction == d, advance, 0) for d in (0, 1)]
    before = [_exclusive_group_cumsum(s, flow_start, flow) for s in sent]
    seq = np.where(is_tcp, np.where(direction == 0, before[0], before[1]), 0)
    ack = np.where(direction == 0, before[1] + sent[1], before[0] + sent[0])
    ack = np.where(is_tcp & ((tcp_flags & TCP_ACK) > 0), ack, 0)

    # IP ids count up per direction from a random start (IPv6: no id without fragmentation).
    group = flow * 2 + direction
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    first = np.concatenate([[True], sorted_group[1:] != sorted_group[:-1]]) if n else np.zeros(0, bool)
    rank_sorted = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = rank_sorted
    id_base = rng.integers(0, 65536, size=2 * n_flows)
    ipv4 = np.asarray(flows["ip_version"])[flow] == 4
    ip_id = np.where(ipv4, (id_base[group] + rank) % 65536, 0)

    icmp_type = np.asarray(packets["icmp_type"], np.uint8)
    echo = np.isin(icmp_type, ICMP_ECHO_TYPES) & np.isin(np.asarray(flows["proto"])[flow], (1, 58))
    echo_id = rng.integers(0, 65536, size=n_flows)
    icmp_rest = np.where(echo, (echo_id[flow] << 16) | (rank % 65536), 0)

    # Payload: real prefixes of the same class and direction with the nearest length; the
    # builder zero-pads stored bytes up to the generated payload_len.
    want = np.flatnonzero(payload_len > 0)
    payload_bytes = parts.payloads.choose(payload_key(label[flow[want]], direction[want]), payload_len[want], rng)
    tcp_rows = np.flatnonzero(is_tcp if options_mask is None else is_tcp & options_mask)
    opt_bytes = parts.tcp_options.choose(options_key(label[flow[tcp_rows]], direction[tcp_rows],
                                                     tcp_flags[tcp_rows]), None, rng)
    pieces: list[np.ndarray] = []
    cursor = 0
    l4_opt_off = np.zeros(n, np.uint64)
    l4_opt_len = np.zeros(n, np.uint32)
    for i, b in zip(tcp_rows, opt_bytes, strict=True):
        l4_opt_off[i], l4_opt_len[i] = cursor, len(b)
        pieces.append(b)
        cursor += len(b)
    payload_off = np.zeros(n, np.uint64)
    payload_stored = np.zeros(n, np.uint32)
    for i, b in zip(want, payload_bytes, strict=True):
        b = b[: payload_len[i]]
        payload_off[i], payload_stored[i] = cursor, len(b)
        pieces.append(b)
        cursor += len(b)
    blob = np.concatenate(pieces).astype(np.uint8) if pieces else np.zeros(0, np.uint8)

    values = {
        "flow": flow, "direction": direction, "ts_ns": ts, "ttl": packets["ttl"], "tos": packets["tos"],
        "ip_id": ip_id, "ip_flags": np.asarray(packets["ip_flags"]) & 0b011, "frag_offset": 0, "flow_label": 0,
        "ip_opt_off": 0, "ip_opt_len": 0, "tcp_flags": tcp_flags, "seq": np.asarray(seq) % 2**32,
        "ack": np.asarray(ack) % 2**32, "window": np.where(is_tcp, packets["window"], 0), "urgent": 0,
        "icmp_type": icmp_type, "icmp_code": packets["icmp_code"], "icmp_rest": icmp_rest,
        "l4_opt_off": l4_opt_off, "l4_opt_len": l4_opt_len, "payload_off": payload_off,
        "payload_stored": payload_stored, "payload_len": payload_len,
    }
    values.update(overrides or {})
    pk = {name: np.broadcast_to(np.asarray(values[name]), (n,)).astype(dtype) for name, dtype in PACKET_COLUMNS.items()}
    flow_values = {"label": label, "ip_version": flows["ip_version"], "proto": flows["proto"],
                   "client_port": flows["client_port"] if "client_port" in flows else parts.sample_client_ports(label, rng),
                   "server_port": flows["server_port"]}
    fl = {name: np.asarray(flow_values[name]).astype(dtype) for name, dtype in FLOW_COLUMNS.items()}
    return FieldRecords(pk, fl, blob, list(classes), raw_derived=dict(raw_derived or {}))
