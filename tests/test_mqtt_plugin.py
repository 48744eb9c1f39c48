"""The MQTT plugin (plugins/pytrafgen-mqtt): parsing 3.1/3.1.1/5.0, the exact token codec,
building, rules, and agreement with tshark on every MQTT capture in ../shared/data."""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import captures_with, shared_ids

from pytrafgen.errors import TokenError
from pytrafgen.testing import (
    TcpConversation,
    assert_build_roundtrip,
    assert_codec_roundtrip,
    check_rule,
    find_rule,
    rule_context,
)

pytrafgen_mqtt = pytest.importorskip("pytrafgen_mqtt", reason="pytrafgen-mqtt is not installed")
from pytrafgen_mqtt.tokens import TOKEN_ID, TOKEN_NAMES, decode_payload  # noqa: E402

MQTT = pytrafgen_mqtt.MqttProtocol()
build = pytrafgen_mqtt.packets.build_packet


MQTT_CAPTURES = captures_with("mqtt")

CONNECT_311 = build({"type_name": "CONNECT", "protocol_name": "MQTT", "protocol_level": 4,
                     "connect_flags": 0xC2, "keepalive": 60, "client_id": "sensor-1",
                     "username": "user", "password": b"secret"})
CONNECT_5_WILL = build({"type_name": "CONNECT", "protocol_name": "MQTT", "protocol_level": 5,
                        "connect_flags": 0x0E, "keepalive": 30, "properties": [(0x11, 3600)],
                        "client_id": "c5", "will_properties": [(0x18, 5)], "will_topic": "bye",
                        "will_message": b"gone"})
CONNACK_311 = build({"type_name": "CONNACK", "reason_code": 0})
CONNACK_5 = build({"type_name": "CONNACK", "version": 5, "reason_code": 0, "properties": [(0x21, 20)]})
PUBLISH_QOS1 = build({"type_name": "PUBLISH", "qos": 1, "topic": "lab/temp", "packet_id": 7, "payload": b"21.5"})
PUBACK_7 = build({"type_name": "PUBACK", "packet_id": 7})


# -- framing and fields ----------------------------------------------------------------------
def test_parse_mqtt311_session() -> None:
    stream = CONNECT_311 + PUBLISH_QOS1 + build({"type_name": "SUBSCRIBE", "packet_id": 2,
                                                  "subscriptions": [("lab/#", 1)]})
    connect, publish, subscribe = MQTT.parse(stream, 0)
    assert connect["type_name"] == "CONNECT" and connect["version"] == 4
    assert (connect["protocol_name"], connect["client_id"], connect["username"], connect["password"]) == (
        "MQTT", "sensor-1", "user", b"secret")
    assert connect["clean_session"] == 1 and connect["keepalive"] == 60
    assert (publish["qos"], publish["topic"], publish["packet_id"], publish["payload"]) == (1, "lab/temp", 7, b"21.5")
    assert publish["remaining_length"] == len(PUBLISH_QOS1) - 2
    assert subscribe["flags"] == 2 and subscribe["subscriptions"] == [("lab/#", 1)]
    assert subscribe["offset"] == len(CONNECT_311 + PUBLISH_QOS1)


def test_parse_mqtt5_properties_and_reason_codes() -> None:
    (connect,) = MQTT.parse(CONNECT_5_WILL, 0)
    assert connect["properties"] == [(0x11, 3600)] and connect["will_properties"] == [(0x18, 5)]
    assert (connect["will_topic"], connect["will_message"]) == ("bye", b"gone")
    connack, suback = MQTT.parse(CONNACK_5 + build({"type_name": "SUBACK", "version": 5, "packet_id": 3,
                                                    "properties": [(0x1F, "why")], "reason_codes": [1, 0x80]}), 1)
    assert connack["version"] == 5 and connack["properties"] == [(0x21, 20)]
    assert suback["properties"] == [(0x1F, "why")] and suback["reason_codes"] == [1, 0x80]


