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
its header, token and the options that fit, and is shortened to them. Then its type and code
agree, in the same bytes: a reserved code class (1, 6, 7) becomes the nearest code of the
sender's role (the client's a request, the server's a response), an Empty code on a message that
carries a token, options or a payload the role's code (GET, 2.05), an Empty NON a CON; a
client's RST or ACK carrying a request is a CON, a server's an ACK carrying a response, a RST
carrying a response an ACK (``coap_codes``, ``coap_types``).

A TCP flow's server port follows the service its client speaks (HTTP on 1883 moves to 80, an
MQTT CONNECT on 80/8080 to 1883).

In flows in view from their start (opening with the client's SYN), messages the peer could not
have asked for are not sent: a repeated MQTT CONNECT in one connection becomes a PINGREQ, a
segment of MQTT acknowledgements none of which answers a request of the peer and an HTTP final
response beyond the requests made leave their segment without data (a PUBLISH that starts in
such a segment and runs on into the next is kept).

MQTT streams frame (flows the MQTT plugin recognises, as the evaluation does; each side in time
order, packets carried across segments): a reserved packet type, a PUBLISH of QoS 3, a
SUBSCRIBE/UNSUBSCRIBE with no topic filter, an over-long remaining-length encoding or a packet whose fields do not parse ends its segment there
(the rest is not sent); a fixed-size 3.1.1 packet (CONNACK, PUBACK..PUBCOMP, UNSUBACK, PINGREQ,
PINGRESP, DISCONNECT) whose remaining length disagrees with its layout is sent with the layout's;
fixed-header flags are the type's required ones; a CONNACK's return code is a defined one; a
packet type only the other side sends ends the segment. A
client that opens a session in view (its SYN in the flow) with anything but CONNECT sends a
CONNECT first, with the login its class's generated CONNECTs carry most (a broker that requires
a login refuses an anonymous one). A client's DISCONNECT followed by more of its packets is sent as a PINGREQ (the
client must send nothing after a DISCONNECT; the broker ends the session there). A side not in view is framed only where the rules judge it (it frames from its
first byte).

HTTP heads the HTTP rules would reject, in segments that start a message, are rebuilt from the
fields they spell: the start line (a registered method, an origin-form target or "/", HTTP/1.0 or
1.1; a status code in 100-599 and its reason phrase), header lines that are ``name: value``, one
Host on an HTTP/1.1 request (the value the generated requests use most), the first line of a
field that is one value and not a list (Authorization, User-Agent, ...) where it repeats; a message with no method
or status code to keep is not sent, nor, in a flow whose client opened with a request, a
client's status line or a server's request. A flow in view from the client's SYN to a well-known TCP
service port whose client still opens with bytes of no such service sends its client segments
without data.

Every change is counted per field (``mqtt_invalid_packets``, ``mqtt_remaining_length``,
``mqtt_flags``, ``mqtt_connack_codes``, ``mqtt_connect_added``, ``http_start_lines``,
``http_header_lines``, ``http_host``, ``http_singleton_fields``, ``http_undecodable_messages``,
``unmatched_service_payloads``, ``mqtt_early_disconnects``, ...); on the real captures of the lab recording SEED=3 the MQTT
and HTTP counts are 0, whole and cut at 16 packets.

MQTT over TCP (port 1883): an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
UNSUBACK) carries the packet identifier of the oldest request of the peer it can answer that is
still unanswered (PUBLISH of the right QoS, PUBREC, PUBREL, SUBSCRIBE, UNSUBSCRIBE), where the
flow holds one; an identifier of 0 (never valid) becomes the side's next unused one. These MQTT
steps read only segments that start a packet (never the middle of a long PUBLISH).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from pytrafgen.conform.coap import COAP_PORT, _coap_options_end, conform_coap_header
from pytrafgen.conform.http import HTTP_METHODS, conform_http_bodies, conform_http_heads
from pytrafgen.conform.mqtt import (
    MQTT_ANSWERS,
    MQTT_PORT,
    MQTT_REQUESTS,
    _mqtt_packet_end,
    _mqtt_packets,
    _publish_cover,
    _run_on_start,
    conform_mqtt_disconnects,
    conform_mqtt_framing,
    conform_mqtt_ids,
)
from pytrafgen.conform.payloads import _Payloads
from pytrafgen.conform.ports import conform_client_ports
from pytrafgen.conform.tcp import (
    _opens_with_client_syn,
    conform_handshakes,
    conform_syn_windows,
    conform_tcp_order,
    normalise_tcp_options,
)
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.records import FieldRecords

