"""Per-flow detector features (CICFlowMeter-like), vectorised over the whole flow table.

One row per flow of a (PacketTable, FlowTable) pair. Packets are sorted once by flow (and
once by flow and direction); every statistic is then a segment reduction (``reduceat``) over
contiguous runs, so the cost is a few passes over the packet columns and no per-flow Python.
"fwd" is client → server, "bwd" server → client (the client sent the flow's first packet; see
docs/architecture.md §2). Sizes are whole frames on the wire (``wirelen``), times in seconds.
A statistic over no packets (e.g. the bwd side of a one-way flow) is 0; a missing
first-packet value (a window, a payload byte) is −1. Every column is described in
docs/detect.md; the last ones are a flow's host context (:mod:`.context`). ``pytrafgen.evaluate.features`` is a different, smaller set made for
standardised distances (log-compressed); this one feeds tree ensembles, so values stay raw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytrafgen.detect.context import CONTEXT_NAMES, whole_capture_context

FIRST_PAYLOAD_BYTES = 8
_STATS = ("min", "max", "mean", "std")
_FLAGS = (("fin", 1), ("syn", 2), ("rst", 4), ("psh", 8), ("ack", 16), ("urg", 32), ("ece", 64), ("cwr", 128))
_SIDES = ("fwd", "bwd")


def _feature_names() -> tuple[str, ...]:
    names = ["proto", "server_port", "client_port_privileged", "duration_s",
             "packets_fwd", "packets_bwd", "bytes_fwd", "bytes_bwd", "payload_bytes_fwd", "payload_bytes_bwd",
             "data_packets_fwd", "data_packets_bwd", "header_bytes_fwd", "header_bytes_bwd",
             "bytes_per_s", "packets_per_s", "down_up_ratio"]
    for side in ("all", *_SIDES):
        names += [f"pkt_len_{side}_{s}" for s in _STATS]
    for side in ("all", *_SIDES):
        names += [f"iat_{side}_{s}" for s in _STATS]
    names += [f"{flag}_count" for flag, _ in _FLAGS]
    names += ["psh_fwd", "psh_bwd", "syn_fwd", "syn_bwd", "rst_fwd", "rst_bwd"]
    names += ["init_win_fwd", "init_win_bwd", "ttl_fwd", "ttl_bwd", "first_icmp_type"]
    for side in _SIDES:
        names += [f"first_payload_len_{side}"]
        names += [f"first_payload_{side}_b{k}" for k in range(FIRST_PAYLOAD_BYTES)]
    names += list(CONTEXT_NAMES)
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _feature_names()


class _Segments:
    """Contiguous runs of equal keys in a sorted key array, for grouped reductions."""

    def __init__(self, keys: np.ndarray, n_groups: int) -> None:
        self.n = n_groups
        if len(keys):
            self.starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        else:
            self.starts = np.zeros(0, np.int64)
        self.groups = keys[self.starts]
        self.count = np.bincount(keys, minlength=n_groups).astype(np.float64)
        self.dense = len(self.starts) == n_groups  # every group has values: no scatter needed

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """Per group (1-D ``values``); 0 for a group without values."""
        if self.dense:
            return ufunc.reduceat(values, self.starts).astype(np.float64, copy=False)
        out = np.zeros(self.n)
        if len(self.starts):
            out[self.groups] = ufunc.reduceat(values, self.starts)
        return out

    def first(self, values: np.ndarray, missing: float = -1.0) -> np.ndarray:
        out = np.full(self.n, missing)
        out[self.groups] = values[self.starts]
        return out

    def stats(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """min, max, mean, std of ``values`` per group (0 for a group without values)."""
        return _moments(self.count, self.reduce(np.add, values), self.reduce(np.add, values * values),
                        self.reduce(np.minimum, values), self.reduce(np.maximum, values))


def _moments(count: np.ndarray, s: np.ndarray, sq: np.ndarray, lo: np.ndarray,
             hi: np.ndarray) -> dict[str, np.ndarray]:
    """min, max, mean, population std from per-group count, sum, sum of squares, min, max."""
    has = count > 0
    mean = np.divide(s, count, out=np.zeros(len(count)), where=has)
    var = np.divide(sq, count, out=np.zeros(len(count)), where=has) - mean * mean
    return {"min": np.where(has, lo, 0.0), "max": np.where(has, hi, 0.0), "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0))}


def _iat_stats(keys: np.ndarray, ts: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Statistics of the gaps (seconds) between consecutive packets of the same key; the gap
    into a key's first packet does not exist. Out-of-order timestamps count as 0."""
    if len(keys) < 2:
        return _Segments(keys[:0], n_groups).stats(np.zeros(0))
    same = keys[1:] == keys[:-1]
    gaps = np.maximum(np.diff(ts), 0)[same] / 1e9
    return _Segments(keys[1:][same], n_groups).stats(gaps)


