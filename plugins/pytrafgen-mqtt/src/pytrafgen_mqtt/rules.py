"""MQTT compliance rules (OASIS MQTT 3.1.1 and 5.0), checked on reassembled streams.

Each rule reads ``ctx.streams("mqtt")`` (``pytrafgen.evaluate.context.RuleContext``): per flow,
both directions' in-order bytes with the packets ``MqttProtocol.parse`` found. Packet rules
judge a control packet at the TCP packet that carries its first byte; order across the two
directions is capture order of those TCP packets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pytrafgen.interfaces import Rule
from pytrafgen_mqtt.packets import REQUIRED_FLAGS, TYPE_NUMBER

Indices = tuple[np.ndarray, np.ndarray]
Packet = dict[str, Any]

CONNACK_V3 = frozenset(range(6))
CONNACK_V5 = frozenset((0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
                        0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F))
REASON_CODES_V5: dict[str, frozenset[int]] = {
    "PUBACK": frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)),
    "PUBREC": frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)),
    "PUBREL": frozenset((0x00, 0x92)),
    "PUBCOMP": frozenset((0x00, 0x92)),
    "SUBACK": frozenset((0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)),
    "UNSUBACK": frozenset((0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)),
    "DISCONNECT": frozenset((0x00, 0x04, *range(0x80, 0x84), 0x87, 0x89, 0x8B, *range(0x8D, 0x91),
                             *range(0x93, 0xA3))),
    "AUTH": frozenset((0x00, 0x18, 0x19)),
}
SUBACK_V3 = frozenset((0x00, 0x01, 0x02, 0x80))
PROTOCOL_NAME_LEVEL = frozenset((("MQIsdp", 3), ("MQTT", 4), ("MQTT", 5)))
# ack type -> (type it answers, QoS that request must have, or None for any)
ANSWERS = {
    "PUBACK": ("PUBLISH", 1), "PUBREC": ("PUBLISH", 2), "PUBREL": ("PUBREC", None),
    "PUBCOMP": ("PUBREL", None), "SUBACK": ("SUBSCRIBE", None), "UNSUBACK": ("UNSUBSCRIBE", None),
}


def _packets(ctx: Any) -> Iterator[tuple[Any, Any, Packet]]:
    """Every parsed packet; a stream that may begin mid-packet (its side's SYN is not in the
    flow) and does not parse from its first byte shows nothing to judge."""
    for flow in ctx.streams("mqtt"):
        for stream in (flow.c2s, flow.s2c):
            msgs = stream.messages
            if stream.starts_mid and msgs and msgs[0]["type_name"] == "INVALID" and msgs[0]["offset"] == 0:
                continue
            for p in msgs:
                yield flow, stream, p


def _packet_rule(judge: Callable[[Packet], bool | None], with_invalid: bool = False) -> Callable[[Any], Indices]:
    """A packet-scoped rule from ``judge(packet)``: None = not applicable, True = violation.
    Packets cut short by the end of the stream are judged only on their fixed header."""

    def check(ctx: Any) -> Indices:
        applicable: list[int] = []
        violating: list[int] = []
        for _, stream, p in _packets(ctx):
            if p["type_name"] == "INVALID" and not with_invalid:
                continue
            verdict = judge(p)
            if verdict is None:
                continue
            at = stream.packet_at(p["offset"])
            applicable.append(at)
            if verdict:
                violating.append(at)
        return np.unique(np.asarray(applicable, np.int64)), np.unique(np.asarray(violating, np.int64))

    return check


def _of(*names: str) -> Callable[[Packet], bool]:
    return lambda p: p["type_name"] in names and p["complete"] and "malformed" not in p


def _reserved_type(p: Packet) -> bool:
    return p["type"] == 0 or (p["type"] == TYPE_NUMBER["AUTH"] and p["version"] != 5)


def _fixed_flags(p: Packet) -> bool | None:
    if p["type_name"] == "PUBLISH":
        return None
    return p["flags"] != REQUIRED_FLAGS[p["type"]]


def _publish_qos(p: Packet) -> bool | None:
    if p["type_name"] != "PUBLISH":
        return None
    return p["qos"] == 3 or (p["qos"] == 0 and p["dup"] == 1)


def _packet_id_nonzero(p: Packet) -> bool | None:
    return p["packet_id"] == 0 if "packet_id" in p else None


def _protocol_name_level(p: Packet) -> bool | None:
    if not _of("CONNECT")(p):
        return None
    return (p["protocol_name"], p["protocol_level"]) not in PROTOCOL_NAME_LEVEL


def _connack(p: Packet) -> bool | None:
    if not _of("CONNACK")(p):
        return None
    valid = CONNACK_V5 if p["version"] == 5 else CONNACK_V3
    bad_flags = p["ack_flags"] & 0xFE or (p["reason_code"] != 0 and p["session_present"])
    return p["reason_code"] not in valid or bool(bad_flags)


def _connect_flags(p: Packet) -> bool | None:
    if not _of("CONNECT")(p):
        return None
    bad = p["reserved_flag"] or p["will_qos"] == 3
    bad = bad or (not p["will_flag"] and (p["will_qos"] or p["will_retain"]))
    if p["protocol_level"] == 4:  # 3.1.1 §3.1.2.9: no password without a username
        bad = bad or (p["password_flag"] and not p["username_flag"])
    return bool(bad)


def _ack_codes(p: Packet) -> bool | None:
    name = p["type_name"]
    if not _of(*REASON_CODES_V5)(p):
        return None
    codes = p.get("reason_codes", [p.get("reason_code", 0)])
    if p["version"] != 5:
        if name != "SUBACK":
            return None
        return not codes or any(c not in SUBACK_V3 for c in codes)
    return (name == "SUBACK" and not codes) or any(c not in REASON_CODES_V5[name] for c in codes)


def _subscribe_payload(p: Packet) -> bool | None:
    if _of("UNSUBSCRIBE")(p):
        return not p["topic_filters"]
    if not _of("SUBSCRIBE")(p):
        return None
    reserved = 0xC0 if p["version"] == 5 else 0xFC
    return not p["subscriptions"] or any(
        opt & reserved or opt & 3 == 3 or (p["version"] == 5 and (opt >> 4) & 3 == 3)
        for _, opt in p["subscriptions"]
    )


def _topic_name(p: Packet) -> bool | None:
    if not _of("PUBLISH")(p):
        return None
    topic = p["topic"]
    if not topic:  # 5.0 allows an empty topic when a topic alias stands in for it
        return not any(pid == 0x23 for pid, _ in p.get("properties", []))
    return "+" in topic or "#" in topic


def _well_formed(p: Packet) -> bool | None:
    if p["type_name"] == "INVALID":
        return p["error"] != "incomplete" or None
    return not p["minimal_length"] or "malformed" in p


def _flow_rule(judge: Callable[[Any, Any], bool | None]) -> Callable[[Any], Indices]:
    def check(ctx: Any) -> Indices:
        applicable: list[int] = []
        violating: list[int] = []
        for flow in ctx.streams("mqtt"):
            verdict = judge(ctx, flow)
            if verdict is None:
                continue
            applicable.append(flow.flow)
            if verdict:
                violating.append(flow.flow)
        return np.asarray(applicable, np.int64), np.asarray(violating, np.int64)

    return check


def _connect_first(ctx: Any, flow: Any) -> bool | None:
    """Judged on flows whose TCP handshake was captured (else the session began earlier)."""
    packets = [p for p in flow.c2s.messages if p["type_name"] != "INVALID"]
    first_tcp = ctx.flow_packets(flow.flow)[:1]
    if not packets or len(first_tcp) == 0 or not int(ctx.col("tcp_flags")[first_tcp[0]]) & 0x02:
        return None
    return packets[0]["type_name"] != "CONNECT"


def _single_connect(ctx: Any, flow: Any) -> bool | None:
    connects = sum(p["type_name"] == "CONNECT" for p in flow.c2s.messages)
    return connects > 1 if connects else None


def _acks_answer(ctx: Any) -> Indices:
    """MQTT-006: every acknowledgement answers an earlier packet of the right type (and QoS)
    with the same packet identifier, sent by the other side; judged where the other side's
    stream is in view from its start (its SYN is in the flow) and has no gap."""
    applicable: list[int] = []
    violating: list[int] = []
    for flow in ctx.streams("mqtt"):
        sent: list[dict[tuple[str, int], list[int]]] = [{}, {}]  # per direction: (type, id) -> packets
        for d, stream in enumerate((flow.c2s, flow.s2c)):
            for p in stream.messages:
                if "packet_id" in p:
                    key = (p["type_name"], p["packet_id"])
                    if p["type_name"] == "PUBLISH":
                        key = (f"PUBLISH/{p['qos']}", p["packet_id"])
                    sent[d].setdefault(key, []).append(stream.packet_at(p["offset"]))
        for d, stream in enumerate((flow.c2s, flow.s2c)):
            peer = flow.s2c if d == 0 else flow.c2s
            if peer.starts_mid or peer.truncated:
                continue  # the request may precede the flow's first packet or follow a gap
            for p in stream.messages:
                if p["type_name"] not in ANSWERS or "packet_id" not in p:
                    continue
                kind, qos = ANSWERS[p["type_name"]]
                key = (kind if qos is None else f"{kind}/{qos}", p["packet_id"])
                at = stream.packet_at(p["offset"])
                applicable.append(at)
                if not any(q <= at for q in sent[1 - d].get(key, [])):
                    violating.append(at)
    return np.unique(np.asarray(applicable, np.int64)), np.unique(np.asarray(violating, np.int64))


def mqtt_rules() -> list[Rule]:
    def rule(n: int, scope: str, description: str, check: Callable[[Any], Indices]) -> Rule:
        return Rule(f"MQTT-{n:03d}", "mqtt", scope, description, check)

    return [
        rule(1, "flow", "the client's first packet is CONNECT", _flow_rule(_connect_first)),
        rule(2, "packet", "packet type is not reserved (0; AUTH only in 5.0)", _packet_rule(_reserved_type)),
        rule(3, "packet", "fixed-header flags are the required ones (2 for PUBREL/SUBSCRIBE/UNSUBSCRIBE, else 0)",
             _packet_rule(_fixed_flags)),
        rule(4, "packet", "PUBLISH QoS is 0, 1 or 2, and DUP is 0 at QoS 0", _packet_rule(_publish_qos)),
        rule(5, "packet", "packet identifiers are non-zero", _packet_rule(_packet_id_nonzero)),
        rule(6, "packet", "an acknowledgement answers an earlier packet of the peer with its identifier and QoS",
             _acks_answer),
        rule(7, "packet", "CONNECT protocol name and level agree (MQIsdp/3, MQTT/4, MQTT/5)",
             _packet_rule(_protocol_name_level)),
        rule(8, "packet", "CONNACK return/reason code is valid for the version; session present 0 on refusal",
             _packet_rule(_connack)),
        rule(9, "packet", "CONNECT flags: reserved bit 0, will QoS < 3, will QoS/retain 0 without a will",
             _packet_rule(_connect_flags)),
        rule(10, "packet", "PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK/UNSUBACK/DISCONNECT/AUTH codes are valid",
             _packet_rule(_ack_codes)),
        rule(11, "packet", "SUBSCRIBE/UNSUBSCRIBE carry at least one topic filter; options' reserved bits 0",
             _packet_rule(_subscribe_payload)),
        rule(12, "flow", "a client sends CONNECT at most once per connection", _flow_rule(_single_connect)),
        rule(13, "packet", "PUBLISH topic names are non-empty and carry no wildcards", _packet_rule(_topic_name)),
        rule(14, "packet", "remaining length minimally encoded and equal to what the fields use",
             _packet_rule(_well_formed, with_invalid=True)),
    ]
