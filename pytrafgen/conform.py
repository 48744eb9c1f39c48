"""Conform generated flows to their protocols before they are built: what the protocol
determines is computed from the flow, not taken from the sample.

Shared by every generator (``write_records`` / ``build_frames(conform=True)``); each change is
counted per field, so the report can show what the generator got wrong (``raw``: built
without these changes) next to what is written (``final``).

TCP, per connection in time order (a SYN after a FIN or RST opens a new one on the same ports):

* a side's FIN moves to its last data segment (a FIN followed by more data from the same side
  loses it), a RST followed by data or a SYN from the same side is dropped: teardown comes
  after the data;
* sequence numbers follow each side's bytes (SYN and FIN count one), acknowledgement numbers
  follow the peer's bytes sent so far: every ACK answers what the other side sent;
* option lists are rebuilt from their well-formed options of known kinds (MSS, window scale
  clamped to 14, SACK-permitted, SACK, timestamps) with zero padding after an end-of-list, in
  the same space (a malformed option and everything after it is dropped).

CoAP over UDP (RFC 7252): an option whose delta or length runs past the datagram, whose number
is not a registered one (0 included: the zero padding of a payload stored only in part reads as
option 0), or a payload marker with nothing after it ends the message there: the datagram keeps
its header, token and the options that fit, and is shortened to them.

A TCP flow's server port follows the service its client speaks (HTTP on 1883 moves to 80, an
MQTT CONNECT on 80/8080 to 1883).

In flows in view from their start (opening with the client's SYN), messages the peer could not
have asked for are not sent: a repeated MQTT CONNECT in one connection becomes a PINGREQ, an MQTT
acknowledgement answering no request of the peer and an HTTP final response beyond the requests
made leave their segment without data.

MQTT over TCP (port 1883): an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
UNSUBACK) carries the packet identifier of the oldest request of the peer it can answer that is
still unanswered (PUBLISH of the right QoS, PUBREC, PUBREL, SUBSCRIBE, UNSUBSCRIBE), where the
flow holds one; an identifier of 0 (never valid) becomes the side's next unused one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pytrafgen.records import FieldRecords

FIN, SYN, RST, ACK = 1, 2, 4, 16
MAX_WINDOW_SCALE = 14
# kind -> allowed lengths (RFC 9293, 7323, 2018)
TCP_OPTION_LENGTHS: dict[int, tuple[int, ...]] = {2: (4,), 3: (3,), 4: (2,), 5: (10, 18, 26, 34), 8: (10,)}
COAP_PORT = 5683
EXTENDED_BYTES = {13: 1, 14: 2}
# registered CoAP option numbers (RFC 7252, 7641, 7959, 8613, 7967, 9175)
COAP_OPTIONS = frozenset((1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 17, 20, 21, 23, 27, 28, 35, 39, 60, 252, 258,
                          292))  # CoAP option delta/length nibble -> extended bytes after the header


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


def _coap_options_end(dgram: bytes) -> int:
    """Where the well-formed part of a CoAP message ends: after the header, token and every
    option that fits (then the payload, when a marker with bytes after it follows)."""
    if len(dgram) < 4 or dgram[0] >> 6 != 1 or (dgram[0] & 0x0F) > 8:
        return len(dgram)  # not a CoAP version 1 message: not ours to change
    i = 4 + (dgram[0] & 0x0F)
    if i > len(dgram):
        return len(dgram)
    number = 0
    while i < len(dgram):
        byte = dgram[i]
        if byte == 0xFF:
            return len(dgram) if i + 1 < len(dgram) else i  # a marker needs a payload after it
        delta, length = byte >> 4, byte & 0x0F
        if delta == 15 or length == 15:
            return i
        j = i + 1 + EXTENDED_BYTES.get(delta, 0)
        if j > len(dgram):
            return i
        if delta in EXTENDED_BYTES:
            width = EXTENDED_BYTES[delta]
            delta = int.from_bytes(dgram[i + 1:i + 1 + width], "big") + (13 if width == 1 else 269)
        number += delta
        if number not in COAP_OPTIONS:
            return i  # an unregistered option number (0 included) is not one a client sends
        if length in EXTENDED_BYTES:
            width = EXTENDED_BYTES[length]
            if j + width > len(dgram):
                return i
            length = int.from_bytes(dgram[j:j + width], "big") + (13 if width == 1 else 269)
            j += width
        if j + length > len(dgram):
            return i
        i = j + length
    return i


MQTT_PORT = 1883
# MQTT acknowledgement type -> (request type it answers, QoS that request must have or None)
MQTT_ANSWERS = {4: (3, 1), 5: (3, 2), 6: (5, None), 7: (6, None), 9: (8, None), 11: (10, None)}
MQTT_REQUESTS = (3, 5, 6, 8, 10)  # types an identifier-carrying answer can follow


def _mqtt_packets(payload: bytes) -> list[tuple[int, int, int]]:
    """(type, QoS for PUBLISH else 0, offset of the packet identifier or -1) of each control
    packet that starts in ``payload``."""
    out: list[tuple[int, int, int]] = []
    i = 0
    while i + 2 <= len(payload):
        ptype, flags = payload[i] >> 4, payload[i] & 0x0F
        remaining, j = 0, i + 1
        for k in range(4):
            if j >= len(payload):
                return out
            byte = payload[j]
            j += 1
            remaining += (byte & 0x7F) << (7 * k)
            if not byte & 0x80:
                break
        else:
            return out
        end = j + remaining
        qos = (flags >> 1) & 3 if ptype == 3 else 0
        id_at = -1
        if ptype in (4, 5, 6, 7, 8, 9, 10, 11):
            id_at = j
        elif ptype == 3 and qos and j + 2 <= len(payload):
            id_at = j + 2 + int.from_bytes(payload[j:j + 2], "big")
        if id_at + 2 > min(end, len(payload)):
            id_at = -1
        out.append((ptype, qos, id_at))
        i = end
    return out


def conform_mqtt_ids(records: FieldRecords, blob: np.ndarray, ts: np.ndarray) -> int:
    """Acknowledgements carry the identifier of the peer request they answer (see the module
    doc); ``blob`` is changed in place. Returns the count of packets changed."""
    p = records.packets
    fl = records.flows
    mqtt_flow = (fl["proto"] == 6) & ((fl["server_port"] == MQTT_PORT) | (fl["client_port"] == MQTT_PORT))
    rows = np.flatnonzero(mqtt_flow[p["flow"]] & (p["payload_stored"] > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    changed = 0
    pending: dict[int, list[list[tuple[int, int, int]]]] = {}
    for i in rows.tolist():
        side = pending.setdefault(int(p["flow"][i]), [[], []])
        d = int(p["direction"][i])
        off = int(p["payload_off"][i])
        payload = blob[off:off + int(p["payload_stored"][i])].tobytes()
        touched = False
        for ptype, qos, id_at in _mqtt_packets(payload):
            if id_at < 0:
                continue
            if ptype in MQTT_ANSWERS:
                want, want_qos = MQTT_ANSWERS[ptype]
                match = next((k for k, (t, q, _) in enumerate(side[1 - d])
                              if t == want and (want_qos is None or q == want_qos)), None)
                if match is not None:
                    pid = side[1 - d].pop(match)[2]
                    if payload[id_at:id_at + 2] != pid.to_bytes(2, "big"):
                        blob[off + id_at:off + id_at + 2] = np.frombuffer(pid.to_bytes(2, "big"), np.uint8)
                        touched = True
            pid = int.from_bytes(bytes(blob[off + id_at:off + id_at + 2]), "big")
            if pid == 0:  # identifiers are non-zero: the side's next unused one
                used = {q for _, _, q in side[d]}
                pid = next(k for k in range(1, 65536) if k not in used)
                blob[off + id_at:off + id_at + 2] = np.frombuffer(pid.to_bytes(2, "big"), np.uint8)
                touched = True
            if ptype in MQTT_REQUESTS and (ptype != 3 or qos):
                side[d].append((ptype, qos, pid))
        changed += touched
    return changed


HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")


def conform_service_ports(records: FieldRecords, blob: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Server ports that agree with the service the client speaks: a TCP flow on MQTT's 1883
    whose client opens with an HTTP request is served on 80, one on 80/8080 whose client opens
    with an MQTT CONNECT on 1883 (the payload says which service it is; the port follows)."""
    p, fl = records.packets, records.flows
    port = fl["server_port"].copy()
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (p["direction"] == 0) & (p["payload_stored"] > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    flows, first = np.unique(p["flow"][rows], return_index=True)
    for f, i in zip(flows.tolist(), rows[first].tolist(), strict=True):
        off = int(p["payload_off"][i])
        head = blob[off:off + min(int(p["payload_stored"][i]), 8)].tobytes()
        if port[f] == MQTT_PORT and head.startswith(HTTP_METHODS):
            port[f] = 80
        elif port[f] in (80, 8080) and head[:1] == b"\x10":
            port[f] = MQTT_PORT
    return port


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


def conform_app_messages(records: FieldRecords, blob: np.ndarray, payload_len: np.ndarray,
                         payload_stored: np.ndarray, ts: np.ndarray, counts: dict[str, int]) -> None:
    """Messages the peer could not have asked for, in flows in view from their start: a repeated
    MQTT CONNECT in one connection is sent as a PINGREQ; an MQTT acknowledgement that answers no
    request of the peer, and an HTTP final response beyond the requests made, are not sent (their
    segment carries no data). In place on ``blob`` and the payload columns."""
    p, fl = records.packets, records.flows
    in_view = _opens_with_client_syn(records, ts)
    rows = np.flatnonzero(in_view[p["flow"]] & (payload_stored > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    mqtt = (fl["server_port"] == MQTT_PORT) | (fl["client_port"] == MQTT_PORT)
    state: dict[int, dict[str, Any]] = {}
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        st = state.setdefault(f, {"connect": False, "requests": 0, "responses": 0, "pending": [[], []]})
        off = int(p["payload_off"][i])
        payload = blob[off:off + int(payload_stored[i])].tobytes()
        if mqtt[f]:
            packets = _mqtt_packets(payload)
            if d == 0 and payload[:1] == b"\x10" and payload_stored[i] >= 2:
                if st["connect"]:
                    blob[off:off + 2] = (0xC0, 0x00)
                    payload_len[i] = payload_stored[i] = 2
                    counts["mqtt_repeated_connect"] = counts.get("mqtt_repeated_connect", 0) + 1
                    continue
                st["connect"] = True
            if len(packets) == 1 and packets[0][0] in MQTT_ANSWERS:
                want, want_qos = MQTT_ANSWERS[packets[0][0]]
                if not any(t == want and (want_qos is None or q == want_qos) for t, q in st["pending"][1 - d]):
                    payload_len[i] = payload_stored[i] = 0
                    counts["mqtt_unanswerable_acks"] = counts.get("mqtt_unanswerable_acks", 0) + 1
                    continue
            for ptype, qos, _ in packets:
                if ptype in MQTT_ANSWERS:
                    want, want_qos = MQTT_ANSWERS[ptype]
                    match = next((k for k, (t, q) in enumerate(st["pending"][1 - d])
                                  if t == want and (want_qos is None or q == want_qos)), None)
                    if match is not None:
                        st["pending"][1 - d].pop(match)
                if ptype in MQTT_REQUESTS and (ptype != 3 or qos):
                    st["pending"][d].append((ptype, qos))
        elif d == 0 and payload.startswith(HTTP_METHODS):
            st["requests"] += 1
        elif d == 1 and payload[:5] == b"HTTP/" and payload[9:10] != b"1":  # a final response, not 1xx
            if st["responses"] >= st["requests"]:
                payload_len[i] = payload_stored[i] = 0
                counts["http_unrequested_responses"] = counts.get("http_unrequested_responses", 0) + 1
                continue
            st["responses"] += 1


def conform(records: FieldRecords, ts: np.ndarray) -> tuple[FieldRecords, dict[str, int]]:
    """``records`` conformed (see the module doc) and the count of packets changed per field."""
    counts: dict[str, int] = {}
    p = records.packets
    blob = records.blob.copy()
    is_tcp = records.flows["proto"][p["flow"]] == 6
    opt_len = p["l4_opt_len"]
    for i in np.flatnonzero(is_tcp & (opt_len > 0)).tolist():
        off, n = int(p["l4_opt_off"][i]), int(opt_len[i])
        raw = blob[off:off + n].tobytes()
        fixed = normalise_tcp_options(raw)
        if fixed != raw:
            blob[off:off + n] = np.frombuffer(fixed, np.uint8)
            counts["tcp_options"] = counts.get("tcp_options", 0) + 1
    counts["mqtt_packet_ids"] = conform_mqtt_ids(records, blob, ts)
    payload_stored = p["payload_stored"].copy()
    payload_len = p["payload_len"].copy()
    conform_app_messages(records, blob, payload_len, payload_stored, ts, counts)
    coap = np.flatnonzero((records.flows["proto"][p["flow"]] == 17)
                          & ((records.flows["server_port"][p["flow"]] == COAP_PORT)
                             | (records.flows["client_port"][p["flow"]] == COAP_PORT)) & (payload_len > 0))
    for i in coap.tolist():
        off, stored, full = int(p["payload_off"][i]), int(payload_stored[i]), int(payload_len[i])
        dgram = blob[off:off + stored].tobytes() + bytes(full - stored)  # as the builder pads it
        end = _coap_options_end(dgram)
        if end < full:
            payload_len[i] = end
            payload_stored[i] = min(stored, end)
            counts["coap_options"] = counts.get("coap_options", 0) + 1
    server_port = conform_service_ports(records, blob, ts)
    counts["service_port_flows"] = int(np.sum(server_port != records.flows["server_port"]))
    staged = replace(records, packets={**p, "payload_len": payload_len, "payload_stored": payload_stored},
                     flows={**records.flows, "server_port": server_port}, blob=blob)
    columns = conform_tcp_order(staged, ts, counts)  # numbers follow the payloads as sent
    out = replace(staged, packets={**staged.packets, **columns})
    return out, {k: v for k, v in counts.items() if v}


__all__ = ["conform", "conform_tcp_order", "normalise_tcp_options"]
