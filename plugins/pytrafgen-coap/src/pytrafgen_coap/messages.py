"""CoAP messages (RFC 7252 §3): one UDP datagram is one message.

``parse_message`` reads a datagram into its fields (header, token, options as absolute
numbers and values, payload) and says where and why it stops being well-formed;
``build_message`` writes one from its fields with the token length and every option delta and
length derived. Both read and write options through the core's ``pytrafgen.protocols.coap_wire``,
which the builder's conformance step uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytrafgen.protocols.coap_wire import (
    HEADER_BYTES,
    MAX_TOKEN_LENGTH,
    OPTION_NAMES,
    PAYLOAD_MARKER,
    read_option,
    write_option,
)

TYPE_NAMES = ("CON", "NON", "ACK", "RST")
TYPE_NUMBER = {name: i for i, name in enumerate(TYPE_NAMES)}
METHOD_NAMES = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE", 5: "FETCH", 6: "PATCH", 7: "iPATCH"}


def code_name(code: int) -> str:
    """``c.dd``: the code's class and detail (RFC 7252 §3)."""
    return f"{code >> 5}.{code & 0x1F:02d}"


@dataclass
class Message:
    """One CoAP message. ``error`` names the first thing not well-formed (then ``end`` is where
    the well-formed part stops, and the fields hold what was read up to there)."""

    version: int
    type: int
    token_length: int  # as the header says (the token's own length when built)
    code: int
    message_id: int
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)  # (absolute number, value)
    payload: bytes = b""
    marker: bool = False  # a payload marker was present
    end: int = 0
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        """The message as a field mapping (what ``CoapProtocol.parse`` returns)."""
        out: dict[str, Any] = {
            "version": self.version, "type": self.type, "type_name": TYPE_NAMES[self.type],
            "token_length": self.token_length, "code": self.code, "code_name": code_name(self.code),
            "message_id": self.message_id, "token": self.token,
            "options": [(n, OPTION_NAMES.get(n, str(n)), v) for n, v in self.options],
            "payload": self.payload, "marker": self.marker, "length": self.end,
        }
        if self.code >> 5 == 0 and self.code in METHOD_NAMES:
            out["method"] = METHOD_NAMES[self.code]
        if self.error is not None:
            out["error"] = self.error
        return out


def parse_message(dgram: bytes) -> Message | None:
    """The message in one datagram, or None when it is shorter than the 4-byte header."""
    if len(dgram) < HEADER_BYTES:
        return None
    first = dgram[0]
    msg = Message(first >> 6, (first >> 4) & 3, first & 0x0F, dgram[1], int.from_bytes(dgram[2:4], "big"),
                  end=HEADER_BYTES)
    if msg.token_length > MAX_TOKEN_LENGTH:
        msg.error = "reserved token length"
        return msg
    if HEADER_BYTES + msg.token_length > len(dgram):
        msg.error = "token runs past the datagram"
        return msg
    msg.token = dgram[HEADER_BYTES:HEADER_BYTES + msg.token_length]
    i = msg.end = HEADER_BYTES + msg.token_length
    number = 0
    while i < len(dgram):
        if dgram[i] == PAYLOAD_MARKER:
            msg.marker = True
            msg.payload = dgram[i + 1:]
            if not msg.payload:
                msg.error = "payload marker without a payload"
                msg.end = i
                return msg
            msg.end = len(dgram)
            return msg
        option = read_option(dgram, i, number)
        if option is None:
            msg.error = "option not well-formed (reserved nibble 15, or it runs past the datagram)"
            return msg
        number, start, i = option
        msg.options.append((number, dgram[start:i]))
        msg.end = i
    return msg


def build_message(message: Mapping[str, Any]) -> bytes:
    """A message from its fields: ``type`` (0..3) or ``type_name``, ``code`` (a number) or
    ``code_name`` ("c.dd"), ``message_id``, ``token``, ``options`` ((number, value) or
    (number, name, value); any order, written sorted by number, equal numbers in the order
    given), ``payload``; ``version`` defaults to 1. The token length and every option delta and
    length are derived; a payload marker is written only before a non-empty payload."""
    version = int(message.get("version", 1))
    mtype = TYPE_NUMBER[message["type_name"]] if "type_name" in message else int(message.get("type", 0))
    if "code_name" in message:
        cls, detail = str(message["code_name"]).split(".")
        code = int(cls) << 5 | int(detail)
    else:
        code = int(message.get("code", 0))
    token = bytes(message.get("token", b""))
    if len(token) > 15:
        raise ValueError(f"CoAP token of {len(token)} bytes: at most 15 fit the header (8 are allowed)")
    if not (0 <= version <= 3 and 0 <= mtype <= 3 and 0 <= code <= 255):
        raise ValueError(f"CoAP header out of range: version {version}, type {mtype}, code {code}")
    out = bytearray([version << 6 | mtype << 4 | len(token), code])
    out += int(message.get("message_id", 0)).to_bytes(2, "big")
    out += token
    out += write_options(_option_pairs(message.get("options", ())))
    payload = bytes(message.get("payload", b""))
    if payload:
        out.append(PAYLOAD_MARKER)
        out += payload
    return bytes(out)


def _option_pairs(options: Sequence[Sequence[Any]]) -> list[tuple[int, bytes]]:
    return [(int(o[0]), o[-1].encode() if isinstance(o[-1], str) else bytes(o[-1])) for o in options]


def write_options(options: Sequence[tuple[int, bytes]]) -> bytes:
    """Options sorted by number (a stable sort: repeated options keep their order), each delta
    and length derived."""
    out = bytearray()
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        out += write_option(number, previous, value)
        previous = number
    return bytes(out)
