"""Dissected packets + flows -> FieldRecords (the exchange format), vectorised with numpy.

Which packets become records: those in a flow (``flow_id >= 0``), dissected (status 0), over
IPv4/IPv6, carrying TCP, UDP, ICMP or ICMPv6. Others are counted in ``PacketOrigin.skipped``.
Records are grouped by flow (flows in FlowTable order, packets in capture order within a flow);
flows left without packets are dropped.

What records do not keep, ``PacketOrigin`` holds, so that building the records with it gives
back the original bytes (the round-trip proof): the table row of every record packet, each
flow's addresses and MACs and the initial sequence numbers of both sides.

Conventions shared with the builder (docs/architecture.md §3):

* ``seq`` is relative to the sender's initial sequence number (the seq of its first packet);
  ``ack`` is relative to the peer's, but only on packets with the ACK flag; without ACK the
  field is kept as captured (it is not an acknowledgement; usually 0). A side that sent
  nothing gets ISN = (first ack it received) - 1, as if its SYN had been seen.
* IPv6 extension headers are stored with each header's next-header byte replaced by that
  header's *own* type; the builder re-chains them (the IPv6 header names the first, the last
  names the L4 protocol).
* ``payload_len`` is the length by the IP header, ``payload_stored`` the captured part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords

BUILT_PROTOS = (1, 6, 17, 58)
TCP_ACK = 16
LINKTYPE_ETHERNET = 1
# Segments gathered per numpy call, bounding the temporary index array.
GATHER_CHUNK_BYTES = 1 << 24


@dataclass
class PacketOrigin:
    """What records leave out, per record packet / record flow, to map back exactly."""

    rows: np.ndarray  # int64 (P,): table row of each record packet
    flow_ids: np.ndarray  # int64 (F,): FlowTable flow of each record flow
    client_addr: np.ndarray  # uint8 (F,16)
    server_addr: np.ndarray  # uint8 (F,16)
    client_mac: np.ndarray  # uint8 (F,6); zeros where the capture has no Ethernet header
    server_mac: np.ndarray  # uint8 (F,6)
    isn: np.ndarray  # uint32 (F,2): client, server initial sequence numbers
    skipped: dict[str, int] = field(default_factory=dict)  # table rows not turned into records


def gather_segments(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``data[starts[i] : starts[i] + lengths[i]]`` for all i, in chunks."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    out = np.empty(int(lengths.sum()), np.uint8)
    ends = np.cumsum(lengths)
    pos, i, n = 0, 0, len(lengths)
    while i < n:
        # as many segments as fit in one chunk (at least one)
        j = max(i + 1, int(np.searchsorted(ends, pos + GATHER_CHUNK_BYTES, side="right")))
        seg_len = lengths[i:j]
        total = int(seg_len.sum())
        if total:
            first = np.cumsum(seg_len) - seg_len
            idx = np.repeat(starts[i:j] - first, seg_len) + np.arange(total, dtype=np.int64)
            out[pos : pos + total] = data[idx]
        pos += total
        i = j
    return out


def _read_be(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    value = np.zeros(len(at), np.uint32)
    for k in range(width):
        value = (value << np.uint32(8)) | data[at + k].astype(np.uint32)
    return value


def _selected_rows(table: Any, flows: Any) -> tuple[np.ndarray, dict[str, int]]:
    flow_id = np.asarray(flows.flow_id)
    in_flow = flow_id >= 0
    ok = np.asarray(table.status) == 0
    ip = np.isin(np.asarray(table.l3), (4, 6))
    proto_ok = np.isin(np.asarray(table.proto), BUILT_PROTOS)
    keep = in_flow & ok & ip & proto_ok
    skipped = {
        "not_in_flow": int((~in_flow).sum()),
        "not_dissected": int((in_flow & ~ok).sum()),
        "not_ip": int((in_flow & ok & ~ip).sum()),
        "unsupported_proto": int((in_flow & ok & ip & ~proto_ok).sum()),
    }
    rows = np.flatnonzero(keep)
    # group by flow, capture order within a flow
    rows = rows[np.argsort(flow_id[rows], kind="stable")]
    return rows, {k: v for k, v in skipped.items() if v}


def _initial_sequence_numbers(flow: np.ndarray, direction: np.ndarray, is_tcp: np.ndarray,
                              flags: np.ndarray, seq: np.ndarray, ack: np.ndarray,
                              n_flows: int) -> np.ndarray:
    isn = np.zeros((n_flows, 2), np.uint32)
    known = np.zeros((n_flows, 2), bool)
    tcp = np.flatnonzero(is_tcp)
    side = flow[tcp] * 2 + direction[tcp]
    # rows are in capture order within each flow: np.unique's first index is each side's first packet
    sides, first = np.unique(side, return_index=True)
    isn.reshape(-1)[sides] = seq[tcp[first]]
    known.reshape(-1)[sides] = True
    acked = tcp[(flags[tcp] & TCP_ACK) != 0]
    peer_side = flow[acked] * 2 + (1 - direction[acked])
    peers, first_ack = np.unique(peer_side, return_index=True)
    silent = ~known.reshape(-1)[peers]
    isn.reshape(-1)[peers[silent]] = ack[acked[first_ack[silent]]] - np.uint32(1)
    return isn


def _ipv6_ext_own_types(blob: np.ndarray, data: np.ndarray, opt_starts: np.ndarray, opt_off: np.ndarray,
                        opt_len: np.ndarray, first_nh: np.ndarray) -> None:
    """Rewrite each stored IPv6 extension header's next-header byte to its own type (in place)."""
    for start, off, length, own in zip(opt_starts, opt_off, opt_len, first_nh, strict=True):
        at = 0
        while at < length:
            nxt = int(data[start + at])
            blob[off + at] = own
            t, len_byte = own, int(data[start + at + 1])
            at += 8 if t == 44 else (len_byte + 2) * 4 if t == 51 else (len_byte + 1) * 8
            own = nxt


