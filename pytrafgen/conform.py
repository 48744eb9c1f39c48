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
* a SYN or SYN-ACK advertising a zero window advertises its side's largest window in the flow
  (65535 if none);
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
have asked for are not sent: a repeated MQTT CONNECT in one connection becomes a PINGREQ, a
segment of MQTT acknowledgements none of which answers a request of the peer and an HTTP final
response beyond the requests made leave their segment without data.

MQTT streams frame (flows the MQTT plugin recognises, as the evaluation does; each side in time
order, packets carried across segments): a reserved packet type, a PUBLISH of QoS 3, an
over-long remaining-length encoding or a packet whose fields do not parse ends its segment there
(the rest is not sent); a fixed-size 3.1.1 packet (CONNACK, PUBACK..PUBCOMP, UNSUBACK, PINGREQ,
PINGRESP, DISCONNECT) whose remaining length disagrees with its layout is sent with the layout's;
fixed-header flags are the type's required ones; a CONNACK's return code is a defined one; a
packet type only the other side sends ends the segment. A
client that opens a session in view (its SYN in the flow) with anything but CONNECT sends a
CONNECT first. A side not in view is framed only where the rules judge it (it frames from its
first byte).

HTTP heads the HTTP rules would reject, in segments that start a message, are rebuilt from the
fields they spell: the start line (a registered method, an origin-form target or "/", HTTP/1.0 or
1.1; a status code in 100-599 and its reason phrase), header lines that are ``name: value``, one
Host on an HTTP/1.1 request (the value the generated requests use most); a message with no method
or status code to keep is not sent, nor, in a flow whose client opened with a request, a
client's status line or a server's request. A flow in view from the client's SYN to a well-known TCP
service port whose client still opens with bytes of no such service sends its client segments
without data.

Every change is counted per field (``mqtt_invalid_packets``, ``mqtt_remaining_length``,
``mqtt_flags``, ``mqtt_connack_codes``, ``mqtt_connect_added``, ``http_start_lines``,
``http_header_lines``, ``http_host``, ``http_undecodable_messages``,
``unmatched_service_payloads``, ...); on the real captures of the lab recording SEED=3 the MQTT
and HTTP counts are 0, whole and cut at 16 packets.

MQTT over TCP (port 1883): an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
UNSUBACK) carries the packet identifier of the oldest request of the peer it can answer that is
still unanswered (PUBLISH of the right QoS, PUBREC, PUBREL, SUBSCRIBE, UNSUBSCRIBE), where the
flow holds one; an identifier of 0 (never valid) becomes the side's next unused one. These MQTT
steps read only segments that start a packet (never the middle of a long PUBLISH).
"""

from __future__ import annotations

import re
from dataclasses import replace
from http import HTTPStatus
from typing import Any

import numpy as np

from pytrafgen.protocols.mqtt_wire import encode_remaining_length
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


def conform_mqtt_ids(records: FieldRecords, blob: np.ndarray, ts: np.ndarray, at_packet: np.ndarray) -> int:
    """Acknowledgements carry the identifier of the peer request they answer (see the module
    doc), read from the segments that start an MQTT packet (``at_packet``); ``blob`` is changed
    in place. Returns the count of packets changed."""
    p = records.packets
    rows = np.flatnonzero(at_packet & (p["payload_stored"] > 0))
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


class _Payloads:
    """Segment payloads as the builder sends them (stored bytes, then zeros to the length),
    with replacements appended to a new blob: a payload can shrink or change, never in place
    of another's bytes."""

    def __init__(self, blob: np.ndarray, off: np.ndarray, length: np.ndarray, stored: np.ndarray) -> None:
        self.blob, self.off, self.length, self.stored = blob, off.copy(), length.copy(), stored.copy()
        self.extra = bytearray()  # replacement payloads, placed after the blob

    def get(self, i: int) -> bytes:
        off, stored = int(self.off[i]), int(self.stored[i])
        if off >= len(self.blob):
            data = bytes(self.extra[off - len(self.blob):off - len(self.blob) + stored])
        else:
            data = self.blob[off:off + stored].tobytes()
        return data + bytes(int(self.length[i]) - stored)

    def set(self, i: int, data: bytes) -> None:
        if self.get(i)[:len(data)] == data:  # a cut: the same bytes, fewer of them
            self.length[i] = len(data)
            self.stored[i] = min(int(self.stored[i]), len(data))
            return
        self.off[i] = len(self.blob) + len(self.extra)
        self.length[i] = self.stored[i] = len(data)
        self.extra += data

    def new_blob(self) -> np.ndarray:
        return np.concatenate([self.blob, np.frombuffer(bytes(self.extra), np.uint8)])


