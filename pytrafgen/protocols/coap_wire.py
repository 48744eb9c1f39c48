"""CoAP's message layout (RFC 7252 §3), for the core's own CoAP readers — the builder's
conformance step — and the separately installed CoAP plugin (pytrafgen-coap), which reads and
writes options through these functions so the two agree on where a message stops being
well-formed.

An option is a delta/length byte (two nibbles; 13 and 14 announce one or two extended bytes,
15 is reserved), the extended delta, the extended length, then the value. Deltas add up to the
option number.
"""

from __future__ import annotations

COAP_PORT = 5683
PAYLOAD_MARKER = 0xFF
HEADER_BYTES = 4
MAX_TOKEN_LENGTH = 8  # token lengths 9..15 are reserved (RFC 7252 §3)
EXTENDED_BYTES = {13: 1, 14: 2}  # delta/length nibble -> extended bytes after the option byte
EXTENDED_BASE = {13: 13, 14: 269}  # what the extended bytes' value is counted from
MAX_EXTENDED = 269 + 0xFFFF

# registered option numbers (IANA CoAP Option Numbers: RFC 7252, 7641, 7959, 8613, 8768, 9177,
# 9668, 7967, 9175) and their names
OPTION_NAMES: dict[int, str] = {
    1: "If-Match", 3: "Uri-Host", 4: "ETag", 5: "If-None-Match", 6: "Observe", 7: "Uri-Port",
    8: "Location-Path", 9: "OSCORE", 11: "Uri-Path", 12: "Content-Format", 14: "Max-Age", 15: "Uri-Query",
    16: "Hop-Limit", 17: "Accept", 19: "Q-Block1", 20: "Location-Query", 21: "EDHOC", 23: "Block2", 27: "Block1",
    28: "Size2", 31: "Q-Block2", 35: "Proxy-Uri", 39: "Proxy-Scheme", 60: "Size1", 252: "Echo",
    258: "No-Response", 292: "Request-Tag",
}
COAP_OPTIONS = frozenset(OPTION_NAMES)
# the value lengths each registered option allows (RFC 7252 table 4 and the defining RFCs;
# Uri-Query needs at least one byte, as Wireshark's CoAP dissector checks)
OPTION_LENGTHS: dict[int, tuple[int, int]] = {
    1: (0, 8), 3: (1, 255), 4: (1, 8), 5: (0, 0), 6: (0, 3), 7: (0, 2), 8: (0, 255), 9: (0, 255),
    11: (0, 255), 12: (0, 2), 14: (0, 4), 15: (1, 255), 16: (1, 1), 17: (0, 2), 19: (0, 3), 20: (0, 255),
    21: (0, 0), 23: (0, 3), 27: (0, 3), 28: (0, 4), 31: (0, 3), 35: (1, 1034), 39: (1, 255), 60: (0, 4),
    252: (1, 40), 258: (0, 1), 292: (0, 8),
}


def extended(value: int) -> tuple[int, bytes]:
    """The nibble and extended bytes that carry an option delta or length ``value`` (the one
    encoding RFC 7252 §3.1 allows: each value has exactly one)."""
    if not 0 <= value <= MAX_EXTENDED:
        raise ValueError(f"CoAP option delta or length {value} is outside 0..{MAX_EXTENDED}")
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, (value - 269).to_bytes(2, "big")


def read_option(data: bytes, i: int, number: int) -> tuple[int, int, int] | None:
    """The option that starts at ``data[i]`` after option ``number``: (its number, where its
    value starts, where it ends), or None where it is not well-formed (a reserved nibble 15,
    extended bytes or a value that run past the end). ``data[i]`` must not be the payload marker."""
    byte = data[i]
    delta, length = byte >> 4, byte & 0x0F
    if delta == 15 or length == 15:
        return None
    j = i + 1
    for nibble, is_delta in ((delta, True), (length, False)):
        width = EXTENDED_BYTES.get(nibble, 0)
        if j + width > len(data):
            return None
        value = int.from_bytes(data[j:j + width], "big") + EXTENDED_BASE[nibble] if width else nibble
        j += width
        if is_delta:
            delta = value
        else:
            length = value
    if j + length > len(data):
        return None
    return number + delta, j, j + length


def write_option(number: int, previous: int, value: bytes) -> bytes:
    """One option's bytes after option ``previous``: delta and length derived."""
    delta_nibble, delta_ext = extended(number - previous)
    length_nibble, length_ext = extended(len(value))
    return bytes([delta_nibble << 4 | length_nibble]) + delta_ext + length_ext + value
