"""TCP by construction: teardown after the data, sequence and acknowledgement numbers that
follow each side's bytes, SYN windows, well-formed option lists (see the package doc)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pytrafgen.records import FieldRecords

FIN, SYN, RST, ACK = 1, 2, 4, 16
MAX_WINDOW_SCALE = 14
# kind -> allowed lengths (RFC 9293, 7323, 2018)
TCP_OPTION_LENGTHS: dict[int, tuple[int, ...]] = {2: (4,), 3: (3,), 4: (2,), 5: (10, 18, 26, 34), 8: (10,)}

def _grouped_exclusive_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Sum of ``values`` before each position within its group (groups are contiguous runs)."""
    total = np.cumsum(values)
    before = total - values
    starts = np.flatnonzero(group_start)
    base = np.repeat(before[starts], np.diff(np.r_[starts, len(values)]))
    return before - base


def _first_position(mask: np.ndarray, side: np.ndarray, pos: np.ndarray, n_sides: int) -> np.ndarray:
    """Per side, the smallest ``pos`` where ``mask`` holds (a large number if none)."""
    out = np.full(n_sides, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, side[mask], pos[mask])
    return out


def _last_position(mask: np.ndarray, side: np.ndarray, pos: np.ndarray, n_sides: int) -> np.ndarray:
    """Per side, the largest ``pos`` where ``mask`` holds (-1 if none)."""
    out = np.full(n_sides, -1, np.int64)
    np.maximum.at(out, side[mask], pos[mask])
    return out


