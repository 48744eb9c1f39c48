"""Per-flow feature vectors shared by diversity, utility and class fidelity.

One row per flow, computed with grouped numpy reductions (no per-flow Python loop). Counts,
byte totals, durations and times are ``log1p``-compressed so one elephant flow does not
dominate a standardised distance. ``Standardiser`` is fitted on real flows and applied to both
sides, so distances are in units of the real data's spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "proto_tcp", "proto_udp", "proto_icmp", "server_port_wellknown", "server_port", "client_port",
    "log_packets_c2s", "log_packets_s2c", "log_bytes_c2s", "log_bytes_s2c",
    "log_payload_c2s", "log_payload_s2c", "log_duration_us",
    "log_iat_mean_us", "log_iat_std_us", "log_iat_min_us", "log_iat_max_us",
    "size_mean", "size_std", "size_min", "size_max", "payload_mean",
    "syn", "fin", "rst", "psh", "ack", "urg", "ttl_c2s", "ttl_s2c", "window_c2s_mean",
)  # fmt: skip

_FLAG_BITS = {"syn": 2, "fin": 1, "rst": 4, "psh": 8, "ack": 16, "urg": 32}


class PacketColumns(Protocol):
    """The packet columns features read: a ``PacketTable`` or an evaluation ``ColumnTable``."""

    wirelen: np.ndarray
    payload_wirelen: np.ndarray
    ts_ns: np.ndarray
    tcp_flags: np.ndarray
    ttl: np.ndarray
    window: np.ndarray


class FlowColumns(Protocol):
    """The flow columns features read: a ``FlowTable`` or an evaluation ``ColumnTable``."""

    proto: np.ndarray
    server_port: np.ndarray
    client_port: np.ndarray


@dataclass
class FlowFeatures:
    """(F, D) float64 feature matrix with its column names."""

    values: np.ndarray
    names: tuple[str, ...] = FEATURE_NAMES


def _grouped(flow: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of ``values`` per flow."""
    s = np.bincount(flow, weights=values.astype(np.float64), minlength=n)[:n]
    c = np.bincount(flow, minlength=n)[:n].astype(np.float64)
    return s, c


def _grouped_extreme(flow: np.ndarray, values: np.ndarray, n: int, fn: np.ufunc, empty: float) -> np.ndarray:
    out = np.full(n, empty, np.float64)
    fn.at(out, flow, values.astype(np.float64))
    return np.where(np.isinf(out), 0.0, out)