def records_and_origin(table: Any, flows: Any, flow_labels: Any, classes: list[str],
                       keep_derived: bool = True) -> tuple[FieldRecords, PacketOrigin]:
    """FieldRecords of ``table``'s flows plus the PacketOrigin to map them back exactly.

    ``flow_labels``: per FlowTable flow, the index into ``classes``. ``keep_derived``: also
    store the captured derived fields (lengths, checksums) in ``raw_derived``.
    """
    labels = np.asarray(flow_labels)
    if labels.shape != (len(np.asarray(flows.proto)),):
        raise ValueError(f"flow_labels must have one entry per flow ({len(flows.proto)}), got {labels.shape}")
    rows, skipped = _selected_rows(table, flows)
    data = np.asarray(table.data)
    frame = np.asarray(table.frame_off, np.int64)[rows]
    flow_id = np.asarray(flows.flow_id)[rows]
    flow_ids, flow = np.unique(flow_id, return_inverse=True)
    flow = flow.astype(np.int32)
    n_flows = len(flow_ids)
    direction = np.asarray(flows.direction)[rows].astype(np.uint8)

    col = {name: np.asarray(getattr(table, name))[rows] for name in (
        "ts_ns", "ttl", "tos", "ip_id", "ip_flags", "frag_offset", "flow_label", "tcp_flags", "seq",
        "ack", "window", "urgent", "icmp_type", "icmp_code", "l3", "l3_off", "ip_hdr_len", "ip_total_len",
        "proto", "l4_off", "l4_hdr_len", "ip_csum", "l4_csum", "payload_off", "payload_len", "payload_wirelen")}
    proto = col["proto"]
    is_tcp = proto == 6
    is_icmp = (proto == 1) | (proto == 58)
    l3 = frame + col["l3_off"]
    l4 = frame + col["l4_off"]

    fixed_ip = np.where(col["l3"] == 4, 20, 40)
    ip_opt_len = col["ip_hdr_len"].astype(np.int64) - fixed_ip
    l4_opt_len = np.where(is_tcp, col["l4_hdr_len"].astype(np.int64) - 20, 0)
    payload_stored = col["payload_len"].astype(np.int64)
    # blob per packet: [IP options | TCP options + payload]; TCP options and payload are
    # adjacent in the frame, so two segments per packet
    seg_starts = np.stack([l3 + fixed_ip, l4 + col["l4_hdr_len"] - l4_opt_len], axis=1).reshape(-1)
    seg_lens = np.stack([ip_opt_len, l4_opt_len + payload_stored], axis=1).reshape(-1)
    blob = gather_segments(data, seg_starts, seg_lens)
    seg_off = (np.cumsum(seg_lens) - seg_lens).reshape(-1, 2).astype(np.uint64)

    v6_ext = np.flatnonzero((col["l3"] == 6) & (ip_opt_len > 0))
    if len(v6_ext):
        first_nh = data[l3[v6_ext] + 6]
        _ipv6_ext_own_types(blob, data, l3[v6_ext] + 40, seg_off[v6_ext, 0].astype(np.int64),
                            ip_opt_len[v6_ext], first_nh)

    isn = _initial_sequence_numbers(flow, direction, is_tcp, col["tcp_flags"], col["seq"], col["ack"], n_flows)
    own = isn[flow, direction]
    peer = isn[flow, 1 - direction]
    seq_rel = np.where(is_tcp, col["seq"] - own, col["seq"]).astype(np.uint32)
    acked = is_tcp & ((col["tcp_flags"] & TCP_ACK) != 0)
    ack_rel = np.where(acked, col["ack"] - peer, col["ack"]).astype(np.uint32)
    # the reader's tcp_flags stop at NS; the three reserved bits (set by some OS-fingerprint
    # probes) come from the header byte itself, as bits 9-11
    tcp_rows = np.flatnonzero(is_tcp)
    tcp_flags = col["tcp_flags"].astype(np.uint16)
    tcp_flags[tcp_rows] = _read_be(data, l4[tcp_rows] + 12, 2) & np.uint32(0x0FFF)
    icmp_rest = np.zeros(len(rows), np.uint32)
    icmp_rows = np.flatnonzero(is_icmp)
    icmp_rest[icmp_rows] = _read_be(data, l4[icmp_rows] + 4, 4)

    packets = {
        "flow": flow,
        "direction": direction,
        "ts_ns": col["ts_ns"],
        "ttl": col["ttl"],
        "tos": col["tos"],
        "ip_id": col["ip_id"],
        "ip_flags": col["ip_flags"] & np.uint8(7),
        "frag_offset": col["frag_offset"],
        "flow_label": col["flow_label"],
        "ip_opt_off": seg_off[:, 0],
        "ip_opt_len": ip_opt_len,
        "tcp_flags": tcp_flags,
        "seq": seq_rel,
        "ack": ack_rel,
        "window": col["window"],
        "urgent": col["urgent"],
        "icmp_type": col["icmp_type"],
        "icmp_code": col["icmp_code"],
        "icmp_rest": icmp_rest,
        "l4_opt_off": seg_off[:, 1],
        "l4_opt_len": l4_opt_len,
        "payload_off": seg_off[:, 1] + l4_opt_len.astype(np.uint64),
        "payload_stored": payload_stored,
        "payload_len": col["payload_wirelen"],
    }
    packets = {n: np.ascontiguousarray(packets[n], dtype=d) for n, d in PACKET_COLUMNS.items()}

    fl = {
        "label": labels[flow_ids],
        "ip_version": np.asarray(flows.l3)[flow_ids],
        "proto": np.asarray(flows.proto)[flow_ids],
        "client_port": np.asarray(flows.client_port)[flow_ids],
        "server_port": np.asarray(flows.server_port)[flow_ids],
    }
    fl = {n: np.ascontiguousarray(fl[n], dtype=d) for n, d in FLOW_COLUMNS.items()}

    raw_derived: dict[str, np.ndarray] = {}
    if keep_derived:
        udp_len = np.zeros(len(rows), np.uint16)
        udp_rows = np.flatnonzero(proto == 17)
        udp_len[udp_rows] = _read_be(data, l4[udp_rows] + 4, 2)
        raw_derived = {
            "ip_hdr_len": col["ip_hdr_len"].astype(np.uint16),
            "ip_total_len": col["ip_total_len"].astype(np.uint16),
            "l4_hdr_len": col["l4_hdr_len"].astype(np.uint16),
            "udp_len": udp_len,
            "ip_csum": col["ip_csum"].astype(np.uint16),
            "l4_csum": col["l4_csum"].astype(np.uint16),
        }

    records = FieldRecords(packets=packets, flows=fl, blob=blob, classes=list(classes), raw_derived=raw_derived)
    origin = PacketOrigin(
        rows=rows.astype(np.int64),
        flow_ids=flow_ids.astype(np.int64),
        client_addr=np.ascontiguousarray(np.asarray(flows.client_addr)[flow_ids], np.uint8),
        server_addr=np.ascontiguousarray(np.asarray(flows.server_addr)[flow_ids], np.uint8),
        client_mac=np.zeros((n_flows, 6), np.uint8),
        server_mac=np.zeros((n_flows, 6), np.uint8),
        isn=isn,
        skipped=skipped,
    )
    _fill_macs(origin, table, rows, flow, direction, data, frame)
    return records, origin