def test_parse_long_remaining_length_and_cut_packet() -> None:
    big = build({"type_name": "PUBLISH", "qos": 0, "topic": "t", "payload": bytes(300)})
    assert big[1:3] == bytes([0xAF, 0x02])  # 303 = 0x12F as a two-byte variable integer
    packets = MQTT.parse(big + big[:100], 1)
    assert packets[0]["payload"] == bytes(300) and packets[0]["complete"]
    assert not packets[1]["complete"] and "payload" not in packets[1]


# -- token codec -----------------------------------------------------------------------------
CODEC_CASES = {
    "connect 3.1.1": CONNECT_311,
    "connect 5 with will": CONNECT_5_WILL,
    "connect 3.1": build({"type_name": "CONNECT", "protocol_name": "MQIsdp", "protocol_level": 3,
                          "connect_flags": 2, "keepalive": 10, "client_id": "old"}),
    "connack 5": CONNACK_5,
    "publish + puback": PUBLISH_QOS1 + PUBACK_7,
    "publish cut by the segment": PUBLISH_QOS1 + PUBLISH_QOS1[:6],
    "non-minimal remaining length": bytes([0xC0, 0x80, 0x00]),
    "unsubscribe": build({"type_name": "UNSUBSCRIBE", "packet_id": 5, "topic_filters": ["a", "b/#"]}),
    "pings and disconnect": bytes([0xC0, 0, 0xD0, 0, 0xE0, 0]),
    "malformed connect body": bytes([0x10, 3, 0, 9, 1]),
}


@pytest.mark.parametrize("case", list(CODEC_CASES))
def test_codec_round_trip(case: str) -> None:
    assert_codec_roundtrip(MQTT, CODEC_CASES[case], 0)


def test_structured_tokens_and_derived_lengths() -> None:
    tokens = MQTT.encode(PUBLISH_QOS1, 0)
    assert tokens is not None
    names = [TOKEN_NAMES[t] for t in tokens]
    assert names[:3] == ["TYPE:PUBLISH", "FLAGS:2", "RL_DERIVED"]
    assert names[3:11] == [f"0x{b:02x}" for b in b"lab/temp"] and names[11] == "STR_END"
    # A longer topic and payload from a generator get correct string and remaining lengths.
    longer = tokens[:11] + list(b"/x") + tokens[11:-1] + list(b"!") + tokens[-1:]
    assert decode_payload(longer) == build({"type_name": "PUBLISH", "qos": 1, "topic": "lab/temp/x",
                                            "packet_id": 7, "payload": b"21.5!"})
    connect = [TOKEN_NAMES[t] for t in MQTT.encode(CONNECT_311, 0)]
    assert connect[3:5] == ["PNAME:MQTT", "LEVEL:4"]


def test_encode_declines_continuations() -> None:
    assert MQTT.encode(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), 0) is None  # 5-byte length
    assert MQTT.encode(b"\x00\x02ab", 0) is None  # reserved type 0
    # The middle of a large PUBLISH is random-looking bytes: mostly left as bytes (a first
    # byte with a valid type and flags, ~10 %, followed by a long length still passes).
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, 200, dtype=np.uint8).tobytes() for _ in range(500)]
    accepted = sum(MQTT.encode(c, 0) is not None for c in chunks)
    assert accepted < 50


def test_vocabulary_is_modest_and_unique() -> None:
    assert 280 < len(TOKEN_NAMES) <= 600 and len(set(TOKEN_NAMES)) == len(TOKEN_NAMES)


def test_packets_before_a_broken_one_are_kept() -> None:
    ping = MQTT.encode(bytes([0xC0, 0x00]), 0)
    assert ping is not None
    assert decode_payload(ping + ping + [TOKEN_ID["TYPE:PUBLISH"]]) == bytes([0xC0, 0x00]) * 2
    with pytest.raises(TokenError):
        decode_payload([TOKEN_ID["TYPE:PUBLISH"], *ping])


