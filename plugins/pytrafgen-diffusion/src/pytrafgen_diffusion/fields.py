"""Decoded bit rows → the per-flow and per-packet columns ``assemble_records`` takes.

Every flow needs one IP version, one transport and one port pair (that is what FieldRecords
can express), so those are the flow's majority vote in both modes. Beyond that:

* ``repair=False`` (raw): the packet's decoded seq/ack, IP id, IP flags (MF and reserved bits
  included), fragment offset, urgent pointer, ICMP rest and flow label are written as decoded,
  and the decoded IP header length, IP total length, TCP header length and UDP length go into
  ``raw_derived`` so the builder's ``repair=False`` writes them as generated; TCP options only
  where the decoded data offset says there are some.
* ``repair=True`` (NetDiffusion's rule-based post-repair): seq/ack made continuous from payload
  lengths and SYN/FIN, IP ids counting per direction, no fragmentation, urgent pointer zero,
  options from the class's real ones; lengths and checksums then recomputed by the builder.

Payload length is what the decoded lengths imply (IP total length − IP header − L4 header).
"""

from __future__ import annotations

import numpy as np

from pytrafgen_diffusion.bits import decode_fields


def _majority(flow: np.ndarray, values: np.ndarray, n_flows: int, fallback: int = 0) -> np.ndarray:
    out = np.full(n_flows, fallback, np.int64)
    if len(flow) == 0:
        return out
    keys = flow.astype(np.int64) * (1 << 32) + values.astype(np.int64)
    uniq, counts = np.unique(keys, return_counts=True)
    order = np.lexsort((-counts, uniq >> 32))
    uniq = uniq[order]
    first = np.concatenate([[True], (uniq[1:] >> 32) != (uniq[:-1] >> 32)])
    out[uniq[first] >> 32] = uniq[first] & ((1 << 32) - 1)
    return out


def iat_from_bucket(bucket: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniform draw inside each log₂ bucket (bucket b ≥ 1 covers [2^(b-1), 2^b) µs)."""
    bucket = np.minimum(bucket, 40)  # the encoder caps buckets at 40 (~12 days)
    low = np.where(bucket > 0, np.exp2(np.maximum(bucket - 1, 0)), 0.0)
    high = np.where(bucket > 0, np.exp2(bucket), 1.0)
    return np.rint((low + rng.random(len(bucket)) * (high - low)) * 1e3).astype(np.int64)


def decode_to_columns(labels: np.ndarray, images: np.ndarray, repair: bool, rng: np.random.Generator) -> dict:
    """``{"flows", "packets", "overrides", "options_mask", "raw_derived"}`` for assemble_records."""
    n_flows = len(labels)
    _, v, present = decode_fields(images)
    flow = v["flow"]
    votes = {b: np.bincount(flow, weights=present[b], minlength=n_flows) for b in ("ipv4", "ipv6", "tcp", "udp", "icmp")}
    ip_version = np.where(votes["ipv4"] >= votes["ipv6"], 4, 6)
    transport = np.stack([votes["tcp"], votes["udp"], votes["icmp"]], 1).argmax(1)
    proto = np.choose(transport, [np.full(n_flows, 6), np.full(n_flows, 17), np.where(ip_version == 4, 1, 58)])
    v4 = ip_version[flow] == 4
    tcp = proto[flow] == 6
    udp = proto[flow] == 17
    direction = v["meta.direction"].astype(np.uint8)
    sport = np.where(tcp, v["tcp.sport"], v["udp.sport"])
    dport = np.where(tcp, v["tcp.dport"], v["udp.dport"])
    server_port = _majority(flow, np.where(direction == 0, dport, sport), n_flows)
    client_port = _majority(flow, np.where(direction == 0, sport, dport), n_flows)

    ip_hdr = np.where(v4, v["ipv4.ihl"] * 4, 40)
    ip_total = np.where(v4, v["ipv4.total_len"], 40 + v["ipv6.payload_len"])
    l4_hdr = np.where(tcp, v["tcp.doff"] * 4, 8)
    payload_len = np.maximum(ip_total - ip_hdr - l4_hdr, 0)
    packets = {
        "flow": flow, "direction": direction, "iat_ns": iat_from_bucket(v["meta.iat_bucket"], rng),
        "ttl": np.where(v4, v["ipv4.ttl"], v["ipv6.ttl"]), "tos": np.where(v4, v["ipv4.tos"], v["ipv6.tos"]),
        "ip_flags": np.where(v4, v["ipv4.ip_flags"], 0), "tcp_flags": v["tcp.tcp_flags"] & 0x1FF,
        "window": v["tcp.window"], "payload_len": payload_len, "icmp_type": v["icmp.icmp_type"],
        "icmp_code": v["icmp.icmp_code"],
    }
    raw_derived = {"ip_hdr_len": ip_hdr, "ip_total_len": ip_total, "l4_hdr_len": np.where(tcp, l4_hdr, 0),
                   "udp_len": np.where(udp, v["udp.udp_len"], 0)}
    raw_derived = {k: np.asarray(x).clip(0, 65535).astype(np.uint16) for k, x in raw_derived.items()}
    overrides: dict[str, np.ndarray] = {}
    options_mask = None
    if not repair:
        overrides = {"seq": v["tcp.seq"] * tcp, "ack": v["tcp.ack"] * tcp, "ip_id": v["ipv4.ip_id"] * v4,
                     "ip_flags": packets["ip_flags"], "frag_offset": v["ipv4.frag_offset"] * v4,
                     "urgent": v["tcp.urgent"] * tcp, "icmp_rest": v["icmp.icmp_rest"],
                     "flow_label": v["ipv6.flow_label"] * ~v4}
        options_mask = v["tcp.doff"] > 5
    flows = {"label": labels, "ip_version": ip_version, "proto": proto, "server_port": server_port,
             "client_port": client_port}
    return {"flows": flows, "packets": packets, "overrides": overrides, "options_mask": options_mask,
            "raw_derived": raw_derived}