def conform_tcp_order(records: FieldRecords, ts: np.ndarray, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """TCP flags, seq and ack of ``records`` made consistent per flow (see the module doc);
    ``ts``: the packet times the flows will be built with. Returns new columns."""
    p = records.packets
    flags = p["tcp_flags"].copy()
    seq, ack = p["seq"].copy(), p["ack"].copy()
    tcp = np.flatnonzero(records.flows["proto"][p["flow"]] == 6)
    if not len(tcp):
        return {"tcp_flags": flags, "seq": seq, "ack": ack}
    flow = p["flow"][tcp].astype(np.int64)
    order = tcp[np.lexsort((tcp, ts[tcp], flow))]  # flow order, time order inside
    flow = p["flow"][order].astype(np.int64)
    direction = p["direction"][order].astype(np.int64)
    pos = np.arange(len(order), dtype=np.int64)
    payload = p["payload_len"][order].astype(np.int64)
    f = flags[order].astype(np.int64)
    # A SYN without ACK after a FIN or RST opens a new connection on the same ports (a reader
    # starts a new flow there): numbers and teardown are per connection.
    flow_start = np.r_[True, flow[1:] != flow[:-1]]
    closing = ((f & (FIN | RST)) != 0).astype(np.int64)
    closed_before = _grouped_exclusive_cumsum(closing, flow_start) > 0
    reopen = closed_before & ((f & (SYN | ACK)) == SYN)
    conn = np.cumsum(flow_start | reopen) - 1
    side = conn * 2 + direction
    n_sides = 2 * (int(conn[-1]) + 1)

    # teardown after the data: a side's FIN/RST before its own later data is dropped (a segment
    # left without flags becomes a bare ACK)
    last_data = _last_position(payload > 0, side, pos, n_sides)
    early_fin = ((f & FIN) != 0) & (pos < last_data[side])
    early_rst = ((f & RST) != 0) & (pos < last_data[side])
    f = np.where(early_fin, f & ~FIN, f)
    f = np.where(early_rst, f & ~RST, f)
    f = np.where((early_fin | early_rst) & ((f & 0x1FF) == 0), ACK, f)
    counts["tcp_fin_moved"] = counts.get("tcp_fin_moved", 0) + int(early_fin.sum())
    counts["tcp_rst_dropped"] = counts.get("tcp_rst_dropped", 0) + int(early_rst.sum())

    # sequence numbers follow each side's bytes; ACKs follow the peer's. A side's SYN takes one
    # number once: a repeated SYN (a retransmission) carries the same initial number again.
    syn = (f & SYN) != 0
    first_syn = _first_position(syn, side, pos, n_sides)
    repeated_syn = syn & (pos > first_syn[side])
    fin = (f & FIN) != 0
    first_fin = _first_position(fin, side, pos, n_sides)
    repeated_fin = fin & (pos > first_fin[side])  # likewise a repeated FIN (no data follows a FIN)
    seg = payload + (syn & ~repeated_syn) + (fin & ~repeated_fin)
    by_side = np.lexsort((pos, side))
    side_sorted = side[by_side]
    side_start = np.r_[True, side_sorted[1:] != side_sorted[:-1]]
    new_seq = np.empty(len(order), np.int64)
    new_seq[by_side] = _grouped_exclusive_cumsum(seg[by_side], side_start)
    new_seq = np.where(repeated_syn & (new_seq == 1), 0, new_seq)  # the SYN before it took number 0
    new_seq = np.where(repeated_fin, new_seq - 1, new_seq)  # the number the first FIN took
    conn_start = np.r_[True, conn[1:] != conn[:-1]]
    sent_before = {d: _grouped_exclusive_cumsum(np.where(direction == d, seg, 0), conn_start) for d in (0, 1)}
    peer_sent = np.where(direction == 0, sent_before[1], sent_before[0])
    acking = (f & ACK) != 0
    old_ack = ack[order].astype(np.int64)
    new_ack = np.where(acking, peer_sent, old_ack)
    new_seq &= 0xFFFFFFFF
    new_ack &= 0xFFFFFFFF
    counts["tcp_seq"] = counts.get("tcp_seq", 0) + int(np.sum(new_seq != seq[order]))
    counts["tcp_ack"] = counts.get("tcp_ack", 0) + int(np.sum(new_ack != old_ack))
    flags[order] = f.astype(np.uint16)
    seq[order] = new_seq.astype(np.uint32)
    ack[order] = new_ack.astype(np.uint32)
    return {"tcp_flags": flags, "seq": seq, "ack": ack}


def normalise_tcp_options(raw: bytes) -> bytes:
    """``raw``'s well-formed options of known kinds in order (window scale ≤ 14), then zeros
    to the same length; a malformed or unknown option ends the list."""
    out = bytearray()
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            out.append(1)
            i += 1
            continue
        length = raw[i + 1] if i + 1 < len(raw) else 0
        if kind not in TCP_OPTION_LENGTHS or length not in TCP_OPTION_LENGTHS[kind] or i + length > len(raw):
            break
        option = bytearray(raw[i:i + length])
        if kind == 3:
            option[2] = min(option[2], MAX_WINDOW_SCALE)
        out += option
        i += length
    while out and out[-1] == 1:  # NOPs only align what follows; trailing ones are padding
        out.pop()
    return bytes(out) + bytes(len(raw) - len(out))

def _opens_with_client_syn(records: FieldRecords, ts: np.ndarray) -> np.ndarray:
    """Per flow: whether its first packet (in time) is the client's SYN: then both sides'
    streams are in view from their start."""
    p = records.packets
    order = np.lexsort((np.arange(records.n_packets), ts, p["flow"]))
    flow = p["flow"][order]
    first = order[np.r_[True, flow[1:] != flow[:-1]]] if len(order) else order
    out = np.zeros(records.n_flows, bool)
    out[p["flow"][first]] = ((p["tcp_flags"][first] & (SYN | ACK)) == SYN) & (p["direction"][first] == 0)
    return out & (records.flows["proto"] == 6)

def conform_syn_windows(records: FieldRecords, counts: dict[str, int]) -> np.ndarray:
    """The window column with every SYN and SYN-ACK advertising a non-zero window (a zero one
    would refuse the data the handshake opens for): the largest window its side advertises
    elsewhere in the flow, else 65535."""
    p = records.packets
    window = p["window"].copy()
    tcp = records.flows["proto"][p["flow"]] == 6
    bad = np.flatnonzero(tcp & ((p["tcp_flags"] & SYN) != 0) & (window == 0))
    if not len(bad):
        return window
    side = p["flow"].astype(np.int64) * 2 + p["direction"]
    largest = np.zeros(2 * records.n_flows, np.int64)
    np.maximum.at(largest, side[tcp], window[tcp].astype(np.int64))
    window[bad] = np.where(largest[side[bad]] > 0, largest[side[bad]], 65535).astype(window.dtype)
    counts["tcp_syn_window"] = len(bad)
    return window


def conform_handshakes(records: FieldRecords, ts: np.ndarray, counts: dict[str, int]
                       ) -> tuple[FieldRecords, np.ndarray, np.ndarray]:
    """Flows that open with the client's SYN and carry data get the server's SYN-ACK before the
    first data segment (data flows only on a connection both sides opened): the server's first
    packet after the SYN becomes the SYN-ACK where it comes before the data and carries neither
    data nor FIN/RST (``tcp_synack_flags``); otherwise a SYN-ACK is inserted halfway between the
    SYN and the packet after it, with the SYN's options and the server side's TTL and window
    (``tcp_synack_added``, right after the SYN in record order). Flows without data (scans,
    floods) are left as they are. Returns the records, their packet times and, per packet, the
    packet of ``records`` it comes from (an inserted SYN-ACK: its flow's SYN)."""
    p = records.packets
    in_view = _opens_with_client_syn(records, ts)
    order = np.lexsort((np.arange(records.n_packets), ts, p["flow"]))
    flow = p["flow"][order]
    starts = np.r_[0, np.flatnonzero(flow[1:] != flow[:-1]) + 1] if len(order) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(order)]
    flags = p["tcp_flags"].copy()
    inserts: list[tuple[int, int, int]] = []  # (row to copy: the SYN, server row or -1, time)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[a:b]
        if not in_view[int(flow[a])] or not (p["payload_len"][rows] > 0).any():
            continue
        first_data = int(np.argmax(p["payload_len"][rows] > 0))
        server = np.flatnonzero(p["direction"][rows[1:]] == 1) + 1
        if any((flags[rows[k]] & (SYN | ACK)) == SYN | ACK for k in server[server < first_data].tolist()):
            continue  # opened (a refused connection may come first, on the same ports)
        if len(server) and server[0] < first_data and p["payload_len"][rows[server[0]]] == 0 and not (
                flags[rows[server[0]]] & (FIN | RST)):
            flags[rows[server[0]]] = int(flags[rows[server[0]]]) | SYN | ACK
            counts["tcp_synack_flags"] = counts.get("tcp_synack_flags", 0) + 1
            continue
        next_ts = int(ts[rows[1]]) if len(rows) > 1 else int(ts[rows[0]]) + 2_000
        inserts.append((int(rows[0]), int(rows[server[0]]) if len(server) else -1, (int(ts[rows[0]]) + next_ts) // 2))
    packets = {**p, "tcp_flags": flags}
    if not inserts:
        return replace(records, packets=packets), ts, np.arange(records.n_packets, dtype=np.int64)
    syn_rows = np.array([s for s, _, _ in inserts], np.int64)
    new = {k: v[syn_rows].copy() for k, v in packets.items()}
    new["direction"][:] = 1
    new["tcp_flags"][:] = SYN | ACK
    new["seq"][:] = 0
    new["ack"][:] = 1
    new["ip_id"][:] = 0
    new["payload_len"][:] = new["payload_stored"][:] = 0
    new["ts_ns"][:] = [t for _, _, t in inserts]
    for k, (_, server_row, _) in enumerate(inserts):
        if server_row >= 0:
            new["ttl"][k], new["window"][k] = p["ttl"][server_row], p["window"][server_row]
    counts["tcp_synack_added"] = counts.get("tcp_synack_added", 0) + len(inserts)
    at = syn_rows + 1  # each right after its SYN, so that record order stays time order in a flow
    merged = {k: np.insert(v, at, new[k]) for k, v in packets.items()}
    raw = {k: np.insert(v, at, np.zeros(len(inserts), v.dtype)) for k, v in records.raw_derived.items()}
    origin = np.insert(np.arange(records.n_packets, dtype=np.int64), at, syn_rows)
    return replace(records, packets=merged, raw_derived=raw), np.insert(ts, at, new["ts_ns"]), origin
