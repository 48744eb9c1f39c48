"""Generated flows conformed to their protocols at build time (``pytrafgen.conform``): TCP
teardown after data, seq/ack continuity, well-formed options, CoAP options that fit; counted per
field, and judged by the compliance rules and tshark before (raw) and after (final)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ALL_SHARED, SHARED_DATA

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames, write_records
from pytrafgen.conform import conform as conform_with
from pytrafgen.conform.coap import _coap_options_end
from pytrafgen.conform.mqtt import MQTT_CONNECT
from pytrafgen.conform.tcp import normalise_tcp_options
from pytrafgen.evaluate.compliance import run_rules
from pytrafgen.evaluate.evalset import load_evalset
from pytrafgen.plugins import get_registry
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords


def conform(records: FieldRecords, ts: np.ndarray) -> tuple[FieldRecords, dict[str, int]]:
    """``pytrafgen.conform.conform`` with the loaded plugins' protocols, as write_records uses them."""
    return conform_with(records, ts, get_registry().protocols)

PLAN = AddressPlan.from_cidrs(["10.0.0.0/24"], ["10.0.1.0/24"])


def tcp_flow(rows: list[tuple[int, int, int, int, int]], options: dict[int, bytes] | None = None,
             payloads: dict[int, bytes] | None = None, server_port: int = 80) -> FieldRecords:
    """One TCP flow from (direction, flags, seq, ack, payload length) rows, 1 ms apart."""
    n = len(rows)
    p = {k: np.zeros(n, d) for k, d in PACKET_COLUMNS.items()}
    for i, (d, flags, seq, ack, length) in enumerate(rows):
        p["direction"][i], p["tcp_flags"][i], p["seq"][i], p["ack"][i] = d, flags, seq, ack
        p["payload_len"][i] = length
    p["ts_ns"] = np.arange(n, dtype=np.int64) * 1_000_000
    p["ttl"][:] = 64
    p["window"][:] = 1000
    blob = b""
    for i, raw in (options or {}).items():
        p["l4_opt_off"][i], p["l4_opt_len"][i] = len(blob), len(raw)
        blob += raw
    for i, data in (payloads or {}).items():
        p["payload_off"][i], p["payload_stored"][i], p["payload_len"][i] = len(blob), len(data), len(data)
        blob += data
    f = {k: np.zeros(1, d) for k, d in FLOW_COLUMNS.items()}
    f["ip_version"][:], f["proto"][:], f["client_port"][:], f["server_port"][:] = 4, 6, 40000, server_port
    return FieldRecords(p, f, np.frombuffer(blob, np.uint8).copy(), ["c"])


# a sampled flow gone wrong: seq/ack numbers made up, the client's FIN before its data
BROKEN = [(0, 0x02, 7, 0, 0), (1, 0x12, 99, 3, 0), (0, 0x10, 5, 5, 0), (0, 0x11, 9, 1, 0),
          (0, 0x18, 1, 1, 40), (1, 0x10, 1, 9999, 0), (1, 0x18, 77, 1, 300), (0, 0x11, 3, 3, 0),
          (1, 0x11, 1, 41, 0), (0, 0x10, 2, 2, 0)]


def test_seq_and_ack_follow_the_bytes_and_fin_comes_last() -> None:
    # a port of no well-known service: the zero payloads are not judged as a service's bytes
    built = build_frames(tcp_flow(BROKEN, server_port=5000), PLAN, seed=1, conform=True, protocols=get_registry().protocols)
    t = built.to_table()
    isn = {0: int(t.seq[0]), 1: int(t.seq[1])}
    rel_seq = [(int(s) - isn[int(d)]) % (1 << 32) for s, d in zip(t.seq, [r[0] for r in BROKEN], strict=True)]
    assert rel_seq == [0, 0, 1, 1, 1, 1, 1, 41, 301, 42]
    rel_ack = [(int(a) - isn[1 - r[0]]) % (1 << 32) for a, r in zip(t.ack, BROKEN, strict=True)]
    assert rel_ack[1:] == [1, 1, 1, 1, 41, 41, 301, 42, 302]
    assert int(t.tcp_flags[3]) == 0x10  # the FIN before the client's data is gone
    assert built.repairs["tcp_fin_moved"] == 1 and built.repairs["tcp_seq"] > 0 and built.repairs["tcp_ack"] > 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)")
def test_raw_fails_and_final_passes_rules_and_tshark(tmp_path: Path) -> None:
    records = tcp_flow(BROKEN, options={0: bytes([2, 4, 5, 0xB4, 3, 3, 20, 1, 1, 8, 10, 1])})
    verdicts = {}
    for stage, repair in (("raw", False), ("final", True)):
        pcap = tmp_path / f"{stage}.pcap"
        write_records(pcap, records, PLAN, seed=1, repair=repair, labels=False)
        rules = run_rules(load_evalset([pcap], stage), protocols=get_registry().protocols)
        out = subprocess.run(["tshark", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-T", "fields",
                              "-e", "_ws.expert.severity", "-e", "tcp.options.wscale.shift"],
                             capture_output=True, text=True, check=True).stdout
        verdicts[stage] = (rules["packet_pass_rate"], out)
    assert verdicts["raw"][0] < 1.0
    assert verdicts["final"][0] == 1.0
    assert "20" in verdicts["raw"][1] and "14" in verdicts["final"][1]  # window scale clamped