def flow_features(packets: PacketColumns, flows: FlowColumns, flow_id: np.ndarray, direction: np.ndarray) -> FlowFeatures:
    """Feature rows for every flow of a (PacketTable, FlowTable) pair."""
    n = len(np.asarray(flows.proto))
    inside = np.flatnonzero(np.asarray(flow_id) >= 0)
    # packets ordered by flow, capture order (= time order) inside each flow
    order = inside[np.argsort(np.asarray(flow_id)[inside], kind="stable")]
    f = np.asarray(flow_id)[order].astype(np.int64)
    d = np.asarray(direction)[order]
    size = np.asarray(packets.wirelen)[order].astype(np.float64)
    payload = np.asarray(packets.payload_wirelen)[order].astype(np.float64)
    ts = np.asarray(packets.ts_ns)[order].astype(np.int64)
    flags = np.asarray(packets.tcp_flags)[order].astype(np.int64)
    ttl = np.asarray(packets.ttl)[order].astype(np.float64)
    window = np.asarray(packets.window)[order].astype(np.float64)

    cols: dict[str, np.ndarray] = {}
    proto = np.asarray(flows.proto).astype(np.int64)
    cols["proto_tcp"] = (proto == 6).astype(np.float64)
    cols["proto_udp"] = (proto == 17).astype(np.float64)
    cols["proto_icmp"] = np.isin(proto, [1, 58]).astype(np.float64)
    sport = np.asarray(flows.server_port).astype(np.float64)
    cols["server_port_wellknown"] = (sport < 1024).astype(np.float64)
    cols["server_port"] = sport / 65535.0
    cols["client_port"] = np.asarray(flows.client_port).astype(np.float64) / 65535.0
    for side, name in ((0, "c2s"), (1, "s2c")):
        m = d == side
        s_bytes, cnt = _grouped(f[m], size[m], n)
        s_pay, _ = _grouped(f[m], payload[m], n)
        cols[f"log_packets_{name}"] = np.log1p(cnt)
        cols[f"log_bytes_{name}"] = np.log1p(s_bytes)
        cols[f"log_payload_{name}"] = np.log1p(s_pay)
    start = _grouped_extreme(f, ts, n, np.minimum, np.inf)
    end = _grouped_extreme(f, ts, n, np.maximum, -np.inf)
    cols["log_duration_us"] = np.log1p(np.maximum(end - start, 0) / 1e3)

    same = np.r_[False, f[1:] == f[:-1]] if len(f) else np.zeros(0, bool)
    iat = np.zeros(len(f), np.float64)
    iat[same] = np.maximum(np.diff(ts)[same[1:]], 0) / 1e3
    fi, ii = f[same], iat[same]
    s_iat, c_iat = _grouped(fi, ii, n)
    mean_iat = np.divide(s_iat, c_iat, out=np.zeros(n), where=c_iat > 0)
    sq_iat, _ = _grouped(fi, ii * ii, n)
    var_iat = np.divide(sq_iat, c_iat, out=np.zeros(n), where=c_iat > 0) - mean_iat**2
    cols["log_iat_mean_us"] = np.log1p(mean_iat)
    cols["log_iat_std_us"] = np.log1p(np.sqrt(np.maximum(var_iat, 0)))
    cols["log_iat_min_us"] = np.log1p(_grouped_extreme(fi, ii, n, np.minimum, np.inf))
    cols["log_iat_max_us"] = np.log1p(_grouped_extreme(fi, ii, n, np.maximum, -np.inf))

    s_size, c_all = _grouped(f, size, n)
    mean_size = np.divide(s_size, c_all, out=np.zeros(n), where=c_all > 0)
    sq_size, _ = _grouped(f, size * size, n)
    cols["size_mean"] = mean_size
    cols["size_std"] = np.sqrt(np.maximum(np.divide(sq_size, c_all, out=np.zeros(n), where=c_all > 0)
                                          - mean_size**2, 0))
    cols["size_min"] = _grouped_extreme(f, size, n, np.minimum, np.inf)
    cols["size_max"] = _grouped_extreme(f, size, n, np.maximum, -np.inf)
    s_pay_all, _ = _grouped(f, payload, n)
    cols["payload_mean"] = np.divide(s_pay_all, c_all, out=np.zeros(n), where=c_all > 0)
    for name, bit in _FLAG_BITS.items():
        cnt, _ = _grouped(f, ((flags & bit) != 0).astype(np.float64), n)
        cols[name] = np.log1p(cnt)
    for side, name in ((0, "c2s"), (1, "s2c")):
        m = d == side
        s_ttl, c_ttl = _grouped(f[m], ttl[m], n)
        cols[f"ttl_{name}"] = np.divide(s_ttl, c_ttl, out=np.zeros(n), where=c_ttl > 0)
    s_win, c_win = _grouped(f[d == 0], window[d == 0], n)
    cols["window_c2s_mean"] = np.divide(s_win, c_win, out=np.zeros(n), where=c_win > 0)
    return FlowFeatures(np.column_stack([cols[name] for name in FEATURE_NAMES]) if n else
                        np.zeros((0, len(FEATURE_NAMES))))


@dataclass
class Standardiser:
    """Zero mean, unit variance per feature, fitted on real flows (constant features: scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardiser:
        mean = values.mean(axis=0) if len(values) else np.zeros(values.shape[1])
        std = values.std(axis=0) if len(values) else np.ones(values.shape[1])
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.scale


__all__ = ["FEATURE_NAMES", "FlowFeatures", "Standardiser", "flow_features"]