def _first_payload_bytes(packets: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Captured length (capped) and the first FIRST_PAYLOAD_BYTES bytes (−1 past the end)
    of the payload of each packet row in ``rows``."""
    length = np.asarray(packets.payload_len)[rows].astype(np.int64)
    start = (np.asarray(packets.frame_off)[rows].astype(np.int64)
             + np.asarray(packets.payload_off)[rows].astype(np.int64))
    k = np.arange(FIRST_PAYLOAD_BYTES)
    inside = k[None, :] < length[:, None]
    data = np.asarray(packets.data)
    idx = np.where(inside, start[:, None] + k[None, :], 0)
    values = np.where(inside, data[idx].astype(np.float64) if len(data) else 0.0, -1.0)
    return np.asarray(packets.payload_wirelen)[rows].astype(np.float64), values


def detect_features(packets: Any, flows: Any, flow_id: np.ndarray | None = None,
                    direction: np.ndarray | None = None, context: np.ndarray | None = None) -> np.ndarray:
    """(F, len(FEATURE_NAMES)) float32 feature rows, one per flow of ``flows`` (a FlowTable over
    ``packets``, or objects with the same columns, e.g. an EvalSet's ColumnTables; then pass
    the per-packet ``flow_id`` and ``direction``, which a FlowTable carries itself).
    ``context``: the flows' host-context columns (:mod:`.context`); by default those of
    ``flows`` as a whole capture.

    The array is Fortran-ordered (one feature's values contiguous): writing ~100 columns into
    a row-major array costs more than all the reductions together, and numpy and
    scikit-learn take either order."""
    n = len(np.asarray(flows.proto))
    flow_id = np.asarray(flows.flow_id if flow_id is None else flow_id)
    direction = np.asarray(flows.direction if direction is None else direction)
    inside = np.flatnonzero(flow_id >= 0)
    by_flow = inside[np.argsort(flow_id[inside], kind="stable")]  # capture order within a flow
    f = flow_id[by_flow].astype(np.int64)
    side_key = f * 2 + direction[by_flow].astype(np.int64)
    by_side_pos = np.argsort(side_key, kind="stable")
    by_side = by_flow[by_side_pos]
    k = side_key[by_side_pos]

    # Sums of integer-valued columns are exact in float64 in any order, so they are bincounts
    # over the (flow, side) key; a flow's sum is the sum of its two sides. Only min/max, the
    # gaps and "first" values need the sorted runs.
    per_side = _Segments(k, 2 * n)
    ts = np.asarray(packets.ts_ns).astype(np.int64)
    size_s = np.asarray(packets.wirelen)[by_side].astype(np.float64)
    payload_s = np.asarray(packets.payload_wirelen)[by_side].astype(np.float64)
    header_s = (np.asarray(packets.payload_off)[by_side].astype(np.float64)
                - np.asarray(packets.l3_off)[by_side].astype(np.float64))
    flags_s = np.asarray(packets.tcp_flags)[by_side]

    def side_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(k, weights=values, minlength=2 * n)

    def sides(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values[0::2], values[1::2]

    def both(values: np.ndarray) -> np.ndarray:
        return values[0::2] + values[1::2]

    cols: dict[str, np.ndarray] = {}
    cols["proto"] = np.asarray(flows.proto).astype(np.float64)
    cols["server_port"] = np.asarray(flows.server_port).astype(np.float64)
    cols["client_port_privileged"] = (np.asarray(flows.client_port) < 1024).astype(np.float64)
    duration = (np.asarray(flows.end_ns).astype(np.int64) - np.asarray(flows.start_ns).astype(np.int64)) / 1e9
    cols["duration_s"] = duration
    cols["packets_fwd"], cols["packets_bwd"] = sides(per_side.count)
    size_sum = side_sum(size_s)
    cols["bytes_fwd"], cols["bytes_bwd"] = sides(size_sum)
    cols["payload_bytes_fwd"], cols["payload_bytes_bwd"] = sides(side_sum(payload_s))
    cols["data_packets_fwd"], cols["data_packets_bwd"] = sides(side_sum(payload_s > 0))
    cols["header_bytes_fwd"], cols["header_bytes_bwd"] = sides(side_sum(header_s))
    total_bytes = cols["bytes_fwd"] + cols["bytes_bwd"]
    flow_count = both(per_side.count)
    seconds = np.where(duration > 0, duration, np.nan)
    cols["bytes_per_s"] = np.nan_to_num(total_bytes / seconds, nan=0.0)
    cols["packets_per_s"] = np.nan_to_num(flow_count / seconds, nan=0.0)
    cols["down_up_ratio"] = np.divide(cols["packets_bwd"], cols["packets_fwd"], out=np.zeros(n),
                                      where=cols["packets_fwd"] > 0)

    size_sq = side_sum(size_s * size_s)
    lo, hi = per_side.reduce(np.minimum, size_s), per_side.reduce(np.maximum, size_s)
    side_stats = _moments(per_side.count, size_sum, size_sq, lo, hi)
    # a side without packets has min = max = 0 and must not win the flow's min
    lo_fwd, lo_bwd = sides(np.where(per_side.count > 0, lo, np.inf))
    flow_stats = _moments(flow_count, both(size_sum), both(size_sq), np.minimum(lo_fwd, lo_bwd),
                          np.maximum(*sides(hi)))
    for name, values in flow_stats.items():
        cols[f"pkt_len_all_{name}"] = values
        cols[f"pkt_len_fwd_{name}"], cols[f"pkt_len_bwd_{name}"] = sides(side_stats[name])

    side_iat = _iat_stats(k, ts[by_side], 2 * n)
    for name, values in _iat_stats(f, ts[by_flow], n).items():
        cols[f"iat_all_{name}"] = values
        cols[f"iat_fwd_{name}"], cols[f"iat_bwd_{name}"] = sides(side_iat[name])

    for flag, bit in _FLAGS:
        counts = side_sum((flags_s & bit) != 0)
        cols[f"{flag}_count"] = both(counts)
        if flag in ("psh", "syn", "rst"):
            cols[f"{flag}_fwd"], cols[f"{flag}_bwd"] = sides(counts)

    is_tcp = np.asarray(packets.proto)[by_side] == 6
    window = np.where(is_tcp, np.asarray(packets.window)[by_side].astype(np.float64), -1.0)
    cols["init_win_fwd"], cols["init_win_bwd"] = sides(per_side.first(window))
    ttl_sum = side_sum(np.asarray(packets.ttl)[by_side])
    ttl_mean = np.divide(ttl_sum, per_side.count, out=np.zeros(2 * n), where=per_side.count > 0)
    cols["ttl_fwd"], cols["ttl_bwd"] = sides(ttl_mean)
    # a flow's first packet in capture order is its first in by_flow order
    per_flow = _Segments(f, n)
    first_row = by_flow[per_flow.starts]
    proto_first = np.asarray(packets.proto)[first_row]
    icmp = np.full(n, -1.0)
    icmp[per_flow.groups] = np.where(np.isin(proto_first, (1, 58)),
                           np.asarray(packets.icmp_type)[first_row].astype(np.float64), -1.0)
    cols["first_icmp_type"] = icmp

    # first packet with payload on each side: the first of its (flow, side) run among data packets
    data_rows = by_side[payload_s > 0]
    data_keys = k[payload_s > 0]
    data_first = _Segments(data_keys, 2 * n)
    length, first_bytes = _first_payload_bytes(packets, data_rows[data_first.starts])
    for j, side in enumerate(_SIDES):
        pick = data_first.groups % 2 == j
        owner = data_first.groups[pick] // 2
        col = np.zeros(n)
        col[owner] = length[pick]
        cols[f"first_payload_len_{side}"] = col
        for b in range(FIRST_PAYLOAD_BYTES):
            col = np.full(n, -1.0)
            col[owner] = first_bytes[pick, b]
            cols[f"first_payload_{side}_b{b}"] = col
    if context is None:
        context = whole_capture_context(packets, flows)
    for j, name in enumerate(CONTEXT_NAMES):
        cols[name] = context[:, j]
    out = np.empty((len(FEATURE_NAMES), n), np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        out[j] = cols[name]
    return out.T


__all__ = ["FEATURE_NAMES", "FIRST_PAYLOAD_BYTES", "detect_features"]
