"""nPrint-like bit rows: one row per packet, one column per header bit, ternary values.

Like nPrint, every header a packet could have owns fixed columns and a bit is +1 (set),
-1 (clear) or 0 (that header is absent); a flow is its first ``max_len`` packets stacked into
an image (missing packets: all-zero rows). Differences from nPrint, and why:

* addresses are left out — FieldRecords give addresses by role and the address plan maps them;
* checksums are left out — FieldRecords carry none to learn from, so the builder always
  computes them (raw compliance therefore measures lengths and fields, not checksums);
* TCP seq/ack are relative to each side's initial number (learnable; absolute ISNs are noise);
* two extra columns groups nPrint lacks: direction (1 bit) and a log₂ IAT bucket (6 bits);
* IP/TCP options and payload are not rows: options and payload bytes are filled from real
  ones of the class (``EmpiricalParts``).
"""

from __future__ import annotations

import numpy as np

from pytrafgen.generators.baseline import FlowSet, iat_bucket
from pytrafgen.records import FieldRecords

# (block, field, width in bits); blocks are the headers a packet may or may not have
LAYOUT: tuple[tuple[str, str, int], ...] = (
    ("ipv4", "version", 4), ("ipv4", "ihl", 4), ("ipv4", "tos", 8), ("ipv4", "total_len", 16),
    ("ipv4", "ip_id", 16), ("ipv4", "ip_flags", 3), ("ipv4", "frag_offset", 13), ("ipv4", "ttl", 8),
    ("ipv4", "proto", 8),
    ("ipv6", "version", 4), ("ipv6", "tos", 8), ("ipv6", "flow_label", 20), ("ipv6", "payload_len", 16),
    ("ipv6", "proto", 8), ("ipv6", "ttl", 8),
    ("tcp", "sport", 16), ("tcp", "dport", 16), ("tcp", "seq", 32), ("tcp", "ack", 32), ("tcp", "doff", 4),
    ("tcp", "tcp_flags", 12), ("tcp", "window", 16), ("tcp", "urgent", 16),
    ("udp", "sport", 16), ("udp", "dport", 16), ("udp", "udp_len", 16),
    ("icmp", "icmp_type", 8), ("icmp", "icmp_code", 8), ("icmp", "icmp_rest", 32),
    ("meta", "direction", 1), ("meta", "iat_bucket", 6),
)
BLOCKS = ("ipv4", "ipv6", "tcp", "udp", "icmp", "meta")


def _columns() -> dict[tuple[str, str], slice]:
    out, at = {}, 0
    for block, name, width in LAYOUT:
        out[(block, name)] = slice(at, at + width)
        at += width
    return out


COLUMNS = _columns()
WIDTH = sum(w for _, _, w in LAYOUT)
BLOCK_COLUMNS = {b: np.concatenate([np.arange(COLUMNS[(bl, n)].start, COLUMNS[(bl, n)].stop)
                                    for bl, n, _ in LAYOUT if bl == b]) for b in BLOCKS}


def _bits(values: np.ndarray, width: int) -> np.ndarray:
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.int8) * 2 - 1


def _unbits(x: np.ndarray) -> np.ndarray:
    width = x.shape[1]
    weights = np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((x > 0).astype(np.uint64) * weights).sum(1).astype(np.int64)


def encode_rows(records: FieldRecords, flows: FlowSet) -> np.ndarray:
    """(P, WIDTH) int8 rows for the packets of ``flows`` (in its order)."""
    rows = flows.packets["row"]
    pk = {k: v[rows].astype(np.int64) for k, v in records.packets.items()}
    fl = flows.packets["flow"]
    version = flows.ip_version[fl].astype(np.int64)
    proto = flows.proto[fl].astype(np.int64)
    direction = pk["direction"]
    client, server = flows.client_port[fl].astype(np.int64), flows.server_port[fl].astype(np.int64)
    l4_hdr = np.select([proto == 6, proto == 17], [20 + pk["l4_opt_len"], 8], 8)
    ip_payload = l4_hdr + pk["payload_len"]
    values = {
        "version": version, "ihl": 5 + pk["ip_opt_len"] // 4, "tos": pk["tos"],
        "total_len": 20 + pk["ip_opt_len"] + ip_payload, "ip_id": pk["ip_id"], "ip_flags": pk["ip_flags"],
        "frag_offset": pk["frag_offset"], "ttl": pk["ttl"], "proto": proto, "flow_label": pk["flow_label"],
        "payload_len": pk["ip_opt_len"] + ip_payload,
        "sport": np.where(direction == 0, client, server), "dport": np.where(direction == 0, server, client),
        "seq": pk["seq"], "ack": pk["ack"], "doff": 5 + pk["l4_opt_len"] // 4, "tcp_flags": pk["tcp_flags"],
        "window": pk["window"], "urgent": pk["urgent"], "udp_len": 8 + pk["payload_len"],
        "icmp_type": pk["icmp_type"], "icmp_code": pk["icmp_code"], "icmp_rest": pk["icmp_rest"],
        "direction": direction, "iat_bucket": iat_bucket(flows.packets["iat_ns"]),
    }
    present = {"ipv4": version == 4, "ipv6": version == 6, "tcp": proto == 6, "udp": proto == 17,
               "icmp": np.isin(proto, (1, 58)), "meta": np.ones(len(rows), bool)}
    out = np.zeros((len(rows), WIDTH), np.int8)
    for block, name, width in LAYOUT:
        out[:, COLUMNS[(block, name)]] = _bits(values[name], width) * present[block][:, None]
    return out


def flow_images(rows: np.ndarray, flows: FlowSet, max_len: int) -> np.ndarray:
    """(F, max_len, WIDTH) int8: each flow's first ``max_len`` rows, zero rows after its end."""
    pos = flows.position_in_flow()
    keep = pos < max_len
    images = np.zeros((flows.n_flows, max_len, WIDTH), np.int8)
    images[flows.packets["flow"][keep], pos[keep]] = rows[keep]
    return images


def block_presence(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per (flow, packet): whether each header block is present (mean |value| above one half)."""
    return {b: np.abs(images[:, :, cols]).mean(2) > 0.5 for b, cols in BLOCK_COLUMNS.items()}


def decode_fields(images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(lengths (F,), per-packet decoded values of both IP and L4 variants, block presence per packet).

    A flow's packets are its leading rows that have an IP header (at least one). Values are
    decoded for every block; callers pick the block that the flow's majority says is present.
    """
    present = block_presence(images)
    has_ip = present["ipv4"] | present["ipv6"]
    has_ip[:, 0] = True
    lengths = np.cumprod(has_ip, axis=1).sum(1)
    flow = np.repeat(np.arange(len(images)), lengths)
    pos = np.arange(len(flow)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = images[flow, pos]
    values = {f"{block}.{name}": _unbits(rows[:, COLUMNS[(block, name)]]) for block, name, _ in LAYOUT}
    values["flow"] = flow
    return lengths, values, {b: p[flow, pos] for b, p in present.items()}
