"""Fidelity: how close generated field distributions are to the real ones (DESIGN.md §7).

* Numeric fields: 1-D Earth Mover's Distance (``scipy.stats.wasserstein_distance``) between
  real and generated values, both min-max scaled by the range of the field over the whole
  real set (all classes: a class whose real values are nearly constant would otherwise blow
  one field's EMD up by orders of magnitude), so each EMD is in units of the real range.
* Categorical fields: Jensen-Shannon divergence (base 2, in [0, 1]) between the value
  histograms.

Each figure is computed per class (real flows of class c against generated flows asked for as
class c) and averaged over fields; the headline is the mean over classes (macro).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from pytrafgen.evaluate.evalset import EvalSet

NUMERIC_FIELDS: dict[str, str] = {
    "packet_size": "frame length on the wire (bytes)",
    "payload_len": "L4 payload length per the IP header (bytes)",
    "ttl": "IPv4 TTL / IPv6 hop limit",
    "window": "TCP window",
    "log_iat_us": "log1p of the inter-arrival time inside the flow (µs)",
    "flow_packets": "packets per flow",
    "flow_bytes": "bytes per flow",
    "flow_log_duration_us": "log1p of the flow duration (µs)",
}
CATEGORICAL_FIELDS: dict[str, str] = {
    "proto": "IP protocol number",
    "tcp_flags": "TCP flag byte",
    "direction": "packet direction (client→server / server→client)",
    "tos": "IPv4 TOS / IPv6 traffic class",
    "ip_flags": "IPv4 flags",
    "icmp_type_code": "ICMP type × 256 + code",
    "server_port": "server port of the flow",
}
PACKET_LEVEL = {"packet_size", "payload_len", "ttl", "window", "log_iat_us", "proto", "tcp_flags",
                "direction", "tos", "ip_flags", "icmp_type_code"}


def field_values(es: EvalSet, class_index: int | None) -> dict[str, np.ndarray]:
    """Values of every fidelity field for the flows of one class (``None``: all flows)."""
    flow_mask = np.ones(es.n_flows, bool) if class_index is None else es.labels == class_index
    inside = es.flow_id >= 0
    pkt_mask = inside & flow_mask[np.maximum(es.flow_id, 0)]
    p = es.packets
    tcp = (p.proto == 6) & pkt_mask
    out: dict[str, np.ndarray] = {
        "packet_size": p.wirelen[pkt_mask].astype(np.float64),
        "payload_len": p.payload_wirelen[pkt_mask].astype(np.float64),
        "ttl": p.ttl[pkt_mask].astype(np.float64),
        "window": p.window[tcp].astype(np.float64),
        "proto": p.proto[pkt_mask].astype(np.int64),
        "tcp_flags": p.tcp_flags[tcp].astype(np.int64),
        "direction": es.direction[pkt_mask].astype(np.int64),
        "tos": p.tos[pkt_mask].astype(np.int64),
        "ip_flags": (p.ip_flags[pkt_mask] & 0x07).astype(np.int64),
        "icmp_type_code": (p.icmp_type.astype(np.int64) * 256 + p.icmp_code)[
            pkt_mask & np.isin(p.proto, [1, 58])],
    }
    # inter-arrival times inside flows, in capture order per flow
    idx = np.flatnonzero(pkt_mask)
    idx = idx[np.argsort(es.flow_id[idx], kind="stable")]
    fid = es.flow_id[idx]
    same = fid[1:] == fid[:-1]
    gaps = np.diff(p.ts_ns[idx].astype(np.int64))[same]
    out["log_iat_us"] = np.log1p(np.maximum(gaps, 0) / 1e3)
    flows = np.flatnonzero(flow_mask)
    f = es.flows
    out["flow_packets"] = (f.packets_c2s[flows].astype(np.float64) + f.packets_s2c[flows])
    out["flow_bytes"] = (f.bytes_c2s[flows].astype(np.float64) + f.bytes_s2c[flows])
    out["flow_log_duration_us"] = np.log1p(np.maximum(f.end_ns[flows].astype(np.int64)
                                                      - f.start_ns[flows].astype(np.int64), 0) / 1e3)
    out["server_port"] = f.server_port[flows].astype(np.int64)
    return out


def real_range(values: np.ndarray) -> tuple[float, float]:
    """(low, span) of min-max scaling: the real values' range; a constant field is scaled by
    its magnitude (at least 1) so a deviation still counts relative to the value."""
    if len(values) == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return lo, (hi - lo) if hi > lo else max(abs(lo), 1.0)


def scaled_emd(real: np.ndarray, generated: np.ndarray, scale: tuple[float, float] | None = None) -> float | None:
    """EMD after min-max scaling both sides by ``scale`` (default: ``real``'s own range);
    None if a side is empty."""
    if len(real) == 0 or len(generated) == 0:
        return None
    lo, span = scale if scale is not None else real_range(real)
    return float(wasserstein_distance((real - lo) / span, (generated - lo) / span))


def jsd(real: np.ndarray, generated: np.ndarray) -> float | None:
    """Jensen-Shannon divergence (base 2) of two categorical samples; None if a side is empty."""
    if len(real) == 0 or len(generated) == 0:
        return None
    values, inverse = np.unique(np.concatenate([real, generated]), return_inverse=True)
    p = np.bincount(inverse[: len(real)], minlength=len(values)).astype(np.float64)
    q = np.bincount(inverse[len(real) :], minlength=len(values)).astype(np.float64)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def fidelity(real: EvalSet, generated: EvalSet) -> dict[str, Any]:
    """Per-class and averaged EMD / JSD figures (labels of both sets index ``real.classes``)."""
    rv_all = field_values(real, None)
    scales = {k: real_range(rv_all[k]) for k in NUMERIC_FIELDS}
    per_class: dict[str, Any] = {}
    for c, name in enumerate(real.classes):
        if not (real.labels == c).any() or not (generated.labels == c).any():
            continue
        rv, gv = field_values(real, c), field_values(generated, c)
        emd = {k: scaled_emd(rv[k], gv[k], scales[k]) for k in NUMERIC_FIELDS}
        js = {k: jsd(rv[k], gv[k]) for k in CATEGORICAL_FIELDS}
        per_class[name] = {"emd": emd, "jsd": js, "emd_mean": _mean(list(emd.values())),
                           "jsd_mean": _mean(list(js.values()))}
    gv_all = field_values(generated, None)
    pooled_emd = {k: scaled_emd(rv_all[k], gv_all[k], scales[k]) for k in NUMERIC_FIELDS}
    pooled_jsd = {k: jsd(rv_all[k], gv_all[k]) for k in CATEGORICAL_FIELDS}
    return {
        "emd_mean": _mean([v["emd_mean"] for v in per_class.values()]),
        "jsd_mean": _mean([v["jsd_mean"] for v in per_class.values()]),
        "per_class": per_class,
        "pooled": {"emd": pooled_emd, "jsd": pooled_jsd, "emd_mean": _mean(list(pooled_emd.values())),
                   "jsd_mean": _mean(list(pooled_jsd.values()))},
        "settings": {
            "numeric_fields": NUMERIC_FIELDS,
            "categorical_fields": CATEGORICAL_FIELDS,
            "emd": "scipy.stats.wasserstein_distance on values min-max scaled by the field's range "
                   "over the whole real set (constant field: by max(|value|, 1))",
            "jsd": "Jensen-Shannon divergence, base 2 (0 = same distribution, 1 = disjoint)",
            "averaging": "per class: mean over fields with data on both sides; headline: mean over "
                         "classes present on both sides; pooled: all classes together",
            "classes_compared": list(per_class),
        },
    }

