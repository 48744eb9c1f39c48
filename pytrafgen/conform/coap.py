"""CoAP over UDP (RFC 7252): where a datagram's options stop being well-formed."""

from __future__ import annotations

from pytrafgen.protocols.coap_wire import COAP_OPTIONS, COAP_PORT, OPTION_LENGTHS, PAYLOAD_MARKER, read_option

__all__ = ["COAP_PORT", "_coap_options_end"]


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
        if dgram[i] == PAYLOAD_MARKER:
            return len(dgram) if i + 1 < len(dgram) else i  # a marker needs a payload after it
        option = read_option(dgram, i, number)
        if option is None or option[0] not in COAP_OPTIONS:
            return i  # an unregistered option number (0 included) is not one a client sends
        low, high = OPTION_LENGTHS[option[0]]
        if not low <= option[2] - option[1] <= high:
            return i  # a value length the option does not allow
        number, _, i = option
    return i