@pytest.mark.parametrize(("raw", "fixed"), [
    (bytes([2, 4, 5, 0xB4, 1, 3, 3, 7]), bytes([2, 4, 5, 0xB4, 1, 3, 3, 7])),  # well-formed: kept
    (bytes([2, 4, 5, 0xB4, 3, 3, 30, 0]), bytes([2, 4, 5, 0xB4, 3, 3, 14, 0])),  # window scale > 14
    (bytes([2, 4, 5, 0xB4, 0, 7, 7, 7]), bytes([2, 4, 5, 0xB4, 0, 0, 0, 0])),  # garbage after EOL
    (bytes([1, 1, 8, 9, 1, 2, 3, 4]), bytes(8)),  # a timestamp option running past the header
    (bytes([2, 4, 5, 0xB4, 1, 1, 1, 1]), bytes([2, 4, 5, 0xB4, 0, 0, 0, 0])),  # trailing NOP runs
    (bytes([99, 4, 1, 2, 2, 4, 5, 0xB4]), bytes(8)),  # unknown kind: the list ends
])
def test_tcp_option_lists(raw: bytes, fixed: bytes) -> None:
    assert normalise_tcp_options(raw) == fixed


def test_coap_options_that_run_past_the_datagram_are_cut_off() -> None:
    header = bytes([0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD])  # CON GET, token length 2
    ok = header + bytes([0xB4]) + b"test" + bytes([0xFF]) + b"x"  # Uri-Path "test", payload "x"
    assert _coap_options_end(ok) == len(ok)
    assert _coap_options_end(header + bytes([0xB4]) + b"te") == len(header)  # option longer than the rest
    assert _coap_options_end(header + bytes([0xB4]) + b"test" + bytes([0xFF])) == len(header) + 5  # bare marker
    assert _coap_options_end(header + bytes([0xFD])) == len(header)  # length nibble 15 is reserved


def test_mqtt_acknowledgements_answer_their_requests() -> None:
    """A PUBACK and a SUBACK with made-up identifiers get those of the client's QoS 1 PUBLISH
    and SUBSCRIBE; the MQTT rule that judges it (MQTT-006) then passes."""
    publish = bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0x12, 0x34]) + b"xy"  # QoS 1, id 0x1234
    subscribe = bytes([0x82, 8, 0x00, 0x07, 0, 3]) + b"a/#" + bytes([0])  # id 7
    puback, suback = bytes([0x40, 2, 0x66, 0x66]), bytes([0x90, 3, 0x55, 0x55, 0])
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x18, 1, 1, len(publish)),
            (0, 0x18, 1, 1, len(subscribe)), (1, 0x18, 1, 1, len(puback)), (1, 0x18, 1, 1, len(suback))]
    records = tcp_flow(rows, payloads={2: publish, 3: subscribe, 4: puback, 5: suback}, server_port=1883)
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.repairs["mqtt_packet_ids"] == 2
    assert built.frame(4).endswith(bytes([0x40, 2, 0x12, 0x34]))
    assert built.frame(5).endswith(bytes([0x90, 3, 0x00, 0x07, 0]))


def test_coap_unregistered_option_numbers_end_the_message() -> None:
    header = bytes([0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD])
    assert _coap_options_end(header + bytes(6)) == len(header)  # zero padding reads as option 0
    assert _coap_options_end(header + bytes([0xD0, 5])) == len(header)  # option 18: unassigned
    assert _coap_options_end(header + bytes([0xB1]) + b"a" + bytes([0x31]) + b"b") == len(header) + 4


