"""CoAP over UDP (RFC 7252): where a datagram's options stop being well-formed."""

from __future__ import annotations

COAP_PORT = 5683
EXTENDED_BYTES = {13: 1, 14: 2}  # CoAP option delta/length nibble -> extended bytes after it
# registered CoAP option numbers (RFC 7252, 7641, 7959, 8613, 7967, 9175) -> the value lengths
# they allow (RFC 7252 table 4 and the defining RFCs; Uri-Query needs at least one byte, as
# Wireshark's CoAP dissector checks)
COAP_OPTION_LENGTHS: dict[int, tuple[int, int]] = {
    1: (0, 8), 3: (1, 255), 4: (1, 8), 5: (0, 0), 6: (0, 3), 7: (0, 2), 8: (0, 255), 9: (0, 255),
    11: (0, 255), 12: (0, 2), 14: (0, 4), 15: (1, 255), 17: (0, 2), 20: (0, 255), 21: (0, 0),
    23: (0, 3), 27: (0, 3), 28: (0, 4), 35: (1, 1034), 39: (1, 255), 60: (0, 4), 252: (1, 40),
    258: (0, 1), 292: (0, 8),
}
COAP_OPTIONS = frozenset(COAP_OPTION_LENGTHS)

def _coap_options_end(dgram: bytes) -> int:
    """Where the well-formed part of a CoAP message ends: after the header, token and every
    option that fits with a length its number allows (then the payload, when a marker with bytes after it follows)."""
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
        low, high = COAP_OPTION_LENGTHS[number]
        if not low <= length <= high:
            return i  # a value length the option does not allow
        i = j + length
    return i