# a CONNECT's fixed header (1-4 length bytes) and protocol name
_MQTT_PROTOCOL_NAMES = re.compile(rb"\x10[\x80-\xff]{0,3}[\x00-\x7f]\x00(?:\x04MQTT|\x06MQIsdp)", re.S)


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
    with an MQTT CONNECT, or on any other port with a CONNECT naming MQTT or MQIsdp, on 1883
    (the payload says which service it is; the port follows)."""
    p, fl = records.packets, records.flows
    port = fl["server_port"].copy()
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (p["direction"] == 0) & (p["payload_stored"] > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    flows, first = np.unique(p["flow"][rows], return_index=True)
    for f, i in zip(flows.tolist(), rows[first].tolist(), strict=True):
        off = int(p["payload_off"][i])
        head = blob[off:off + min(int(p["payload_stored"][i]), 12)].tobytes()
        if port[f] == MQTT_PORT and head.startswith(HTTP_METHODS):
            port[f] = 80
        elif port[f] != MQTT_PORT and head[:1] == b"\x10" and (
                port[f] in (80, 8080) or _MQTT_PROTOCOL_NAMES.match(head)):
            port[f] = MQTT_PORT
    return port


def conform_app_messages(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int],
                         mqtt_at_packet: np.ndarray, topic: bytes) -> None:
    """Messages the peer could not have asked for, in flows in view from their start: a repeated
    MQTT CONNECT in one connection is sent as a PINGREQ; an MQTT acknowledgement that answers no
    request of the peer, and an HTTP final response beyond the requests made, are not sent (a
    segment of acknowledgements only carries no data; otherwise the rest of the segment from
    that acknowledgement is one PUBLISH of ``topic`` of the same size, cut where under 5 bytes).
    A PUBLISH that starts in the segment and runs on into the next is kept in either case."""
    p, fl = records.packets, records.flows
    in_view = _opens_with_client_syn(records, ts)
    rows = np.flatnonzero(in_view[p["flow"]] & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    mqtt = (fl["server_port"] == MQTT_PORT) | (fl["client_port"] == MQTT_PORT)
    state: dict[int, dict[str, Any]] = {}
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        st = state.setdefault(f, {"connect": False, "requests": 0, "responses": 0, "pending": [[], []]})
        payload = pay.get(i)
        if mqtt[f]:
            if not mqtt_at_packet[i]:  # the middle of a packet, or not MQTT the rules judge
                continue
            packets = _mqtt_packets(payload)
            # a PUBLISH the next segments continue is kept: dropping its start would leave its
            # rest to be read as packets (framing skipped those bytes as its body)
            run_on = _run_on_start(payload)
            kept = payload[run_on:] if run_on else b""
            if d == 0 and payload[:1] == b"\x10" and len(payload) >= 2:
                if st["connect"]:
                    pay.set(i, b"\xc0\x00" + kept)
                    counts["mqtt_repeated_connect"] = counts.get("mqtt_repeated_connect", 0) + 1
                    continue
                st["connect"] = True
            offset = 0
            for ptype, qos, _ in packets:
                if ptype in MQTT_ANSWERS:
                    want, want_qos = MQTT_ANSWERS[ptype]
                    match = next((k for k, (t, q) in enumerate(st["pending"][1 - d])
                                  if t == want and (want_qos is None or q == want_qos)), None)
                    if match is None:  # answers nothing: not sent
                        counts["mqtt_unanswerable_acks"] = counts.get("mqtt_unanswerable_acks", 0) + 1
                        acks_only = all(t in MQTT_ANSWERS for t, _, _ in packets)
                        end = len(payload) - len(kept)
                        pay.set(i, b"" if acks_only and not offset else
                                payload[:offset] + (_publish_cover(payload[offset:end], topic, d) or b"") + kept)
                        break
                    st["pending"][1 - d].pop(match)
                if ptype in MQTT_REQUESTS and (ptype != 3 or qos):
                    st["pending"][d].append((ptype, qos))
                offset = _mqtt_packet_end(payload, offset)
        elif d == 0 and payload.startswith(HTTP_METHODS):
            st["requests"] += 1
        elif d == 1 and payload[:5] == b"HTTP/" and payload[9:10] != b"1":  # a final response, not 1xx
            if st["responses"] >= st["requests"]:
                pay.set(i, b"")
                counts["http_unrequested_responses"] = counts.get("http_unrequested_responses", 0) + 1
                continue
            st["responses"] += 1


def conform_coap(records: FieldRecords, pay: _Payloads, counts: dict[str, int]) -> None:
    """Each datagram of a UDP flow on CoAP's port ends where its well-formed part does
    (``coap_options``), then its type and code are made to agree (``coap_codes``,
    ``coap_types``; ``conform_coap_header``): the client (direction 0) sends requests, the
    server responses."""
    p, fl = records.packets, records.flows
    coap = np.flatnonzero((fl["proto"][p["flow"]] == 17)
                          & ((fl["server_port"][p["flow"]] == COAP_PORT) | (fl["client_port"][p["flow"]] == COAP_PORT))
                          & (pay.length > 0))
    for i in coap.tolist():
        dgram = pay.get(i)  # as the builder pads it
        end = _coap_options_end(dgram)
        if end < len(dgram):
            counts["coap_options"] = counts.get("coap_options", 0) + 1
        fixed = conform_coap_header(dgram[:end], client=int(p["direction"][i]) == 0)
        for name, at, mask in (("coap_types", 0, 0x30), ("coap_codes", 1, 0xFF)):
            if len(fixed) > at and (fixed[at] ^ dgram[at]) & mask:
                counts[name] = counts.get(name, 0) + 1
        if fixed != dgram:
            pay.set(i, fixed)


def conform(records: FieldRecords, ts: np.ndarray,
            protocols: Mapping[str, ProtocolSpec]) -> tuple[FieldRecords, dict[str, int]]:
    """``records`` conformed (see the module doc) and the count of packets changed per field.
    ``protocols``: the protocol specs by name (the HTTP and MQTT plugins' frame the payloads)."""
    out, counts, _ = conform_with_origin(records, ts, protocols)
    return out, counts


def conform_with_origin(records: FieldRecords, ts: np.ndarray,
                        protocols: Mapping[str, ProtocolSpec]) -> tuple[FieldRecords, dict[str, int], np.ndarray]:
    """As ``conform``, and per packet of the result the packet of ``records`` it comes from (a
    SYN-ACK the handshake step adds: its flow's SYN), for callers that index the input."""
    counts: dict[str, int] = {}
    records, ts, origin = conform_handshakes(records, ts, counts)  # the packets every later step reads
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
    records = replace(records, flows={**records.flows, "client_port": conform_client_ports(records.flows, counts)})
    pay = _Payloads(blob, p["payload_off"], p["payload_len"], p["payload_stored"])
    at_packet, topic = conform_mqtt_framing(records, pay, ts, counts, protocols.get("mqtt"))
    conform_http_heads(records, pay, ts, counts, protocols.get("http"))
    conform_unmatched_service(records, pay, ts, counts)
    blob = pay.new_blob()
    records = replace(records, blob=blob, packets={**p, "payload_off": pay.off, "payload_len": pay.length,
                                                   "payload_stored": pay.stored})
    p = records.packets
    counts["mqtt_packet_ids"] = conform_mqtt_ids(records, blob, ts, at_packet)
    pay = _Payloads(blob, p["payload_off"], p["payload_len"], p["payload_stored"])
    conform_app_messages(records, pay, ts, counts, at_packet, topic)
    conform_mqtt_disconnects(records, pay, ts, counts, at_packet)
    conform_http_bodies(records, pay, ts, counts, protocols.get("http"))  # after the messages not sent: bodies follow what is
    conform_coap(records, pay, counts)
    staged = replace(records, packets={**p, "payload_off": pay.off, "payload_len": pay.length,
                                       "payload_stored": pay.stored}, blob=pay.new_blob())
    columns = conform_tcp_order(staged, ts, counts)  # numbers follow the payloads as sent
    out = replace(staged, packets={**staged.packets, **columns, "window": conform_syn_windows(staged, counts)})
    return out, {k: v for k, v in counts.items() if v}, origin


__all__ = ["conform", "conform_tcp_order", "conform_with_origin", "normalise_tcp_options"]