def _fill_macs(origin: PacketOrigin, table: Any, rows: np.ndarray, flow: np.ndarray, direction: np.ndarray,
               data: np.ndarray, frame: np.ndarray) -> None:
    """Each flow's MACs from its first Ethernet packet (client = source of a c2s packet)."""
    eth = (np.asarray(table.linktype)[rows] == LINKTYPE_ETHERNET) & (np.asarray(table.l3_off)[rows] >= 14)
    cand = np.flatnonzero(eth)
    flows_with, first = np.unique(flow[cand], return_index=True)
    pick = cand[first]
    dst = data[frame[pick, None] + np.arange(6)]
    src = data[frame[pick, None] + 6 + np.arange(6)]
    c2s = (direction[pick] == 0)[:, None]
    origin.client_mac[flows_with] = np.where(c2s, src, dst)
    origin.server_mac[flows_with] = np.where(c2s, dst, src)


def records_from_packets(table: Any, flows: Any, flow_labels: Any, classes: list[str],
                         keep_derived: bool = True) -> FieldRecords:
    """FieldRecords of ``table``'s flows (see the module docstring)."""
    return records_and_origin(table, flows, flow_labels, classes, keep_derived)[0]


def isn_and_addresses(table: Any, flows: Any, flow_labels: Any, classes: list[str]) -> PacketOrigin:
    """The PacketOrigin of ``records_from_packets(table, flows, ...)``: pass its ``isn`` and
    addresses to ``build_packets`` to get back the captured bytes."""
    return records_and_origin(table, flows, flow_labels, classes, keep_derived=False)[1]


__all__ = ["PacketOrigin", "gather_segments", "isn_and_addresses", "records_and_origin", "records_from_packets"]
