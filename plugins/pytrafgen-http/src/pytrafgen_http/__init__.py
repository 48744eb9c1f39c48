"""pytrafgen-http: HTTP/1.0 and HTTP/1.1 for pytrafgen, as a separately installed plugin.

Registers the ``http`` protocol through the ``register_protocols`` hook (entry point
``http`` of group ``pytrafgen``): recognition, the field table, a byte-exact token codec
(``pytrafgen_http.tokens``), message parsing and building (``pytrafgen_http.messages``) and
the compliance rules (``pytrafgen_http.rules``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any, ClassVar

from pytrafgen import hookimpl
from pytrafgen.app_grammar import AppGrammar, TokenAutomaton
from pytrafgen.interfaces import FieldSpec, ProtocolSpec, Rule
from pytrafgen_http.automaton import token_automaton
from pytrafgen_http.grammar import HTTP_GRAMMAR
from pytrafgen_http.messages import build_message, message_fields, split_messages
from pytrafgen_http.tokens import METHODS, TOKEN_NAMES, decode_payload_total, encode_payload

__version__ = version("pytrafgen-http")  # single source: this plugin's pyproject.toml

_REQUEST_STARTS = tuple(m.encode() + b" " for m in METHODS)
_ANY_REQUEST_LINE = re.compile(rb"[A-Z][A-Z_-]* [^\r\n]+ HTTP/[0-9]\.[0-9]\r?\n")


class HttpProtocol(ProtocolSpec):
    """HTTP/1.x over TCP: requests from the client, responses from the server."""

    name: ClassVar[str] = "http"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "tcp"
    default_ports: ClassVar[tuple[int, ...]] = (80, 8000, 8008, 8080, 8888)
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("method", None, "value", "enum", "request method (known ones as tokens, others as text)"),
        FieldSpec("target", None, "value", "text", "request target"),
        FieldSpec("version", None, "value", "enum", "HTTP/1.0 or HTTP/1.1 (others as text)"),
        FieldSpec("status", 10, "value", "enum", "response status code"),
        FieldSpec("reason", None, "value", "text", "reason phrase (the standard one as a single token)"),
        FieldSpec("header_name", None, "value", "enum", "header field name (common ones as tokens)"),
        FieldSpec("header_value", None, "value", "text", "header field value"),
        FieldSpec("content_length", None, "length", "derived", "the body's length when the body is complete"),
        FieldSpec("body", None, "payload", "bytes", "message body as sent (chunked framing included)"),
    )
    token_names: ClassVar[tuple[str, ...]] = TOKEN_NAMES

    def recognise(self, server_port: int, client_payload: bytes, server_payload: bytes) -> bool:
        if client_payload.startswith(_REQUEST_STARTS) or server_payload.startswith(b"HTTP/1."):
            return True
        if server_payload.startswith(_REQUEST_STARTS) and client_payload.startswith(b"HTTP/1."):
            return True  # a capture that starts mid-connection took the server for the client
        if _ANY_REQUEST_LINE.match(client_payload):  # an unknown method is still HTTP (HTTP-004)
            return True
        # Payload that is there but is not HTTP wins over the port (e.g. a scanner's probes).
        return not client_payload and not server_payload and server_port in self.default_ports

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        return encode_payload(payload)

    def token_grammar(self) -> AppGrammar:
        """The token grammar as data: the C++ core tokenizes with it, ``encode`` is the reference."""
        return HTTP_GRAMMAR

    def token_automaton(self) -> TokenAutomaton:
        """Sampling writes whole messages as the grammar lays them out (nothing to fill in)."""
        return token_automaton()

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        """Any token sequence decodes (``decode_payload_total``): what the grammar lacks is
        filled in, so no sampled flow is drawn again for its HTTP messages."""
        return decode_payload_total(tokens, direction)

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        """Messages in one direction's in-order stream. Each has ``offset``/``length`` in the
        stream. If parsing stops before the end, a last entry ``{"kind": "invalid", "error":
        ..., "offset": ...}`` says why: "incomplete" (the stream ends inside a head, e.g. a
        slowloris request), "start line" or "header line" (bytes that are not HTTP)."""
        messages, consumed, error = split_messages(stream, direction)
        out = []
        offset = 0
        for msg in messages:
            out.append(message_fields(msg, offset))
            offset += out[-1]["length"]
        if error is not None:
            out.append({"kind": "invalid", "error": error, "offset": consumed, "length": len(stream) - consumed})
        return out

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        return build_message(message)

    def rules(self) -> list[Rule]:
        from pytrafgen_http.rules import http_rules

        return http_rules()


@hookimpl
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    register(HttpProtocol())
