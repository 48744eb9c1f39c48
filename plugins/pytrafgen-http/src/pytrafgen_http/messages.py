"""HTTP/1.x message framing: split bytes into messages byte-exactly, and build messages back.

``split_messages`` is strict: every byte of its input lands in exactly one message part, so
joining the parts gives the input back (the token codec relies on this). What it does not
represent (obsolete line folding, bare-LF line ends, a start line with other separators than
one space) makes it stop; the caller keeps those bytes as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The target may hold spaces here (attack traffic sends such lines); rule HTTP-001 flags them.
REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\r\n]+) (HTTP/[0-9]\.[0-9])\Z")
STATUS_LINE = re.compile(rb"(HTTP/[0-9]\.[0-9]) ([0-9]{3})(?: ([^\r\n]*))?\Z")
HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[^\r\n]*\r\n")


@dataclass
class Header:
    name: bytes
    value: bytes  # everything after the colon, leading whitespace included

    @property
    def text_value(self) -> str:
        return self.value.strip(b" \t").decode("latin-1")


@dataclass
class RawMessage:
    """One message exactly as on the wire; ``to_bytes()`` gives the bytes back."""

    kind: str  # "request" or "response"
    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    status: bytes = b""  # three digits
    reason: bytes | None = None  # None: the status line has no reason part (not even a space)
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""
    body_complete: bool = True  # False: the payload ended inside the body

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        for h in self.headers:
            if h.name.lower() == wanted:
                return h.value.strip(b" \t")
        return None

    def start_line(self) -> bytes:
        if self.kind == "request":
            return b"%s %s %s" % (self.method, self.target, self.version)
        line = b"%s %s" % (self.version, self.status)
        return line if self.reason is None else line + b" " + self.reason

    def head_bytes(self) -> bytes:
        lines = [self.start_line()] + [h.name + b":" + h.value for h in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def to_bytes(self) -> bytes:
        return self.head_bytes() + self.body

    def content_length(self) -> int | None:
        value = self.header("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    def is_chunked(self) -> bool:
        value = self.header("Transfer-Encoding")
        return value is not None and b"chunked" in value.lower()


def _chunked_end(data: bytes, start: int) -> int | None:
    """Offset just past a chunked body beginning at ``start``, or None if it is incomplete."""
    pos = start
    while True:
        m = CHUNK_SIZE.match(data, pos)
        if m is None:
            return None
        size = int(m.group(1), 16)
        pos = m.end()
        if size == 0:
            break
        pos += size + 2
        if pos > len(data):
            return None
    # trailer fields, then the empty line
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        if eol == pos:
            return pos + 2
        pos = eol + 2


def _parse_head(head: bytes, direction: int | None) -> RawMessage | str:
    """The message a head (start line and header lines, without the empty line) holds, or
    why it is not one: "start line" or "header line"."""
    lines = head.split(b"\r\n")
    start = lines[0]
    m = STATUS_LINE.match(start) if direction != 0 else None
    if m is not None:
        msg = RawMessage("response", version=m.group(1), status=m.group(2), reason=m.group(3))
    else:
        m = REQUEST_LINE.match(start) if direction != 1 else None
        if m is None:
            return "start line"
        msg = RawMessage("request", method=m.group(1), target=m.group(2), version=m.group(3))
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not HEADER_NAME.match(name) or b"\r" in value or b"\n" in value:
            return "header line"  # includes obsolete line folding and bare CR/LF
        msg.headers.append(Header(name, value))
    return msg


def _no_body_status(status: bytes) -> bool:
    return status[:1] == b"1" or status in (b"204", b"304")


def split_messages(
    data: bytes, direction: int | None = None, request_methods: Sequence[bytes] | None = None
) -> tuple[list[RawMessage], int, str | None]:
    """Messages at the start of ``data``, how many bytes they cover, and why parsing stopped
    before the end: None (it did not), "incomplete" (the data ends inside a head) or the part
    that is not HTTP ("start line", "header line"). A body cut short by the end of ``data`` ends
    the last message with ``body_complete=False``. ``direction`` 0 accepts requests only, 1
    responses only, None both. ``request_methods`` (the methods of the requests being
    answered, in order) tells which responses answer HEAD and so carry no body; without it a
    response whose would-be body starts like the next status line is taken to have none."""
    messages: list[RawMessage] = []
    pos = 0
    while pos < len(data):
        end_of_head = data.find(b"\r\n\r\n", pos)
        if end_of_head < 0:
            line_end = data.find(b"\r\n", pos)
            first = data[pos:] if line_end < 0 else data[pos:line_end]
            bad_start = line_end >= 0 and isinstance(_parse_head(first, direction), str)
            return messages, pos, "start line" if bad_start else "incomplete"
        msg = _parse_head(data[pos:end_of_head], direction)
        if isinstance(msg, str):
            return messages, pos, msg
        body_start = end_of_head + 4
        body_end = body_start
        length = msg.content_length()
        if msg.kind == "response":
            answered = len(messages)
            is_head = request_methods is not None and answered < len(request_methods) and (
                request_methods[answered] == b"HEAD"
            )
            if request_methods is None and length and data.startswith(b"HTTP/", body_start):
                is_head = True
            if is_head or _no_body_status(msg.status):
                length = 0
        if msg.is_chunked() and length != 0:
            chunk_end = _chunked_end(data, body_start)
            body_end = len(data) if chunk_end is None else chunk_end
            msg.body_complete = chunk_end is not None
        elif length is not None:
            body_end = min(body_start + length, len(data))
            msg.body_complete = body_start + length <= len(data)
        elif msg.kind == "response":
            body_end = len(data)  # delimited by the connection closing
        msg.body = data[body_start:body_end]
        messages.append(msg)
        pos = body_end
    return messages, pos, None


def message_fields(msg: RawMessage, offset: int) -> dict[str, Any]:
    """The field view of a message, as ``HttpProtocol.parse`` returns it."""
    fields: dict[str, Any] = {
        "kind": msg.kind,
        "version": msg.version.decode("latin-1"),
        "headers": [(h.name.decode("latin-1"), h.text_value) for h in msg.headers],
        "body": msg.body,
        "body_complete": msg.body_complete,
        "content_length": msg.content_length(),
        "offset": offset,
        "length": len(msg.to_bytes()),
    }
    if msg.kind == "request":
        fields["method"] = msg.method.decode("latin-1")
        fields["target"] = msg.target.decode("latin-1")
    else:
        fields["status"] = int(msg.status)
        fields["reason"] = None if msg.reason is None else msg.reason.decode("latin-1")
    return fields


def build_message(message: Mapping[str, Any]) -> bytes:
    """Bytes of a message from its fields: ``Name: value`` header lines, Content-Length set to
    the body's length when the header is present (or added when there is a body and no
    Transfer-Encoding)."""
    body = bytes(message.get("body", b""))
    version = str(message.get("version", "HTTP/1.1"))
    if message.get("kind", "request") == "request":
        start = f"{message['method']} {message['target']} {version}"
    else:
        reason = message.get("reason")
        start = f"{version} {int(message['status']):03d}" + ("" if reason is None else f" {reason}")
    headers = [(str(n), str(v)) for n, v in message.get("headers", [])]
    names = {n.lower() for n, _ in headers}
    derive = message.get("body_complete", True)
    if derive and body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    lines = [start]
    for name, value in headers:
        if derive and name.lower() == "content-length" and (body or message.get("kind") == "request"):
            value = str(len(body))
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