def test_the_server_port_follows_the_service_the_client_speaks() -> None:
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x18, 1, 1, 18)]
    http_on_mqtt_port = tcp_flow(rows, payloads={2: b"GET / HTTP/1.1\r\n\r\n"}, server_port=1883)
    built = build_frames(http_on_mqtt_port, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.to_table().dport[0] == 80 and built.repairs["service_port_flows"] == 1
    mqtt_on_http_port = tcp_flow(rows, payloads={2: bytes([0x10, 14]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id"})
    assert build_frames(mqtt_on_http_port, PLAN, seed=0, conform=True, protocols=get_registry().protocols).to_table().dport[0] == 1883


def test_a_new_connection_on_the_same_ports_is_numbered_afresh() -> None:
    """Refused, then retried: the RST stays (it ends the first connection), the second SYN
    opens a connection whose SYN-ACK acknowledges its own SYN."""
    rows = [(0, 0x02, 5, 0, 0), (1, 0x14, 0, 1, 0), (0, 0x02, 9, 0, 0), (1, 0x12, 3, 4, 0),
            (0, 0x10, 1, 1, 0), (1, 0x18, 1, 1, 10)]
    t = build_frames(tcp_flow(rows), PLAN, seed=0, conform=True, protocols=get_registry().protocols).to_table()
    assert int(t.tcp_flags[1]) == 0x14
    assert (int(t.ack[3]) - int(t.seq[2])) % (1 << 32) == 1  # the retry's SYN-ACK acks its SYN + 1
    assert int(t.seq[0]) == int(t.seq[2])  # the same client ISN, as a retry


def test_messages_nobody_asked_for_are_not_sent() -> None:
    """One request, two responses: the second leaves its segment empty. A repeated CONNECT
    becomes a PINGREQ; a PUBACK with no PUBLISH before it is not sent."""
    req, resp = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x18, 1, 1, len(req)), (1, 0x18, 1, 1, len(resp)),
            (1, 0x18, 1, 1, len(resp))]
    built = build_frames(tcp_flow(rows, payloads={2: req, 3: resp, 4: resp}), PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    t = built.to_table()
    assert t.payload_len.tolist() == [0, 0, len(req), len(resp), 0]
    assert built.repairs["http_unrequested_responses"] == 1
    connect = bytes([0x10, 14]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id"
    puback = bytes([0x40, 2, 0, 1])
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x18, 1, 1, len(connect)), (0, 0x18, 1, 1, len(connect)),
            (1, 0x18, 1, 1, len(puback))]
    records = tcp_flow(rows, payloads={2: connect, 3: connect, 4: puback}, server_port=1883)
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.frame(3).endswith(bytes([0xC0, 0x00])) and built.to_table().payload_len[4] == 0
    assert built.repairs["mqtt_repeated_connect"] == 1 and built.repairs["mqtt_unanswerable_acks"] == 1


def test_mqtt_packet_identifier_zero_is_replaced() -> None:
    publish = bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0, 0]) + b"xy"  # QoS 1 with the invalid id 0
    puback = bytes([0x40, 2, 0, 0])
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x18, 1, 1, len(publish)), (1, 0x18, 1, 1, len(puback))]
    built = build_frames(tcp_flow(rows, payloads={2: publish, 3: puback}, server_port=1883), PLAN, seed=0,
                         conform=True, protocols=get_registry().protocols)
    assert built.frame(2).endswith(bytes([0, 1]) + b"xy") and built.frame(3).endswith(bytes([0x40, 2, 0, 1]))


CONNECT = bytes([0x10, 14]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id"
HANDSHAKE = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x10, 1, 1, 0)]


def mqtt_flow(segments: list[tuple[int, bytes]]) -> FieldRecords:
    """A flow to 1883 in view from its SYN, then ``(direction, payload)`` segments (numbered
    in order, so that the raw flow reads as sent)."""
    sent = [1, 1]
    rows = list(HANDSHAKE)
    for d, data in segments:
        rows.append((d, 0x18, sent[d], sent[1 - d], len(data)))
        sent[d] += len(data)
    return tcp_flow(rows, payloads={len(HANDSHAKE) + k: data for k, (_, data) in enumerate(segments)},
                    server_port=1883)


def login_connect(user: bytes, password: bytes, client_id: bytes = b"id") -> bytes:
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id \
        + len(user).to_bytes(2, "big") + user + len(password).to_bytes(2, "big") + password
    return bytes([0x10, len(body)]) + body


def mqtt_rule_failures(records: FieldRecords, tmp_path: Path) -> dict[str, int]:
    pcap = tmp_path / "mqtt.pcap"
    write_records(pcap, records, PLAN, seed=0, conform=False)
    per_rule = run_rules(load_evalset([pcap], "g"), protocols=get_registry().protocols)["per_rule"]
    return {k: v["violating"] for k, v in per_rule.items() if k.startswith("MQTT") and v.get("violating")}


def http_flow(segments: list[tuple[int, bytes]], padded: dict[int, int] | None = None) -> FieldRecords:
    """A flow to port 80 in view from its SYN, then ``(direction, payload)`` segments; ``padded``:
    segment index -> bytes of zero padding the builder adds after the stored payload."""
    records = mqtt_flow(segments)
    records.flows["server_port"][:] = 80
    for k, extra in (padded or {}).items():
        records.packets["payload_len"][len(HANDSHAKE) + k] += extra
    return records


def test_a_client_disconnect_before_more_packets_is_a_pingreq() -> None:
    """markov's publish flood sampled DISCONNECTs among its 2,000 PUBLISHes: mosquitto ends the
    session at the first, so almost nothing was delivered. A client's DISCONNECT followed by
    more of its packets (in its segment or a later one) is sent as a PINGREQ of the same size;
    the client's last packet stays a DISCONNECT, and a server's bytes are not read for it."""
    pub = bytes([0x30, 5, 0, 1]) + b"t" + b"xy"
    records = mqtt_flow([(0, CONNECT), (1, bytes([0x20, 2, 0, 0])), (0, pub + b"\xe0\x00" + pub),
                         (0, b"\xe0\x00"), (0, pub), (0, pub + b"\xe0\x00")])
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["mqtt_early_disconnects"] == 2

    def sent(k: int) -> bytes:
        i = len(HANDSHAKE) + k
        off, n = int(out.packets["payload_off"][i]), int(out.packets["payload_len"][i])
        return out.blob[off:off + n].tobytes()

    assert [sent(k) for k in (2, 3, 4, 5)] == [pub + b"\xc0\x00" + pub, b"\xc0\x00", pub, pub + b"\xe0\x00"]


