"""MQTT 3.1, 3.1.1 and 5.0 control packets: framing, field parsing and building.

Framing (fixed header, remaining length) is the same in every version; the variable header
differs (5.0 adds properties and reason codes), so field parsing takes the version, which a
stream learns from its CONNECT (client side) or CONNACK (server side: a 5.0 CONNACK has
properties, so its remaining length exceeds 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the fixed header's Remaining Length, as the core writes it for its own MQTT (conform, replay)
from pytrafgen.protocols.mqtt_wire import encode_remaining_length as encode_varint

TYPE_NAMES = (
    "RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
)
TYPE_NUMBER = {name: i for i, name in enumerate(TYPE_NAMES)}
# Fixed-header flags every type but PUBLISH must carry (MQTT 3.1.1 §2.2.2, 5.0 §2.1.3).
REQUIRED_FLAGS = {t: (2 if TYPE_NAMES[t] in ("PUBREL", "SUBSCRIBE", "UNSUBSCRIBE") else 0) for t in range(16)}
WITH_PACKET_ID = frozenset(("PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK"))

# MQTT 5.0 property identifiers -> value type (§2.2.2.2)
PROPERTY_TYPES: dict[int, str] = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint", 0x11: "u32",
    0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte", 0x18: "u32", 0x19: "byte",
    0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16", 0x22: "u16", 0x23: "u16", 0x24: "byte",
    0x25: "byte", 0x26: "pair", 0x27: "u32", 0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


class Malformed(ValueError):
    """The bytes of a packet's variable header or payload do not parse."""


def decode_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None if ``data`` ends first; Malformed if > 4 bytes."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise Malformed("remaining length longer than 4 bytes")


@dataclass
class RawPacket:
    """One control packet as on the wire: ``first + length_bytes + body``."""

    first: int  # type << 4 | flags
    length_bytes: bytes  # the remaining-length varint as sent
    body: bytes  # variable header + payload (shorter than announced when cut off)

    @property
    def type(self) -> int:
        return self.first >> 4

    @property
    def flags(self) -> int:
        return self.first & 0x0F

    @property
    def remaining_length(self) -> int:
        return decode_varint(self.length_bytes, 0)[0]  # type: ignore[index]

    @property
    def complete(self) -> bool:
        return len(self.body) == self.remaining_length

    @property
    def minimal_length(self) -> bool:
        return self.length_bytes == encode_varint(self.remaining_length)

    def to_bytes(self) -> bytes:
        return bytes([self.first]) + self.length_bytes + self.body


def split_packets(data: bytes) -> tuple[list[RawPacket], int, str | None]:
    """Packets at the start of ``data``, the bytes they cover and why it stopped early: None,
    "incomplete" (ends inside a fixed header) or "remaining length" (a varint over 4 bytes).
    The last packet may be cut short (``complete`` is False)."""
    packets: list[RawPacket] = []
    pos = 0
    while pos < len(data):
        try:
            length = decode_varint(data, pos + 1)
        except Malformed:
            return packets, pos, "remaining length"
        if length is None:
            return packets, pos, "incomplete"
        value, body_start = length
        end = min(body_start + value, len(data))
        packets.append(RawPacket(data[pos], data[pos + 1 : body_start], data[body_start:end]))
        pos = end
    return packets, pos, None


