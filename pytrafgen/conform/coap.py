"""CoAP over UDP (RFC 7252): where a datagram's options stop being well-formed, and a header
whose type and code a sender could not have sent."""

from __future__ import annotations

from pytrafgen.protocols.coap_wire import COAP_OPTIONS, COAP_PORT, OPTION_LENGTHS, PAYLOAD_MARKER, read_option

__all__ = ["COAP_PORT", "_coap_options_end", "conform_coap_header"]

CON, NON, ACK, RST = range(4)
RESERVED_CODE_CLASSES = frozenset((1, 6, 7))  # RFC 7252 §12.1: classes 1, 6 and 7 are reserved
REQUEST_DETAILS = range(1, 8)  # 0.01 GET .. 0.07 iPATCH (RFC 7252, 8132)
# response codes registered per class (RFC 7252 §12.1.2, 7959, 8132, 8516, 8768, 9177)
RESPONSE_DETAILS = {2: frozenset((1, 2, 3, 4, 5, 31)),
                    5: frozenset((0, 1, 2, 3, 4, 5, 8))}
GET, CONTENT, INTERNAL_SERVER_ERROR = 0x01, 2 << 5 | 5, 5 << 5 | 0


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


def _role_code(code: int, client: bool) -> int:
    """The valid code nearest ``code`` for the sender's role: a client's request keeps a method
    detail (else GET), a server's reserved class 1 becomes 2.xx and 6 or 7 become 5.xx, keeping
    a detail registered there (else 2.05 Content / 5.00 Internal Server Error)."""
    cls, detail = code >> 5, code & 0x1F
    if client:
        return detail if detail in REQUEST_DETAILS else GET
    near = 2 if cls < 2 else 5
    return near << 5 | detail if detail in RESPONSE_DETAILS[near] else (CONTENT if near == 2 else INTERNAL_SERVER_ERROR)


def conform_coap_header(dgram: bytes, client: bool) -> bytes:
    """``dgram`` (a whole, well-formed version-1 message) with a type and code that agree
    (RFC 7252 §4.1-4.3, §12.1; rules COAP-004 and COAP-005), in the same bytes:

    * a reserved code class (1, 6, 7) becomes the nearest code of the sender's role
      (``client``: a request; else a response), or Empty on an ACK or RST that is the header
      alone;
    * an Empty code (0.00) on a message with a token, options or a payload becomes the role's
      code (GET / 2.05 Content): the bytes say it carries something;
    * an Empty NON (never valid) is a CON (a ping, valid on its own);
    * a server's ACK or RST carrying a request is an ACK carrying the role's response (the
      request's detail where registered in 2.xx, else 2.05); a client's is a CON;
    * a RST carrying a response is an ACK.

    Anything else, and what is not a whole version-1 message, is returned unchanged."""
    if len(dgram) < 4 or dgram[0] >> 6 != 1 or (dgram[0] & 0x0F) > 8 or 4 + (dgram[0] & 0x0F) > len(dgram):
        return dgram  # not a whole CoAP version 1 header and token: not ours to change
    mtype, code = dgram[0] >> 4 & 3, dgram[1]
    if code >> 5 in RESERVED_CODE_CLASSES and len(dgram) == 4 and mtype in (ACK, RST):
        code = 0  # a bare acknowledgement or reset: Empty
    elif code >> 5 in RESERVED_CODE_CLASSES or (code == 0 and len(dgram) > 4):
        code = _role_code(code, client)
    request = code >> 5 == 0 and code != 0
    if request and not client and mtype in (ACK, RST):
        code, mtype = _role_code(code, client), ACK  # a server acknowledges with a response
    elif code == 0:
        mtype = CON if mtype == NON else mtype
    elif mtype == RST or (mtype == ACK and request):
        mtype = CON if request else ACK
    return bytes([dgram[0] & 0xCF | mtype << 4, code]) + dgram[2:]