def test_topic_names_and_filters_a_broker_takes() -> None:
    """markov's publish flood: a PUBLISH topic name of zero padding ("sensor" and NULs: U+0000
    is forbidden, MQTT 3.1.1 §1.5.3) has its control characters written as "_", the length
    kept; an UNSUBSCRIBE with no topic filter (§3.10.3: mosquitto closes the connection there)
    and the rest of its segment become one PUBLISH of the same size."""
    pub = bytes([0x30, 9, 0, 4]) + b"s\x00\x01\xff" + b"xyz"
    records = mqtt_flow([(0, CONNECT), (1, bytes([0x20, 2, 0, 0])), (0, pub), (0, b"\xa2\x02\x00\x05" + pub)])
    out, counts = conform(records, records.packets["ts_ns"])

    def sent(k: int) -> bytes:
        i = len(HANDSHAKE) + k
        off, n = int(out.packets["payload_off"][i]), int(out.packets["payload_len"][i])
        return out.blob[off:off + n].tobytes()

    assert sent(2) == bytes([0x30, 9, 0, 4]) + b"s___" + b"xyz"
    assert counts["mqtt_topic_names"] >= 1 and counts["mqtt_invalid_packets"] == 1
    assert len(sent(3)) == 4 + len(pub) and sent(3)[0] == 0x30


def _mosquitto_in_namespaces_unavailable() -> str:
    if os.geteuid() != 0:
        return "replay needs root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        return "iproute2 and mosquitto are needed (apt-get install iproute2 mosquitto)"
    return ""


@pytest.mark.netns
@pytest.mark.skipif(bool(_mosquitto_in_namespaces_unavailable()), reason=_mosquitto_in_namespaces_unavailable() or "ok")
@pytest.mark.parametrize(("defect", "published"), [
    (b"\xe0\x00", 0),  # a DISCONNECT, then more PUBLISHes
    (bytes([0x30, 9, 0, 4]) + b"t\x00\x00\x00" + b"xyz", 1),  # a topic name of NULs (zero padding)
    (b"\xa2\x02\x00\x05", 0),  # an UNSUBSCRIBE with no topic filter
])
def test_mosquitto_delivers_the_publishes_after_a_conformed_defect(defect: bytes, published: int,
                                                                   tmp_path: Path) -> None:
    """The real broker, with a subscriber: a session that publishes 3 messages, sends one of
    markov's publish-flood defects and publishes 4 more has only the first 3 delivered (the
    broker closes the session at the defect); conformed (a PINGREQ for the DISCONNECT, "_" for
    the NULs, the UNSUBSCRIBE not sent: 4 bytes cannot be a PUBLISH) all of them are."""
    from pytrafgen.replay import scenarios
    from pytrafgen.replay.senders import Bounds
    from pytrafgen.replay.targets import MQTT_PASSWORD, MQTT_USER
    from pytrafgen.replay.trace import load_trace

    user, password = MQTT_USER.encode(), MQTT_PASSWORD.encode()
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02id" + len(user).to_bytes(2, "big") + user \
        + len(password).to_bytes(2, "big") + password
    connect = bytes([0x10, len(body)]) + body
    pub = bytes([0x30, 5, 0, 1]) + b"t" + b"xy"
    records = mqtt_flow([(0, connect), (1, bytes([0x20, 2, 0, 0])), (0, pub * 3), (0, defect), (0, pub * 4)])
    delivered = {}
    for stage, conformed in (("raw", False), ("final", True)):
        pcap = tmp_path / f"{stage}.pcap"
        write_records(pcap, records, PLAN, seed=0, conform=conformed, protocols=get_registry().protocols)
        effect = scenarios.measure(scenarios.get_scenario("mqtt_publish_flood"), load_trace(pcap),
                                  Bounds(max_sessions=5, timeout_s=1.0, hold_cap_s=1.0))
        delivered[stage] = effect.figures["messages_delivered"]
    assert delivered == {"raw": 3, "final": 7 + published}


@pytest.mark.netns
@pytest.mark.skipif(bool(_mosquitto_in_namespaces_unavailable()), reason=_mosquitto_in_namespaces_unavailable() or "ok")
def test_mosquitto_delivers_a_repaired_sessions_publishes_with_its_class_login(tmp_path: Path) -> None:
    """The real broker (login required, as the lab's): a generated publish-flood session that
    opens with PUBLISHes gets a CONNECT added; the anonymous one was refused ("not authorised",
    none delivered), with the login its class's other session carries the 3 PUBLISHes are
    delivered."""
    from pytrafgen.replay import scenarios
    from pytrafgen.replay.senders import Bounds
    from pytrafgen.replay.targets import MQTT_PASSWORD, MQTT_USER
    from pytrafgen.replay.trace import load_trace

    pub = bytes([0x30, 5, 0, 1]) + b"t" + b"xy"
    login = mqtt_flow([(0, login_connect(MQTT_USER.encode(), MQTT_PASSWORD.encode()))])
    bare = mqtt_flow([(0, pub * 3)])
    bare.flows["client_port"][:] = 40001  # another connection than the login's
    delivered = {}
    for stage, parts in (("alone", [bare]), ("with_login", [login, bare])):
        pcap = tmp_path / f"{stage}.pcap"
        write_records(pcap, FieldRecords.concat(parts), PLAN, seed=0, conform=True, protocols=get_registry().protocols)
        # the builder starts the second flow about 6 s after the first
        effect = scenarios.measure(scenarios.get_scenario("mqtt_publish_flood"), load_trace(pcap),
                                   Bounds(max_sessions=5, timeout_s=8.0, hold_cap_s=1.0))
        delivered[stage] = effect.figures["messages_delivered"]
    assert delivered == {"alone": 0, "with_login": 3}