def plausible(packets: list[RawPacket]) -> bool:
    """Whether packets from ``split_packets`` look like MQTT rather than other bytes that
    happen to frame (the middle of a large PUBLISH): every one has a real type and the
    fixed-header flags its type requires (PUBLISH: QoS below 3)."""
    for p in packets:
        publish = p.type == TYPE_NUMBER["PUBLISH"]
        if p.type == 0 or (publish and (p.flags >> 1) & 3 == 3) or (not publish and p.flags != REQUIRED_FLAGS[p.type]):
            return False
    return bool(packets)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed(f"needs {n} bytes at {self.pos}, has {len(self.data) - self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return self.binary().decode("utf-8", errors="surrogateescape")

    def varint(self) -> int:
        got = decode_varint(self.data, self.pos)
        if got is None:
            raise Malformed("variable byte integer runs past the packet")
        value, self.pos = got
        return value

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def properties(self) -> list[tuple[int, Any]]:
        block = _Cursor(self.take(self.varint()))
        props: list[tuple[int, Any]] = []
        while not block.at_end():
            pid = block.varint()
            kind = PROPERTY_TYPES.get(pid)
            if kind is None:
                raise Malformed(f"unknown property id 0x{pid:02x}")
            readers = {"byte": block.u8, "u16": block.u16, "u32": block.u32, "varint": block.varint,
                       "str": block.string, "bin": block.binary,
                       "pair": lambda: (block.string(), block.string())}
            props.append((pid, readers[kind]()))
        return props


def _connect(c: _Cursor, out: dict[str, Any]) -> None:
    out["protocol_name"] = c.string()
    out["protocol_level"] = level = c.u8()
    flags = out["connect_flags"] = c.u8()
    out.update(
        reserved_flag=flags & 1, clean_session=(flags >> 1) & 1, will_flag=(flags >> 2) & 1,
        will_qos=(flags >> 3) & 3, will_retain=(flags >> 5) & 1, password_flag=(flags >> 6) & 1,
        username_flag=(flags >> 7) & 1,
    )
    out["keepalive"] = c.u16()
    if level == 5:
        out["properties"] = c.properties()
    out["client_id"] = c.string()
    if out["will_flag"]:
        if level == 5:
            out["will_properties"] = c.properties()
        out["will_topic"] = c.string()
        out["will_message"] = c.binary()
    if out["username_flag"]:
        out["username"] = c.string()
    if out["password_flag"]:
        out["password"] = c.binary()


def _fields(packet: RawPacket, version: int, out: dict[str, Any]) -> None:
    name = TYPE_NAMES[packet.type]
    c = _Cursor(packet.body)
    v5 = version == 5
    if name == "CONNECT":
        _connect(c, out)
    elif name == "CONNACK":
        out["ack_flags"] = c.u8()
        out["session_present"] = out["ack_flags"] & 1
        out["reason_code"] = c.u8()
        if v5 and not c.at_end():
            out["properties"] = c.properties()
    elif name == "PUBLISH":
        out["topic"] = c.string()
        if out["qos"]:
            out["packet_id"] = c.u16()
        if v5:
            out["properties"] = c.properties()
        out["payload"] = c.rest()
    elif name in WITH_PACKET_ID:
        out["packet_id"] = c.u16()
        if name in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP"):
            if v5 and not c.at_end():  # absent means 0 (success)
                out["reason_code"] = c.u8()
            if v5 and not c.at_end():
                out["properties"] = c.properties()
        elif v5:
            out["properties"] = c.properties()
        if name == "SUBSCRIBE":
            out["subscriptions"] = []
            while not c.at_end():
                out["subscriptions"].append((c.string(), c.u8()))
        elif name == "UNSUBSCRIBE":
            out["topic_filters"] = []
            while not c.at_end():
                out["topic_filters"].append(c.string())
        elif name in ("SUBACK", "UNSUBACK"):
            out["reason_codes"] = list(c.rest())
    elif name in ("DISCONNECT", "AUTH") and v5 and not c.at_end():
        out["reason_code"] = c.u8()
        if not c.at_end():
            out["properties"] = c.properties()
    if not c.at_end():
        raise Malformed(f"{len(packet.body) - c.pos} bytes left after the {name} fields")


def packet_fields(packet: RawPacket, version: int, offset: int) -> dict[str, Any]:
    """The field view of one packet (``MqttProtocol.parse``); ``malformed`` says why the
    variable header or payload did not parse, if it did not."""
    out: dict[str, Any] = {
        "type": packet.type, "type_name": TYPE_NAMES[packet.type], "flags": packet.flags,
        "remaining_length": packet.remaining_length, "minimal_length": packet.minimal_length,
        "complete": packet.complete, "version": version, "offset": offset,
        "length": len(packet.to_bytes()),
    }
    if packet.type == TYPE_NUMBER["PUBLISH"]:
        out.update(dup=packet.flags >> 3, qos=(packet.flags >> 1) & 3, retain=packet.flags & 1)
    if packet.complete:
        try:
            _fields(packet, version, out)
        except Malformed as exc:
            out["malformed"] = str(exc)
    return out


def stream_version(packets: list[RawPacket]) -> int:
    """The protocol level of a stream: from its CONNECT, or 5 if its CONNACK has properties."""
    for p in packets[:4]:
        if p.type == TYPE_NUMBER["CONNECT"] and p.complete and len(p.body) > 2:
            name_len = int.from_bytes(p.body[:2], "big")
            if len(p.body) > 2 + name_len:
                return p.body[2 + name_len]
        if p.type == TYPE_NUMBER["CONNACK"] and p.complete:
            return 5 if len(p.body) > 2 else 4
    return 4


# -- building -------------------------------------------------------------------------------
def _str(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", errors="surrogateescape")
    return len(raw).to_bytes(2, "big") + raw


def _props(props: list[tuple[int, Any]]) -> bytes:
    out = bytearray()
    for pid, value in props:
        out += encode_varint(pid)
        kind = PROPERTY_TYPES[pid]
        if kind == "byte":
            out.append(value)
        elif kind in ("u16", "u32"):
            out += int(value).to_bytes(2 if kind == "u16" else 4, "big")
        elif kind == "varint":
            out += encode_varint(value)
        elif kind == "pair":
            out += _str(value[0]) + _str(value[1])
        else:
            out += _str(value)
    return encode_varint(len(out)) + bytes(out)


def build_packet(m: Mapping[str, Any]) -> bytes:
    """Bytes of one packet from its fields (``packet_fields``' keys); the remaining length
    and every string/property length are derived."""
    name = m.get("type_name") or TYPE_NAMES[m["type"]]
    v5 = m.get("version", 4) == 5
    flags = m.get("flags", REQUIRED_FLAGS[TYPE_NUMBER[name]])
    if name == "PUBLISH" and "qos" in m:
        flags = (m.get("dup", 0) << 3) | (m["qos"] << 1) | m.get("retain", 0)
    body = bytearray()
    if name == "CONNECT":
        body += _str(m["protocol_name"]) + bytes([m["protocol_level"], m["connect_flags"]])
        body += m["keepalive"].to_bytes(2, "big")
        body += _props(m.get("properties", [])) if m["protocol_level"] == 5 else b""
        body += _str(m["client_id"])
        if m["connect_flags"] & 4:
            body += _props(m.get("will_properties", [])) if m["protocol_level"] == 5 else b""
            body += _str(m["will_topic"]) + _str(m["will_message"])
        body += _str(m["username"]) if m["connect_flags"] & 0x80 else b""
        body += _str(m["password"]) if m["connect_flags"] & 0x40 else b""
    elif name == "CONNACK":
        body += bytes([m.get("ack_flags", 0), m.get("reason_code", 0)])
        body += _props(m.get("properties", [])) if v5 else b""
    elif name == "PUBLISH":
        body += _str(m["topic"])
        body += m["packet_id"].to_bytes(2, "big") if (flags >> 1) & 3 else b""
        body += _props(m.get("properties", [])) if v5 else b""
        body += bytes(m.get("payload", b""))
    elif name in WITH_PACKET_ID:
        body += m["packet_id"].to_bytes(2, "big")
        if name in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP"):
            if v5 and ("reason_code" in m or m.get("properties")):
                body.append(m.get("reason_code", 0))
                body += _props(m["properties"]) if m.get("properties") else b""
        elif v5:
            body += _props(m.get("properties", []))
        for topic, options in m.get("subscriptions", []):
            body += _str(topic) + bytes([options])
        for topic in m.get("topic_filters", []):
            body += _str(topic)
        body += bytes(m.get("reason_codes", []))
    elif name in ("DISCONNECT", "AUTH") and v5 and ("reason_code" in m or m.get("properties")):
        body.append(m.get("reason_code", 0))
        body += _props(m["properties"]) if m.get("properties") else b""
    return bytes([(TYPE_NUMBER[name] << 4) | flags]) + encode_varint(len(body)) + bytes(body)
