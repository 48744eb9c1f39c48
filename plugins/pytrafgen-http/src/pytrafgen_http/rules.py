"""HTTP compliance rules (RFC 9110 / RFC 9112), checked on reassembled streams.

Each rule reads ``ctx.streams("http")`` (``pytrafgen.evaluate.context.RuleContext``): per
flow, both directions' in-order bytes with the messages ``HttpProtocol.parse`` found. Message
rules are packet-scoped: a message is judged at the packet that carries its first byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pytrafgen.interfaces import Rule
from pytrafgen_http.tokens import METHODS

Indices = tuple[np.ndarray, np.ndarray]
Message = dict[str, Any]
TARGET_FORMS = re.compile(r"/[^ ]*|https?://[^ ]+|\*|[^/ ]+:[0-9]+\Z")
_KNOWN_METHODS = frozenset(METHODS)


def _messages(ctx: Any, direction: int) -> Iterator[tuple[Any, Any, Message]]:
    """(flow streams, direction stream, message) for every parsed entry of one direction.
    A stream that may begin mid-message (its side's SYN is not in the flow: a flow cut from a
    longer connection) and does not begin with a start line shows no message to judge: the
    parser cannot find where the next one starts, so nothing of that stream is judged."""
    for flow in ctx.streams("http"):
        stream = flow.direction(direction)
        msgs = stream.messages
        if stream.starts_mid and msgs and msgs[0]["kind"] == "invalid" and msgs[0]["offset"] == 0:
            continue
        for msg in msgs:
            yield flow, stream, msg


def _packet_rule(direction: int, judge: Callable[[Any, Message], bool | None]) -> Callable[[Any], Indices]:
    """A packet-scoped rule from ``judge(flow, message)``: None = not applicable, True = bad."""

    def check(ctx: Any) -> Indices:
        applicable: list[int] = []
        violating: list[int] = []
        for flow, stream, msg in _messages(ctx, direction):
            verdict = judge(flow, msg)
            if verdict is None:
                continue
            packet = stream.packet_at(msg["offset"])
            applicable.append(packet)
            if verdict:
                violating.append(packet)
        return np.unique(np.asarray(applicable, np.int64)), np.unique(np.asarray(violating, np.int64))

    return check


def _headers(msg: Message, name: str) -> list[str]:
    return [v for n, v in msg.get("headers", []) if n.lower() == name]


def _is(kind: str) -> Callable[[Message], bool]:
    return lambda msg: msg["kind"] == kind


def _syntax(kind: str, part: str) -> Callable[[Any, Message], bool | None]:
    def judge(flow: Any, msg: Message) -> bool | None:
        if msg["kind"] == kind:  # a request target is one token: no whitespace in it
            return kind == "request" and (not msg["target"] or any(c in msg["target"] for c in " \t"))
        if msg["kind"] == "invalid" and msg["error"] != "incomplete":
            return msg["error"] == part
        return None

    return judge


def _header_syntax(flow: Any, msg: Message) -> bool | None:
    if msg["kind"] == "invalid":
        return msg["error"] == "header line" if msg["error"] != "incomplete" else None
    return False


def _known_method(flow: Any, msg: Message) -> bool | None:
    return msg["method"] not in _KNOWN_METHODS if _is("request")(msg) else None


def _valid_status(flow: Any, msg: Message) -> bool | None:
    return not 100 <= msg["status"] <= 599 if _is("response")(msg) else None


def _version(flow: Any, msg: Message) -> bool | None:
    return msg["version"] not in ("HTTP/1.0", "HTTP/1.1") if msg["kind"] != "invalid" else None


def _host_in_11(flow: Any, msg: Message) -> bool | None:
    if not _is("request")(msg) or msg["version"] != "HTTP/1.1":
        return None
    return len(_headers(msg, "host")) != 1


def _request_methods(flow: Any) -> list[str]:
    return [m["method"] for m in flow.c2s.messages if m["kind"] == "request"]


def _final_responses(flow: Any) -> list[Message]:
    return [m for m in flow.s2c.messages if m["kind"] == "response" and m["status"] >= 200]


def _content_length(flow: Any, msg: Message) -> bool | None:
    values = _headers(msg, "content-length")
    if msg["kind"] == "invalid" or not values:
        return None
    if len(set(values)) > 1 or not values[0].isdigit():
        return True
    if msg["body_complete"]:
        return False
    # The body ends before Content-Length bytes: fine only where the stream itself was cut
    # short (a sequence gap, or a flow without FIN/RST whose last packets are not all there: a
    # flow cut at N packets), or for a response to HEAD (which announces the length without a
    # body).
    stream = flow.c2s if msg["kind"] == "request" else flow.s2c
    if stream.truncated or stream.open_end:
        return False
    if msg["kind"] == "response":
        finals = _final_responses(flow)
        methods = _request_methods(flow)
        position = next((i for i, m in enumerate(finals) if m is msg), -1)
        if 0 <= position < len(methods) and methods[position] == "HEAD":
            return False
    return True


def _te_and_cl(flow: Any, msg: Message) -> bool | None:
    if msg["kind"] == "invalid":
        return None
    return bool(_headers(msg, "transfer-encoding")) and bool(_headers(msg, "content-length"))


def _no_body_status(flow: Any, msg: Message) -> bool | None:
    if not _is("response")(msg) or not (100 <= msg["status"] < 200 or msg["status"] == 204):
        return None
    lengths = _headers(msg, "content-length")
    return bool(_headers(msg, "transfer-encoding")) or any(v != "0" for v in lengths)


def _target_form(flow: Any, msg: Message) -> bool | None:
    if not _is("request")(msg):
        return None
    target, method = msg["target"], msg["method"]
    if target == "*":
        return method != "OPTIONS"
    if method == "CONNECT":
        return re.fullmatch(r"[^/ ]+:[0-9]+", target) is None
    return TARGET_FORMS.fullmatch(target) is None


def _answers_requests(ctx: Any) -> Indices:
    """HTTP-006 (flow scope): a server sends no more final responses than it got requests."""
    applicable: list[int] = []
    violating: list[int] = []
    for flow in ctx.streams("http"):
        finals = _final_responses(flow)
        if not finals or flow.c2s.starts_mid or flow.c2s.truncated:
            continue  # requests before the flow's first packet or after a gap are not in view
        applicable.append(flow.flow)
        if len(finals) > len(_request_methods(flow)):
            violating.append(flow.flow)
    return np.asarray(applicable, np.int64), np.asarray(violating, np.int64)


def http_rules() -> list[Rule]:
    def rule(n: int, scope: str, description: str, check: Callable[[Any], Indices]) -> Rule:
        return Rule(f"HTTP-{n:03d}", "http", scope, description, check)

    return [
        rule(1, "packet", "request line is METHOD SP request-target SP HTTP/x.y CRLF",
             _packet_rule(0, _syntax("request", "start line"))),
        rule(2, "packet", "status line is HTTP/x.y SP 3-digit code [SP reason] CRLF",
             _packet_rule(1, _syntax("response", "start line"))),
        rule(3, "packet", "header lines are token ':' value CRLF (no folding, no bare CR/LF)",
             lambda ctx: _merge(_packet_rule(0, _header_syntax)(ctx), _packet_rule(1, _header_syntax)(ctx))),
        rule(4, "packet", "request method is a registered one (RFC 9110 and PATCH)", _packet_rule(0, _known_method)),
        rule(5, "packet", "status code is in 100-599", _packet_rule(1, _valid_status)),
        rule(6, "flow", "every final response answers a request (no more responses than requests)",
             _answers_requests),
        rule(7, "packet", "Content-Length is one decimal value and the body has that many bytes",
             lambda ctx: _merge(_packet_rule(0, _content_length)(ctx), _packet_rule(1, _content_length)(ctx))),
        rule(8, "packet", "an HTTP/1.1 request has exactly one Host header", _packet_rule(0, _host_in_11)),
        rule(9, "packet", "protocol version is HTTP/1.0 or HTTP/1.1",
             lambda ctx: _merge(_packet_rule(0, _version)(ctx), _packet_rule(1, _version)(ctx))),
        rule(10, "packet", "a message does not carry both Transfer-Encoding and Content-Length",
             lambda ctx: _merge(_packet_rule(0, _te_and_cl)(ctx), _packet_rule(1, _te_and_cl)(ctx))),
        rule(11, "packet", "1xx and 204 responses carry no body (no Transfer-Encoding, Content-Length 0)",
             _packet_rule(1, _no_body_status)),
        rule(12, "packet", "request target is origin-, absolute-, authority- (CONNECT) or asterisk-form (OPTIONS)",
             _packet_rule(0, _target_form)),
    ]


def _merge(a: Indices, b: Indices) -> Indices:
    return np.union1d(a[0], b[0]).astype(np.int64), np.union1d(a[1], b[1]).astype(np.int64)
