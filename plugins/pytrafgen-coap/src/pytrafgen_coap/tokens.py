"""The CoAP token codec: a local vocabulary and an exact encode/decode of one message.

Grammar of one datagram's message::

    message := VER:<v> TYPE:<CON|NON|ACK|RST> CODE:<c.dd> byte byte (message id)
               byte* TOKEN_END                 (the token; its length in the header derived)
               option*
               [PAYLOAD byte+]                 (the payload marker and the payload)
    option  := OPT:<number> byte* OPT_END      (a registered number)
             | OPT_NUM byte byte byte* OPT_END (any other number, two bytes big-endian)

An option token carries the option's absolute number and its value; the delta from the
previous option and the value's length — the nibbles and their 13/14 extended forms — are
computed on decode. Options are written in number order (a stable sort, so repeated options
keep theirs), as RFC 7252 §3.1 requires. A datagram that is not a well-formed message (a
reserved token length, a reserved nibble 15, an option or token that runs past its end, a
payload marker with nothing after it) is left to the tokenizer as bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytrafgen.app_grammar import AutomatonBuilder, TokenAutomaton
from pytrafgen.errors import TokenError
from pytrafgen.protocols.coap_wire import COAP_OPTIONS, MAX_TOKEN_LENGTH
from pytrafgen_coap.messages import TYPE_NAMES, build_message, code_name, parse_message

REGISTERED = tuple(sorted(COAP_OPTIONS))
STRUCTURE = ("TOKEN_END", "OPT_NUM", "OPT_END", "PAYLOAD")
TOKEN_NAMES: tuple[str, ...] = (
    tuple(f"0x{b:02x}" for b in range(256))
    + STRUCTURE
    + tuple(f"VER:{v}" for v in range(4))
    + tuple(f"TYPE:{name}" for name in TYPE_NAMES)
    + tuple(f"CODE:{code_name(c)}" for c in range(256))
    + tuple(f"OPT:{n}" for n in REGISTERED)
)
TOKEN_ID = {name: i for i, name in enumerate(TOKEN_NAMES)}
T = {name: TOKEN_ID[name] for name in STRUCTURE}
VER0, TYPE0, CODE0 = TOKEN_ID["VER:0"], TOKEN_ID["TYPE:CON"], TOKEN_ID["CODE:0.00"]
OPT_TOKEN = {n: TOKEN_ID[f"OPT:{n}"] for n in REGISTERED}
OPT_NUMBER = {tok: n for n, tok in OPT_TOKEN.items()}
MAX_OPTION_NUMBER = 0xFFFF


def encode_payload(payload: bytes) -> list[int] | None:
    """Local token ids for one datagram holding a well-formed CoAP message, else None."""
    msg = parse_message(payload)
    if msg is None or msg.error is not None or any(n > MAX_OPTION_NUMBER for n, _ in msg.options):
        return None
    out = [VER0 + msg.version, TYPE0 + msg.type, CODE0 + msg.code, *msg.message_id.to_bytes(2, "big"),
           *msg.token, T["TOKEN_END"]]
    for number, value in msg.options:
        out.extend([OPT_TOKEN[number]] if number in OPT_TOKEN else [T["OPT_NUM"], *number.to_bytes(2, "big")])
        out.extend(value)
        out.append(T["OPT_END"])
    if msg.payload:
        out.append(T["PAYLOAD"])
        out.extend(msg.payload)
    return out if decode_payload(out) == payload else None


def token_automaton() -> TokenAutomaton:
    """The message grammar above as an automaton over local ids, for sampling: a header, a
    token of at most 8 bytes (what ``encode_payload`` writes, RFC 7252 §3), options each closed
    by OPT_END (OPT_NUM with its two number bytes), an optional PAYLOAD with at least one byte.
    Every span it accepts decodes (``decode_payload``), every span the encoder writes is one."""
    a = AutomatonBuilder()
    version, mtype, code = a.state("version"), a.state("type"), a.state("code")
    message_id = [a.state("message_id[0]"), a.state("message_id[1]")]
    token = [a.state(f"token[{n}]") for n in range(MAX_TOKEN_LENGTH + 1)]  # n token bytes so far
    options, value = a.state("options"), a.state("option_value")
    number = [a.state("option_number[0]"), a.state("option_number[1]")]
    payload_first, payload = a.state("payload[0]"), a.state("payload")
    a.edge(version, VER0, VER0 + 4, mtype)
    a.edge(mtype, TYPE0, TYPE0 + 4, code)
    a.edge(code, CODE0, CODE0 + 256, message_id[0])
    a.edge(message_id[0], 0, 256, message_id[1])
    a.edge(message_id[1], 0, 256, token[0])
    for n in range(MAX_TOKEN_LENGTH + 1):
        if n < MAX_TOKEN_LENGTH:
            a.edge(token[n], 0, 256, token[n + 1])
        a.token(token[n], T["TOKEN_END"], options)
    for tok in sorted(OPT_NUMBER):
        a.token(options, tok, value)
    a.token(options, T["OPT_NUM"], number[0])
    a.edge(number[0], 0, 256, number[1])
    a.edge(number[1], 0, 256, value)
    a.edge(value, 0, 256, value)
    a.token(value, T["OPT_END"], options)
    a.token(options, T["PAYLOAD"], payload_first)
    a.edge(payload_first, 0, 256, payload)
    a.edge(payload, 0, 256, payload)
    return a.build([options, payload])


class _Reader:
    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens, self.pos = tokens, 0

    def more(self) -> bool:
        return self.pos < len(self.tokens)

    def next(self) -> int:
        if self.pos >= len(self.tokens):
            raise TokenError("coap: token sequence ends inside the message")
        tok = int(self.tokens[self.pos])
        self.pos += 1
        if not 0 <= tok < len(TOKEN_NAMES):
            raise TokenError(f"coap: token id {tok} out of range 0..{len(TOKEN_NAMES) - 1}")
        return tok

    def expect(self, first: int, count: int, what: str) -> int:
        """The offset of the next token within ``first .. first + count - 1``."""
        tok = self.next()
        if not first <= tok < first + count:
            raise TokenError(f"coap: expected {what}, got {TOKEN_NAMES[tok]}")
        return tok - first

    def byte(self) -> int:
        return self.expect(0, 256, "a byte")

    def bytes_until(self, end: str) -> bytes:
        out = bytearray()
        while (tok := self.next()) != T[end]:
            if tok > 255:
                raise TokenError(f"coap: {TOKEN_NAMES[tok]} where bytes or {end} belong")
            out.append(tok)
        return bytes(out)

    def bytes_until_end(self) -> bytes:
        out = bytearray()
        while self.more():
            out.append(self.byte())
        return bytes(out)


def decode_payload(tokens: Sequence[int]) -> bytes:
    """The message's bytes from local token ids, the token length and every option delta and
    length derived. Sampled slips the layout can absorb are absorbed: a token longer than the 8
    bytes RFC 7252 allows keeps its first 8, options out of number order are written in order,
    a payload marker with no payload after it is left out. Anything else raises ``TokenError``."""
    fast = _decode_well_formed([int(t) for t in tokens])
    return fast if fast is not None else _decode_checked(tokens)


def _is_bytes(run: list[int]) -> bool:
    return not run or (min(run) >= 0 and max(run) <= 255)


def _decode_well_formed(toks: list[int]) -> bytes | None:
    """``decode_payload`` of a sequence the encoder writes, by slices rather than a token at a
    time (the tokenizer decodes every distinct CoAP payload to check its round trip); None for
    anything else, which ``_decode_checked`` (the token-by-token reader) decodes or rejects
    with its message."""
    n = len(toks)
    if n < 6 or not (0 <= toks[0] - VER0 < 4 and 0 <= toks[1] - TYPE0 < 4 and 0 <= toks[2] - CODE0 < 256):
        return None
    head = toks[3:5]
    if not _is_bytes(head):
        return None
    try:
        end = toks.index(T["TOKEN_END"], 5)
    except ValueError:
        return None
    token = toks[5:end]
    if not _is_bytes(token):
        return None
    options: list[tuple[int, bytes]] = []
    payload: list[int] = []
    pos = end + 1
    while pos < n:
        tok = toks[pos]
        if tok == T["PAYLOAD"]:
            payload = toks[pos + 1:]
            if not _is_bytes(payload):
                return None
            break
        if tok == T["OPT_NUM"]:
            number_bytes = toks[pos + 1:pos + 3]
            if len(number_bytes) < 2 or not _is_bytes(number_bytes):
                return None
            number, pos = number_bytes[0] << 8 | number_bytes[1], pos + 3
        elif tok in OPT_NUMBER:
            number, pos = OPT_NUMBER[tok], pos + 1
        else:
            return None
        try:
            stop = toks.index(T["OPT_END"], pos)
        except ValueError:
            return None
        value = toks[pos:stop]
        if not _is_bytes(value):
            return None
        options.append((number, bytes(value)))
        pos = stop + 1
    try:
        return build_message({"version": toks[0] - VER0, "type": toks[1] - TYPE0, "code": toks[2] - CODE0,
                              "message_id": head[0] << 8 | head[1], "token": bytes(token[:MAX_TOKEN_LENGTH]),
                              "options": options, "payload": bytes(payload)})
    except ValueError:
        return None


def _decode_checked(tokens: Sequence[int]) -> bytes:
    """``decode_payload`` a token at a time, with a ``TokenError`` that says where a sequence
    stops being one."""
    r = _Reader(tokens)
    version = r.expect(VER0, 4, "VER")
    mtype = r.expect(TYPE0, 4, "TYPE")
    code = r.expect(CODE0, 256, "CODE")
    message_id = r.byte() << 8 | r.byte()
    token = r.bytes_until("TOKEN_END")[:MAX_TOKEN_LENGTH]
    options: list[tuple[int, bytes]] = []
    payload = b""
    while r.more():
        tok = r.next()
        if tok == T["PAYLOAD"]:
            payload = r.bytes_until_end()
            break
        if tok == T["OPT_NUM"]:
            number = r.byte() << 8 | r.byte()
        elif tok in OPT_NUMBER:
            number = OPT_NUMBER[tok]
        else:
            raise TokenError(f"coap: expected an option or PAYLOAD, got {TOKEN_NAMES[tok]}")
        options.append((number, r.bytes_until("OPT_END")))
    try:
        return build_message({"version": version, "type": mtype, "code": code, "message_id": message_id,
                              "token": token, "options": options, "payload": payload})
    except ValueError as exc:  # an option value longer than an extended length can say
        raise TokenError(f"coap: {exc}") from None