def test_mqtt_remaining_length_follows_the_layout(tmp_path: Path) -> None:
    """A PUBACK announcing 5 bytes (3.1.1: always 2) is sent with 2 and its stray bytes dropped;
    zero padding after a PINGREQ (reserved type 0) becomes a PUBLISH of the same size on the
    flow's topic; a SUBSCRIBE gets its required flags. Raw, the rules flag each; conformed, none."""
    publish = bytes([0x32, 7, 0, 3]) + b"a/b" + bytes([0, 9])
    subscribe = bytes([0x80, 8, 0, 7, 0, 3]) + b"a/#" + bytes([0])  # flags 0: must be 2
    puback = bytes([0x40, 5, 0, 9, 1, 2, 3])
    pingreq_padded = bytes([0xC0, 0]) + bytes(6)
    records = mqtt_flow([(0, CONNECT), (0, publish), (0, subscribe), (1, puback), (0, pingreq_padded)])
    assert set(mqtt_rule_failures(records, tmp_path)) >= {"MQTT-002", "MQTT-003", "MQTT-014"}
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.frame(5).endswith(bytes([0x82]) + subscribe[1:])
    assert built.frame(6).endswith(bytes([0x40, 2, 0, 9]))
    assert built.frame(7).endswith(bytes([0xC0, 0, 0x30, 4, 0, 2]) + b"a/") and built.to_table().payload_len[7] == 8
    assert built.repairs["mqtt_remaining_length"] == 1 and built.repairs["mqtt_flags"] == 1
    assert built.repairs["mqtt_invalid_packets"] == 1
    conformed, _ = conform(records, records.packets["ts_ns"])
    assert mqtt_rule_failures(conformed, tmp_path) == {}


def test_mqtt_packets_that_do_not_parse_are_not_sent() -> None:
    """A PUBLISH whose topic length runs past its remaining length becomes, with what follows it
    in the segment, one PUBLISH of the same size (topic "data" when the flows name none); a
    rest too short for a PUBLISH (under 5 bytes) is not sent, and a segment left empty is a
    bare ACK."""
    bad_publish = bytes([0x30, 4, 0, 9]) + b"ab"
    built = build_frames(mqtt_flow([(0, CONNECT), (0, bad_publish + bytes([0xC0, 0]))]), PLAN, seed=0,
                         conform=True, protocols=get_registry().protocols)
    assert built.frame(4).endswith(bytes([0x30, 6, 0, 4]) + b"data") and built.to_table().payload_len[4] == 8
    assert built.repairs["mqtt_invalid_packets"] == 1
    built = build_frames(mqtt_flow([(0, CONNECT), (0, bytes([0x30, 2, 0, 9]))]), PLAN, seed=0, conform=True,
                         protocols=get_registry().protocols)
    assert built.to_table().payload_len[4] == 0 and built.repairs["mqtt_invalid_packets"] == 1


def test_publish_cover_keeps_the_size_and_frames() -> None:
    """The PUBLISH that stands in for bytes that do not frame has their exact size for every
    size from 5 bytes (a size no minimal remaining length reaches ends with a PINGREQ) and
    parses as complete, well-formed packets."""
    from pytrafgen.conform.mqtt import _publish_cover
    from pytrafgen.plugins import get_registry

    parse = get_registry().protocols["mqtt"].parse
    assert _publish_cover(bytes(4), b"t", 0) is None
    for n in [*range(5, 300), *range(16_380, 16_390)]:
        out = _publish_cover(bytes(n), b"sensors/x", 0)
        assert out is not None and len(out) == n
        msgs = parse(out, 0)
        assert [m["type_name"] for m in msgs] in (["PUBLISH"], ["PUBLISH", "PINGREQ"])
        assert all(m["complete"] and m["minimal_length"] and "malformed" not in m for m in msgs)
        assert msgs[0]["topic"] and "sensors/x".startswith(msgs[0]["topic"])


def test_a_session_in_view_opens_with_connect(tmp_path: Path) -> None:
    """A client whose first packet in a flow opened by its SYN is not CONNECT sends one first
    (MQTT-001); a flow cut from mid-session (no SYN) is left as it is."""
    pingreq = bytes([0xC0, 0])
    records = mqtt_flow([(0, pingreq)])
    assert mqtt_rule_failures(records, tmp_path) == {"MQTT-001": 1}
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.repairs["mqtt_connect_added"] == 1
    assert built.to_table().payload_len[3] == len(MQTT_CONNECT) + 2 and built.frame(3).endswith(MQTT_CONNECT + pingreq)
    mid = tcp_flow([(0, 0x18, 1, 1, 2)], payloads={0: pingreq}, server_port=1883)
    assert "mqtt_connect_added" not in build_frames(mid, PLAN, seed=0, conform=True, protocols=get_registry().protocols).repairs