@pytest.mark.parametrize(
    "tokens",
    [[], [TOKEN_ID["TYPE:PUBLISH"]], [TOKEN_ID["TYPE:PINGREQ"], TOKEN_ID["FLAGS:0"], TOKEN_ID["RL_DERIVED"], 1],
     [TOKEN_ID["TYPE:PINGREQ"], TOKEN_ID["FLAGS:0"], TOKEN_ID["PKT_END"]], [5000],
     [TOKEN_ID["TYPE:CONNECT"], TOKEN_ID["FLAGS:0"], TOKEN_ID["RL_DERIVED"], TOKEN_ID["LEVEL:4"]]],
    ids=["empty", "truncated", "no RAW", "missing length mode", "out of range", "connect without name"],
)
def test_decode_rejects_malformed_sequences(tokens: list[int]) -> None:
    with pytest.raises(TokenError):
        decode_payload(tokens)


# -- build -----------------------------------------------------------------------------------
def test_build_round_trips_parsed_streams() -> None:
    assert_build_roundtrip(MQTT, CONNECT_311 + PUBLISH_QOS1 + bytes([0xE0, 0]), 0)
    assert_build_roundtrip(MQTT, CONNACK_5 + build({"type_name": "PUBACK", "version": 5, "packet_id": 9,
                                                    "reason_code": 0x10}), 1)


# -- rules -----------------------------------------------------------------------------------
def _ctx(client: list[bytes], server: list[bytes], handshake: bool = True) -> object:
    conv = TcpConversation(server=("10.0.0.2", 1883))
    if handshake:
        conv.handshake()
    for c, s in zip(client, server, strict=True):
        if c:
            conv.send(0, c)
        if s:
            conv.send(1, s)
    return rule_context(conv.close().table(), protocols={"mqtt": MQTT})


GOOD = ([CONNECT_311, PUBLISH_QOS1], [CONNACK_311, PUBACK_7])


def test_rules_are_many_and_documented() -> None:
    rules = MQTT.rules()
    assert len(rules) >= 10 and len({r.id for r in rules}) == len(rules)
    assert all(r.id.startswith("MQTT-") and r.protocol == "mqtt" and r.description for r in rules)


def test_a_clean_session_passes_every_rule() -> None:
    ctx = _ctx(*GOOD)
    judged = 0
    for rule in MQTT.rules():
        applicable, violating = check_rule(rule, ctx)
        assert len(violating) == 0, rule.id
        judged += len(applicable) > 0
    assert judged >= 9  # most rules apply to a CONNECT/CONNACK/PUBLISH/PUBACK session


BAD_CASES = {
    "MQTT-001": ([PUBLISH_QOS1, CONNECT_311], [b"", CONNACK_311]),
    "MQTT-002": ([CONNECT_311, bytes([0x00, 0x00])], [CONNACK_311, b""]),
    "MQTT-003": ([CONNECT_311, bytes([0xC1, 0x00])], [CONNACK_311, b""]),
    "MQTT-004": ([CONNECT_311, build({"type_name": "PUBLISH", "flags": 6, "topic": "t", "packet_id": 1})],
                 [CONNACK_311, b""]),
    "MQTT-005": ([CONNECT_311, build({"type_name": "PUBLISH", "qos": 1, "topic": "t", "packet_id": 0})],
                 [CONNACK_311, b""]),
    "MQTT-006": ([CONNECT_311], [CONNACK_311 + PUBACK_7]),
    "MQTT-007": ([build({"type_name": "CONNECT", "protocol_name": "MQTT", "protocol_level": 3,
                         "connect_flags": 2, "keepalive": 1, "client_id": "x"})], [CONNACK_311]),
    "MQTT-008": ([CONNECT_311], [build({"type_name": "CONNACK", "reason_code": 9})]),
    "MQTT-009": ([build({"type_name": "CONNECT", "protocol_name": "MQTT", "protocol_level": 4,
                         "connect_flags": 0x22, "keepalive": 1, "client_id": "x"})], [CONNACK_311]),
    "MQTT-010": ([CONNECT_311, build({"type_name": "SUBSCRIBE", "packet_id": 4, "subscriptions": [("a", 0)]})],
                 [CONNACK_311, build({"type_name": "SUBACK", "packet_id": 4, "reason_codes": [7]})]),
    "MQTT-011": ([CONNECT_311, build({"type_name": "SUBSCRIBE", "packet_id": 4, "subscriptions": [("a", 0x40)]})],
                 [CONNACK_311, b""]),
    "MQTT-012": ([CONNECT_311, CONNECT_311], [CONNACK_311, b""]),
    "MQTT-013": ([CONNECT_311, build({"type_name": "PUBLISH", "qos": 0, "topic": "a/+/b"})], [CONNACK_311, b""]),
    "MQTT-014": ([CONNECT_311, bytes([0xC0, 0x80, 0x00])], [CONNACK_311, b""]),
}