# MQTT 3.1/3.1.1 packets whose body has one size (MQTT 5.0 adds reason codes and properties)
MQTT_FIXED_BODY = {2: 2, 4: 2, 5: 2, 6: 2, 7: 2, 11: 2, 12: 0, 13: 0, 14: 0}
MQTT_REQUIRED_FLAGS = {t: (2 if t in (6, 8, 10) else 0) for t in range(16)}
# types only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) and only a server (CONNACK,
# SUBACK, UNSUBACK, PINGRESP), by direction (0: client)
MQTT_SENT_BY = (frozenset((1, 8, 10, 12)), frozenset((2, 9, 11, 13)))
# a CONNECT (3.1.1, clean session, keep-alive 60 s, empty client id) for a session that has none
MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def _mqtt_spec() -> Any:
    """The MQTT plugin's protocol (its parser is the one its rules judge with), or None."""
    from pytrafgen.plugins import get_registry

    return get_registry().protocols.get("mqtt")


def _mqtt_segment(data: bytes, parse: Any, direction: int, version: int,
                  counts: dict[str, int]) -> tuple[bytes, int]:
    """``data`` (one segment, from a packet boundary) framed as MQTT: reserved types, PUBLISH
    QoS 3, over-long remaining-length encodings and packets whose fields do not parse end the
    segment there; a fixed-size packet (3.1.1) whose remaining length disagrees with its
    layout gets the layout's length; a non-PUBLISH packet gets its type's required flags.
    Returns the bytes and how many bytes of a last packet continue in the next segment (negative:
    the last ``-n`` bytes are a fixed header the next segment ends)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        msgs = parse(data[pos:], direction)
        m: dict[str, Any] = msgs[0] if msgs else {"type_name": "INVALID"}
        ptype = m.get("type", -1)
        reason = None
        if m["type_name"] == "INVALID" and m.get("error") == "incomplete":  # a header the next segment ends
            return bytes(out) + data[pos:], -(len(data) - pos)
        reserved = ptype == 0 or (ptype == 15 and version != 5) or (ptype == 3 and m["qos"] == 3)
        if m["type_name"] == "INVALID" or reserved:
            reason = "mqtt_invalid_packets"
        elif ptype in MQTT_SENT_BY[1 - direction]:
            reason = "mqtt_wrong_side_packets"
        elif not m["minimal_length"]:
            reason = "mqtt_remaining_length"
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
            return bytes(out), 0
        first = data[pos]
        if ptype != 3 and first & 0x0F != MQTT_REQUIRED_FLAGS[ptype]:
            first = (ptype << 4) | MQTT_REQUIRED_FLAGS[ptype]
            counts["mqtt_flags"] = counts.get("mqtt_flags", 0) + 1
        elif ptype == 3 and m["qos"] == 0 and m["dup"]:
            first &= 0xF7
            counts["mqtt_flags"] = counts.get("mqtt_flags", 0) + 1
        header = m["length"] - m["remaining_length"] if m["complete"] else 1 + len(encode_remaining_length(m["remaining_length"]))
        if not m["complete"]:  # runs on in the next segment
            out += bytes([first]) + data[pos + 1:]
            return bytes(out), m["remaining_length"] - (len(data) - pos - header)
        body = data[pos + header:pos + m["length"]]
        length = data[pos + 1:pos + header]
        if "malformed" in m and version != 5:  # fields are judged as 3.1.1 (5.0 adds properties)
            size = MQTT_FIXED_BODY.get(ptype)
            if size is None or len(body) < size:
                counts["mqtt_invalid_packets"] = counts.get("mqtt_invalid_packets", 0) + 1
                return bytes(out), 0
            counts["mqtt_remaining_length"] = counts.get("mqtt_remaining_length", 0) + 1
            length, body = encode_remaining_length(size), body[:size]
        if ptype == 2 and version != 5:
            body = _connack_body(body, counts)
        out += bytes([first]) + length + body
        pos += m["length"]
    return bytes(out), 0


def _connack_body(body: bytes, counts: dict[str, int]) -> bytes:
    """A 3.1/3.1.1 CONNACK's flags and return code made valid: a code above 5 (none defined)
    becomes 0 (accepted), only the session-present bit is a flag, and it is 0 on a refusal."""
    code = body[1] if body[1] <= 5 else 0
    fixed = bytes([body[0] & 1 if code == 0 else 0, code])
    if fixed != body:
        counts["mqtt_connack_codes"] = counts.get("mqtt_connack_codes", 0) + 1
    return fixed


def conform_mqtt_framing(records: FieldRecords, pay: _Payloads, ts: np.ndarray,
                         counts: dict[str, int]) -> np.ndarray:
    """MQTT streams that frame (see ``_mqtt_segment``), per side in time order; a side that did
    not send its SYN in the flow is framed from its first segment only if that frames from its
    first byte (else it may continue a packet begun before the flow, and the rules do not
    judge it). A client that opens a session in
    view (its SYN in the flow) without CONNECT sends one first. Returns, per packet, whether
    its payload starts an MQTT packet of a flow the MQTT rules judge (the segments whose
    packets the later steps may read)."""
    at_packet = np.zeros(records.n_packets, bool)
    spec = _mqtt_spec()
    if spec is None:
        return at_packet
    parse = spec.parse
    p, fl = records.packets, records.flows
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    first: dict[tuple[int, int], bytes] = {}
    for i in rows.tolist():
        first.setdefault((int(p["flow"][i]), int(p["direction"][i])), b"")
        if not first[(int(p["flow"][i]), int(p["direction"][i]))]:
            first[(int(p["flow"][i]), int(p["direction"][i]))] = pay.get(i)[:512]
    # the flows the MQTT rules judge: recognised as the evaluation recognises them
    mqtt = {f for f in {k[0] for k in first}
            if spec.recognise(int(fl["server_port"][f]), first.get((f, 0), b""), first.get((f, 1), b""))}
    rows = rows[np.isin(p["flow"][rows], np.fromiter(mqtt, np.int64, len(mqtt)))]
    syn = np.flatnonzero((p["tcp_flags"] & SYN) != 0)
    syn_sides = set(zip(p["flow"][syn].tolist(), p["direction"][syn].tolist(), strict=True))
    # side -> bytes of a packet still to come, or a fixed header begun (None: not framed)
    state: dict[tuple[int, int], int | bytes | None] = {}
    version: dict[int, int] = {}
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        data = pay.get(i)
        if (f, d) not in state:
            in_view = (f, d) in syn_sides
            if d == 0 and in_view and data[:1] != b"\x10":
                data = MQTT_CONNECT + data
                counts["mqtt_connect_added"] = counts.get("mqtt_connect_added", 0) + 1
            if not in_view and not _mqtt_starts_packet(data, parse, d):
                state[(f, d)] = None
            else:
                state[(f, d)] = 0
            head = parse(data, d)[:1]
            if head and head[0]["type_name"] in ("CONNECT", "CONNACK"):  # the version the session speaks
                version.setdefault(f, int(head[0].get("protocol_level", head[0]["version"])))
        pending = state[(f, d)]
        if pending is None:
            continue
        if isinstance(pending, bytes):  # a fixed header begun in the segment before
            whole, rest = _mqtt_segment(pending + data, parse, d, version.get(f, 4), counts)
            framed = whole[len(pending):] if whole[:len(pending)] == pending else b""
            skip = 0
        else:
            skip = min(pending, len(data))
            whole, rest = _mqtt_segment(data[skip:], parse, d, version.get(f, 4), counts)
            framed = whole
            rest += pending - skip if rest >= 0 else 0
        state[(f, d)] = rest if rest >= 0 else whole[rest:]
        if data[:skip] + framed != pay.get(i):
            pay.set(i, data[:skip] + framed)
        at_packet[i] = pending == 0 and bool(framed)
    return at_packet


def _mqtt_starts_packet(data: bytes, parse: Any, direction: int) -> bool:
    """Whether a stream that may begin mid-packet frames from ``data``'s first byte (as the
    MQTT rules decide whether to judge it)."""
    msgs = parse(data, direction)
    return bool(msgs) and msgs[0]["type_name"] != "INVALID"


HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")
HTTP_METHOD_NAMES = frozenset(m.strip() for m in HTTP_METHODS)


HTTP_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
HTTP_TARGET = re.compile(rb"/[!-~]*\Z")
HTTP_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}(?: [^\r\n]*)?\Z")


def _http_spec() -> Any:
    from pytrafgen.plugins import get_registry

    return get_registry().protocols.get("http")


def _http_head(data: bytes, direction: int, host: bytes, counts: dict[str, int]) -> bytes | None:
    """``data`` (a segment that starts a message) with its start line rebuilt from the fields
    it spells (a registered method, an origin-form target or "/", HTTP/1.0 or 1.1; a response's
    first status code in 100-599 and its reason phrase), header lines that are not
    ``name: value`` dropped and an HTTP/1.1 request given exactly one Host; zero padding after
    a head that does not end is dropped (a request's head stays open, as a slow client's does;
    a response's ends there). None when no method or status code is there to keep."""
    padded = data.find(b"\x00")
    end = data.find(b"\r\n\r\n")
    if end >= 0 and (padded < 0 or end < padded):
        head, rest, closed = data[:end], data[end + 4:], True
    elif padded >= 0:  # the rest is the builder's zero padding: a request's head stays open
        head, rest, closed = data[:padded], b"", direction == 1
    else:
        head, rest, closed = data, b"", False
    trailing = b"\r\n" if not closed and head.endswith(b"\r\n") else b""  # an open head's last line end
    lines = head[:len(head) - len(trailing)].split(b"\r\n")
    start = lines[0]
    words = start.split()
    version = b"HTTP/1.0" if start.endswith(b"1.0") else b"HTTP/1.1"
    if direction == 0:
        if not words or words[0] not in HTTP_METHOD_NAMES:
            return None
        target = words[1] if len(words) > 1 and HTTP_TARGET.match(words[1]) and words[1] != version else b"/"
        new_start = b" ".join((words[0], target, version))
    else:
        code = re.search(rb"(?<![0-9])[1-5][0-9]{2}(?![0-9])", start)
        if code is None:
            return None
        status = int(code.group())
        phrase = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""
        new_start = b"HTTP/1.1 " + code.group() + (b" " + phrase if phrase else b"")
        version = b"HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and HTTP_TOKEN.match(name) and all(32 <= c < 127 or c == 9 for c in value):
            headers.append(line)
    if len(headers) != len(lines) - 1:
        counts["http_header_lines"] = counts.get("http_header_lines", 0) + len(lines) - 1 - len(headers)
    if direction == 0 and version == b"HTTP/1.1" and closed:
        hosts = [h for h in headers if h.split(b":", 1)[0].lower() == b"host"]
        if len(hosts) != 1:
            headers = [b"Host: " + host] + [h for h in headers if h not in hosts]
            counts["http_host"] = counts.get("http_host", 0) + 1
    if new_start != start:
        counts["http_start_lines"] = counts.get("http_start_lines", 0) + 1
    return b"\r\n".join([new_start, *headers]) + (b"\r\n\r\n" + rest if closed else trailing)


def conform_http_heads(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int]) -> None:
    """HTTP messages whose head the HTTP rules would reject, rebuilt (``_http_head``) where a
    segment starts a message: a side's first segment when its SYN is in the flow, and any
    segment opening like a request (client) or a status line (server); a message with no
    method or status code to keep is not sent (its segment carries no data)."""
    spec = _http_spec()
    if spec is None:
        return
    p, fl = records.packets, records.flows
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    first: dict[tuple[int, int], int] = {}
    for i in rows.tolist():
        first.setdefault((int(p["flow"][i]), int(p["direction"][i])), i)
    flows = {f for f, _ in first}
    http = {f for f in flows if spec.recognise(int(fl["server_port"][f]),
                                               pay.get(first[(f, 0)])[:512] if (f, 0) in first else b"",
                                               pay.get(first[(f, 1)])[:512] if (f, 1) in first else b"")}
    syn = np.flatnonzero((p["tcp_flags"] & SYN) != 0)
    syn_sides = set(zip(p["flow"][syn].tolist(), p["direction"][syn].tolist(), strict=True))
    hosts: dict[bytes, int] = {}
    for i in rows.tolist():
        if int(p["flow"][i]) in http and p["direction"][i] == 0:
            for line in pay.get(i).split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"host" and HTTP_TARGET.match(b"/" + value.strip()):
                    hosts[value.strip()] = hosts.get(value.strip(), 0) + 1
    host = max(hosts, key=lambda h: hosts[h]) if hosts else b"localhost"
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        if f not in http:
            continue
        data = pay.get(i)
        client_first = pay.get(first[(f, 0)])[:8] if (f, 0) in first else b""
        request = data.split(b" ", 1)[0] in HTTP_METHOD_NAMES and b" HTTP/1." in data.split(b"\r\n", 1)[0]
        if client_first.startswith(HTTP_METHODS) and ((d == 0 and data[:5] == b"HTTP/") or (d == 1 and request)):
            pay.set(i, b"")  # a client's response, a server's request: the other side's message
            counts["http_wrong_side_messages"] = counts.get("http_wrong_side_messages", 0) + 1
            continue
        opens = data.split(b" ", 1)[0] in HTTP_METHOD_NAMES if d == 0 else data[:2] == b"HT"
        if not (opens or (first[(f, d)] == i and (f, d) in syn_sides)):
            continue
        msgs = spec.parse(data, d)
        ok = bool(msgs) and msgs[0].get("kind") != "invalid" and (
            d == 1 or msgs[0]["version"] != "HTTP/1.1"
            or sum(n.lower() == "host" for n, _ in msgs[0]["headers"]) == 1)
        # a head that does not end in the segment: a request still open (a slow client) is not
        # judged, nor a response whose start line is one
        start = data.split(b"\r\n", 1)[0].split(b"\x00", 1)[0].rstrip(b"\r")
        if msgs and msgs[0].get("error") == "incomplete" and (d == 0 or HTTP_STATUS_LINE.match(start)):
            ok = True
        if ok:
            continue
        fixed = _http_head(data, d, host, counts)
        if fixed is None:
            counts["http_undecodable_messages"] = counts.get("http_undecodable_messages", 0) + 1
            fixed = b""
        if fixed != data:
            pay.set(i, fixed)


