"""The HTTP token codec: a local vocabulary and an exact encode/decode of whole messages.

Grammar of one packet payload (``+`` one or more, ``*`` any, ``TEXT`` = byte tokens then END)::

    payload  := message+
    message  := REQUEST method TEXT(target) version header* HEADERS_END byte* MSG_END
              | RESPONSE version status reason header* HEADERS_END byte* MSG_END
    method   := METHOD:<known> | METHOD_OTHER TEXT
    version  := VERSION:<known> | VERSION_OTHER TEXT
    status   := STATUS:<known> | STATUS_OTHER byte byte byte
    reason   := REASON_STANDARD | REASON_NONE | TEXT
    header   := (HEADER:<known> | HEADER_OTHER TEXT) (VALUE TEXT | VALUE_RAW TEXT | VALUE_LENGTH)

``VALUE`` stands for ``": "`` before the text, ``VALUE_RAW`` for ``":"`` alone, and
``VALUE_LENGTH`` for a Content-Length that equals the length of the complete body that
follows (derived at decode time, so a generator need not count). Byte tokens are the ids
0-255, so a byte's id is its value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pytrafgen.errors import TokenError
from pytrafgen_http.messages import Header, RawMessage, split_messages

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
VERSIONS = ("HTTP/1.0", "HTTP/1.1")
# Status codes of the IANA registry with their RFC 9110 (or defining RFC) reason phrases.
STATUS_REASONS: dict[int, str] = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Content", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}
# Header names as commonly spelled on the wire (a different spelling is HEADER_OTHER + text).
HEADER_NAMES = (
    "Host", "User-Agent", "Accept", "Accept-Language", "Accept-Encoding", "Accept-Charset",
    "Accept-Ranges", "Connection", "Keep-Alive", "Content-Type", "Content-Length",
    "Content-Encoding", "Content-Language", "Content-Location", "Content-Range",
    "Content-Disposition", "Transfer-Encoding", "Cache-Control", "Pragma", "Expires", "Date",
    "Last-Modified", "If-Modified-Since", "If-None-Match", "If-Match", "If-Unmodified-Since",
    "If-Range", "ETag", "Age", "Vary", "Via", "Server", "X-Powered-By", "Location", "Referer",
    "Origin", "Cookie", "Set-Cookie", "Authorization", "WWW-Authenticate",
    "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection", "Range", "Upgrade",
    "Upgrade-Insecure-Requests", "Expect", "TE", "Trailer", "Allow", "Retry-After", "DNT",
    "X-Forwarded-For", "X-Forwarded-Proto", "X-Requested-With", "X-Frame-Options",
    "X-Content-Type-Options", "X-XSS-Protection", "Strict-Transport-Security",
    "Content-Security-Policy", "Access-Control-Allow-Origin", "Link", "P3P", "Sec-Fetch-Site",
    "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User", "Sec-CH-UA", "Sec-CH-UA-Mobile",
    "Sec-CH-UA-Platform", "Priority", "X-Cache", "X-Served-By", "Content-MD5", "From",
)
STRUCTURE = (
    "REQUEST", "RESPONSE", "END", "HEADERS_END", "MSG_END", "METHOD_OTHER", "VERSION_OTHER",
    "STATUS_OTHER", "REASON_STANDARD", "REASON_NONE", "HEADER_OTHER", "VALUE", "VALUE_RAW",
    "VALUE_LENGTH",
)

TOKEN_NAMES: tuple[str, ...] = (
    tuple(f"0x{b:02x}" for b in range(256))
    + STRUCTURE
    + tuple(f"METHOD:{m}" for m in METHODS)
    + tuple(f"VERSION:{v}" for v in VERSIONS)
    + tuple(f"STATUS:{s}" for s in STATUS_REASONS)
    + tuple(f"HEADER:{h}" for h in HEADER_NAMES)
)
TOKEN_ID: dict[str, int] = {name: i for i, name in enumerate(TOKEN_NAMES)}
T = {name: TOKEN_ID[name] for name in STRUCTURE}
METHOD_IDS = {m.encode(): TOKEN_ID[f"METHOD:{m}"] for m in METHODS}
VERSION_IDS = {v.encode(): TOKEN_ID[f"VERSION:{v}"] for v in VERSIONS}
STATUS_IDS = {str(s).encode(): TOKEN_ID[f"STATUS:{s}"] for s in STATUS_REASONS}
HEADER_IDS = {h.encode(): TOKEN_ID[f"HEADER:{h}"] for h in HEADER_NAMES}
ID_TEXT = {i: name.split(":", 1)[1].encode() for name, i in TOKEN_ID.items() if ":" in name}


def _text(out: list[int], data: bytes) -> None:
    out.extend(data)
    out.append(T["END"])


def _encode_message(msg: RawMessage, out: list[int]) -> None:
    if msg.kind == "request":
        out.append(T["REQUEST"])
        if msg.method in METHOD_IDS:
            out.append(METHOD_IDS[msg.method])
        else:
            out.append(T["METHOD_OTHER"])
            _text(out, msg.method)
        _text(out, msg.target)
    else:
        out.append(T["RESPONSE"])
    if msg.version in VERSION_IDS:
        out.append(VERSION_IDS[msg.version])
    else:
        out.append(T["VERSION_OTHER"])
        _text(out, msg.version)
    if msg.kind == "response":
        if msg.status in STATUS_IDS:
            out.append(STATUS_IDS[msg.status])
        else:
            out.append(T["STATUS_OTHER"])
            out.extend(msg.status)
        if msg.reason is None:
            out.append(T["REASON_NONE"])
        elif msg.status in STATUS_IDS and msg.reason == STATUS_REASONS[int(msg.status)].encode():
            out.append(T["REASON_STANDARD"])
        else:
            _text(out, msg.reason)
    for h in msg.headers:
        if h.name in HEADER_IDS:
            out.append(HEADER_IDS[h.name])
        else:
            out.append(T["HEADER_OTHER"])
            _text(out, h.name)
        if (
            h.name.lower() == b"content-length"
            and msg.body_complete
            and h.value == b" %d" % len(msg.body)
            and not msg.is_chunked()
        ):
            out.append(T["VALUE_LENGTH"])
        elif h.value.startswith(b" "):
            out.append(T["VALUE"])
            _text(out, h.value[1:])
        else:
            out.append(T["VALUE_RAW"])
            _text(out, h.value)
    out.append(T["HEADERS_END"])
    out.extend(msg.body)
    out.append(T["MSG_END"])


def encode_payload(payload: bytes) -> list[int] | None:
    """Local token ids for a payload made of whole HTTP messages (the last one may end inside
    its body), or None when the payload does not start and end on that structure."""
    # Either kind in either direction: the tokens say which it is, and a capture that starts
    # mid-connection can take the server for the client.
    messages, consumed, _ = split_messages(payload, None)
    if not messages or consumed != len(payload):
        return None
    out: list[int] = []
    for msg in messages:
        _encode_message(msg, out)
    # The framing is strict, so this holds by construction; checking it keeps the promise
    # that a tokenized payload always decodes to the very same bytes.
    return out if decode_payload(out) == payload else None


class _Reader:
    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = tokens
        self.pos = 0

    def next(self) -> int:
        if self.pos >= len(self.tokens):
            raise TokenError("http: token sequence ends inside a message")
        tok = int(self.tokens[self.pos])
        self.pos += 1
        if not 0 <= tok < len(TOKEN_NAMES):
            raise TokenError(f"http: token id {tok} out of range 0..{len(TOKEN_NAMES) - 1}")
        return tok

    def text(self) -> bytes:
        out = bytearray()
        while (tok := self.next()) != T["END"]:
            if tok > 255:
                raise TokenError(f"http: {TOKEN_NAMES[tok]} inside text (expected bytes or END)")
            out.append(tok)
        return bytes(out)

    def byte(self) -> int:
        tok = self.next()
        if tok > 255:
            raise TokenError(f"http: expected a byte, got {TOKEN_NAMES[tok]}")
        return tok

    def expect_named(self, prefix: str, other: str) -> bytes | None:
        tok = self.next()
        if tok == T[other]:
            return None
        if not TOKEN_NAMES[tok].startswith(prefix):
            raise TokenError(f"http: expected a {prefix[:-1]} token, got {TOKEN_NAMES[tok]}")
        return ID_TEXT[tok]


def _decode_message(r: _Reader, kind_token: int) -> tuple[bytes, bool]:
    """(message bytes, whether its tokens followed the grammar to MSG_END). A message whose
    start line decoded but whose headers or body break the grammar is closed where they break:
    the headers so far (derived lengths from the body so far), the body so far."""
    msg = RawMessage("request" if kind_token == T["REQUEST"] else "response")
    if msg.kind == "request":
        method = r.expect_named("METHOD:", "METHOD_OTHER")
        msg.method = r.text() if method is None else method
        msg.target = r.text()
    if msg.kind == "request" and r.pos < len(r.tokens) and TOKEN_NAMES[int(r.tokens[r.pos])].startswith(
            ("HEADER:", "HEADER_OTHER", "HEADERS_END")):
        version: bytes | None = b"HTTP/1.1"  # a request line sampled without its version: HTTP/1.1
    else:
        version = r.expect_named("VERSION:", "VERSION_OTHER")
    msg.version = r.text() if version is None else version
    if msg.kind == "response":
        status = r.expect_named("STATUS:", "STATUS_OTHER")
        msg.status = bytes(r.byte() for _ in range(3)) if status is None else status
        tok = r.next()
        if tok == T["REASON_NONE"]:
            msg.reason = None
        elif tok == T["REASON_STANDARD"]:
            if not msg.status.isdigit() or int(msg.status) not in STATUS_REASONS:
                raise TokenError(f"http: REASON_STANDARD after unknown status {msg.status!r}")
            msg.reason = STATUS_REASONS[int(msg.status)].encode()
        else:
            r.pos -= 1
            msg.reason = r.text()
    return _finish_message(r, msg)


def _finish_message(r: _Reader, msg: RawMessage) -> tuple[bytes, bool]:
    """The headers and body of ``msg`` (its start line decoded), closed where they break."""
    derived: list[Header] = []
    body = bytearray()
    try:
        _decode_headers_and_body(r, msg, derived, body)
        complete = True
    except TokenError:
        complete = False
    msg.body = bytes(body)
    for header in derived:
        header.value = b" %d" % len(msg.body)
    return msg.to_bytes(), complete


def _decode_headers_and_body(r: _Reader, msg: RawMessage, derived: list[Header], body: bytearray) -> None:
    while (tok := r.next()) != T["HEADERS_END"]:
        name = r.text() if tok == T["HEADER_OTHER"] else ID_TEXT.get(tok)
        if name is None or not TOKEN_NAMES[tok].startswith(("HEADER:", "HEADER_OTHER")):
            raise TokenError(f"http: expected a header name, got {TOKEN_NAMES[tok]}")
        sep = r.next()
        header = Header(name, b"")
        if sep == T["VALUE"]:
            header.value = b" " + r.text()
        elif sep == T["VALUE_RAW"]:
            header.value = r.text()
        elif sep == T["VALUE_LENGTH"]:
            derived.append(header)
        else:
            raise TokenError(f"http: expected VALUE, VALUE_RAW or VALUE_LENGTH, got {TOKEN_NAMES[sep]}")
        msg.headers.append(header)
    while (tok := r.next()) != T["MSG_END"]:
        if tok > 255:
            raise TokenError(f"http: {TOKEN_NAMES[tok]} inside a body")
        body.append(tok)


def decode_payload(tokens: Sequence[int]) -> bytes:
    """Payload bytes from local token ids. Sampled tokens that break the grammar are kept where
    they still make messages: a message whose headers or body break off is closed there (see
    ``_decode_message``) and ends the payload; a message whose start line breaks ends it before
    that message. Raises ``TokenError`` when not even a first start line decodes."""
    r = _Reader(tokens)
    parts: list[bytes] = []
    while r.pos < len(tokens):
        try:
            tok = r.next()
            if tok not in (T["REQUEST"], T["RESPONSE"]):
                raise TokenError(f"http: expected REQUEST or RESPONSE, got {TOKEN_NAMES[tok]}")
            data, complete = _decode_message(r, tok)
        except TokenError:
            if parts:
                break
            raise
        parts.append(data)
        if not complete:
            break
    if not parts:
        raise TokenError("http: empty token sequence")
    return b"".join(parts)


def decode_payload_total(tokens: Sequence[int], direction: int) -> bytes:
    """Payload bytes from any local token ids: ``decode_payload`` where it decodes; otherwise
    the first message with what its start line lacks filled in (``_lenient_start``), its headers
    and body closed where they break. Empty for no tokens. Sampled tokens never need drawing
    again for their HTTP messages."""
    if not len(tokens):
        return b""
    try:
        return decode_payload(tokens)
    except TokenError:
        r = _Reader(tokens)
        return _finish_message(r, _lenient_start(r, direction))[0]


_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _lenient_start(r: _Reader, direction: int) -> RawMessage:
    """A start line from the tokens at ``r`` with defaults for what they lack or break: the kind
    the side sends (client: request, server: response), method GET, target "/", HTTP/1.1,
    status 200 and its reason phrase; texts end at the first token that is not a byte (kept for
    the headers), and keep only the characters their field allows (a version that is not
    HTTP/x.y is HTTP/1.1)."""
    def peek() -> int | None:
        tok = int(r.tokens[r.pos]) if r.pos < len(r.tokens) else -1
        return tok if 0 <= tok < len(TOKEN_NAMES) else None

    def text() -> bytes:
        out = bytearray()
        while (tok := peek()) is not None and tok <= 255:
            out.append(tok)
            r.pos += 1
        if peek() == T["END"]:
            r.pos += 1
        return bytes(out)

    def named(prefix: str, other: str, default: bytes, allowed: frozenset[int]) -> bytes:
        tok = peek()
        if tok is not None and TOKEN_NAMES[tok].startswith(prefix):
            r.pos += 1
            return ID_TEXT[tok]
        if tok == T[other]:
            r.pos += 1
            return bytes(c for c in text() if c in allowed) or default
        return default

    kind = peek()
    if kind in (T["REQUEST"], T["RESPONSE"]):
        r.pos += 1
    else:
        kind = T["RESPONSE"] if direction == 1 else T["REQUEST"]
    msg = RawMessage("request" if kind == T["REQUEST"] else "response")
    visible = frozenset(range(0x21, 0x7F))
    if msg.kind == "request":
        msg.method = named("METHOD:", "METHOD_OTHER", b"GET", _TOKEN_CHARS)
        first = peek()
        target = bytes(c for c in text() if c in visible) if first is not None and first <= 255 else b""
        msg.target = target if target.startswith(b"/") else b"/" + target
    msg.version = named("VERSION:", "VERSION_OTHER", b"HTTP/1.1", _TOKEN_CHARS | {ord("/")})
    if not re.fullmatch(rb"HTTP/[0-9]\.[0-9]", msg.version):
        msg.version = b"HTTP/1.1"
    if msg.kind == "response":
        msg.status = named("STATUS:", "STATUS_OTHER", b"200", frozenset(b"0123456789"))[:3]
        if len(msg.status) != 3 or not b"100" <= msg.status <= b"599":
            msg.status = b"200"
        tok = peek()
        standard = STATUS_REASONS.get(int(msg.status), "").encode() or None
        if tok == T["REASON_NONE"]:
            r.pos += 1
            msg.reason = None
        elif tok == T["REASON_STANDARD"]:
            r.pos += 1
            msg.reason = standard
        elif tok is not None and tok <= 255:
            msg.reason = bytes(c for c in text() if c == 0x20 or c in visible)
        else:
            msg.reason = standard
    return msg
