"""CoAP over UDP (RFC 7252): where a datagram's options stop being well-formed."""

from __future__ import annotations

COAP_PORT = 5683
EXTENDED_BYTES = {13: 1, 14: 2}
# registered CoAP option numbers (RFC 7252, 7641, 7959, 8613, 7967, 9175)
COAP_OPTIONS = frozenset((1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 17, 20, 21, 23, 27, 28, 35, 39, 60, 252, 258,
                          292))  # CoAP option delta/length nibble -> extended bytes after the header

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