def conform_unmatched_service(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int]) -> None:
    """A flow in view from the client's SYN to a well-known TCP service port (HTTP 80/8080,
    MQTT 1883) whose client opens with bytes of no such service (after the repairs above):
    the client's segments are sent without data, counted per packet."""
    from pytrafgen.protocols.rules_l3l4 import _service_matches

    p, fl = records.packets, records.flows
    in_view = _opens_with_client_syn(records, ts)
    rows = np.flatnonzero(in_view[p["flow"]] & (p["direction"] == 0) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    flows, first = np.unique(p["flow"][rows], return_index=True)
    for f, i in zip(flows.tolist(), rows[first].tolist(), strict=True):
        if _service_matches(int(fl["server_port"][f]), pay.get(i)[:16], 6) is False:
            for j in rows[p["flow"][rows] == f].tolist():
                pay.set(j, b"")
                counts["unmatched_service_payloads"] = counts.get("unmatched_service_payloads", 0) + 1


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
                         payload_stored: np.ndarray, ts: np.ndarray, counts: dict[str, int],
                         mqtt_at_packet: np.ndarray) -> None:
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
            if not mqtt_at_packet[i]:  # the middle of a packet, or not MQTT the rules judge
                continue
            packets = _mqtt_packets(payload)
            if d == 0 and payload[:1] == b"\x10" and payload_stored[i] >= 2:
                if st["connect"]:
                    blob[off:off + 2] = (0xC0, 0x00)
                    payload_len[i] = payload_stored[i] = 2
                    counts["mqtt_repeated_connect"] = counts.get("mqtt_repeated_connect", 0) + 1
                    continue
                st["connect"] = True
            if packets and all(t in MQTT_ANSWERS for t, _, _ in packets) and not any(
                    t == MQTT_ANSWERS[a][0] and MQTT_ANSWERS[a][1] in (None, q)
                    for a, _, _ in packets for t, q in st["pending"][1 - d]):  # acknowledgements only, none answering
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
    server_port = conform_service_ports(records, blob, ts)  # the service decides how payloads frame
    counts["service_port_flows"] = int(np.sum(server_port != records.flows["server_port"]))
    records = replace(records, flows={**records.flows, "server_port": server_port})
    pay = _Payloads(blob, p["payload_off"], p["payload_len"], p["payload_stored"])
    at_packet = conform_mqtt_framing(records, pay, ts, counts)
    conform_http_heads(records, pay, ts, counts)
    conform_unmatched_service(records, pay, ts, counts)
    blob = pay.new_blob()
    records = replace(records, blob=blob, packets={**p, "payload_off": pay.off, "payload_len": pay.length,
                                                   "payload_stored": pay.stored})
    p = records.packets
    counts["mqtt_packet_ids"] = conform_mqtt_ids(records, blob, ts, at_packet)
    payload_stored = p["payload_stored"].copy()
    payload_len = p["payload_len"].copy()
    conform_app_messages(records, blob, payload_len, payload_stored, ts, counts, at_packet)
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
    staged = replace(records, packets={**p, "payload_len": payload_len, "payload_stored": payload_stored},
                     blob=blob)
    columns = conform_tcp_order(staged, ts, counts)  # numbers follow the payloads as sent
    out = replace(staged, packets={**staged.packets, **columns, "window": conform_syn_windows(staged, counts)})
    return out, {k: v for k, v in counts.items() if v}


__all__ = ["conform", "conform_tcp_order", "normalise_tcp_options"]