@pytest.mark.parametrize("rule_id", list(BAD_CASES))
def test_rule_fires_on_a_crafted_violation(rule_id: str) -> None:
    rule = find_rule(MQTT.rules(), rule_id)
    assert len(check_rule(rule, _ctx(*GOOD))[1]) == 0
    applicable, violating = check_rule(rule, _ctx(*BAD_CASES[rule_id]))
    assert len(violating) == 1 and set(violating) <= set(applicable)


def test_connect_first_needs_the_handshake() -> None:
    mid_session = _ctx([PUBLISH_QOS1], [PUBACK_7], handshake=False)
    assert len(check_rule(find_rule(MQTT.rules(), "MQTT-001"), mid_session)[0]) == 0


def test_recognises_sessions_by_connect_by_port_and_mid_session() -> None:
    assert MQTT.recognise(5555, CONNECT_311, b"")
    assert MQTT.recognise(1883, PUBLISH_QOS1, b"")
    assert MQTT.recognise(49081, PUBLISH_QOS1 + PUBLISH_QOS1, PUBACK_7)  # roles swapped
    assert not MQTT.recognise(80, b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n")
    assert not MQTT.recognise(1883, b"GET / HTTP/1.1\r\n\r\n", b"")


# -- shared captures -------------------------------------------------------------------------
def _tshark_mqtt(path: Path, tcp_rows: np.ndarray) -> tuple[collections.Counter, int | None]:
    """tshark's (type, topic-or-filter, packet id) values per capture, and the first frame
    where tshark itself reports a malformed MQTT packet (its framing is lost from there)."""
    fields = ["frame.number", "mqtt.msgtype", "mqtt.topic", "mqtt.msgid", "_ws.malformed"]
    cmd = ["tshark", "-r", str(path), "-Y", "mqtt", "-T", "fields", "-E", "aggregator=\x1f"]
    out = subprocess.run(cmd + [a for f in fields for a in ("-e", f)], capture_output=True, text=True,
                         check=True).stdout
    seen: collections.Counter = collections.Counter()
    first_malformed = None
    for line in filter(None, out.split("\n")):  # not splitlines(): it splits at \x1f too
        frame, types, topics, ids, malformed = line.split("\t")
        if malformed and first_malformed is None:
            first_malformed = int(frame)
        if tcp_rows[int(frame) - 1]:
            for kind, values in (("type", types), ("topic", topics), ("id", ids)):
                seen.update((kind, v) for v in values.split("\x1f") if v)
    return seen, first_malformed


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("path", MQTT_CAPTURES, ids=shared_ids(MQTT_CAPTURES))
def test_fields_agree_with_tshark_and_tokens_round_trip(path: Path) -> None:
    from pytrafgen.capture import read_pcap

    table = read_pcap(path)
    ctx = rule_context(table, protocols={"mqtt": MQTT})
    ours: collections.Counter = collections.Counter()
    for flow in ctx.streams("mqtt"):
        for stream in (flow.c2s, flow.s2c):
            for p in stream.messages:
                assert p["type_name"] != "INVALID" and "malformed" not in p, p
                ours[("type", str(p["type"]))] += 1
                topics = [p.get("topic")] + [t for t, _ in p.get("subscriptions", [])] + p.get("topic_filters", [])
                ours.update(("topic", t) for t in topics if t is not None)
                ours.update([("id", str(p["packet_id"]))] if "packet_id" in p else [])
    theirs, first_malformed = _tshark_mqtt(path, table.proto == 6)
    if first_malformed is None:
        assert ours == theirs
    else:
        # tshark lost MQTT framing (it reports a malformed packet); our parse above covered
        # every stream end to end without one, so compare only the kinds of packets tshark saw
        # intact: we must find at least as many of each.
        assert all(ours[k] >= n for k, n in theirs.items() if k[0] == "type" and k[1] in ("3", "14"))
    encoded = 0
    for flow in ctx.streams("mqtt"):
        for direction in (0, 1):
            for i in flow.direction(direction).packets:
                payload = table.payload(int(i))
                tokens = MQTT.encode(payload, direction)
                if tokens is not None:
                    assert MQTT.decode(tokens, direction) == payload
                    encoded += 1
    assert encoded >= 1


def test_fixed_two_byte_bodies_sampled_short_are_completed() -> None:
    """A CONNACK sampled with a one-byte body gets its two bytes (flags 0, the code kept)."""
    tokens = MQTT.encode(bytes([0x20, 0x02, 0x00, 0x00]), 1)
    assert tokens is not None
    names = [TOKEN_NAMES[t] for t in tokens]
    short = [t for k, t in enumerate(tokens) if not (names[k] == "0x00" and k == names.index("0x00"))]
    assert decode_payload(short) == bytes([0x20, 0x02, 0x00, 0x00])


def test_a_string_that_runs_into_the_packet_end_ends_there() -> None:
    tokens = MQTT.encode(build({"type_name": "PUBLISH", "qos": 0, "topic": "lab/t", "payload": b"x"}), 0)
    assert tokens is not None
    names = [TOKEN_NAMES[t] for t in tokens]
    cut = [t for k, t in enumerate(tokens) if names[k] != "STR_END"]  # the topic is never closed
    got = decode_payload(cut)
    (packet,) = MQTT.parse(got, 0)
    assert packet["type_name"] == "PUBLISH" and "malformed" not in packet


def test_total_decode_frames_for_any_tokens() -> None:
    """``MqttProtocol.decode`` (the AR model's decode path) never fails: any token sequence
    gives control packets that frame end to end (the last may be cut short only where the
    tokens say so, RL_EXPLICIT) with a type that is not reserved, or nothing for no tokens; a
    sequence the grammar accepts decodes exactly as ``decode_payload``."""
    from pytrafgen_mqtt.packets import split_packets

    rng = np.random.default_rng(0)
    for k in range(3000):
        seq = rng.integers(0, len(TOKEN_NAMES) + 3, size=int(rng.integers(0, 40))).tolist()
        if k % 2:
            seq = [TOKEN_ID["TYPE:PUBLISH"], *seq]
        for direction in (0, 1):
            data = MQTT.decode(seq, direction)
            if not seq:
                assert data == b""
                continue
            try:
                assert data == decode_payload(seq)
                continue
            except TokenError:
                pass
            packets, consumed, error = split_packets(data)
            assert error is None and consumed == len(data) and len(packets) == 1 and packets[0].complete
            assert packets[0].type not in (0, 15), (seq, data)


def test_total_decode_keeps_what_the_tokens_hold() -> None:
    """The sampled sequences that used to be drawn again: a PUBREL with a topic-like body but no
    RAW keeps its type and required flags, its bytes the body; a packet with no TYPE token is a
    PUBLISH; a CONNECT's protocol name and level tokens are its bytes."""
    pubrel = [TOKEN_ID["TYPE:PUBREL"], TOKEN_ID["FLAGS:2"], TOKEN_ID["RL_DERIVED"], *b"ab/c", TOKEN_ID["STR_END"]]
    assert MQTT.decode(pubrel, 0) == bytes([0x62, 4]) + b"ab/c"
    typeless = [TOKEN_ID["FLAGS:0"], TOKEN_ID["RL_DERIVED"], *b"xyz"]
    assert MQTT.decode(typeless, 0) == bytes([0x30, 3]) + b"xyz"
    connect = [TOKEN_ID["TYPE:CONNECT"], TOKEN_ID["RL_DERIVED"], TOKEN_ID["PNAME:MQTT"], TOKEN_ID["LEVEL:4"], 0xC2]
    assert MQTT.decode(connect, 0) == bytes([0x10, 8]) + b"\x00\x04MQTT\x04\xc2"