def test_mqtt_packets_across_segments_are_left_alone() -> None:
    """A PUBLISH split over two segments, and a fixed header split over two, are valid framing:
    nothing is counted or changed."""
    publish = bytes([0x30, 20, 0, 3]) + b"a/b" + b"x" * 15
    pingreq = bytes([0xC0, 0])
    segments = [(0, CONNECT), (0, publish[:10]), (0, publish[10:] + pingreq[:1]), (0, pingreq[1:])]
    records = mqtt_flow(segments)
    out, counts = conform(records, records.packets["ts_ns"])
    assert not any(k.startswith("mqtt") for k in counts)
    assert out.packets["payload_len"].tolist() == records.packets["payload_len"].tolist()


def test_connack_return_codes_are_defined_ones(tmp_path: Path) -> None:
    """A 3.1.1 CONNACK with return code 0x1E (none defined above 5) and the session-present
    flag is sent as an acceptance (MQTT-008); a refusal keeps its code without session present."""
    records = mqtt_flow([(0, CONNECT), (1, bytes([0x20, 2, 1, 0x1E]))])
    assert mqtt_rule_failures(records, tmp_path) == {"MQTT-008": 1}
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.frame(4).endswith(bytes([0x20, 2, 1, 0])) and built.repairs["mqtt_connack_codes"] == 1
    refused = build_frames(mqtt_flow([(0, CONNECT), (1, bytes([0x20, 2, 1, 5]))]), PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert refused.frame(4).endswith(bytes([0x20, 2, 0, 5]))
    conformed, _ = conform(records, records.packets["ts_ns"])
    assert mqtt_rule_failures(conformed, tmp_path) == {}


def test_a_stream_seen_from_mid_session_is_framed_from_its_first_byte() -> None:
    """No SYN in the flow: a reader (the rules, Wireshark) frames each side from its first
    byte, so a PUBREC announcing 3 bytes is sent with 2, and bytes that do not frame (a
    remaining length over 4 bytes) become a PUBLISH of the same size."""
    pubrec = bytes([0x50, 3, 0, 9, 0x7B])
    out, counts = conform(tcp_flow([(1, 0x18, 1, 1, 5)], payloads={0: pubrec}, server_port=1883),
                          np.zeros(1, np.int64))
    assert counts["mqtt_remaining_length"] == 1 and out.packets["payload_len"].tolist() == [4]
    tail = bytes([0x31, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    out, counts = conform(tcp_flow([(1, 0x18, 1, 1, 6)], payloads={0: tail}, server_port=1883),
                          np.zeros(1, np.int64))
    assert counts["mqtt_invalid_packets"] == 1
    assert out.blob[int(out.packets["payload_off"][0]):][:6].tobytes() == bytes([0x30, 4, 0, 2]) + b"da"


APP_REPAIRS = ("mqtt_", "http_", "unmatched_service", "coap_codes", "coap_types")


def app_repairs_on_real(path: Path, cut: int) -> dict[str, int]:
    """What conform would change in a real capture's MQTT/HTTP payloads (real traffic is valid:
    the expected answer is nothing)."""
    from pytrafgen import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.records_from_packets import records_from_packets

    table = read_pcap(path)
    flows = assemble_flows(table, max_flow_packets=cut)
    records = records_from_packets(table, flows, np.zeros(len(flows.proto), np.int16), ["c"], keep_derived=False)
    records = without_mid_packet_starts(records)
    _, counts = conform(records, records.packets["ts_ns"])
    return {k: v for k, v in counts.items() if k.startswith(APP_REPAIRS)}


def without_mid_packet_starts(records: FieldRecords) -> FieldRecords:
    """``records`` with the payloads of MQTT- and HTTP-port flows left out where a side not in
    view (no SYN of its own in the flow) does not frame from its first byte (MQTT) or does not
    open with a message (HTTP), as a capture cut mid-session begins in the middle of a message:
    written as a connection of their own such bytes do not frame, and conform reframes them from
    their first byte (as a reader of that connection does; tested on generated flows)."""
    from pytrafgen.conform.http import _opens_message
    from pytrafgen.conform.mqtt import MQTT_REQUIRED_FLAGS, MQTT_SENT_BY
    from pytrafgen.plugins import get_registry

    parse = get_registry().protocols["mqtt"].parse
    p = records.packets
    order = np.lexsort((np.arange(records.n_packets), p["ts_ns"], p["flow"]))
    syn_sides = {(int(p["flow"][i]), int(p["direction"][i])) for i in np.flatnonzero(p["tcp_flags"] & 2)}
    streams: dict[tuple[int, int], bytes] = {}
    firsts: dict[tuple[int, int], bytes] = {}
    for i in order[p["payload_stored"][order] > 0].tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        if 1883 in (int(records.flows["server_port"][f]), int(records.flows["client_port"][f])):
            off = int(p["payload_off"][i])
            streams[(f, d)] = streams.get((f, d), b"") + records.blob[off:off + int(p["payload_stored"][i])].tobytes()
    def breaks(m: dict, d: int) -> bool:  # what a reader framing from the first byte rejects
        if m["type_name"] == "INVALID":
            return bool(m["error"] != "incomplete")
        if m["type"] == 3:
            return bool(m["qos"] == 3 or (m["qos"] == 0 and m["dup"]) or "malformed" in m or not m["minimal_length"]
                        or "+" in (m.get("topic") or "") or "#" in (m.get("topic") or ""))
        return ("malformed" in m or not m["minimal_length"] or not m["complete"] or m["type"] in (0, 15)
                or m["type"] in MQTT_SENT_BY[1 - d] or m["flags"] != MQTT_REQUIRED_FLAGS[m["type"]])

    mid = {f for (f, d), data in streams.items() if (f, d) not in syn_sides and any(breaks(m, d) for m in parse(data, d))}
    for i in order[p["payload_stored"][order] > 0].tolist():  # HTTP: a side's first bytes open no message
        f, d = int(p["flow"][i]), int(p["direction"][i])
        if (f, d) in firsts or not {80, 8080, 8000, 8008, 8888} & {int(records.flows["server_port"][f]),
                                                                   int(records.flows["client_port"][f])}:
            continue
        off = int(p["payload_off"][i])
        firsts[(f, d)] = records.blob[off:off + int(p["payload_stored"][i])].tobytes()
        if (f, d) not in syn_sides and not _opens_message(firsts[(f, d)], d):
            mid.add(f)
    gone = np.isin(p["flow"], np.fromiter(mid, np.int64, len(mid)))
    packets = {**p, "payload_len": np.where(gone, 0, p["payload_len"]).astype(np.uint32),
               "payload_stored": np.where(gone, 0, p["payload_stored"]).astype(np.uint32)}
    return FieldRecords(packets=packets, flows=records.flows, blob=records.blob, classes=records.classes)


@pytest.mark.parametrize("cut", [0, 16], ids=["whole", "cut16"])
def test_real_corpus_needs_no_app_repairs(cut: int) -> None:
    """The bundled corpus (real captures of the 13 lab classes), whole and cut into 16-packet
    flows: MQTT framing, HTTP heads and service checks change nothing."""
    corpus = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "corpus"
    for path in sorted(corpus.glob("*.pcap*")):
        assert app_repairs_on_real(path, cut) == {}, path.name


# Real captures where conform's app steps do change something, and why (docs/rules.md lists the
# same nmap capture among the rules' documented exceptions).
REAL_APP_REPAIR_CASES = {
    "nmap_version_scan.pcap": ({"http_undecodable_messages", "http_unrequested_responses"},
                               "nmap's version probes send non-HTTP bytes to an HTTP port and the server answers them"),
    "http_espn.pcapng": ({"http_body_lengths"},
                         "the capture misses segments: 2,290 bytes of a 5,328-byte image are in it before the "
                         "next response; a connection of its own announces the bytes it holds"),
    "tcp_ports.pcapng": ({"http_unrequested_responses", "http_body_lengths"},
                         "whole: in a keep-alive connection of many image requests the segment-wise step "
                         "counts one response as unrequested; HTTP-006, reading the reassembled streams, passes it; "
                         "the capture retransmits segments (tshark marks 2), so the bytes after one 3,308-byte body "
                         "number 4,149 and the body's Content-Length is restated as what the flow holds"),
}


@pytest.mark.skipif(not ALL_SHARED, reason=f"shared captures not found at {SHARED_DATA}")
@pytest.mark.parametrize("cut", [0, 16], ids=["whole", "cut16"])
def test_shared_captures_need_no_app_repairs(cut: int) -> None:
    """Every capture of ../shared/data (13 lab classes, public MQTT 3.1.1/5.0 and HTTP
    captures), whole and cut: the MQTT/HTTP/service steps change nothing but the listed cases."""
    for path in ALL_SHARED:
        allowed = REAL_APP_REPAIR_CASES.get(path.name, (set(), ""))[0]
        assert set(app_repairs_on_real(path, cut)) <= allowed, path


def test_a_segment_of_acknowledgements_answering_nothing_is_not_sent(tmp_path: Path) -> None:
    """A PUBACK and a PUBCOMP in one segment, with no PUBLISH or PUBREL before them (MQTT-006):
    the segment carries no data; next to an acknowledgement that answers, the one that does not is
    cut off (4 bytes: too short to stand as a PUBLISH)."""
    acks = bytes([0x40, 2, 0, 7, 0x70, 2, 0, 8])
    records = mqtt_flow([(0, CONNECT), (1, acks)])
    assert mqtt_rule_failures(records, tmp_path) == {"MQTT-006": 1}
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["mqtt_unanswerable_acks"] == 1 and out.packets["payload_len"][4] == 0
    publish = bytes([0x32, 7, 0, 3]) + b"a/b" + bytes([0, 7])
    kept = mqtt_flow([(0, CONNECT), (0, publish), (1, acks)])
    out, counts = conform(kept, kept.packets["ts_ns"])
    assert counts["mqtt_unanswerable_acks"] == 1  # the PUBACK answers the PUBLISH; the PUBCOMP nothing
    off = int(out.packets["payload_off"][5])
    assert out.packets["payload_len"][5] == 4 and out.blob[off:off + 4].tobytes() == acks[:4]


def test_messages_of_the_other_side_are_not_sent() -> None:
    """A client that sends a CONNACK and a server that sends a SUBSCRIBE (MQTT), a client that
    sends a status line and a server that sends a request (HTTP, the client having opened with
    a request): those messages are not sent (the server's SUBSCRIBE, long enough, is sent as a
    PUBLISH of its size), counted."""
    connack, subscribe = bytes([0x20, 2, 0, 0]), bytes([0x82, 8, 0, 7, 0, 3]) + b"a/#" + bytes([0])
    out, counts = conform(mqtt := mqtt_flow([(0, CONNECT), (0, connack), (1, subscribe)]), mqtt.packets["ts_ns"])
    assert counts["mqtt_wrong_side_packets"] == 2 and out.packets["payload_len"][4:].tolist() == [0, 10]
    off = int(out.packets["payload_off"][5])  # the SUBSCRIBE's bytes are a PUBLISH, of the same size
    assert out.blob[off:off + 10].tobytes() == bytes([0x30, 8, 0, 4]) + b"data" + subscribe[8:]
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    http = http_flow([(0, req), (0, b"HTTP/1.1 200 OK\r\n\r\n"), (1, req)])
    out, counts = conform(http, http.packets["ts_ns"])
    assert counts["http_wrong_side_messages"] == 2 and out.packets["payload_len"][4:].tolist() == [0, 0]


def test_a_syn_with_a_zero_window_advertises_its_side_s_window() -> None:
    """TCP-010: the SYN-ACK's window 0 becomes the largest the server advertises in the flow."""
    records = tcp_flow([(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x10, 1, 1, 0), (1, 0x10, 1, 1, 0)],
                       server_port=5000)
    records.packets["window"][:] = [1000, 0, 1000, 4321]
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["tcp_syn_window"] == 1 and out.packets["window"].tolist() == [1000, 4321, 1000, 4321]


@pytest.mark.parametrize(("value", "wire"), [
    (0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
    (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"),
])
def test_remaining_length_matches_the_mqtt_specification_table(value: int, wire: str) -> None:
    """MQTT 3.1.1 §2.2.3's table of Remaining Length encodings (the core's conformance step and
    replay's clients write it without the MQTT plugin)."""
    from pytrafgen.protocols.mqtt_wire import encode_remaining_length

    assert encode_remaining_length(value).hex() == wire


def test_data_follows_the_servers_syn_ack() -> None:
    """A flow that opens with the client's SYN and then sends data without the server's SYN-ACK
    gets one inserted (halfway to the next packet, with the SYN's options); a server ACK without
    data before the data becomes the SYN-ACK; a scan's SYN/RST flow (no data) stays as it is."""
    rows = [(0, 0x02, 0, 0, 0), (0, 0x18, 1, 1, 5), (1, 0x10, 1, 6, 0)]
    records = tcp_flow(rows, options={0: bytes([2, 4, 5, 0xB4])}, payloads={1: b"hello"}, server_port=5000)
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["tcp_synack_added"] == 1 and out.n_packets == 4
    added = out.packets
    assert added["direction"][1] == 1 and added["tcp_flags"][1] == 0x12 and added["ts_ns"][1] == 500_000
    assert out.blob[int(added["l4_opt_off"][1]):][:4].tobytes() == bytes([2, 4, 5, 0xB4])
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols).to_table()
    assert built.tcp_flags.tolist()[:3] == [0x02, 0x12, 0x18]
    early_ack = tcp_flow([(0, 0x02, 0, 0, 0), (1, 0x10, 0, 1, 0), (0, 0x18, 1, 1, 5)], payloads={2: b"hello"},
                         server_port=5000)
    out, counts = conform(early_ack, early_ack.packets["ts_ns"])
    assert counts["tcp_synack_flags"] == 1 and out.packets["tcp_flags"].tolist() == [0x02, 0x12, 0x18]
    scan = tcp_flow([(0, 0x02, 0, 0, 0), (1, 0x14, 0, 1, 0)], server_port=5000)
    out, counts = conform(scan, scan.packets["ts_ns"])
    assert "tcp_synack_added" not in counts and out.packets["tcp_flags"].tolist() == [0x02, 0x14]


def test_an_added_syn_ack_keeps_the_labels_and_statuses_of_the_callers_packets(tmp_path: Path) -> None:
    """The SYN-ACK conform adds is a frame of its own, named by its flow's SYN: the labels file
    still gives every flow its class, and ``status`` has one entry per packet the caller gave."""
    records = tcp_flow([(0, 0x02, 0, 0, 0), (0, 0x18, 1, 1, 5)], payloads={1: b"hello"}, server_port=5000)
    built = build_frames(records, PLAN, seed=0, conform=True, time_order=True,
                         protocols=get_registry().protocols)
    assert len(built) == 3 and built.packet.tolist() == [0, 0, 1] and len(built.status) == 2
    pcap = tmp_path / "g.pcap"
    write_records(pcap, records, PLAN, seed=0)
    rows = (tmp_path / "g.pcap.flows.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[1] == "c"


def test_publish_topic_wildcards_are_written_as_underscores(tmp_path: Path) -> None:
    """A PUBLISH to "a/#/+" (MQTT-013: a topic name carries no wildcards) is sent to "a/_/_",
    every other byte and the packet's size as sampled."""
    publish = bytes([0x30, 7, 0, 5]) + b"a/#/+" + b""
    records = mqtt_flow([(0, CONNECT), (0, publish)])
    assert mqtt_rule_failures(records, tmp_path) == {"MQTT-013": 1}
    out, counts = conform(records, records.packets["ts_ns"])
    off = int(out.packets["payload_off"][4])
    assert counts["mqtt_topic_names"] == 1 and out.blob[off:off + 9].tobytes() == bytes([0x30, 7, 0, 5]) + b"a/_/_"
    assert mqtt_rule_failures(out, tmp_path) == {}
