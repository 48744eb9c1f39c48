"""MQTT by construction: framing per side, packet identifiers that answer their requests
(see the package doc)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytrafgen.conform.payloads import _Payloads
from pytrafgen.conform.tcp import SYN
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.protocols.mqtt_wire import encode_remaining_length
from pytrafgen.records import FieldRecords

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


def _mqtt_packet_end(payload: bytes, start: int) -> int:
    """Where the control packet that starts at ``start`` ends (the payload's end if it runs on)."""
    remaining, j = 0, start + 1
    for k in range(4):
        if j >= len(payload):
            return len(payload)
        remaining += (payload[j] & 0x7F) << (7 * k)
        j += 1
        if not payload[j - 1] & 0x80:
            break
    return min(j + remaining, len(payload))


def _run_on_start(payload: bytes) -> int | None:
    """Where the packet that starts in ``payload`` and runs on into the next segment (its fixed
    header or its body not ended here) begins; None when every packet ends in ``payload``."""
    i = 0
    while i < len(payload):
        remaining, j = 0, i + 1
        for k in range(4):
            if j >= len(payload):
                return i
            remaining += (payload[j] & 0x7F) << (7 * k)
            j += 1
            if not payload[j - 1] & 0x80:
                break
        else:
            return None  # an over-long length encoding: framing ended the segment before it
        if j + remaining > len(payload):
            return i
        i = j + remaining
    return None


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

# MQTT 3.1/3.1.1 packets whose body has one size (MQTT 5.0 adds reason codes and properties)
MQTT_FIXED_BODY = {2: 2, 4: 2, 5: 2, 6: 2, 7: 2, 11: 2, 12: 0, 13: 0, 14: 0}
MQTT_REQUIRED_FLAGS = {t: (2 if t in (6, 8, 10) else 0) for t in range(16)}
# types only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) and only a server (CONNACK,
# SUBACK, UNSUBACK, PINGRESP), by direction (0: client)
MQTT_SENT_BY = (frozenset((1, 8, 10, 12)), frozenset((2, 9, 11, 13)))
# a CONNECT (3.1.1, clean session, keep-alive 60 s, empty client id) for a session that has none
MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def connect_with_login(username: bytes, password: bytes | None) -> bytes:
    """``MQTT_CONNECT`` carrying a login: the username (and password) flags set, the fields after
    the empty client id (MQTT 3.1.1 §3.1.3)."""
    flags = 0x82 | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c\x00\x00" + len(username).to_bytes(2, "big") + username
    if password is not None:
        body += len(password).to_bytes(2, "big") + password
    return b"\x10" + encode_remaining_length(len(body)) + body


def _class_connects(records: FieldRecords, first: dict[tuple[int, int], bytes], flows: set[int],
                    parse: Any) -> dict[int, bytes]:
    """Per class, the CONNECT a client session of it gets when it opens without one: the login
    (username, password) its generated sessions' well-formed CONNECTs carry most, in
    ``MQTT_CONNECT`` (``connect_with_login``). A broker that requires a login (the lab's
    mosquitto) refuses the anonymous CONNECT, so a repaired publish-flood session published
    nothing; the class's own login opens it as its sessions do. Classes whose CONNECTs carry
    no login are left out (the anonymous ``MQTT_CONNECT``)."""
    logins: dict[int, dict[tuple[bytes, bytes | None], int]] = {}
    for f in sorted(flows):
        head = first.get((f, 0), b"")
        msgs = parse(head, 0)[:1] if head[:1] == b"\x10" else []
        m = msgs[0] if msgs else {}
        if m.get("type_name") != "CONNECT" or not m.get("complete") or "malformed" in m or not m.get("username"):
            continue
        # the parser decodes a string with surrogateescape: a generated username need not be UTF-8
        login = (str(m["username"]).encode("utf-8", errors="surrogateescape"),
                 bytes(m["password"]) if m.get("password_flag") else None)
        seen = logins.setdefault(int(records.flows["label"][f]), {})
        seen[login] = seen.get(login, 0) + 1
    return {label: connect_with_login(*max(seen, key=lambda k: seen[k])) for label, seen in logins.items()}


def _publish_cover(data: bytes, topic: bytes, direction: int) -> bytes | None:
    """``data`` (the rest of a segment, from a packet boundary) as one QoS 0 PUBLISH of the same
    size: fixed header, ``topic`` (shortened to fit), then ``data``'s bytes past what the header
    and topic take as the application message. A size no minimal remaining length reaches
    (130 bytes, 16,386, ...) is a PUBLISH two bytes shorter and a PINGREQ (client) or PINGRESP
    (server). None when the rest is too short for a PUBLISH with a topic (under 5 bytes)."""
    n = len(data)
    if n < 5:
        return None
    header = next((h for h in (2, 3, 4, 5) if len(encode_remaining_length(n - h)) == h - 1), 0)
    if not header:
        return (_publish_cover(data[:-2], topic, direction) or b"") + (b"\xc0\x00" if direction == 0 else b"\xd0\x00")
    remaining = n - header
    name = topic[:remaining - 2]
    body = len(name).to_bytes(2, "big") + name
    return bytes([0x30]) + encode_remaining_length(remaining) + body + data[header + len(body):]


def _topic_name_bytes(name: bytes) -> bytes:
    """A topic name's bytes a broker takes: wildcards, control characters (U+0000 is forbidden,
    MQTT 3.1.1 §1.5.3; mosquitto refuses every control character) and, where the name is not
    UTF-8, bytes above 127 written as "_", the length kept."""
    out = bytes(0x5F if c in (0x2B, 0x23, 0x7F) or c < 0x20 else c for c in name)
    try:
        out.decode("utf-8")
    except UnicodeDecodeError:
        out = bytes(0x5F if c > 0x7F else c for c in out)
    return out


def _topic_without_wildcards(data: bytes, at: int, counts: dict[str, int]) -> bytes:
    """``data`` with the PUBLISH topic name at ``at`` (its 2-byte length, then the name; the
    part in ``data``) as a broker takes it (``_topic_name_bytes``): a topic name carries no
    wildcard (MQTT-013), no control character and is UTF-8."""
    if at + 2 > len(data):
        return data
    end = min(at + 2 + int.from_bytes(data[at:at + 2], "big"), len(data))
    name = data[at + 2:end]
    fixed = _topic_name_bytes(name)
    if fixed == name:
        return data
    counts["mqtt_topic_names"] = counts.get("mqtt_topic_names", 0) + 1
    return data[:at + 2] + fixed + data[end:]


def _may_continue(body: bytes, ptype: int, remaining: int) -> bool:
    """Whether a packet whose body (``body`` so far) continues in the next segment can be a
    well-formed one: a PUBLISH (the one packet that carries data enough to span segments) whose
    topic fits in its remaining length."""
    if ptype != 3:
        return False
    return len(body) < 2 or 2 + int.from_bytes(body[:2], "big") <= remaining


def _mqtt_segment(data: bytes, parse: Any, direction: int, version: int,
                  counts: dict[str, int], topic: bytes = b"") -> tuple[bytes, int]:
    """``data`` (one segment, from a packet boundary) framed as MQTT: a reserved type, a PUBLISH
    of QoS 3, an over-long remaining-length encoding, a packet whose fields do not parse (or,
    running on into the next segment, cannot: ``_may_continue``) or one only the other side
    sends turns the rest of the segment into one QoS 0 PUBLISH of
    ``topic`` of the same size (``_publish_cover``; a rest under 5 bytes is not sent); a
    fixed-size packet (3.1.1) whose remaining length disagrees with its layout gets the
    layout's length; a non-PUBLISH packet gets its type's required flags; the wildcards of a
    whole PUBLISH's topic name are written as "_" (``mqtt_topic_names``).
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
            ptype, flags = data[pos] >> 4, data[pos] & 0x0F
            if ptype not in (0, 15) and ptype not in MQTT_SENT_BY[1 - direction] and (
                    (flags >> 1) & 3 != 3 if ptype == 3 else flags == MQTT_REQUIRED_FLAGS[ptype]):
                return bytes(out) + data[pos:], -(len(data) - pos)
            counts["mqtt_invalid_packets"] = counts.get("mqtt_invalid_packets", 0) + 1
            return bytes(out) + (_publish_cover(data[pos:], topic, direction) or b""), 0
        reserved = ptype == 0 or (ptype == 15 and version != 5) or (ptype == 3 and m["qos"] == 3)
        if m["type_name"] == "INVALID" or reserved:
            reason = "mqtt_invalid_packets"
        elif ptype in MQTT_SENT_BY[1 - direction]:
            reason = "mqtt_wrong_side_packets"
        elif ptype in (8, 10) and m["complete"] and m["remaining_length"] <= 2 and version != 5:
            # a SUBSCRIBE/UNSUBSCRIBE with no topic filter: a protocol violation (MQTT 3.1.1
            # §3.8.3, §3.10.3) at which the broker closes the connection
            reason = "mqtt_invalid_packets"
        elif not m["minimal_length"]:
            reason = "mqtt_remaining_length"
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
            return bytes(out) + (_publish_cover(data[pos:], topic, direction) or b""), 0
        first = data[pos]
        if ptype != 3 and first & 0x0F != MQTT_REQUIRED_FLAGS[ptype]:
            first = (ptype << 4) | MQTT_REQUIRED_FLAGS[ptype]
            counts["mqtt_flags"] = counts.get("mqtt_flags", 0) + 1
        elif ptype == 3 and m["qos"] == 0 and m["dup"]:
            first &= 0xF7
            counts["mqtt_flags"] = counts.get("mqtt_flags", 0) + 1
        header = m["length"] - m["remaining_length"] if m["complete"] else 1 + len(encode_remaining_length(m["remaining_length"]))
        if ptype == 3 and m["complete"]:
            data = _topic_without_wildcards(data, pos + header, counts)
        if not m["complete"] and not _may_continue(data[pos + header:], ptype, m["remaining_length"]):
            counts["mqtt_invalid_packets"] = counts.get("mqtt_invalid_packets", 0) + 1
            return bytes(out) + (_publish_cover(data[pos:], topic, direction) or b""), 0
        if not m["complete"]:  # runs on in the next segment
            out += bytes([first]) + data[pos + 1:]
            return bytes(out), m["remaining_length"] - (len(data) - pos - header)
        body = data[pos + header:pos + m["length"]]
        length = data[pos + 1:pos + header]
        if "malformed" in m and version != 5:  # fields are judged as 3.1.1 (5.0 adds properties)
            size = MQTT_FIXED_BODY.get(ptype)
            if size is None or len(body) < size:
                counts["mqtt_invalid_packets"] = counts.get("mqtt_invalid_packets", 0) + 1
                return bytes(out) + (_publish_cover(data[pos:], topic, direction) or b""), 0
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


def _common_topic(records: FieldRecords, pay: _Payloads, rows: np.ndarray, parse: Any) -> bytes:
    """The topic name the generated PUBLISH packets that start a segment use most (non-empty,
    no wildcards); "data" when there is none."""
    seen: dict[str, int] = {}
    for i in rows.tolist():
        data = pay.get(i)
        if data[:1] and data[0] >> 4 == 3:
            msgs = parse(data, int(records.packets["direction"][i]))[:1]
            topic = msgs[0].get("topic") if msgs and "malformed" not in msgs[0] else None
            if topic and "+" not in topic and "#" not in topic and topic.isprintable():
                seen[topic] = seen.get(topic, 0) + 1
    return max(seen, key=lambda t: seen[t]).encode() if seen else b"data"


def conform_mqtt_framing(records: FieldRecords, pay: _Payloads, ts: np.ndarray,
                         counts: dict[str, int], spec: ProtocolSpec | None) -> tuple[np.ndarray, bytes]:
    """MQTT streams that frame (see ``_mqtt_segment``), per side in time order, in the flows the
    MQTT rules judge (the plugin recognises them) and in every TCP flow on port 1883 (a
    dissector reads those as MQTT). Each side is framed from its first byte, as a reader that
    starts there frames it, in view (its SYN in the flow) or not; a client that opens a
    session in view without CONNECT sends one first (with its class's login: ``_class_connects``). Returns, per packet, whether its payload
    starts an MQTT packet of such a flow (the segments whose packets the later steps may read),
    and the topic that bytes which do not frame are published on (``_common_topic``). ``spec``:
    the MQTT plugin's protocol (its parser is the one its rules judge with), None: not
    installed, nothing to do."""
    at_packet = np.zeros(records.n_packets, bool)
    if spec is None:
        return at_packet, b"data"
    parse = spec.parse
    p, fl = records.packets, records.flows
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    first: dict[tuple[int, int], bytes] = {}
    for i in rows.tolist():
        first.setdefault((int(p["flow"][i]), int(p["direction"][i])), pay.get(i)[:512])
    mqtt = {f for f in {k[0] for k in first}
            if MQTT_PORT in (int(fl["server_port"][f]), int(fl["client_port"][f]))
            or spec.recognise(int(fl["server_port"][f]), first.get((f, 0), b""), first.get((f, 1), b""))}
    rows = rows[np.isin(p["flow"][rows], np.fromiter(mqtt, np.int64, len(mqtt)))]
    topic = _common_topic(records, pay, rows, parse)
    connects = _class_connects(records, first, mqtt, parse)
    syn = np.flatnonzero((p["tcp_flags"] & SYN) != 0)
    syn_sides = set(zip(p["flow"][syn].tolist(), p["direction"][syn].tolist(), strict=True))
    # side -> bytes of a packet still to come, or a fixed header begun
    state: dict[tuple[int, int], int | bytes] = {}
    version: dict[int, int] = {}
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        data = pay.get(i)
        if (f, d) not in state:
            if d == 0 and (f, d) in syn_sides and data[:1] != b"\x10":
                data = connects.get(int(fl["label"][f]), MQTT_CONNECT) + data
                counts["mqtt_connect_added"] = counts.get("mqtt_connect_added", 0) + 1
            state[(f, d)] = 0
            head = parse(data, d)[:1]
            if head and head[0]["type_name"] in ("CONNECT", "CONNACK"):  # the version the session speaks
                version.setdefault(f, int(head[0].get("protocol_level", head[0]["version"])))
        pending = state[(f, d)]
        if isinstance(pending, bytes):  # a fixed header begun in the segment before
            whole, rest = _mqtt_segment(pending + data, parse, d, version.get(f, 4), counts, topic)
            framed = whole[len(pending):] if whole[:len(pending)] == pending else b""
            skip = 0
        else:
            skip = min(pending, len(data))
            whole, rest = _mqtt_segment(data[skip:], parse, d, version.get(f, 4), counts, topic)
            framed = whole
            rest += pending - skip if rest >= 0 else 0
        state[(f, d)] = rest if rest >= 0 else whole[rest:]
        if data[:skip] + framed != pay.get(i):
            pay.set(i, data[:skip] + framed)
        at_packet[i] = pending == 0 and bool(framed)
    return at_packet, topic


MQTT_DISCONNECT = b"\xe0\x00"
MQTT_PINGREQ = b"\xc0\x00"


def conform_mqtt_disconnects(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int],
                             at_packet: np.ndarray) -> None:
    """A client's DISCONNECT followed by more of its packets in the connection is sent as a
    PINGREQ of the same size: after a DISCONNECT the client must close the connection and send
    no more packets (MQTT 3.1.1 §3.14.4), and a broker ends the session there, dropping
    everything the generated client sends after it. Read in the segments that start a packet
    (``at_packet``); counted per packet as ``mqtt_early_disconnects``."""
    p = records.packets
    rows = np.flatnonzero(at_packet & (p["direction"] == 0) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    client_rows = np.flatnonzero((p["direction"] == 0) & (pay.length > 0))
    last_ts: dict[int, int] = {}  # each flow's last client segment with data
    for i in client_rows.tolist():
        f = int(p["flow"][i])
        last_ts[f] = max(last_ts.get(f, int(ts[i])), int(ts[i]))
    for i in rows.tolist():
        payload = pay.get(i)
        at, changed = 0, bytearray(payload)
        while at + 2 <= len(payload):
            end = _mqtt_packet_end(payload, at)
            more = end < len(payload) or ts[i] < last_ts[int(p["flow"][i])]
            if payload[at:at + 2] == MQTT_DISCONNECT and end == at + 2 and more:
                changed[at:at + 2] = MQTT_PINGREQ
                counts["mqtt_early_disconnects"] = counts.get("mqtt_early_disconnects", 0) + 1
            at = end
        if bytes(changed) != payload:
            pay.set(i, bytes(changed))
