"""The MQTT token codec: a local vocabulary and an exact encode/decode of whole packets.

Grammar of one packet payload (``TEXT`` = byte tokens then STR_END, its 2-byte length derived)::

    payload  := packet+
    packet   := TYPE:<name> FLAGS:<n> RL_DERIVED body PKT_END
              | TYPE:<name> FLAGS:<n> RL_EXPLICIT byte{1,4} byte* PKT_END
    body     := connect | publish | RAW byte*          (by the TYPE token)
    connect  := pname level byte(flags) byte byte(keep-alive) [props if level 5]
                TEXT(client id) [[props if 5] TEXT(will topic) TEXT(will message) if will flag]
                [TEXT(username)] [TEXT(password)]     (as the connect flags say)
    pname    := PNAME:MQTT | PNAME:MQIsdp | PNAME_OTHER TEXT
    level    := LEVEL:3 | LEVEL:4 | LEVEL:5 | LEVEL_OTHER byte
    props    := byte* PROPS_END                       (MQTT 5.0 properties, length derived)
    publish  := TEXT(topic) [byte byte (packet id) if QoS > 0] byte*(rest: payload; in 5.0
                the properties come first)

The remaining length is derived (``RL_DERIVED``) when the packet is complete and its length
is minimally encoded; otherwise (the last packet of a payload cut by the segment end) it is
given as bytes (``RL_EXPLICIT``) and the body follows as bytes. Every other packet type's
body is bytes after ``RAW``: its layout differs between 3.1.1 and 5.0, and one packet alone
does not say which version the connection speaks.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytrafgen.errors import TokenError
from pytrafgen_mqtt.packets import (
    TYPE_NAMES,
    RawPacket,
    decode_varint,
    encode_varint,
    plausible,
    split_packets,
)

STRUCTURE = (
    "PKT_END", "RL_DERIVED", "RL_EXPLICIT", "RAW", "STR_END", "PROPS_END", "PNAME:MQTT",
    "PNAME:MQIsdp", "PNAME_OTHER", "LEVEL:3", "LEVEL:4", "LEVEL:5", "LEVEL_OTHER",
)
TOKEN_NAMES: tuple[str, ...] = (
    tuple(f"0x{b:02x}" for b in range(256))
    + STRUCTURE
    + tuple(f"TYPE:{name}" for name in TYPE_NAMES)
    + tuple(f"FLAGS:{f}" for f in range(16))
)
TOKEN_ID = {name: i for i, name in enumerate(TOKEN_NAMES)}
T = {name: TOKEN_ID[name] for name in STRUCTURE}
TYPE0 = TOKEN_ID["TYPE:RESERVED"]
FLAGS0 = TOKEN_ID["FLAGS:0"]
PNAMES = {b"MQTT": T["PNAME:MQTT"], b"MQIsdp": T["PNAME:MQIsdp"]}
LEVELS = {3: T["LEVEL:3"], 4: T["LEVEL:4"], 5: T["LEVEL:5"]}


class _NoFit(Exception):
    """The body does not follow the structured layout; it is encoded as RAW bytes."""


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _NoFit
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def text(self, out: list[int]) -> None:
        out.extend(self.take(int.from_bytes(self.take(2), "big")))
        out.append(T["STR_END"])

    def props(self, out: list[int]) -> None:
        got = decode_varint(self.data, self.pos)
        if got is None or self.data[self.pos : got[1]] != encode_varint(got[0]):
            raise _NoFit  # absent, or a length not minimally encoded
        self.pos = got[1]
        out.extend(self.take(got[0]))
        out.append(T["PROPS_END"])


def _encode_connect(b: _Bytes, out: list[int]) -> None:
    name = b.take(int.from_bytes(b.take(2), "big"))
    if name in PNAMES:
        out.append(PNAMES[name])
    else:
        out.append(T["PNAME_OTHER"])
        out.extend(name)
        out.append(T["STR_END"])
    level = b.take(1)[0]
    out.extend([LEVELS[level]] if level in LEVELS else [T["LEVEL_OTHER"], level])
    flags = b.take(1)[0]
    out.append(flags)
    out.extend(b.take(2))
    if level == 5:
        b.props(out)
    b.text(out)
    if flags & 0x04:
        if level == 5:
            b.props(out)
        b.text(out)
        b.text(out)
    if flags & 0x80:
        b.text(out)
    if flags & 0x40:
        b.text(out)
    if b.pos != len(b.data):
        raise _NoFit


def _encode_packet(p: RawPacket, out: list[int]) -> None:
    out += [TYPE0 + p.type, FLAGS0 + p.flags]
    if not (p.complete and p.minimal_length):
        out.append(T["RL_EXPLICIT"])
        out.extend(p.length_bytes)
        out.extend(p.body)
        out.append(T["PKT_END"])
        return
    out.append(T["RL_DERIVED"])
    structured: list[int] = []
    try:
        b = _Bytes(p.body)
        if TYPE_NAMES[p.type] == "CONNECT":
            _encode_connect(b, structured)
        elif TYPE_NAMES[p.type] == "PUBLISH":
            b.text(structured)
            structured.extend(b.take(2) if (p.flags >> 1) & 3 else b"")
            structured.extend(b.take(len(p.body) - b.pos))
        else:
            raise _NoFit
    except _NoFit:
        structured = [T["RAW"], *p.body]
    out.extend(structured)
    out.append(T["PKT_END"])


def encode_payload(payload: bytes) -> list[int] | None:
    """Local token ids for a payload made of whole MQTT packets (the last may be cut short),
    or None when it does not start and end on packet boundaries or does not look like MQTT."""
    packets, consumed, _ = split_packets(payload)
    if consumed != len(payload) or not plausible(packets):
        return None  # kept as bytes; packets with wrong flags are still written exactly that way
    out: list[int] = []
    for p in packets:
        _encode_packet(p, out)
    return out if decode_payload(out) == payload else None


class _Reader:
    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens, self.pos = tokens, 0

    def next(self) -> int:
        if self.pos >= len(self.tokens):
            raise TokenError("mqtt: token sequence ends inside a packet")
        tok = int(self.tokens[self.pos])
        self.pos += 1
        if not 0 <= tok < len(TOKEN_NAMES):
            raise TokenError(f"mqtt: token id {tok} out of range 0..{len(TOKEN_NAMES) - 1}")
        return tok

    def byte(self) -> int:
        tok = self.next()
        if tok > 255:
            raise TokenError(f"mqtt: expected a byte, got {TOKEN_NAMES[tok]}")
        return tok

    def bytes_until(self, end: str) -> bytes:
        """Bytes up to ``end``. Sampled slips the packet structure still decides are absorbed:
        a string that runs into PKT_END ends there (PKT_END is left for the packet), a stray
        STR_END inside a raw body is dropped."""
        out = bytearray()
        while (tok := self.next()) != T[end]:
            if end == "STR_END" and tok == T["PKT_END"]:
                self.pos -= 1
                break
            if end == "PKT_END" and tok == T["STR_END"]:
                continue
            if tok > 255:
                raise TokenError(f"mqtt: {TOKEN_NAMES[tok]} where bytes or {end} belong")
            out.append(tok)
        return bytes(out)

    def text(self) -> bytes:
        data = self.bytes_until("STR_END")
        if len(data) > 0xFFFF:
            raise TokenError("mqtt: a string longer than 65535 bytes")
        return len(data).to_bytes(2, "big") + data

    def props(self) -> bytes:
        data = self.bytes_until("PROPS_END")
        return encode_varint(len(data)) + data


def _decode_connect(r: _Reader) -> bytes:
    tok = r.next()
    pname = {v: k for k, v in PNAMES.items()}.get(tok)
    if pname is not None:
        body = bytearray(len(pname).to_bytes(2, "big") + pname)
    elif tok == T["PNAME_OTHER"]:
        body = bytearray(r.text())
    else:
        raise TokenError(f"mqtt: expected a protocol name, got {TOKEN_NAMES[tok]}")
    tok = r.next()
    levels = {v: k for k, v in LEVELS.items()}
    level = levels[tok] if tok in levels else (r.byte() if tok == T["LEVEL_OTHER"] else None)
    if level is None:
        raise TokenError(f"mqtt: expected a protocol level, got {TOKEN_NAMES[tok]}")
    flags = r.byte()
    body += bytes([level, flags, r.byte(), r.byte()])
    if level == 5:
        body += r.props()
    body += r.text()
    if flags & 0x04:
        body += (r.props() if level == 5 else b"") + r.text() + r.text()
    body += r.text() if flags & 0x80 else b""
    body += r.text() if flags & 0x40 else b""
    # fields past what the flags announce are not sent (the flags decide the layout)
    while r.next() != T["PKT_END"]:
        pass
    return bytes(body)


TWO_BYTE_BODIES = frozenset(("CONNACK", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "UNSUBACK"))


def _decode_packet(r: _Reader, type_token: int) -> bytes:
    ptype = type_token - TYPE0
    flags_token = r.next()
    if not 0 <= flags_token - FLAGS0 < 16:
        raise TokenError(f"mqtt: expected FLAGS, got {TOKEN_NAMES[flags_token]}")
    first = bytes([(ptype << 4) | (flags_token - FLAGS0)])
    mode = r.next()
    if mode == T["RL_EXPLICIT"]:
        rest = r.bytes_until("PKT_END")
        try:
            got = decode_varint(rest, 0)
        except ValueError as exc:
            raise TokenError(f"mqtt: {exc}") from None
        if got is None:
            raise TokenError("mqtt: RL_EXPLICIT without a complete remaining length")
        return first + rest
    if mode != T["RL_DERIVED"]:
        raise TokenError(f"mqtt: expected RL_DERIVED or RL_EXPLICIT, got {TOKEN_NAMES[mode]}")
    if r.pos < len(r.tokens) and int(r.tokens[r.pos]) == T["RAW"]:
        r.pos += 1
        body = r.bytes_until("PKT_END")
    elif TYPE_NAMES[ptype] == "CONNECT":
        body = _decode_connect(r)
    elif TYPE_NAMES[ptype] == "PUBLISH":
        body = r.text() + r.bytes_until("PKT_END")
    else:
        raise TokenError(f"mqtt: {TYPE_NAMES[ptype]} body must start with RAW")
    # A body the protocol fixes at two bytes (CONNACK: flags and code; an acknowledgement: its
    # packet identifier, 3.1.1) is completed with leading zero bytes where it was sampled short.
    if TYPE_NAMES[ptype] in TWO_BYTE_BODIES and len(body) < 2:
        body = bytes(2 - len(body)) + body
    return first + encode_varint(len(body)) + body


def decode_payload(tokens: Sequence[int]) -> bytes:
    """Payload bytes from local token ids. Sampled tokens that break the grammar after one or
    more whole control packets end the payload there (the packets before them are kept, each
    with its Remaining Length derived); raises ``TokenError`` when the first packet breaks."""
    r = _Reader(tokens)
    parts: list[bytes] = []
    while r.pos < len(tokens):
        try:
            tok = r.next()
            if not 0 <= tok - TYPE0 < 16:
                raise TokenError(f"mqtt: expected a TYPE token, got {TOKEN_NAMES[tok]}")
            parts.append(_decode_packet(r, tok))
        except TokenError:
            if parts:
                break
            raise
    if not parts:
        raise TokenError("mqtt: empty token sequence")
    return b"".join(parts)


# packet types by default flags: PUBREL, SUBSCRIBE and UNSUBSCRIBE require 2, every other 0
_REQUIRED_FLAGS = {6: 2, 8: 2, 10: 2}
# structure tokens that stand for bytes of the packet
_TOKEN_BYTES = {T["PNAME:MQTT"]: b"\x00\x04MQTT", T["PNAME:MQIsdp"]: b"\x00\x06MQIsdp",
                T["LEVEL:3"]: b"\x03", T["LEVEL:4"]: b"\x04", T["LEVEL:5"]: b"\x05"}


def decode_payload_total(tokens: Sequence[int], direction: int) -> bytes:
    """Payload bytes from any local token ids: ``decode_payload`` where it decodes; otherwise one
    control packet from what the tokens hold (``_lenient_packet``). Empty for no tokens.
    Sampled tokens never need drawing again for their MQTT packets; what the packet's fields
    then get wrong is for the conformance step to frame (it judges packets as any reader)."""
    if not len(tokens):
        return b""
    try:
        return decode_payload(tokens)
    except TokenError:
        return _lenient_packet(tokens, direction)


def _lenient_packet(tokens: Sequence[int], direction: int) -> bytes:
    """One packet: the first TYPE token's type (PUBLISH if none: the packet either side may send),
    the first FLAGS token after it (else the type's required flags), and as body every byte the
    tokens after it hold, protocol names and levels included, other structure left out; the
    Remaining Length derived, a two-byte body completed with zeros."""
    ids = [int(t) for t in tokens if 0 <= int(t) < len(TOKEN_NAMES)]
    at = next((k for k, t in enumerate(ids) if 0 <= t - TYPE0 < 16 and t - TYPE0 not in (0, 15)), -1)
    ptype = ids[at] - TYPE0 if at >= 0 else 3
    rest = ids[at + 1:]
    flag = next((t - FLAGS0 for t in rest if 0 <= t - FLAGS0 < 16), None)
    flags = flag if flag is not None and (ptype == 3 or flag == _REQUIRED_FLAGS.get(ptype, 0)) else (
        _REQUIRED_FLAGS.get(ptype, 0))
    if ptype == 3 and (flags >> 1) & 3 == 3:
        flags &= 0x09  # QoS 3 is reserved: QoS 0 (DUP goes with it)
    if ptype == 3 and not flags & 0x06:
        flags &= 0x01
    body = b"".join(bytes([t]) if t <= 255 else _TOKEN_BYTES.get(t, b"") for t in rest)[:0xFFFF]
    if TYPE_NAMES[ptype] in TWO_BYTE_BODIES and len(body) < 2:
        body = bytes(2 - len(body)) + body
    return bytes([(ptype << 4) | flags]) + encode_varint(len(body)) + body
